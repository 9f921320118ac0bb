// Package e2e holds the end-to-end test of the walking skeleton (issue 2): one Passerelle hub, a real Dovecot
// and Postfix started by internal/testenv, and mautrix-go's client acting as a person who bridges their mailbox
// into Matrix and answers an email thread from there. Run it with
//
//	go test -tags goolm ./e2e/
//
// It drives the hub only through its public surface (hub.New, the Client-Server API, SMTP and IMAP), like a
// user would; it has no code of its own outside the test, and nothing imports it.
package e2e
