package msgconv

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// parseMediaType parses a Content-Type or Content-Disposition value
// leniently. The value is lower-cased; parameter names are lower-cased and
// RFC 2231 continuations and charsets are resolved.
func parseMediaType(v string) (string, map[string]string) {
	items := splitParams(v)
	mt := ""
	if len(items) > 0 {
		first := strings.TrimSpace(items[0])
		items = items[1:]
		// A missing ';' ("application/pdf name=x.pdf"): the rest is a parameter.
		if i := strings.IndexAny(first, " \t"); i > 0 && strings.Contains(first[i:], "=") {
			items = append([]string{first[i:]}, items...)
			first = first[:i]
		}
		mt = strings.ToLower(strings.Trim(first, `"'`))
	}
	params := map[string]string{}
	type piece struct {
		n        int
		extended bool
		value    string
	}
	continued := map[string][]piece{}
	for _, it := range items {
		eq := strings.IndexByte(it, '=')
		if eq <= 0 {
			continue
		}
		key := strings.ToLower(strings.TrimSpace(it[:eq]))
		val := unquoteParam(strings.TrimSpace(it[eq+1:]))
		star := strings.IndexByte(key, '*')
		if star < 0 {
			if _, dup := params[key]; !dup {
				params[key] = val
			}
			continue
		}
		base, suffix := key[:star], key[star+1:]
		p := piece{value: val}
		switch {
		case suffix == "":
			p.extended = true
		default:
			p.extended = strings.HasSuffix(suffix, "*")
			n, err := strconv.Atoi(strings.TrimSuffix(suffix, "*"))
			if err != nil || n < 0 || n > 1000 {
				continue
			}
			p.n = n
		}
		continued[base] = append(continued[base], p)
	}
	for base, ps := range continued {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].n < ps[j].n })
		charset := ""
		var raw []byte
		for i, p := range ps {
			v := p.value
			if p.extended {
				if i == 0 {
					// charset'language'value
					if parts := strings.SplitN(v, "'", 3); len(parts) == 3 {
						charset, v = parts[0], parts[2]
					}
				}
				raw = append(raw, percentDecode(v)...)
			} else {
				raw = append(raw, v...)
			}
		}
		s, _ := toUTF8(charset, raw)
		params[base] = s
	}
	return mt, params
}

// splitParams splits on ';' outside double quotes.
func splitParams(v string) []string {
	var out []string
	inQuote := false
	start := 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			if inQuote {
				i++
			}
		case '"':
			inQuote = !inQuote
		case ';':
			if !inQuote {
				out = append(out, v[start:i])
				start = i + 1
			}
		}
	}
	return append(out, v[start:])
}

// unquoteParam removes surrounding quotes and backslash escapes; an unclosed
// quote runs to the end.
func unquoteParam(v string) string {
	if !strings.HasPrefix(v, `"`) {
		return v
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		if c == '\\' && i+1 < len(v) {
			i++
			b.WriteByte(v[i])
			continue
		}
		if c == '"' {
			break
		}
		b.WriteByte(c)
	}
	return b.String()
}

// percentDecode decodes %XX escapes, leaving malformed ones as they are.
func percentDecode(s string) []byte {
	if u, err := url.PathUnescape(s); err == nil {
		return []byte(u)
	}
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		out = append(out, s[i])
	}
	return out
}

// splitMultipart cuts a multipart body into its parts. A missing closing
// delimiter, a missing boundary and text after the close are tolerated and
// recorded in problems.
func splitMultipart(body []byte, boundary string, problems *[]string) [][]byte {
	delim := []byte("--" + boundary)
	var parts [][]byte
	start := -1 // start of the current part's content
	closed := false
	pos := 0
	for pos < len(body) {
		line, next := nextLine(body, pos)
		if bytes.HasPrefix(line, delim) {
			tail := bytes.TrimRight(line[len(delim):], " \t")
			isClose := bytes.Equal(tail, []byte("--"))
			if len(tail) == 0 || isClose {
				if start >= 0 {
					end := pos
					// The line break before the delimiter belongs to it.
					if end > start && body[end-1] == '\n' {
						end--
						if end > start && body[end-1] == '\r' {
							end--
						}
					}
					parts = append(parts, body[start:end])
				}
				if isClose {
					closed = true
					break
				}
				start = next
			}
		}
		pos = next
	}
	if start < 0 {
		*problems = append(*problems, "multipart boundary not found")
		return nil
	}
	if !closed {
		*problems = append(*problems, "multipart without its closing boundary")
		if start < len(body) {
			parts = append(parts, body[start:])
		}
	}
	return parts
}

// filterBase64 passes only base64 alphabet bytes (and padding) through, so
// stray characters in a body do not stop the decoder.
type filterBase64 struct {
	r   io.Reader
	buf []byte
	bad bool
}

func (f *filterBase64) Read(p []byte) (int, error) {
	if cap(f.buf) < len(p) {
		f.buf = make([]byte, len(p))
	}
	for {
		n, err := f.r.Read(f.buf[:len(p)])
		k := 0
		for _, c := range f.buf[:n] {
			switch {
			case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/':
				p[k] = c
				k++
			case c == '=' || c == '\r' || c == '\n' || c == ' ' || c == '\t':
			default:
				f.bad = true
			}
		}
		if k > 0 || err != nil {
			return k, err
		}
	}
}

// decodeTransfer returns a reader of the body decoded according to its
// Content-Transfer-Encoding. Padding is ignored (decoding is unpadded) so a
// base64 body that stops early still yields what it has.
func decodeTransfer(cte string, body []byte) (io.Reader, *filterBase64) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		f := &filterBase64{r: bytes.NewReader(body)}
		return base64.NewDecoder(base64.RawStdEncoding, f), f
	case "quoted-printable":
		return bytes.NewReader(decodeQP(body)), nil
	default:
		return bytes.NewReader(body), nil
	}
}

// decodeQP decodes quoted-printable leniently: malformed escapes stay as
// they are, soft line breaks are removed, trailing white space is kept.
func decodeQP(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '=' {
			out = append(out, c)
			continue
		}
		switch {
		case i+2 < len(b) && isHex(b[i+1]) && isHex(b[i+2]):
			out = append(out, unhex(b[i+1])<<4|unhex(b[i+2]))
			i += 2
		case i+1 < len(b) && b[i+1] == '\n':
			i++
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			i += 2
		default:
			// "=" followed by white space then a line break is a soft break too.
			j := i + 1
			for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
				j++
			}
			if j < len(b) && (b[j] == '\n' || b[j] == '\r') {
				if b[j] == '\r' && j+1 < len(b) && b[j+1] == '\n' {
					j++
				}
				i = j
				continue
			}
			if j == len(b) {
				i = j
				continue
			}
			out = append(out, c)
		}
	}
	return out
}
