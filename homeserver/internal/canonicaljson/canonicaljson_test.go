package canonicaljson

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestCanonicalizeSpecExamples(t *testing.T) {
	t.Parallel()
	// The examples of the spec's appendix "Canonical JSON", plus escaping cases.
	for name, tc := range map[string]struct{ in, want string }{
		"empty":          {`{}`, `{}`},
		"two keys":       {`{"one": 1, "two": "Two"}`, `{"one":1,"two":"Two"}`},
		"sorted":         {`{"b": "2", "a": "1"}`, `{"a":"1","b":"2"}`},
		"compact sorted": {`{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
		"nested": {`{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {"display_name": "John Doe", "three_pids": [{"medium": "email", "address": "john.doe@example.org"}, {"medium": "msisdn", "address": "123456789"}]}}}`,
			`{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
		"unicode value":   {`{"a": "日本語"}`, `{"a":"日本語"}`},
		"unicode keys":    {`{"本": 2, "日": 1}`, `{"日":1,"本":2}`},
		"escaped unicode": {`{"a": "\u65E5"}`, `{"a":"日"}`},
		"null":            {`{"a": null}`, `{"a":null}`},
		"numbers":         {`{"a": -0, "b": 1e10}`, `{"a":0,"b":10000000000}`},
		"short escapes":   {`{"a":"\"\\\b\f\n\r\t"}`, `{"a":"\"\\\b\f\n\r\t"}`},
		"control escape":  {`{"a":"\u0001\u001f"}`, `{"a":"\u0001\u001f"}`},
		"no html escape":  {`{"a":"<&>\u2028"}`, "{\"a\":\"<&>\u2028\"}"},
		"solidus":         {`{"a":"\/"}`, `{"a":"/"}`},
		"astral":          {`{"a":"\ud83d\ude00"}`, `{"a":"😀"}`},
		"array":           {` [ 1 , "x" , [ ] , { } ] `, `[1,"x",[],{}]`},
		"max int":         {`9007199254740991`, `9007199254740991`},
		"min int":         {`-9007199254740991`, `-9007199254740991`},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tc.in))
			if err != nil {
				t.Fatalf("Canonicalize: %v", err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestCanonicalizeRefuses(t *testing.T) {
	t.Parallel()
	for name, in := range map[string]string{
		"float":        `{"a": 1.5}`,
		"too big":      `9007199254740992`,
		"too small":    `-9007199254740992`,
		"huge exp":     `1e400`,
		"invalid utf8": "{\"a\":\"\xff\"}",
		"trailing":     `{} {}`,
		"truncated":    `{"a":`,
		"bare word":    `nope`,
	} {
		t.Run(name, func(t *testing.T) {
			if out, err := Canonicalize([]byte(in)); err == nil {
				t.Fatalf("accepted as %s", out)
			} else if !errors.Is(err, ErrNotCanonical) {
				t.Fatalf("error %v is not ErrNotCanonical", err)
			}
		})
	}
}

func TestMarshalStruct(t *testing.T) {
	t.Parallel()
	got, err := Marshal(struct {
		Z string         `json:"z"`
		A map[string]int `json:"a"`
	}{"<x>", map[string]int{"b": 2, "a": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":{"a":1,"b":2},"z":"<x>"}`; string(got) != want {
		t.Fatalf("got %s want %s", got, want)
	}
}

// normalise decodes canonical-acceptable JSON into values where numbers are int64, for equality checks.
func normalise(t *testing.T, v any) any {
	switch x := v.(type) {
	case json.Number:
		i, err := Int(x)
		if err != nil {
			t.Fatalf("number %s: %v", x, err)
		}
		return i
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalise(t, e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalise(t, e)
		}
		return out
	}
	return v
}

// checkSortedKeys walks the token stream of canonical output and checks every object's keys are strictly
// increasing.
func checkSortedKeys(t *testing.T, data []byte) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		object  bool
		lastKey *string
		wantKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k := tok.(string)
			if top.lastKey != nil && *top.lastKey >= k {
				t.Fatalf("keys out of order: %q then %q in %s", *top.lastKey, k, data)
			}
			top.lastKey, top.wantKey = &k, false
			continue
		}
		if top != nil && top.object {
			top.wantKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"one": 1, "two": "Two"}`, `{"b":"2","a":"1"}`, `{"本": 2, "日": 1}`, `{"a": -0, "b": 1e10}`,
		`{"a":"\u0000\"\\"}`, `[1,[2,[3,{"x":null}]]]`, `{"a":{"b":{"c":[true,false]}}}`, `1.5`, `"\ud800"`,
		`{"a":1,"a":2}`, `{"é":1,"e":2,"z":3,"Z":4}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonicalize(in)
		if err != nil {
			return
		}
		// Idempotent.
		again, err := Canonicalize(out)
		if err != nil {
			t.Fatalf("canonical output refused: %v\n%s", err, out)
		}
		if !bytes.Equal(out, again) {
			t.Fatalf("not idempotent:\n%s\n%s", out, again)
		}
		// Valid JSON that parses back to the same value as the input.
		if !json.Valid(out) {
			t.Fatalf("invalid JSON output %q", out)
		}
		vin, err := Decode(in)
		if err != nil {
			t.Fatalf("Decode of accepted input: %v", err)
		}
		vout, err := Decode(out)
		if err != nil {
			t.Fatalf("Decode of output: %v", err)
		}
		if !reflect.DeepEqual(normalise(t, vin), normalise(t, vout)) {
			t.Fatalf("value changed:\nin  %s\nout %s", in, out)
		}
		// Keys sorted, no insignificant whitespace outside strings.
		checkSortedKeys(t, out)
		var compact bytes.Buffer
		if err = json.Compact(&compact, out); err != nil || !bytes.Equal(compact.Bytes(), out) {
			t.Fatalf("output has insignificant whitespace: %s", out)
		}
	})
}
