// Package msgconv converts between email (RFC 5322 / MIME) and Matrix message
// events for the email bridge.
//
// It is pure: no network, no database, no bridgev2 portal state. Everything a
// caller needs (uploading media) is passed in as a function. It must not
// import the homeserver, the appservice host or the email connector; the
// connector imports it, never the other way round.
package msgconv

import (
	"time"
)

// Address is one mailbox: a display name (decoded to UTF-8, may be empty) and
// an addr-spec such as "alice@example.com".
type Address struct {
	Name  string
	Email string
}

// Attachment is one file carried by an email, incoming or outgoing.
type Attachment struct {
	// Filename is the decoded file name (RFC 2047 and RFC 2231 handled); a
	// name is made up from the content type when the mail gave none.
	Filename string
	// ContentType is the media type without parameters, lower case.
	ContentType string
	// ContentID is the Content-ID without <>, used by cid: links in HTML.
	ContentID string
	// Inline is true for parts meant to be shown inside the body (inline
	// images of multipart/related) rather than offered as downloads.
	Inline bool
	// Size is the decoded size in bytes, also when Data was dropped.
	Size int64
	// Data is the decoded content; nil when Dropped is set.
	Data []byte
	// Dropped is a non-empty, human-readable reason when the content was not
	// kept (for example over the size limit). Such attachments must still be
	// announced to the user, never silently skipped.
	Dropped string
}

// Email is the bridge's view of one parsed message.
type Email struct {
	MessageID  string   // without <>; "" when missing
	InReplyTo  []string // without <>
	References []string // without <>, oldest first
	// From is the author: the From header, else Sender, Reply-To or
	// Return-Path. When none holds an address, Email is "" and Name is the
	// From header's raw text (possibly "" too).
	From    Address
	To      []Address
	Cc      []Address
	ReplyTo []Address
	// Subject is decoded to UTF-8 as far as possible (broken encoded words
	// are decoded best-effort, never dropped).
	Subject string
	// Date is the Date header; the zero time when missing or unparsable.
	Date time.Time
	// Text is the plain text body (derived from the HTML when the mail is
	// HTML-only) with quoted history stripped.
	Text string
	// Quoted is the quoted history that was stripped from Text, if any.
	Quoted string
	// HTML is sanitised to the HTML subset Matrix allows, with quoted
	// history folded into a <details> element; "" when the mail has no HTML.
	// Inline images still point at "cid:" URLs here; ToMatrix rewrites them.
	HTML        string
	Attachments []Attachment
	// AutoSubmitted is true for automatic mail (Auto-Submitted other than
	// "no", X-Autoreply, X-Autorespond, Precedence auto_reply/bulk/junk/list).
	// The bridge must never answer such mail automatically.
	AutoSubmitted bool
	// Problems lists what could not be parsed (bad header, missing boundary,
	// unknown charset, ...). The rest of the message is still usable.
	Problems []string
}

// ParseOptions tunes Parse.
type ParseOptions struct {
	// MaxAttachmentBytes is the largest decoded attachment that is kept in
	// memory; bigger ones get Dropped set and Data nil. 0 means no limit.
	MaxAttachmentBytes int64
}
