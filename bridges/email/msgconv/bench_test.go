package msgconv

import (
	"bytes"
	"os"
	"testing"
)

// BenchmarkParse measures Parse plus ToMatrix on typical replies.
func BenchmarkParse(b *testing.B) {
	for _, name := range []string{"corpus/19-gmail-style-reply.eml", "corpus/20-outlook-style-reply.eml", "enmime/mail-html-mime-inline.raw"} {
		raw, err := os.ReadFile("testdata/" + name)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			up := &fakeUpload{}
			for b.Loop() {
				e, err := Parse(bytes.NewReader(raw), ParseOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ToMatrix(b.Context(), e, up.upload); err != nil {
					b.Fatal(err)
				}
				up.calls = up.calls[:0]
			}
		})
	}
}

// BenchmarkCompose measures composing a reply with HTML and an attachment.
func BenchmarkCompose(b *testing.B) {
	o := baseOutgoing()
	o.HTML = "<p>Tuesday <b>works</b>.</p>"
	o.Attachments = []Attachment{{Filename: "a.pdf", ContentType: "application/pdf", Data: bytes.Repeat([]byte("x"), 64<<10)}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compose(o); err != nil {
			b.Fatal(err)
		}
	}
}
