package msgconv

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/mail"
	"net/textproto"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// field is one header field: canonical name and unfolded raw value (the bytes
// as they were, possibly not UTF-8).
type field struct {
	name  string
	value string
}

// header is an ordered list of fields.
type header []field

// get returns the first value of name, "" when absent.
func (h header) get(name string) string {
	for _, f := range h {
		if f.name == name {
			return f.value
		}
	}
	return ""
}

// has reports whether name is present.
func (h header) has(name string) bool {
	for _, f := range h {
		if f.name == name {
			return true
		}
	}
	return false
}

// values returns every value of name in order.
func (h header) values(name string) []string {
	var out []string
	for _, f := range h {
		if f.name == name {
			out = append(out, f.value)
		}
	}
	return out
}

// nextLine returns the line starting at pos without its line ending, and the
// position of the following line.
func nextLine(b []byte, pos int) (line []byte, next int) {
	i := bytes.IndexByte(b[pos:], '\n')
	if i < 0 {
		return bytes.TrimSuffix(b[pos:], []byte("\r")), len(b)
	}
	return bytes.TrimSuffix(b[pos:pos+i], []byte("\r")), pos + i + 1
}

// headerName returns the field name of a "Name: value" line, "" when the
// line is not a header field.
func headerName(line []byte) string {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return ""
	}
	key := bytes.TrimRight(line[:i], " \t")
	if len(key) == 0 {
		return ""
	}
	for _, c := range key {
		// RFC 5322 ftext: printable US-ASCII except colon and space.
		if c < 33 || c > 126 {
			return ""
		}
	}
	return textproto.CanonicalMIMEHeaderKey(string(key))
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// splitHeader separates the header block of an entity from its body. It never
// fails: malformed lines are skipped and recorded in problems. With repair
// set (top-level header only), a stray blank line followed by folded
// continuation lines and more header fields is treated as part of the header
// (some senders split an encoded word that way).
func splitHeader(raw []byte, problems *[]string, repair bool) (header, []byte) {
	h, body := splitHeaderFolded(raw, problems, repair)
	out := make(header, len(h))
	for i, f := range h {
		out[i] = field{name: f.name, value: strings.Join(f.parts, " ")}
	}
	return out, body
}

// foldedField collects a field's value pieces; they are joined once at the
// end so a header with many folded lines costs linear time.
type foldedField struct {
	name  string
	parts []string
}

func (f *foldedField) String() string { return strings.Join(f.parts, " ") }

func splitHeaderFolded(raw []byte, problems *[]string, repair bool) ([]*foldedField, []byte) {
	var h []*foldedField
	pos := 0
	if bytes.HasPrefix(raw, []byte("From ")) {
		// mbox "From " separator line; not a header field.
		_, pos = nextLine(raw, 0)
	}
	appendTo := func(i int, cont []byte) {
		h[i].parts = append(h[i].parts, string(bytes.TrimSpace(cont)))
	}
	newField := func(name string, value []byte) {
		h = append(h, &foldedField{name: name, parts: []string{string(bytes.TrimSpace(value))}})
	}
	for pos < len(raw) {
		line, next := nextLine(raw, pos)
		if len(line) == 0 {
			if repair && len(h) > 0 {
				if _, ok := strayBlankLine(raw, next); ok {
					*problems = append(*problems, "blank line inside the header block; header continued")
					// The continuation belongs to the field whose encoded word
					// was cut off, which need not be the last one.
					target := len(h) - 1
					for i := len(h) - 1; i >= 0; i-- {
						if hasOpenEncodedWord(h[i].String()) {
							target = i
							break
						}
					}
					q := next
					for q < len(raw) {
						l, n := nextLine(raw, q)
						if len(l) == 0 || !isWSP(l[0]) {
							break
						}
						appendTo(target, l)
						q = n
					}
					pos = q
					repair = false
					continue
				}
			}
			return h, raw[next:]
		}
		if isWSP(line[0]) {
			if len(h) == 0 {
				if trimmed := bytes.TrimLeft(line, " \t"); headerName(trimmed) != "" {
					// An indented first field: take it as a field.
					*problems = append(*problems, "header starts with white space")
					line = trimmed
					i := bytes.IndexByte(line, ':')
					newField(headerName(line), line[i+1:])
				} else {
					*problems = append(*problems, "header continuation line without a field")
				}
			} else {
				appendTo(len(h)-1, line)
			}
			pos = next
			continue
		}
		name := headerName(line)
		if name == "" {
			if len(h) == 0 {
				*problems = append(*problems, "no header block")
				return h, raw[pos:]
			}
			// A bad line followed by more fields is skipped; otherwise the
			// sender forgot the blank line and the body starts here.
			nl, _ := nextLine(raw, next)
			if next < len(raw) && headerName(nl) != "" {
				*problems = append(*problems, "malformed header line skipped")
				pos = next
				continue
			}
			*problems = append(*problems, "missing blank line after the header")
			return h, raw[pos:]
		}
		i := bytes.IndexByte(line, ':')
		newField(name, line[i+1:])
		pos = next
	}
	return h, nil
}

// strayBlankLine reports whether the lines from pos up to the next blank line
// start with a folded continuation and otherwise look like header fields. It
// returns the position of that next blank line.
func strayBlankLine(raw []byte, pos int) (int, bool) {
	first, _ := nextLine(raw, pos)
	if len(first) == 0 || !isWSP(first[0]) {
		return 0, false
	}
	fields := 0
	for p := pos; p < len(raw); {
		l, n := nextLine(raw, p)
		if len(l) == 0 {
			return p, fields > 0
		}
		if !isWSP(l[0]) {
			if headerName(l) == "" {
				return 0, false
			}
			fields++
		}
		p = n
	}
	return 0, false
}

// hasOpenEncodedWord reports whether v contains "=?" not followed by a
// closing "?=".
func hasOpenEncodedWord(v string) bool {
	i := strings.LastIndex(v, "=?")
	if i < 0 {
		return false
	}
	rest := v[i+2:]
	// charset ? enc ? text ?=
	parts := strings.SplitN(rest, "?", 3)
	if len(parts) < 3 {
		return true
	}
	return !strings.Contains(parts[2], "?=")
}

// decodeHeader decodes RFC 2047 encoded words leniently: words broken by
// folding, missing terminators, unknown charsets and raw 8-bit text are all
// decoded as far as they can be. ok is false when something had to be
// guessed.
func decodeHeader(s string) (string, bool) {
	ok := true
	var out strings.Builder
	var pendingCharset string
	var pending []byte
	flush := func() {
		if len(pending) > 0 {
			txt, good := toUTF8(pendingCharset, pending)
			ok = ok && good
			out.WriteString(txt)
			pending = nil
		}
	}
	writePlain := func(p string) {
		if p == "" {
			return
		}
		if !utf8.ValidString(p) {
			ok = false
			p, _ = toUTF8("windows-1252", []byte(p))
		}
		out.WriteString(p)
	}
	lastWasWord := false
	for len(s) > 0 {
		i := strings.Index(s, "=?")
		if i < 0 {
			flush()
			writePlain(s)
			break
		}
		cs, enc, text, rest, terminated, good := cutEncodedWord(s[i+2:])
		if !good {
			flush()
			writePlain(s[:i+2])
			s = s[i+2:]
			lastWasWord = false
			continue
		}
		// Linear white space between two encoded words is dropped.
		if before := s[:i]; !lastWasWord || strings.Trim(before, " \t\r\n") != "" {
			flush()
			writePlain(before)
		}
		raw, dok := decodeWordText(enc, text)
		ok = ok && dok && terminated
		if len(pending) > 0 && !strings.EqualFold(cs, pendingCharset) {
			flush()
		}
		// Adjacent words in one charset are converted together: a multi-byte
		// character or an ISO-2022 shift state may span two words.
		pendingCharset = cs
		pending = append(pending, raw...)
		lastWasWord = true
		s = rest
	}
	flush()
	return out.String(), ok
}

// cutEncodedWord parses "charset?E?text?=" (the part after "=?"). A missing
// "?=" makes the rest of the string the text. Folding white space inside the
// text is kept for the decoder to deal with.
func cutEncodedWord(s string) (charset string, enc byte, text, rest string, terminated, ok bool) {
	q := strings.IndexByte(s, '?')
	if q <= 0 || q > 64 || strings.ContainsAny(s[:q], " \t\"=") {
		return "", 0, "", "", false, false
	}
	charset = s[:q]
	if star := strings.IndexByte(charset, '*'); star >= 0 {
		charset = charset[:star] // RFC 2231 language suffix
	}
	s = s[q+1:]
	if len(s) < 2 || s[1] != '?' {
		return "", 0, "", "", false, false
	}
	enc = s[0] | 0x20
	if enc != 'q' && enc != 'b' {
		return "", 0, "", "", false, false
	}
	s = s[2:]
	end := strings.Index(s, "?=")
	if end < 0 {
		return charset, enc, strings.TrimSpace(s), "", false, true
	}
	return charset, enc, s[:end], s[end+2:], true, true
}

// decodeWordText decodes the text of one encoded word.
func decodeWordText(enc byte, text string) ([]byte, bool) {
	if enc == 'b' {
		return lenientBase64([]byte(text))
	}
	var out []byte
	ok := true
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '_':
			out = append(out, ' ')
		case c == '=' && i+2 < len(text) && isHex(text[i+1]) && isHex(text[i+2]):
			out = append(out, unhex(text[i+1])<<4|unhex(text[i+2]))
			i += 2
		case c == '\r' || c == '\n':
		case c == ' ' || c == '\t':
			// Folding inside a broken word: keep a single space.
			if len(out) == 0 || out[len(out)-1] != ' ' {
				out = append(out, ' ')
			}
			ok = false
		default:
			out = append(out, c)
		}
	}
	return out, ok
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// lenientBase64 decodes base64 ignoring anything outside the alphabet and
// missing or misplaced padding.
func lenientBase64(b []byte) ([]byte, bool) {
	clean := make([]byte, 0, len(b))
	ok := true
	for _, c := range b {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/':
			clean = append(clean, c)
		case c == '=', c == ' ', c == '\t', c == '\r', c == '\n':
		default:
			ok = false
		}
	}
	if len(clean)%4 == 1 {
		clean = clean[:len(clean)-1]
		ok = false
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, err := base64.RawStdEncoding.Decode(out, clean)
	if err != nil {
		ok = false
	}
	return out[:n], ok
}

// decodeText decodes a header value that is free text (Subject, names).
func decodeText(v string, problems *[]string, what string) string {
	s, ok := decodeHeader(v)
	if !ok {
		*problems = append(*problems, what+": badly encoded, decoded as far as possible")
	}
	return cleanLine(s)
}

// cleanLine makes s safe single-line text: valid UTF-8, no control
// characters, white space collapsed.
func cleanLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

var (
	angleAddrRe = regexp.MustCompile(`<\s*([^<>\s@]+@[^<>\s]+?)\s*>`)
	bareAddrRe  = regexp.MustCompile(`[^\s<>"(),;:\[\]]+@[^\s<>"(),;:\[\]]+`)
)

// parseAddressList parses an address-list, falling back to picking out
// anything that looks like an address when the header is malformed.
func parseAddressList(v string, problems *[]string, what string) []Address {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	p := mail.AddressParser{WordDecoder: wordDecoder}
	if list, err := p.ParseList(v); err == nil {
		out := make([]Address, 0, len(list))
		for _, a := range list {
			out = append(out, address(a.Name, a.Address))
		}
		return out
	}
	*problems = append(*problems, what+": malformed address list, recovered what could be read")
	var out []Address
	for _, item := range splitAddressItems(v) {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if a, err := p.Parse(item); err == nil {
			out = append(out, address(a.Name, a.Address))
			continue
		}
		if m := angleAddrRe.FindStringSubmatchIndex(item); m != nil {
			name := strings.Trim(strings.TrimSpace(item[:m[0]]), `"' `)
			out = append(out, address(name, item[m[2]:m[3]]))
			continue
		}
		if m := bareAddrRe.FindString(item); m != "" {
			out = append(out, Address{Email: m})
		}
	}
	return out
}

// fixName decodes what the address parser left encoded and cleans it.
func fixName(n string) string {
	if strings.Contains(n, "=?") || !utf8.ValidString(n) {
		n, _ = decodeHeader(n)
	}
	n = cleanLine(n)
	// "'Bob'" and "\"Bob\"" (quoted twice by the sender) show as Bob.
	for len(n) >= 2 && (n[0] == '\'' || n[0] == '"') && n[len(n)-1] == n[0] {
		n = strings.TrimSpace(n[1 : len(n)-1])
	}
	return n
}

// address builds an Address, dropping a display name that only repeats
// the address.
func address(name, email string) Address {
	name = fixName(name)
	if strings.EqualFold(name, email) || strings.EqualFold(name, "<"+email+">") {
		name = ""
	}
	return Address{Name: name, Email: email}
}

// splitAddressItems splits on commas outside quotes and angle brackets. An
// unclosed quote ends at the next '<' so the address after it is not lost.
func splitAddressItems(v string) []string {
	var items []string
	inQuote, inAngle := false, false
	start := 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '<' && !inQuote:
			inAngle = true
		case c == '<' && inQuote:
			inQuote, inAngle = false, true
		case c == '>':
			inAngle = false
		case c == ',' && !inQuote && !inAngle:
			items = append(items, v[start:i])
			start = i + 1
		}
	}
	return append(items, v[start:])
}

var msgIDRe = regexp.MustCompile(`<([^<>]*)>`)

// parseMsgIDs returns the message IDs in v without <>, in order, without
// duplicates. IDs without angle brackets are accepted when they contain '@'.
func parseMsgIDs(v string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		s = strings.Join(strings.Fields(s), "")
		if s == "" || seen[s] || !utf8.ValidString(s) {
			return
		}
		seen[s] = true
		out = append(out, s)
	}
	ms := msgIDRe.FindAllStringSubmatch(v, -1)
	for _, m := range ms {
		add(m[1])
	}
	if len(ms) == 0 {
		for _, f := range strings.Fields(v) {
			if strings.Contains(f, "@") {
				add(strings.Trim(f, "<>,;"))
			}
		}
	}
	return out
}

var dateLayouts = []string{
	"Mon, 2 Jan 2006 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05 MST",
	"Mon, 2 Jan 2006 15:04 -0700",
	"2 Jan 2006 15:04:05 -0700",
	"Mon, 2 Jan 06 15:04:05 -0700",
	"Mon Jan 2 15:04:05 2006",
	"Mon Jan 2 15:04:05 MST 2006",
	"Monday, January 2, 2006 3:04 PM",
	time.RFC3339,
	"2006-01-02 15:04:05 -0700",
	"2006-01-02 15:04:05",
}

var dateCommentRe = regexp.MustCompile(`\s*\([^)]*\)\s*$`)

// parseDate parses a Date header, trying common broken forms.
func parseDate(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if t, err := mail.ParseDate(v); err == nil {
		return t, nil
	}
	v = strings.Join(strings.Fields(dateCommentRe.ReplaceAllString(v, "")), " ")
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unparsable date %q", truncate(v, 64))
}

// truncate shortens s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
