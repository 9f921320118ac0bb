package msgconv

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

// Errors returned by Compose.
var (
	// ErrHeaderInjection is returned by Compose when a header value (address,
	// name, subject, message ID) contains CR, LF or NUL, which could smuggle
	// extra header fields or a second message into the mail.
	ErrHeaderInjection = errors.New("line break or NUL in a header value")
	// ErrNoRecipients is returned by Compose when To and Cc are both empty.
	ErrNoRecipients = errors.New("no recipients")
	// ErrBadAddress is returned by Compose for an address that is not a
	// plain addr-spec.
	ErrBadAddress = errors.New("invalid email address")
	// ErrBadMessageID is returned by Compose for a message ID with white
	// space, angle brackets or an excessive length.
	ErrBadMessageID = errors.New("invalid message ID")
)

// Outgoing is a message the bridge sends by email.
type Outgoing struct {
	From        Address
	To          []Address
	Cc          []Address
	Subject     string
	InReplyTo   string   // without <>
	References  []string // without <>, oldest first
	MessageID   string   // without <>; a random one is made when empty
	Date        time.Time
	Text        string // plain text; derived from HTML when empty
	HTML        string // HTML fragment or document; "" for text only
	Attachments []Attachment
}

// maxReferences bounds the References header: the root and the most recent
// IDs are what threading needs (RFC 5322 section 3.6.4 allows trimming).
const maxReferences = 30

// Compose renders o as an RFC 5322 message with CRLF line endings:
// encoded words for non-ASCII header text, folded header lines,
// quoted-printable text bodies, multipart/alternative when there is HTML,
// multipart/mixed with base64 attachments. A header value containing CR, LF
// or NUL is refused with ErrHeaderInjection.
func Compose(o *Outgoing) ([]byte, error) {
	if err := checkOutgoing(o); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	date := o.Date
	if date.IsZero() {
		date = time.Now()
	}
	msgID := o.MessageID
	if msgID == "" {
		msgID = randomHex(16) + "@" + domainOf(o.From.Email)
	}
	writeField(&b, "Date", date.Format(time.RFC1123Z))
	writeField(&b, "From", formatAddress(o.From))
	if len(o.To) > 0 {
		writeField(&b, "To", formatAddressList(o.To))
	}
	if len(o.Cc) > 0 {
		writeField(&b, "Cc", formatAddressList(o.Cc))
	}
	writeField(&b, "Subject", encodeText(o.Subject))
	writeField(&b, "Message-ID", "<"+msgID+">")
	if o.InReplyTo != "" {
		writeField(&b, "In-Reply-To", "<"+o.InReplyTo+">")
	}
	if refs := trimReferences(o.References); len(refs) > 0 {
		writeField(&b, "References", "<"+strings.Join(refs, "> <")+">")
	}
	writeField(&b, "MIME-Version", "1.0")

	text, htmlBody := o.Text, o.HTML
	if text == "" && htmlBody != "" {
		text = HTMLToText(htmlBody)
	}
	var body entity
	textPart := entity{header: []string{"Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"}, body: qp(text)}
	if htmlBody != "" {
		if !strings.Contains(strings.ToLower(htmlBody), "<html") {
			htmlBody = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>" + htmlBody + "</body></html>"
		}
		htmlPart := entity{header: []string{"Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"}, body: qp(htmlBody)}
		body = multipart("alternative", textPart, htmlPart)
	} else {
		body = textPart
	}
	if len(o.Attachments) > 0 {
		parts := []entity{body}
		for _, a := range o.Attachments {
			parts = append(parts, attachmentEntity(a))
		}
		body = multipart("mixed", parts...)
	}
	body.write(&b)
	return b.Bytes(), nil
}

// checkOutgoing refuses header injection and malformed addresses and IDs.
func checkOutgoing(o *Outgoing) error {
	if o == nil {
		return errors.New("nil message")
	}
	if len(o.To)+len(o.Cc) == 0 {
		return ErrNoRecipients
	}
	check := func(what, v string) error {
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("%s: %w", what, ErrHeaderInjection)
		}
		return nil
	}
	checkAddr := func(what string, a Address) error {
		if err := check(what+" name", a.Name); err != nil {
			return err
		}
		if err := check(what+" address", a.Email); err != nil {
			return err
		}
		if !validAddrSpec(a.Email) {
			return fmt.Errorf("%s %q: %w", what, a.Email, ErrBadAddress)
		}
		return nil
	}
	if err := checkAddr("From", o.From); err != nil {
		return err
	}
	for _, a := range o.To {
		if err := checkAddr("To", a); err != nil {
			return err
		}
	}
	for _, a := range o.Cc {
		if err := checkAddr("Cc", a); err != nil {
			return err
		}
	}
	if err := check("Subject", o.Subject); err != nil {
		return err
	}
	ids := append([]string{o.InReplyTo, o.MessageID}, o.References...)
	for _, v := range ids {
		if err := check("message ID", v); err != nil {
			return err
		}
		if v != "" && !validMsgID(v) {
			return fmt.Errorf("%q: %w", truncate(v, 80), ErrBadMessageID)
		}
	}
	for _, a := range o.Attachments {
		if err := check("attachment Content-ID", a.ContentID); err != nil {
			return err
		}
		if a.ContentID != "" && !validMsgID(a.ContentID) {
			return fmt.Errorf("Content-ID %q: %w", truncate(a.ContentID, 80), ErrBadMessageID)
		}
	}
	return nil
}

var addrSpecRe = regexp.MustCompile(`^[^\s\x00-\x1f\x7f<>()\[\]\\,;:@"]+@[^\s\x00-\x1f\x7f<>()\[\]\\,;:@"]+$`)

func validAddrSpec(s string) bool {
	return len(s) <= 254 && utf8.ValidString(s) && addrSpecRe.MatchString(s)
}

// validMsgID accepts what can sit between < and > safely.
func validMsgID(s string) bool {
	if len(s) > 250 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == '<' || r == '>' || r == 0x7f {
			return false
		}
	}
	return true
}

func trimReferences(refs []string) []string {
	var out []string
	for _, r := range refs {
		if r != "" {
			out = append(out, r)
		}
	}
	if len(out) > maxReferences {
		out = append(out[:1:1], out[len(out)-(maxReferences-1):]...)
	}
	return out
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 && i+1 < len(addr) {
		return addr[i+1:]
	}
	return "localhost"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// formatAddress renders one mailbox, encoding a non-ASCII display name.
func formatAddress(a Address) string {
	if a.Name != "" && !isPrintableASCII(a.Name) {
		return encodeWords(a.Name) + " <" + a.Email + ">"
	}
	return (&mail.Address{Name: a.Name, Address: a.Email}).String()
}

func formatAddressList(list []Address) string {
	parts := make([]string, len(list))
	for i, a := range list {
		parts[i] = formatAddress(a)
	}
	return strings.Join(parts, ", ")
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// encodeText encodes unstructured header text: as is when printable ASCII,
// otherwise as UTF-8 encoded words.
func encodeText(s string) string {
	if isPrintableASCII(s) && !strings.Contains(s, "=?") {
		return s
	}
	return encodeWords(s)
}

// maxWordLen keeps each encoded word short enough that "Subject: " plus one
// word fits a 78-character line; words are separated by spaces so the
// header folds between them (RFC 2047 section 2 limits words to 75).
const maxWordLen = 60

// encodeWords renders s as Q-encoded UTF-8 words, never splitting a
// character between two words.
func encodeWords(s string) string {
	const prefix, suffix = "=?utf-8?q?", "?="
	var words []string
	var cur strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		var enc string
		switch {
		case r == ' ':
			enc = "_"
		case r < 0x80 && r > 0x20 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!*+-/", r)):
			enc = string(r)
		default:
			var buf [4]byte
			n := utf8.EncodeRune(buf[:], r)
			for _, c := range buf[:n] {
				enc += fmt.Sprintf("=%02X", c)
			}
		}
		if cur.Len()+len(enc) > maxWordLen-len(prefix)-len(suffix) {
			words = append(words, prefix+cur.String()+suffix)
			cur.Reset()
		}
		cur.WriteString(enc)
	}
	if cur.Len() > 0 || len(words) == 0 {
		words = append(words, prefix+cur.String()+suffix)
	}
	return strings.Join(words, " ")
}

// writeField writes "Name: value" folded at spaces to lines of at most 78
// characters where the value allows it. Runs of spaces are kept; a fold is
// only placed before a non-empty word, so no line is white space only.
func writeField(b *bytes.Buffer, name, value string) {
	b.WriteString(name + ":")
	lineLen := len(name) + 1
	for _, word := range strings.Split(value, " ") {
		if word != "" && lineLen > len(name)+1 && lineLen+1+len(word) > 78 {
			b.WriteString("\r\n")
			lineLen = 0
		}
		b.WriteByte(' ')
		b.WriteString(word)
		lineLen += 1 + len(word)
	}
	b.WriteString("\r\n")
}

// entity is one MIME entity being composed.
type entity struct {
	header []string
	body   []byte
	parts  []entity
	bound  string
}

func multipart(sub string, parts ...entity) entity {
	bound := "=_" + randomHex(12)
	return entity{
		header: []string{fmt.Sprintf("Content-Type: multipart/%s; boundary=\"%s\"", sub, bound)},
		parts:  parts,
		bound:  bound,
	}
}

func (e entity) write(b *bytes.Buffer) {
	for _, h := range e.header {
		name, value, _ := strings.Cut(h, ": ")
		writeField(b, name, value)
	}
	b.WriteString("\r\n")
	if e.bound == "" {
		b.Write(e.body)
		return
	}
	b.WriteString("This is a multipart message in MIME format.\r\n")
	for _, p := range e.parts {
		b.WriteString("\r\n--" + e.bound + "\r\n")
		p.write(b)
	}
	b.WriteString("\r\n--" + e.bound + "--\r\n")
}

// qp encodes text as quoted-printable with CRLF line breaks.
func qp(s string) []byte {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.Bytes()
}

var tokenRe = regexp.MustCompile(`^[a-zA-Z0-9!#$&^_.+-]+/[a-zA-Z0-9!#$&^_.+-]+$`)

// attachmentEntity renders one attachment as a base64 part.
func attachmentEntity(a Attachment) entity {
	ct := strings.ToLower(a.ContentType)
	if !tokenRe.MatchString(ct) {
		ct = contentTypeByName(a.Filename)
	}
	name := cleanFilename(a.Filename)
	if name == "" {
		name = defaultFilename(ct)
	}
	disp := "attachment"
	if a.Inline {
		disp = "inline"
	}
	h := []string{
		"Content-Type: " + ct + "; " + paramValue("name", name),
		"Content-Disposition: " + disp + "; " + paramValue("filename", name),
		"Content-Transfer-Encoding: base64",
	}
	if a.ContentID != "" {
		h = append(h, "Content-ID: <"+a.ContentID+">")
	}
	enc := make([]byte, base64.StdEncoding.EncodedLen(len(a.Data)))
	base64.StdEncoding.Encode(enc, a.Data)
	var body bytes.Buffer
	for len(enc) > 76 {
		body.Write(enc[:76])
		body.WriteString("\r\n")
		enc = enc[76:]
	}
	body.Write(enc)
	body.WriteString("\r\n")
	return entity{header: h, body: body.Bytes()}
}

// paramValue renders a parameter: quoted when ASCII, RFC 2231 extended
// (percent-encoded UTF-8) otherwise.
func paramValue(key, v string) string {
	plain := true
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] >= 0x7f || v[i] == '"' || v[i] == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return key + "=\"" + v + "\""
	}
	var b strings.Builder
	b.WriteString(key + "*=utf-8''")
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// msgIDEncoding renders event IDs in a msg-id: lower-case letters and
// digits only, so any event ID gives a valid dot-atom.
var msgIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

var domainRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)

// MessageIDFor returns a deterministic msg-id (without <>) for a Matrix
// event: the same event always gets the same ID, so a retried send is
// recognisable as the same mail, and EventIDFromMessageID recovers the
// event. A domain that is not a plain host name is replaced by "localhost".
func MessageIDFor(eventID id.EventID, domain string) string {
	if !domainRe.MatchString(domain) {
		domain = "localhost"
	}
	return "mx." + msgIDEncoding.EncodeToString([]byte(eventID)) + "@" + domain
}

// EventIDFromMessageID reverses MessageIDFor; ok is false for message IDs
// that MessageIDFor did not make.
func EventIDFromMessageID(msgID string) (id.EventID, bool) {
	local, _, found := strings.Cut(strings.Trim(msgID, "<>"), "@")
	if !found || !strings.HasPrefix(local, "mx.") {
		return "", false
	}
	raw, err := msgIDEncoding.DecodeString(local[3:])
	if err != nil || len(raw) == 0 || raw[0] != '$' || !utf8.Valid(raw) {
		return "", false
	}
	return id.EventID(raw), true
}
