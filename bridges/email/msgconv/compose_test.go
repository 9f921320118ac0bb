package msgconv

import (
	"bytes"
	"errors"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

func baseOutgoing() *Outgoing {
	return &Outgoing{
		From:       Address{Name: "Alice", Email: "alice@example.com"},
		To:         []Address{{Name: "Bob", Email: "bob@example.com"}},
		Subject:    "Re: Permit application",
		InReplyTo:  "parent@example.com",
		References: []string{"root@example.com", "parent@example.com"},
		MessageID:  "mx.abc@example.com",
		Date:       time.Date(2024, 4, 22, 10, 0, 0, 0, time.UTC),
		Text:       "Tuesday works.",
	}
}

// headerBlock returns the top-level header of a composed message.
func headerBlock(t *testing.T, msg []byte) string {
	t.Helper()
	i := bytes.Index(msg, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatalf("no header end in %q", msg)
	}
	return string(msg[:i+2])
}

// checkWellFormed asserts CRLF line endings, line lengths and that
// net/mail reads the message.
func checkWellFormed(t *testing.T, msg []byte) *mail.Message {
	t.Helper()
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			t.Fatalf("bare LF at %d", i)
		}
		if c == '\r' && (i+1 >= len(msg) || msg[i+1] != '\n') {
			t.Fatalf("bare CR at %d", i)
		}
	}
	for _, l := range strings.Split(string(msg), "\r\n") {
		if len(l) > 998 {
			t.Fatalf("line longer than 998: %d", len(l))
		}
	}
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("net/mail cannot read the message: %v\n%s", err, msg)
	}
	return m
}

func TestComposeThreadingHeaders(t *testing.T) {
	t.Parallel()
	msg, err := Compose(baseOutgoing())
	if err != nil {
		t.Fatal(err)
	}
	m := checkWellFormed(t, msg)
	for k, want := range map[string]string{
		"Message-Id":   "<mx.abc@example.com>",
		"In-Reply-To":  "<parent@example.com>",
		"References":   "<root@example.com> <parent@example.com>",
		"Subject":      "Re: Permit application",
		"From":         `"Alice" <alice@example.com>`,
		"To":           `"Bob" <bob@example.com>`,
		"Date":         "Mon, 22 Apr 2024 10:00:00 +0000",
		"Mime-Version": "1.0",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if !strings.HasPrefix(m.Header.Get("Content-Type"), "text/plain; charset=utf-8") {
		t.Errorf("Content-Type = %q", m.Header.Get("Content-Type"))
	}
}

func TestComposeDeterministicWithGivenID(t *testing.T) {
	t.Parallel()
	a, err := Compose(baseOutgoing())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Compose(baseOutgoing())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("a text-only message with a fixed ID and date should compose identically")
	}
}

func TestComposeEncodedWords(t *testing.T) {
	t.Parallel()
	o := baseOutgoing()
	o.Subject = "Re: Grüße aus der Behörde – " + strings.Repeat("lange Zeile ", 10)
	o.From.Name = "Jürgen Müller"
	o.To = []Address{{Name: "佐藤", Email: "sato@example.com"}, {Name: "Smith, John", Email: "john@example.com"}}
	msg, err := Compose(o)
	if err != nil {
		t.Fatal(err)
	}
	hdr := headerBlock(t, msg)
	for _, l := range strings.Split(hdr, "\r\n") {
		if len(l) > 78 {
			t.Errorf("header line not folded (%d): %q", len(l), l)
		}
		for _, c := range []byte(l) {
			if c >= 0x80 {
				t.Fatalf("raw 8-bit in header: %q", l)
			}
		}
	}
	e, err := Parse(bytes.NewReader(msg), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Subject != o.Subject[:len(o.Subject)-1] { // trailing space collapsed
		t.Errorf("Subject round trip: %q", e.Subject)
	}
	if e.From.Name != "Jürgen Müller" {
		t.Errorf("From name = %q", e.From.Name)
	}
	if len(e.To) != 2 || e.To[0].Name != "佐藤" || e.To[1].Name != "Smith, John" || e.To[1].Email != "john@example.com" {
		t.Errorf("To = %+v", e.To)
	}
}

// Named regression tests: each value would add a header field or end the
// header if it were written as is.
func TestComposeRefusesHeaderInjection(t *testing.T) {
	t.Parallel()
	cases := map[string]func(o *Outgoing){
		"subject CRLF Bcc":       func(o *Outgoing) { o.Subject = "hi\r\nBcc: victim@example.com" },
		"subject bare LF":        func(o *Outgoing) { o.Subject = "hi\nX-Evil: 1" },
		"subject bare CR":        func(o *Outgoing) { o.Subject = "hi\rX-Evil: 1" },
		"subject NUL":            func(o *Outgoing) { o.Subject = "hi\x00" },
		"from name":              func(o *Outgoing) { o.From.Name = "Alice\r\nBcc: victim@example.com" },
		"to name":                func(o *Outgoing) { o.To[0].Name = "Bob\nCc: victim@example.com" },
		"to address":             func(o *Outgoing) { o.To[0].Email = "bob@example.com\r\nBcc: victim@example.com" },
		"cc address":             func(o *Outgoing) { o.Cc = []Address{{Email: "c@example.com\nX: y"}} },
		"in-reply-to":            func(o *Outgoing) { o.InReplyTo = "a@b>\r\nBcc: victim@example.com" },
		"references":             func(o *Outgoing) { o.References = []string{"a@b", "c@d>\r\n\r\nbody"} },
		"message-id":             func(o *Outgoing) { o.MessageID = "x@y>\nBcc: v@example.com" },
		"content-id":             func(o *Outgoing) { o.Attachments = []Attachment{{Filename: "a", ContentID: "x\r\nX: y"}} },
		"smtp smuggling in name": func(o *Outgoing) { o.From.Name = "a\n.\r\nMAIL FROM:<x@y>" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			o := baseOutgoing()
			mutate(o)
			msg, err := Compose(o)
			if !errors.Is(err, ErrHeaderInjection) {
				t.Fatalf("err = %v, want ErrHeaderInjection; message:\n%s", err, msg)
			}
		})
	}
}

func TestComposeRefusesBadValues(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		mutate func(o *Outgoing)
		want   error
	}{
		"no recipients":          {func(o *Outgoing) { o.To = nil }, ErrNoRecipients},
		"address with space":     {func(o *Outgoing) { o.To[0].Email = "bob smith@example.com" }, ErrBadAddress},
		"address without at":     {func(o *Outgoing) { o.From.Email = "alice" }, ErrBadAddress},
		"address with angle":     {func(o *Outgoing) { o.To[0].Email = "bob@example.com>" }, ErrBadAddress},
		"message id with space":  {func(o *Outgoing) { o.MessageID = "a b@c" }, ErrBadMessageID},
		"reference with bracket": {func(o *Outgoing) { o.References = []string{"<a@b>"} }, ErrBadMessageID},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			o := baseOutgoing()
			c.mutate(o)
			if _, err := Compose(o); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestComposeFilenameCannotInject(t *testing.T) {
	t.Parallel()
	o := baseOutgoing()
	o.Attachments = []Attachment{{Filename: "evil\r\nContent-Type: text/html\r\n\r\n<script>.pdf", ContentType: "application/pdf\r\nX: y", Data: []byte("x")}}
	msg, err := Compose(o)
	if err != nil {
		t.Fatal(err)
	}
	checkWellFormed(t, msg)
	if strings.Contains(string(msg), "\r\nX: y") || strings.Contains(string(msg), "\r\n<script>") {
		t.Errorf("file name or type escaped its header:\n%s", msg)
	}
	e, err := Parse(bytes.NewReader(msg), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Attachments) != 1 || string(e.Attachments[0].Data) != "x" || strings.ContainsAny(e.Attachments[0].Filename, "\r\n") {
		t.Errorf("attachments = %+v", e.Attachments)
	}
}

func TestComposeRoundTrip(t *testing.T) {
	t.Parallel()
	o := baseOutgoing()
	o.Cc = []Address{{Name: "Clerk", Email: "clerk@example.com"}}
	o.Text = "Line one — with ünïcödé.\n\n" + strings.Repeat("A long line that needs soft breaks. ", 10) + "\nTrailing space   \n.\nA dot line above."
	o.HTML = "<p>Line one — <b>bold</b></p>"
	png := []byte("\x89PNG\r\n\x1a\n" + strings.Repeat("\x00\xff", 100))
	o.Attachments = []Attachment{
		{Filename: "Bericht äöüß.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.4\n%%EOF\n")},
		{Filename: "pixel.png", ContentType: "image/png", ContentID: "pixel@example.com", Inline: true, Data: png},
	}
	msg, err := Compose(o)
	if err != nil {
		t.Fatal(err)
	}
	checkWellFormed(t, msg)
	e, err := Parse(bytes.NewReader(msg), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Problems) != 0 {
		t.Errorf("problems: %v", e.Problems)
	}
	if e.MessageID != o.MessageID || !slices.Equal(e.InReplyTo, []string{o.InReplyTo}) || !slices.Equal(e.References, o.References) {
		t.Errorf("threading: %q %v %v", e.MessageID, e.InReplyTo, e.References)
	}
	if e.Subject != o.Subject || e.From != o.From || !slices.Equal(e.To, o.To) || !slices.Equal(e.Cc, o.Cc) || !e.Date.Equal(o.Date) {
		t.Errorf("envelope: %+v", e)
	}
	wantText := strings.ReplaceAll(o.Text, "Trailing space   \n", "Trailing space   \n")
	if e.Text != wantText {
		t.Errorf("Text:\n got %q\nwant %q", e.Text, wantText)
	}
	if e.HTML != "<p>Line one — <b>bold</b></p>" {
		t.Errorf("HTML = %q", e.HTML)
	}
	if len(e.Attachments) != 2 {
		t.Fatalf("attachments = %+v", e.Attachments)
	}
	a0, a1 := e.Attachments[0], e.Attachments[1]
	if a0.Filename != "Bericht äöüß.pdf" || a0.ContentType != "application/pdf" || string(a0.Data) != "%PDF-1.4\n%%EOF\n" {
		t.Errorf("attachment 0 = %+v", a0)
	}
	if a1.Filename != "pixel.png" || !bytes.Equal(a1.Data, png) || a1.ContentID != "pixel@example.com" || !a1.Inline {
		t.Errorf("attachment 1 = %+v", a1)
	}
}

func TestComposeHTMLOnlyGetsTextAlternative(t *testing.T) {
	t.Parallel()
	o := baseOutgoing()
	o.Text = ""
	o.HTML = "<p>Hello <a href=\"https://example.com/\">there</a></p><ul><li>one</li><li>two</li></ul>"
	msg, err := Compose(o)
	if err != nil {
		t.Fatal(err)
	}
	m := checkWellFormed(t, msg)
	if !strings.HasPrefix(m.Header.Get("Content-Type"), "multipart/alternative;") {
		t.Errorf("Content-Type = %q", m.Header.Get("Content-Type"))
	}
	e, err := Parse(bytes.NewReader(msg), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Text != "Hello there (https://example.com/)\n\n- one\n- two" {
		t.Errorf("Text = %q", e.Text)
	}
}

func TestComposeTrimsLongReferences(t *testing.T) {
	t.Parallel()
	o := baseOutgoing()
	o.References = nil
	for i := 0; i < 100; i++ {
		o.References = append(o.References, "ref"+strconv.Itoa(i)+"@example.com")
	}
	msg, err := Compose(o)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := Parse(bytes.NewReader(msg), ParseOptions{})
	if len(e.References) != maxReferences || e.References[0] != "ref0@example.com" || e.References[len(e.References)-1] != "ref99@example.com" {
		t.Errorf("References = %v", e.References)
	}
}

func TestMessageIDFor(t *testing.T) {
	t.Parallel()
	ev := id.EventID("$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg")
	a := MessageIDFor(ev, "example.com")
	if a != MessageIDFor(ev, "example.com") {
		t.Error("not deterministic")
	}
	if a == MessageIDFor("$other", "example.com") {
		t.Error("two events share a message ID")
	}
	if !validMsgID(a) || !strings.HasSuffix(a, "@example.com") {
		t.Errorf("invalid msg-id %q", a)
	}
	if _, err := mail.ParseAddress("<" + a + ">"); err != nil {
		t.Errorf("msg-id is not a dot-atom addr-spec: %q: %v", a, err)
	}
	got, ok := EventIDFromMessageID("<" + a + ">")
	if !ok || got != ev {
		t.Errorf("EventIDFromMessageID = %q, %v", got, ok)
	}
	if _, ok := EventIDFromMessageID("CAxyz@mail.gmail.com"); ok {
		t.Error("foreign message ID decoded as an event")
	}
	if b := MessageIDFor(ev, "bad domain\r\n"); !strings.HasSuffix(b, "@localhost") {
		t.Errorf("bad domain not replaced: %q", b)
	}
	o := baseOutgoing()
	o.MessageID = a
	if _, err := Compose(o); err != nil {
		t.Errorf("Compose refuses MessageIDFor's ID: %v", err)
	}
}
