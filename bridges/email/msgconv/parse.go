package msgconv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"path"
	"regexp"
	"strings"
	"unicode/utf8"
)

// ErrEmpty is returned by Parse when the input holds no message at all.
var ErrEmpty = errors.New("empty message")

// Limits that keep hostile input from costing unbounded time or memory.
const (
	// maxDepth bounds multipart nesting; real mail rarely goes past 5.
	maxDepth = 20
	// maxParts bounds the number of MIME parts considered in one message.
	maxParts = 500
	// maxBodyText bounds the text or HTML body kept (Matrix events are
	// limited to 64 KiB anyway; the connector may cut further).
	maxBodyText = 1 << 20
)

// parser holds the state of one Parse call.
type parser struct {
	opts     ParseOptions
	problems []string
	parts    int
}

// collected is what a MIME subtree contributed.
type collected struct {
	text []string
	html []string
	atts []Attachment
}

func (c *collected) add(o collected) {
	c.text = append(c.text, o.text...)
	c.html = append(c.html, o.html...)
	c.atts = append(c.atts, o.atts...)
}

func (p *parser) problem(format string, args ...any) {
	if len(p.problems) < 50 {
		p.problems = append(p.problems, fmt.Sprintf(format, args...))
	}
}

// Parse reads one RFC 5322 message and returns what the bridge needs from it.
// It is lenient: anything that cannot be parsed is recorded in
// Email.Problems and the rest is still returned. The error is non-nil only
// when there is nothing usable at all (an unreadable or empty input).
//
// The whole message is held in memory once; attachments are decoded into
// buffers of their own size, and attachments over
// ParseOptions.MaxAttachmentBytes are counted but not kept.
func Parse(r io.Reader, opts ParseOptions) (*Email, error) {
	raw, err := readAll(r)
	if err != nil && len(raw) == 0 {
		return nil, fmt.Errorf("read message: %w", err)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, ErrEmpty
	}
	p := &parser{opts: opts}
	if err != nil {
		p.problem("message cut short: %v", err)
	}
	h, body := splitHeader(raw, &p.problems, true)
	e := &Email{}
	p.envelope(e, h)
	c := p.walk(h, body, 0, "")
	p.assemble(e, c)
	e.Problems = p.problems
	return e, nil
}

// readAll reads r completely, sizing the buffer up front when r knows its
// length so a large message is not copied while growing.
func readAll(r io.Reader) ([]byte, error) {
	var size int64 = -1
	switch v := r.(type) {
	case *os.File:
		if st, err := v.Stat(); err == nil && st.Mode().IsRegular() {
			size = st.Size()
		}
	case interface{ Len() int }:
		size = int64(v.Len())
	case io.Seeker:
		if cur, err := v.Seek(0, io.SeekCurrent); err == nil {
			if end, err := v.Seek(0, io.SeekEnd); err == nil {
				if _, err := v.Seek(cur, io.SeekStart); err != nil {
					return nil, err
				}
				size = end - cur
			}
		}
	}
	if size < 0 {
		return io.ReadAll(r)
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
}

// envelope fills the header-derived fields of e.
func (p *parser) envelope(e *Email, h header) {
	e.MessageID = firstOf(parseMsgIDs(h.get("Message-Id")))
	e.InReplyTo = parseMsgIDs(strings.Join(h.values("In-Reply-To"), " "))
	e.References = parseMsgIDs(strings.Join(h.values("References"), " "))
	e.To = parseAddressList(strings.Join(h.values("To"), ", "), &p.problems, "To")
	e.Cc = parseAddressList(strings.Join(h.values("Cc"), ", "), &p.problems, "Cc")
	e.ReplyTo = parseAddressList(h.get("Reply-To"), &p.problems, "Reply-To")
	// An unreadable From falls back on the other headers that name the author, in order of trust.
	if from := parseAddressList(h.get("From"), &p.problems, "From"); len(from) > 0 && from[0].Email != "" {
		e.From = from[0]
	} else if sender := parseAddressList(h.get("Sender"), &p.problems, "Sender"); len(sender) > 0 && sender[0].Email != "" {
		e.From = sender[0]
		p.problem("no usable From address, using Sender")
	} else if len(e.ReplyTo) > 0 && e.ReplyTo[0].Email != "" {
		e.From = e.ReplyTo[0]
		p.problem("no usable From address, using Reply-To")
	} else if rp := parseAddressList(h.get("Return-Path"), &p.problems, "Return-Path"); len(rp) > 0 && rp[0].Email != "" {
		e.From = rp[0]
		p.problem("no usable From address, using Return-Path")
	} else {
		// Nothing to write back to: keep the text so the reader still sees who it claims to be.
		e.From = Address{Name: truncate(strings.TrimSpace(decodeText(h.get("From"), &p.problems, "From")), 200)}
		p.problem("no usable From address")
	}
	e.Subject = decodeText(h.get("Subject"), &p.problems, "Subject")
	if d := h.get("Date"); d != "" {
		t, err := parseDate(d)
		if err != nil {
			p.problem("Date: %v", err)
		}
		e.Date = t
	} else {
		p.problem("no Date header")
	}
	e.AutoSubmitted = isAutoSubmitted(h)
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// isAutoSubmitted recognises automatic mail (RFC 3834 and common variants).
func isAutoSubmitted(h header) bool {
	if v := h.get("Auto-Submitted"); v != "" {
		tok := strings.ToLower(strings.TrimSpace(strings.SplitN(v, ";", 2)[0]))
		if tok != "no" {
			return true
		}
	}
	if h.has("X-Autoreply") || h.has("X-Autorespond") {
		return true
	}
	if v := strings.ToLower(h.get("X-Autogenerated")); v == "reply" {
		return true
	}
	switch strings.ToLower(strings.TrimSpace(h.get("Precedence"))) {
	case "auto_reply", "bulk", "junk", "list":
		return true
	}
	return false
}

// walk collects bodies and attachments from one entity.
func (p *parser) walk(h header, body []byte, depth int, parent string) collected {
	p.parts++
	if p.parts > maxParts {
		if p.parts == maxParts+1 {
			p.problem("more than %d MIME parts; the rest is ignored", maxParts)
		}
		return collected{}
	}
	ctRaw := h.get("Content-Type")
	ct, params := parseMediaType(ctRaw)
	if ct == "" || !strings.Contains(ct, "/") {
		if ctRaw != "" {
			p.problem("malformed Content-Type %q", truncate(ctRaw, 60))
		}
		if parent == "multipart/digest" {
			ct = "message/rfc822"
		} else {
			ct = "text/plain"
		}
	}
	disp, dparams := parseMediaType(h.get("Content-Disposition"))
	filename := dparams["filename"]
	if filename == "" {
		filename = params["name"]
	}
	if strings.Contains(filename, "=?") || !utf8.ValidString(filename) {
		filename, _ = decodeHeader(filename)
	}
	filename = cleanFilename(filename)

	if strings.HasPrefix(ct, "multipart/") {
		if depth >= maxDepth {
			p.problem("multipart nested deeper than %d levels; inner parts ignored", maxDepth)
			return collected{}
		}
		boundary := params["boundary"]
		var parts [][]byte
		if boundary == "" {
			p.problem("multipart without a boundary parameter")
		} else {
			parts = splitMultipart(body, boundary, &p.problems)
		}
		if parts == nil {
			// Show what there is as text rather than lose it.
			return p.leaf(h, "text/plain", params, "", "", body)
		}
		if ct == "multipart/alternative" {
			return p.alternative(parts, depth)
		}
		var c collected
		for _, part := range parts {
			ph, pb := splitHeader(part, &p.problems, false)
			c.add(p.walk(ph, pb, depth+1, ct))
		}
		if ct == "multipart/related" {
			for i := range c.atts {
				if c.atts[i].ContentID != "" {
					c.atts[i].Inline = true
				}
			}
		}
		return c
	}
	return p.leaf(h, ct, params, disp, filename, body)
}

// alternative keeps the first plain text and the last (richest) HTML among
// the alternatives, and every attachment they carry.
func (p *parser) alternative(parts [][]byte, depth int) collected {
	var out collected
	for _, part := range parts {
		ph, pb := splitHeader(part, &p.problems, false)
		c := p.walk(ph, pb, depth+1, "multipart/alternative")
		if len(out.text) == 0 && len(c.text) > 0 {
			out.text = c.text
		}
		if len(c.html) > 0 {
			out.html = c.html
		}
		out.atts = append(out.atts, c.atts...)
	}
	return out
}

// leaf handles a non-multipart entity.
func (p *parser) leaf(h header, ct string, params map[string]string, disp, filename string, body []byte) collected {
	cte := strings.ToLower(strings.TrimSpace(h.get("Content-Transfer-Encoding")))
	switch cte {
	case "", "7bit", "8bit", "binary", "base64", "quoted-printable":
	default:
		p.problem("unknown Content-Transfer-Encoding %q; body taken as is", truncate(cte, 30))
	}
	isBody := disp != "attachment" && filename == "" &&
		(ct == "text/plain" || ct == "text/html")
	if isBody {
		if cte == "base64" && notBase64(body) {
			p.problem("%s body declared base64 but is plain text", ct)
			cte = "8bit"
		}
		data := p.decodeAll(cte, body)
		charset := params["charset"]
		if ct == "text/html" && charset == "" && !utf8.Valid(data) {
			// Only trusted when the bytes are not UTF-8 already: generators
			// copy templates' meta tags without converting the text.
			charset = metaCharset(data)
		}
		txt, ok := bodyToUTF8(charset, data)
		if !ok {
			p.problem("%s body: unknown charset %q or bytes invalid in it; decoded as well as possible", ct, truncate(charset, 30))
		}
		txt = strings.ReplaceAll(txt, "\r\n", "\n")
		if ct == "text/html" {
			return collected{html: []string{txt}}
		}
		if strings.EqualFold(params["format"], "flowed") {
			txt = unflow(txt, strings.EqualFold(params["delsp"], "yes"))
		}
		return collected{text: []string{txt}}
	}
	if ct == "text/watch-html" || ct == "application/pgp-signature" || ct == "application/pkcs7-signature" || ct == "application/x-pkcs7-signature" {
		return collected{} // redundant alternative or signature: not useful in Matrix
	}
	att := Attachment{
		Filename:    filename,
		ContentType: ct,
		ContentID:   strings.Trim(strings.TrimSpace(h.get("Content-Id")), "<>"),
		Inline:      disp == "inline",
	}
	if ct == "message/rfc822" || ct == "message/global" {
		if att.Filename == "" {
			inner, _ := splitHeader(body, &[]string{}, false)
			sub, _ := decodeHeader(inner.get("Subject"))
			att.Filename = cleanName(sub)
			if att.Filename == "" {
				att.Filename = "message"
			}
			att.Filename += ".eml"
		}
		att.Inline = false
	}
	if att.Filename == "" {
		att.Filename = defaultFilename(ct)
	}
	p.readAttachment(&att, cte, body)
	if ct == "application/ms-tnef" || ct == "application/vnd.ms-tnef" || strings.EqualFold(att.Filename, "winmail.dat") {
		if att.Data != nil {
			files, text, err := parseTNEF(att.Data)
			if err == nil && (len(files) > 0 || text != "") {
				var c collected
				if text != "" {
					c.text = append(c.text, text)
				}
				for _, f := range files {
					f.Size = int64(len(f.Data))
					if p.opts.MaxAttachmentBytes > 0 && f.Size > p.opts.MaxAttachmentBytes {
						f.Data = nil
						f.Dropped = fmt.Sprintf("larger than the %s limit", humanSize(p.opts.MaxAttachmentBytes))
					}
					c.atts = append(c.atts, f)
				}
				return c
			}
			if err != nil {
				p.problem("winmail.dat (TNEF) could not be unpacked: %v", err)
			}
		}
	}
	return collected{atts: []Attachment{att}}
}

// notBase64 reports whether a body declared base64 is evidently text:
// base64 lines never contain white space between characters.
func notBase64(body []byte) bool {
	for pos := 0; pos < len(body) && pos < 4096; {
		line, next := nextLine(body, pos)
		if bytes.ContainsAny(bytes.TrimSpace(line), " \t") {
			return true
		}
		pos = next
	}
	return false
}

// decodeAll decodes a body part completely (used for text bodies, bounded
// by maxBodyText).
func (p *parser) decodeAll(cte string, body []byte) []byte {
	r, f := decodeTransfer(cte, body)
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, maxBodyText))
	if err != nil {
		p.problem("body: bad %s encoding: %v", cte, err)
	}
	if f != nil && f.bad {
		p.problem("body: stray characters in base64 ignored")
	}
	if n == maxBodyText {
		p.problem("body longer than %d bytes; cut", maxBodyText)
	}
	return buf.Bytes()
}

// readAttachment decodes the content of att, keeping it only when it fits
// the size limit; otherwise only the size is counted.
func (p *parser) readAttachment(att *Attachment, cte string, body []byte) {
	limit := p.opts.MaxAttachmentBytes
	if n, exact := decodedSize(cte, body); exact && limit > 0 && n > limit {
		// Known to be too large without decoding: count, do not buffer.
		att.Size = n
		att.Dropped = fmt.Sprintf("larger than the %s limit", humanSize(limit))
		return
	}
	r, f := decodeTransfer(cte, body)
	est := int64(len(body))
	if cte == "base64" {
		est = est * 3 / 4
	}
	if limit > 0 && est > limit+1 {
		est = limit + 1
	}
	buf := bytes.NewBuffer(make([]byte, 0, est+bytes.MinRead))
	var err error
	var n int64
	if limit > 0 {
		n, err = io.Copy(buf, io.LimitReader(r, limit+1))
		if n > limit {
			rest, err2 := io.Copy(io.Discard, r)
			n += rest
			err = err2
			att.Dropped = fmt.Sprintf("larger than the %s limit", humanSize(limit))
			buf = nil
		}
	} else {
		n, err = io.Copy(buf, r)
	}
	if err != nil {
		p.problem("attachment %q: bad %s encoding, kept what could be decoded: %v", att.Filename, cte, err)
	}
	if f != nil && f.bad {
		p.problem("attachment %q: stray characters in base64 ignored", att.Filename)
	}
	att.Size = n
	if buf != nil {
		att.Data = buf.Bytes()
	}
}

// decodedSize returns the decoded size of a body when it can be known
// without decoding: base64 (by counting alphabet characters) and identity
// encodings.
func decodedSize(cte string, body []byte) (int64, bool) {
	switch cte {
	case "base64":
		var n int64
		for _, c := range body {
			if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' {
				n++
			}
		}
		return n * 6 / 8, true
	case "", "7bit", "8bit", "binary":
		return int64(len(body)), true
	}
	return 0, false
}

// cleanFilename keeps the base name of a file name ("../../etc/report.pdf"
// and "C:\\Users\\a\\report.pdf" are "report.pdf"), then cleans it like
// cleanName.
func cleanFilename(s string) string {
	s = strings.TrimRight(s, "/\\ ")
	if i := strings.LastIndexAny(s, "/\\"); i >= 0 {
		s = s[i+1:]
	}
	return cleanName(s)
}

// cleanName makes a text (a file name without directories, or a subject)
// usable as a file name: control characters and path separators become "_",
// and "." and ".." become empty.
func cleanName(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if s == "." || s == ".." {
		return ""
	}
	return truncate(s, 200)
}

// defaultFilename makes up a name from a content type.
func defaultFilename(ct string) string {
	base := "attachment"
	if strings.HasPrefix(ct, "image/") {
		base = "image"
	}
	if exts, _ := mime.ExtensionsByType(ct); len(exts) > 0 {
		return base + exts[0]
	}
	switch ct {
	case "text/calendar":
		return "invite.ics"
	case "message/delivery-status":
		return "delivery-status.txt"
	case "text/rfc822-headers":
		return "headers.txt"
	}
	if sub := path.Base(ct); sub != "" && sub != "." && !strings.ContainsAny(sub, "/") && len(sub) < 20 {
		return base + "." + sub
	}
	return base
}

// humanSize renders a byte count for people.
func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n == 1:
		return "1 byte"
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

// unflow joins the soft line breaks of format=flowed text (RFC 3676).
func unflow(s string, delsp bool) string {
	lines := strings.Split(s, "\n")
	var b strings.Builder
	for i, l := range lines {
		if l != "-- " && strings.HasSuffix(l, " ") && i+1 < len(lines) && !strings.HasPrefix(l, ">") {
			if delsp {
				l = l[:len(l)-1]
			}
			b.WriteString(l)
			continue
		}
		b.WriteString(l)
		if i+1 < len(lines) {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

var trailingBreaksRe = regexp.MustCompile(`(\s*<br\s*/?>\s*)+$`)

// assemble turns the collected parts into the final body fields.
func (p *parser) assemble(e *Email, c collected) {
	var texts []string
	for _, t := range c.text {
		if t = strings.TrimSpace(t); t != "" {
			texts = append(texts, t)
		}
	}
	text := strings.Join(texts, "\n\n")
	rawHTML := strings.Join(c.html, "\n")
	var quoted string
	if strings.TrimSpace(rawHTML) != "" {
		mainHTML, quotedHTML := splitQuotedHTML(rawHTML)
		main := trailingBreaksRe.ReplaceAllString(sanitizeMail(mainHTML), "")
		e.HTML = main
		if q := sanitizeMail(quotedHTML); strings.TrimSpace(q) != "" {
			e.HTML += "<details><summary>Quoted text</summary>" + q + "</details>"
		}
		e.HTML = strings.TrimSpace(e.HTML)
		if text == "" {
			// HTML-only mail: the text is derived from the HTML, whose quote
			// was already separated.
			e.Text = HTMLToText(main)
			quoted = HTMLToText(quotedHTML)
		}
	}
	if e.Text == "" && text != "" {
		e.Text, quoted = splitQuotedText(text)
	}
	e.Text = strings.ToValidUTF8(e.Text, "\uFFFD")
	e.Quoted = strings.ToValidUTF8(quoted, "\uFFFD")
	e.Attachments = c.atts
}

// sanitizeMail sanitises mail HTML for Email.HTML: the Matrix allow-list,
// with cid: images kept for ToMatrix and other images replaced by their alt
// text (remote images would leak that the mail was read).
func sanitizeMail(s string) string {
	s = rewriteImages(s, func(src string) (string, bool) {
		return src, mxcOrCIDRe.MatchString(src)
	})
	return sanitizeWith(parsePolicy(), s)
}
