// Package email is Passerelle's email bridge: a mautrix-go bridgev2 network connector that puppets a user's
// mailbox. It watches INBOX over IMAP (go-imap/v2, IDLE with a watchdog), turns every email thread into one
// portal room, and sends the user's Matrix replies over SMTP (go-smtp) with correct threading headers, keeping
// a copy in the Sent folder.
//
// Conversion between MIME and Matrix events lives in the pure sub-package msgconv; this package holds the
// network side (IMAP, SMTP, credentials, the mailbox loop) and the bridgev2 glue.
//
// It must not import the homeserver packages: it talks to the homeserver only through bridgev2's Matrix
// connector, like any other appservice.
package email
