package msgconv

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

// addFileSeeds adds every test message as a seed.
func addFileSeeds(f *testing.F) {
	for _, pat := range []string{"testdata/corpus/*.eml", "testdata/enmime/*.raw"} {
		files, _ := filepath.Glob(pat)
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte("Subject: =?utf-8?q?x\r\n\r\n =?utf-8?b?w6k=?=\r\nTo: a@b\r\n\r\nbody"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\n\r\nloop\r\n--x--"))
	f.Add([]byte("Content-Type: text/html\r\n\r\n<img src=x onerror=alert(1)><script>alert(1)</script><a href=\"javascript:alert(1)\">x</a>"))
	f.Add([]byte("Content-Type: application/ms-tnef\r\nContent-Transfer-Encoding: base64\r\n\r\neJ8+IgEAAQaQCAAEAAAAAAAB"))
}

func FuzzParse(f *testing.F) {
	addFileSeeds(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v for %d bytes", d, len(raw))
			}
		}()
		e, err := Parse(bytes.NewReader(raw), ParseOptions{MaxAttachmentBytes: 1 << 16})
		if err != nil {
			if e != nil {
				t.Fatal("error with a result")
			}
			if len(bytes.TrimSpace(raw)) != 0 {
				t.Fatalf("error on non-empty input: %v", err)
			}
			return
		}
		for name, s := range map[string]string{"Text": e.Text, "HTML": e.HTML, "Subject": e.Subject, "Quoted": e.Quoted,
			"From.Name": e.From.Name, "MessageID": e.MessageID} {
			if !utf8.ValidString(s) {
				t.Fatalf("%s not valid UTF-8: %q", name, s)
			}
		}
		if strings.ContainsAny(e.Subject, "\r\n") {
			t.Fatalf("Subject has a line break: %q", e.Subject)
		}
		assertSafeHTML(t, e.HTML)
		for _, a := range e.Attachments {
			if a.Dropped == "" && int64(len(a.Data)) != a.Size {
				t.Fatalf("attachment size %d, data %d", a.Size, len(a.Data))
			}
			if a.Dropped != "" && (a.Data != nil || a.Size <= 1<<16) {
				t.Fatalf("dropped attachment kept data or was small: %d", a.Size)
			}
			if a.Filename == "" || strings.ContainsAny(a.Filename, "/\\\r\n\x00") {
				t.Fatalf("bad filename %q", a.Filename)
			}
		}
		cm, err := ToMatrixWith(context.Background(), e, func(_ context.Context, data []byte, name, mt string) (id.ContentURIString, error) {
			return "mxc://fuzz/x", nil
		}, MatrixOptions{SubjectLine: true})
		if err != nil {
			t.Fatalf("ToMatrix: %v", err)
		}
		if len(cm.Parts) == 0 {
			t.Fatal("no parts")
		}
		for _, p := range cm.Parts {
			if !utf8.ValidString(p.Content.Body) || !utf8.ValidString(p.Content.FormattedBody) {
				t.Fatal("part not valid UTF-8")
			}
			assertSafeHTML(t, p.Content.FormattedBody)
			if strings.Contains(p.Content.FormattedBody, "cid:") && strings.Contains(p.Content.FormattedBody, "src=\"cid:") {
				t.Fatalf("cid: image left in formatted body: %q", p.Content.FormattedBody)
			}
		}
	})
}

func FuzzSanitizeHTML(f *testing.F) {
	for _, s := range []string{
		`<p onclick="x()">a</p>`, `<script>alert(1)</script>`, `<a href="javascript:alert(1)">x</a>`,
		`<img src="https://evil/x.png" alt="pic">`, `<img src="mxc://a/b" onerror="x">`, `<style>p{}</style><b>b</b>`,
		`<svg><script>alert(1)</script></svg>`, `<a href="jav&#x09;ascript:alert(1)">x</a>`, `<font color="#ff0000" style="x">r</font>`,
		`<details><summary>s</summary>d</details>`, `<table><tr><td onmouseover=x>1</td></tr></table>`, `<<script>script>`,
		"<p>\xff\xfe</p>", `<iframe src="https://x"></iframe>`, `<code class="language-go">x</code>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := SanitizeHTML(s)
		if !utf8.ValidString(s) {
			return // bluemonday passes invalid bytes through; callers give it UTF-8
		}
		if !utf8.ValidString(out) {
			t.Fatalf("output not valid UTF-8: %q", out)
		}
		assertSafeHTML(t, out)
		if strings.Contains(out, "<img") && !strings.Contains(out, `src="mxc://`) {
			t.Fatalf("image without an mxc source kept: %q", out)
		}
		txt := HTMLToText(s)
		if !utf8.ValidString(txt) {
			t.Fatalf("HTMLToText not valid UTF-8: %q", txt)
		}
	})
}

// FuzzCompose checks that no input can add a header field: every header
// line of the output is a field Compose writes or a folded continuation.
func FuzzCompose(f *testing.F) {
	f.Add("Re: hello", "Alice", "alice@example.com", "bob@example.com", "parent@example.com", "body", "a.pdf")
	f.Add("hi\r\nBcc: x@y", "A\nB", "a@b", "c@d", "x@y>\r\nX: y", "", "evil\r\nX-Y: z")
	f.Add("Grüße – 佐藤 "+strings.Repeat("x", 200), "Jürgen", "j@example.com", "k@example.com", "", "<p>hi</p>", "Bericht äöüß.pdf")
	f.Add("=?utf-8?q?x?=", "\"quoted\" \\name", "a@b", "c@d", "", ".\r\n.\r\n", "")
	allowed := map[string]bool{
		"Date": true, "From": true, "To": true, "Cc": true, "Subject": true, "Message-ID": true,
		"In-Reply-To": true, "References": true, "MIME-Version": true, "Content-Type": true,
	}
	f.Fuzz(func(t *testing.T, subject, name, from, to, inReplyTo, text, filename string) {
		o := &Outgoing{
			From: Address{Name: name, Email: from}, To: []Address{{Name: name, Email: to}},
			Subject: subject, InReplyTo: inReplyTo, References: []string{inReplyTo},
			MessageID: "fixed@example.com", Date: time.Unix(1700000000, 0), Text: text, HTML: text,
			Attachments: []Attachment{{Filename: filename, ContentType: filename, Data: []byte(text)}},
		}
		msg, err := Compose(o)
		if err != nil {
			return
		}
		for i, c := range msg {
			if c == '\n' && (i == 0 || msg[i-1] != '\r') || c == '\r' && (i+1 >= len(msg) || msg[i+1] != '\n') {
				t.Fatalf("bare CR or LF at %d", i)
			}
		}
		end := bytes.Index(msg, []byte("\r\n\r\n"))
		if end < 0 {
			t.Fatal("no end of header")
		}
		seen := map[string]int{}
		for _, l := range strings.Split(string(msg[:end]), "\r\n") {
			if l == "" {
				t.Fatal("empty header line")
			}
			if l[0] == ' ' || l[0] == '\t' {
				continue
			}
			k, _, ok := strings.Cut(l, ":")
			if !ok || !allowed[k] {
				t.Fatalf("unexpected header line %q", l)
			}
			seen[k]++
			if seen[k] > 1 {
				t.Fatalf("header %s twice", k)
			}
		}
		e, err := Parse(bytes.NewReader(msg), ParseOptions{})
		if err != nil {
			t.Fatalf("Parse of composed message: %v", err)
		}
		if e.MessageID != "fixed@example.com" || e.From.Email != from {
			t.Fatalf("envelope lost: %q %q", e.MessageID, e.From.Email)
		}
		if want := cleanLine(strings.ToValidUTF8(subject, "\uFFFD")); e.Subject != want {
			t.Fatalf("Subject %q, want %q", e.Subject, want)
		}
	})
}

func FuzzDecodeHeader(f *testing.F) {
	for _, s := range []string{"=?UTF-8?Q?h=C3=A9llo", "=?ISO-2022-JP?B?GyRCOjRGIxsoQg==?=", "=?x?q?", "=??=", "=?a?b?====?=", "\xff=?utf-8?b?_?="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, _ := decodeHeader(s)
		if !utf8.ValidString(out) {
			t.Fatalf("not valid UTF-8: %q", out)
		}
	})
}

func FuzzTNEF(f *testing.F) {
	f.Add([]byte("\x78\x9f\x3e\x22\x01\x00\x02\x02\x90\x06\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		atts, body, _ := parseTNEF(b)
		if !utf8.ValidString(body) {
			t.Fatal("body not UTF-8")
		}
		for _, a := range atts {
			if a.Filename == "" || len(a.Data) > len(b) {
				t.Fatalf("bad attachment %+v", a.Filename)
			}
		}
	})
}
