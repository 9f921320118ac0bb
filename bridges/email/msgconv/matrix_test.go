package msgconv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func pngBytes(t *testing.T, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewRGBA(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestToMatrixTextAndSubjectLine(t *testing.T) {
	t.Parallel()
	e := &Email{Subject: "Permit <2024>", Text: "Hello\nworld"}
	parts := toMatrix(t, e, MatrixOptions{})
	if len(parts) != 1 || parts[0].MsgType != event.MsgText || parts[0].Body != "Hello\nworld" || parts[0].FormattedBody != "" {
		t.Fatalf("without subject line: %+v", parts[0])
	}
	parts = toMatrix(t, e, MatrixOptions{SubjectLine: true})
	if parts[0].Body != "Permit <2024>\n\nHello\nworld" {
		t.Errorf("body = %q", parts[0].Body)
	}
	if parts[0].Format != event.FormatHTML || parts[0].FormattedBody != "<p><strong>Permit &lt;2024&gt;</strong></p>Hello<br>world" {
		t.Errorf("formatted = %q", parts[0].FormattedBody)
	}
}

func TestToMatrixHTMLOnlyAndEmpty(t *testing.T) {
	t.Parallel()
	parts := toMatrix(t, &Email{HTML: "<p>a <b>b</b></p>"}, MatrixOptions{})
	if parts[0].Body != "a b" || parts[0].FormattedBody != "<p>a <b>b</b></p>" {
		t.Errorf("html only: %+v", parts[0])
	}
	parts = toMatrix(t, &Email{}, MatrixOptions{})
	if len(parts) != 1 || parts[0].Body != "(empty message)" {
		t.Errorf("empty: %+v", parts)
	}
}

func TestToMatrixAttachments(t *testing.T) {
	t.Parallel()
	img := pngBytes(t, 3, 2)
	e := &Email{
		Text: "see files",
		HTML: `<p>see <img src="cid:logo@x" alt="logo"> files <img src="cid:missing@x" alt="gone"></p>`,
		Attachments: []Attachment{
			{Filename: "logo.png", ContentType: "image/png", ContentID: "logo@x", Inline: true, Data: img, Size: int64(len(img))},
			{Filename: "report.pdf", ContentType: "application/pdf", Data: []byte("%PDF"), Size: 4},
			{Filename: "clip.mp4", ContentType: "video/mp4", Data: []byte("v"), Size: 1},
			{Filename: "song.ogg", ContentType: "audio/ogg", Data: []byte("a"), Size: 1},
			{Filename: "scan.tiff", ContentType: "image/tiff", Size: 30 << 20, Dropped: "larger than the 10.0 MiB limit"},
			{Filename: "refused.bin", ContentType: "application/octet-stream", Data: []byte("x"), Size: 1},
			{Filename: "photo.jpg", ContentType: "application/octet-stream", Data: []byte("j"), Size: 1},
		},
	}
	up := &fakeUpload{fail: map[string]bool{"refused.bin": true}}
	cm, err := ToMatrix(t.Context(), e, up.upload)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		id      string
		msgType event.MessageType
		body    string
	}
	wants := []want{
		{"", event.MsgText, "see files"},
		{"att-1", event.MsgFile, "report.pdf"},
		{"att-2", event.MsgVideo, "clip.mp4"},
		{"att-3", event.MsgAudio, "song.ogg"},
		{"att-6", event.MsgImage, "photo.jpg"},
		{"dropped", event.MsgNotice, ""},
	}
	if len(cm.Parts) != len(wants) {
		for _, p := range cm.Parts {
			t.Logf("part %q %s %q", p.ID, p.Content.MsgType, p.Content.Body)
		}
		t.Fatalf("%d parts, want %d", len(cm.Parts), len(wants))
	}
	for i, w := range wants {
		p := cm.Parts[i]
		if string(p.ID) != w.id || p.Content.MsgType != w.msgType || w.body != "" && p.Content.Body != w.body {
			t.Errorf("part %d = %q %s %q, want %+v", i, p.ID, p.Content.MsgType, p.Content.Body, w)
		}
	}
	// The inline image is shown in the formatted body, the unknown cid as alt text.
	fb := cm.Parts[0].Content.FormattedBody
	if !strings.Contains(fb, `<img src="mxc://test/`) || strings.Contains(fb, "cid:") || !strings.Contains(fb, "[gone]") {
		t.Errorf("formatted body = %q", fb)
	}
	if cm.Parts[4].Content.Info.MimeType != "image/jpeg" {
		t.Errorf("type by name = %q", cm.Parts[4].Content.Info.MimeType)
	}
	notice := cm.Parts[5].Content.Body
	for _, s := range []string{"scan.tiff (30.0 MiB): larger than the 10.0 MiB limit", "refused.bin (1 byte): upload failed: M_TOO_LARGE"} {
		if !strings.Contains(notice, s) {
			t.Errorf("notice %q lacks %q", notice, s)
		}
	}
	if len(up.calls) != 6 {
		t.Errorf("uploads = %v", up.calls)
	}
}

func TestToMatrixImageInfo(t *testing.T) {
	t.Parallel()
	img := pngBytes(t, 7, 5)
	parts := toMatrix(t, &Email{Attachments: []Attachment{{Filename: "a.png", ContentType: "image/png", Data: img, Size: int64(len(img))}}}, MatrixOptions{})
	if len(parts) != 1 {
		t.Fatalf("an attachment-only mail should have no empty text part: %+v", parts)
	}
	info := parts[0].Info
	if parts[0].MsgType != event.MsgImage || info.Width != 7 || info.Height != 5 || info.Size != len(img) || info.MimeType != "image/png" {
		t.Errorf("info = %+v", info)
	}
}

func TestToMatrixContextCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	e := &Email{Text: "x", Attachments: []Attachment{{Filename: "a", Data: []byte("a"), Size: 1}}}
	_, err := ToMatrix(ctx, e, func(ctx context.Context, _ []byte, _, _ string) (id.ContentURIString, error) {
		return "", ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func TestToMatrixLongBody(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("word <&> ", 20000)
	parts := toMatrix(t, &Email{Text: long, HTML: "<p>" + long + "</p>"}, MatrixOptions{})
	if jsonLen(parts[0].Body) > DefaultMaxBodyBytes || parts[0].FormattedBody != "" || !strings.HasSuffix(parts[0].Body, "[… message shortened]") {
		t.Errorf("len %d, formatted %d", jsonLen(parts[0].Body), len(parts[0].FormattedBody))
	}
	// The whole event content stays under the spec's 64 KiB.
	if b, _ := json.Marshal(parts[0]); len(b) > 60000 {
		t.Errorf("content is %d bytes as JSON", len(b))
	}
	// A medium body keeps its formatting.
	mid := strings.Repeat("word ", 2000)
	parts = toMatrix(t, &Email{Text: mid, HTML: "<p>" + mid + "</p>"}, MatrixOptions{})
	if parts[0].Body != mid || parts[0].FormattedBody == "" {
		t.Errorf("medium body changed: %d / %d", len(parts[0].Body), len(parts[0].FormattedBody))
	}
}

func TestFromMatrix(t *testing.T) {
	t.Parallel()
	reply := &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: "$parent"}}
	cases := []struct {
		name      string
		content   *event.MessageEventContent
		text, htm string
	}{
		{"plain", &event.MessageEventContent{MsgType: event.MsgText, Body: "hello"}, "hello", ""},
		{"html", &event.MessageEventContent{MsgType: event.MsgText, Body: "**b**", Format: event.FormatHTML, FormattedBody: "<strong>b</strong>"}, "**b**", "<strong>b</strong>"},
		{"reply fallback stripped", &event.MessageEventContent{MsgType: event.MsgText, RelatesTo: reply,
			Body:          "> <@bob:x> question\n> more\n\nanswer",
			Format:        event.FormatHTML,
			FormattedBody: `<mx-reply><blockquote><a href="https://matrix.to/#/$p">In reply to</a> question</blockquote></mx-reply>answer`},
			"answer", "answer"},
		{"unsafe html sanitised", &event.MessageEventContent{MsgType: event.MsgText, Body: "x", Format: event.FormatHTML, FormattedBody: `<p onclick="y">x</p><script>z</script>`}, "x", "<p>x</p>"},
		{"mxc image becomes alt", &event.MessageEventContent{MsgType: event.MsgText, Body: "x", Format: event.FormatHTML, FormattedBody: `a <img src="mxc://s/m" alt=":cat:">`}, "x", "a [:cat:]"},
		{"emote", &event.MessageEventContent{MsgType: event.MsgEmote, Body: "waves"}, "* waves", ""},
		{"file without caption", &event.MessageEventContent{MsgType: event.MsgFile, Body: "a.pdf", FileName: "a.pdf"}, "", ""},
		{"file with caption", &event.MessageEventContent{MsgType: event.MsgImage, Body: "look at this", FileName: "a.png"}, "look at this", ""},
		{"nil", nil, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text, h := FromMatrix(c.content)
			if text != c.text || h != c.htm {
				t.Errorf("FromMatrix = %q, %q; want %q, %q", text, h, c.text, c.htm)
			}
		})
	}
}

// TestMatrixToEmailToMatrix: a Matrix message composed as an email and
// parsed back gives the same text and formatting.
func TestMatrixToEmailToMatrix(t *testing.T) {
	t.Parallel()
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: "Hello *there*\n\nsecond line",
		Format: event.FormatHTML, FormattedBody: "<p>Hello <em>there</em></p><p>second line</p>"}
	text, h := FromMatrix(content)
	o := baseOutgoing()
	o.Text, o.HTML = text, h
	msg, err := Compose(o)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Parse(bytes.NewReader(msg), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	parts := toMatrix(t, e, MatrixOptions{})
	if parts[0].Body != content.Body || parts[0].FormattedBody != content.FormattedBody {
		t.Errorf("round trip: %q / %q", parts[0].Body, parts[0].FormattedBody)
	}
}
