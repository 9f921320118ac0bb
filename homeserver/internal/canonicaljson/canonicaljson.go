// Package canonicaljson encodes JSON in the Matrix canonical form (spec appendix "Canonical JSON"): objects
// with keys sorted by code point, no insignificant whitespace, UTF-8 output with only the escapes JSON
// requires, and integers only, within [-(2^53)+1, 2^53-1]. Hashes and event IDs are computed over this form.
//
// It is a leaf package and must not import anything from the project.
package canonicaljson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxInt and MinInt bound the integers canonical JSON may carry (the spec's interoperable range).
const (
	MaxInt = 1<<53 - 1
	MinInt = -(1<<53 - 1)
)

// ErrNotCanonical is returned (wrapped) for input that has no canonical form: floats, exponents, integers out
// of range, invalid UTF-8 or malformed JSON.
var ErrNotCanonical = errors.New("not representable as canonical JSON")

// Marshal encodes v (anything encoding/json can marshal) in canonical form.
func Marshal(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal: %w", err)
	}
	return Canonicalize(raw)
}

// Canonicalize re-encodes the JSON text raw in canonical form.
func Canonicalize(raw []byte) ([]byte, error) {
	v, err := Decode(raw)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err = encode(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode parses raw into generic values (map[string]any, []any, string, bool, nil and json.Number for
// numbers), refusing anything canonical JSON cannot carry. Trailing data after the value is an error.
func Decode(raw []byte) (any, error) {
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: invalid UTF-8", ErrNotCanonical)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotCanonical, err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("%w: trailing data after JSON value", ErrNotCanonical)
	}
	if err := check(v); err != nil {
		return nil, err
	}
	return v, nil
}

// Int parses a JSON number as a canonical integer. Numbers written with a fraction or an exponent are
// accepted when their value is an integer in range (the spec's own example turns 1e10 into 10000000000).
func Int(n json.Number) (int64, error) {
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		// Bound the exponent before big.Rat expands it: 1e999999999 would allocate without limit.
		if len(n) > 64 {
			return 0, fmt.Errorf("%w: number %.20s... is too long", ErrNotCanonical, n)
		}
		if e := strings.IndexAny(string(n), "eE"); e >= 0 {
			exp, perr := strconv.Atoi(strings.TrimPrefix(string(n[e+1:]), "+"))
			if perr != nil || exp > 20 || exp < -20 {
				return 0, fmt.Errorf("%w: %s is not an integer in the allowed range", ErrNotCanonical, n)
			}
		}
		r, ok := new(big.Rat).SetString(string(n))
		if !ok || !r.IsInt() || !r.Num().IsInt64() {
			return 0, fmt.Errorf("%w: %s is not an integer in the allowed range", ErrNotCanonical, n)
		}
		i = r.Num().Int64()
	}
	if i > MaxInt || i < MinInt {
		return 0, fmt.Errorf("%w: %s is not an integer in the allowed range", ErrNotCanonical, n)
	}
	return i, nil
}

func check(v any) error {
	switch t := v.(type) {
	case json.Number:
		_, err := Int(t)
		return err
	case map[string]any:
		for _, e := range t {
			if err := check(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range t {
			if err := check(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// Encode writes the generic value v (as returned by Decode, or built from maps, slices, strings, bools,
// integers and json.Number) in canonical form.
func Encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := encode(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func encode(buf *bytes.Buffer, v any) error {
	switch t := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		if t {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case string:
		if !utf8.ValidString(t) {
			return fmt.Errorf("%w: invalid UTF-8 in string", ErrNotCanonical)
		}
		writeString(buf, t)
	case json.Number:
		i, err := Int(t)
		if err != nil {
			return err
		}
		buf.WriteString(strconv.FormatInt(i, 10))
	case int:
		return encode(buf, int64(t))
	case int64:
		if t > MaxInt || t < MinInt {
			return fmt.Errorf("%w: %d is out of range", ErrNotCanonical, t)
		}
		buf.WriteString(strconv.FormatInt(t, 10))
	case []any:
		buf.WriteByte('[')
		for i, e := range t {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := encode(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case []string:
		buf.WriteByte('[')
		for i, e := range t {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := encode(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		// Go compares strings bytewise; for valid UTF-8 that is code point order, which the spec requires.
		slices.Sort(keys)
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			if !utf8.ValidString(k) {
				return fmt.Errorf("%w: invalid UTF-8 in key", ErrNotCanonical)
			}
			writeString(buf, k)
			buf.WriteByte(':')
			if err := encode(buf, t[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case json.RawMessage:
		inner, err := Decode(t)
		if err != nil {
			return err
		}
		return encode(buf, inner)
	default:
		raw, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("marshal %T: %w", t, err)
		}
		inner, err := Decode(raw)
		if err != nil {
			return err
		}
		return encode(buf, inner)
	}
	return nil
}

const hexDigits = "0123456789abcdef"

// writeString writes s as a JSON string with the minimal escaping canonical JSON allows: the two-character
// escapes for \b \f \n \r \t " and \, \u00XX for other control characters, everything else verbatim.
func writeString(buf *bytes.Buffer, s string) {
	buf.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf.WriteString(s[start:i])
		switch c {
		case '"':
			buf.WriteString(`\"`)
		case '\\':
			buf.WriteString(`\\`)
		case '\b':
			buf.WriteString(`\b`)
		case '\f':
			buf.WriteString(`\f`)
		case '\n':
			buf.WriteString(`\n`)
		case '\r':
			buf.WriteString(`\r`)
		case '\t':
			buf.WriteString(`\t`)
		default:
			buf.WriteString(`\u00`)
			buf.WriteByte(hexDigits[c>>4])
			buf.WriteByte(hexDigits[c&0xf])
		}
		start = i + 1
	}
	buf.WriteString(s[start:])
	buf.WriteByte('"')
}
