package msgconv

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/gogs/chardet"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
)

// lookupCharset finds a decoder for a MIME charset label. The WHATWG labels
// come first because they are what mail software actually means: "gb2312" is
// decoded as GBK, "iso-8859-1" as Windows-1252 and "ks_c_5601-1987" as EUC-KR,
// each a superset of the label's nominal charset.
func lookupCharset(name string) (encoding.Encoding, bool) {
	name = strings.ToLower(strings.Trim(strings.TrimSpace(name), `"'`))
	// Seen in the wild: charset="charset=us-ascii".
	name = strings.Trim(strings.TrimPrefix(name, "charset="), `"'`)
	switch name {
	case "", "us-ascii", "ascii", "utf-8", "utf8", "unicode-1-1-utf-8", "x-unknown", "unknown-8bit", "default":
		return nil, true
	}
	if enc, err := htmlindex.Get(name); err == nil && enc != nil {
		return enc, true
	}
	if enc, err := ianaindex.MIME.Encoding(name); err == nil && enc != nil {
		return enc, true
	}
	if enc, err := ianaindex.IANA.Encoding(name); err == nil && enc != nil {
		return enc, true
	}
	return nil, false
}

// toUTF8 converts b from charset to UTF-8. Unknown charsets and bytes that
// are not valid in the named charset fall back to UTF-8 when b is valid UTF-8
// and to Windows-1252 otherwise; ok is false then.
func toUTF8(charset string, b []byte) (string, bool) {
	enc, known := lookupCharset(charset)
	if known && enc != nil {
		out, err := enc.NewDecoder().Bytes(b)
		if err == nil {
			return strings.ToValidUTF8(string(out), "\uFFFD"), true
		}
	}
	if utf8.Valid(b) {
		return string(b), known
	}
	out, _ := charmap.Windows1252.NewDecoder().Bytes(b)
	return string(out), false
}

// minDetectBytes is the least text worth guessing a charset from; shorter
// samples give the detector too little to go on.
const minDetectBytes = 64

// bodyToUTF8 is toUTF8 for message bodies: when the declared charset does
// not fit the bytes (or none is declared) and they are not UTF-8 either, the
// charset is guessed from the content before falling back to Windows-1252.
func bodyToUTF8(charset string, b []byte) (string, bool) {
	enc, known := lookupCharset(charset)
	if known && enc != nil {
		if out, err := enc.NewDecoder().Bytes(b); err == nil {
			return strings.ToValidUTF8(string(out), "\uFFFD"), true
		}
	}
	if utf8.Valid(b) {
		return string(b), known
	}
	if len(b) >= minDetectBytes {
		sample := b
		if len(sample) > 64<<10 {
			sample = sample[:64<<10]
		}
		if r, err := chardet.NewTextDetector().DetectBest(sample); err == nil && r.Confidence >= 50 {
			if enc, ok := lookupCharset(r.Charset); ok && enc != nil {
				if out, err := enc.NewDecoder().Bytes(b); err == nil {
					return strings.ToValidUTF8(string(out), "\uFFFD"), false
				}
			}
		}
	}
	out, _ := charmap.Windows1252.NewDecoder().Bytes(b)
	return string(out), false
}

// charsetReader adapts toUTF8 for mime.WordDecoder.
func charsetReader(charset string, input io.Reader) (io.Reader, error) {
	enc, known := lookupCharset(charset)
	if !known {
		return nil, fmt.Errorf("unknown charset %q", charset)
	}
	if enc == nil {
		return input, nil
	}
	return enc.NewDecoder().Reader(input), nil
}

// wordDecoder decodes encoded words in address display names.
var wordDecoder = &mime.WordDecoder{CharsetReader: charsetReader}

// metaCharset finds a charset declared in the first bytes of an HTML
// document (<meta charset=...> or http-equiv Content-Type).
func metaCharset(b []byte) string {
	if len(b) > 2048 {
		b = b[:2048]
	}
	lower := bytes.ToLower(b)
	i := bytes.Index(lower, []byte("charset="))
	if i < 0 {
		return ""
	}
	rest := lower[i+len("charset="):]
	rest = bytes.TrimLeft(rest, `"' `)
	end := bytes.IndexAny(rest, `"'; />`)
	if end < 0 {
		return ""
	}
	return string(rest[:end])
}
