package msgconv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// goldenAttachment summarises an attachment for golden files.
type goldenAttachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	ContentID   string `json:"content_id,omitempty"`
	Inline      bool   `json:"inline,omitempty"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256,omitempty"`
	Dropped     string `json:"dropped,omitempty"`
}

// goldenPart summarises one converted Matrix part.
type goldenPart struct {
	ID            string `json:"id"`
	MsgType       string `json:"msgtype"`
	Body          string `json:"body"`
	FormattedBody string `json:"formatted_body,omitempty"`
	FileName      string `json:"filename,omitempty"`
	URL           string `json:"url,omitempty"`
	MimeType      string `json:"mimetype,omitempty"`
	Size          int    `json:"size,omitempty"`
}

type goldenResult struct {
	MessageID     string             `json:"message_id"`
	InReplyTo     []string           `json:"in_reply_to,omitempty"`
	References    []string           `json:"references,omitempty"`
	From          Address            `json:"from"`
	To            []Address          `json:"to,omitempty"`
	Cc            []Address          `json:"cc,omitempty"`
	ReplyTo       []Address          `json:"reply_to,omitempty"`
	Subject       string             `json:"subject"`
	Date          string             `json:"date"`
	AutoSubmitted bool               `json:"auto_submitted,omitempty"`
	Text          string             `json:"text"`
	Quoted        string             `json:"quoted,omitempty"`
	HTML          string             `json:"html,omitempty"`
	Attachments   []goldenAttachment `json:"attachments,omitempty"`
	Problems      []string           `json:"problems,omitempty"`
	Matrix        []goldenPart       `json:"matrix"`
}

// fakeUpload returns a content-addressed mxc URI and records the calls.
type fakeUpload struct {
	calls []string
	fail  map[string]bool
}

func (f *fakeUpload) upload(_ context.Context, data []byte, name, mimeType string) (id.ContentURIString, error) {
	f.calls = append(f.calls, name+" "+mimeType)
	if f.fail[name] {
		return "", errUploadRefused
	}
	sum := sha256.Sum256(data)
	return id.ContentURIString("mxc://test/" + hex.EncodeToString(sum[:6])), nil
}

var errUploadRefused = &uploadError{"M_TOO_LARGE: refused"}

type uploadError struct{ s string }

func (e *uploadError) Error() string { return e.s }

// goldenOptions is what golden tests parse with: 1 MiB keeps test data small
// and exercises the drop path.
var goldenOptions = ParseOptions{MaxAttachmentBytes: 1 << 20}

func summarise(t *testing.T, e *Email) goldenResult {
	t.Helper()
	g := goldenResult{
		MessageID: e.MessageID, InReplyTo: e.InReplyTo, References: e.References,
		From: e.From, To: e.To, Cc: e.Cc, ReplyTo: e.ReplyTo, Subject: e.Subject,
		AutoSubmitted: e.AutoSubmitted, Text: e.Text, Quoted: e.Quoted, HTML: e.HTML,
		Problems: e.Problems,
	}
	if !e.Date.IsZero() {
		g.Date = e.Date.UTC().Format(time.RFC3339)
	}
	for _, a := range e.Attachments {
		ga := goldenAttachment{Filename: a.Filename, ContentType: a.ContentType, ContentID: a.ContentID,
			Inline: a.Inline, Size: a.Size, Dropped: a.Dropped}
		if a.Data != nil {
			sum := sha256.Sum256(a.Data)
			ga.SHA256 = hex.EncodeToString(sum[:])
		}
		g.Attachments = append(g.Attachments, ga)
	}
	up := &fakeUpload{}
	cm, err := ToMatrixWith(t.Context(), e, up.upload, MatrixOptions{SubjectLine: true})
	if err != nil {
		t.Fatalf("ToMatrix: %v", err)
	}
	for _, p := range cm.Parts {
		c := p.Content
		gp := goldenPart{ID: string(p.ID), MsgType: string(c.MsgType), Body: c.Body, FormattedBody: c.FormattedBody,
			FileName: c.FileName, URL: string(c.URL)}
		if c.Info != nil {
			gp.MimeType, gp.Size = c.Info.MimeType, c.Info.Size
		}
		g.Matrix = append(g.Matrix, gp)
	}
	return g
}

// checkInvariants holds for every parsed message.
func checkInvariants(t *testing.T, e *Email) {
	t.Helper()
	for name, s := range map[string]string{"text": e.Text, "html": e.HTML, "subject": e.Subject, "quoted": e.Quoted,
		"from name": e.From.Name} {
		if !isValidUTF8(s) {
			t.Errorf("%s is not valid UTF-8: %q", name, s)
		}
	}
	assertSafeHTML(t, e.HTML)
	for _, a := range e.Attachments {
		if a.Dropped == "" && int64(len(a.Data)) != a.Size {
			t.Errorf("attachment %q: size %d but %d bytes kept", a.Filename, a.Size, len(a.Data))
		}
		if a.Filename == "" {
			t.Errorf("attachment without a file name: %+v", a.ContentType)
		}
	}
}

func TestGolden(t *testing.T) {
	var files []string
	for _, pat := range []string{"testdata/corpus/*.eml", "testdata/enmime/*.raw"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 45 {
		t.Fatalf("only %d test messages found", len(files))
	}
	for _, f := range files {
		name := filepath.Base(filepath.Dir(f)) + "-" + strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			e, err := Parse(bytes.NewReader(raw), goldenOptions)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkInvariants(t, e)
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(summarise(t, e)); err != nil {
				t.Fatal(err)
			}
			got := buf.Bytes()
			golden := filepath.Join("testdata", "golden", name+".json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("missing golden file (run go test -update): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("result differs from %s (run with -update after checking the change):\n%s", golden, diffLines(string(want), string(got)))
			}
		})
	}
}

// diffLines shows the first differing lines of two texts.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	n := 0
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("- " + wl + "\n+ " + gl + "\n")
			if n++; n > 10 {
				break
			}
		}
	}
	return b.String()
}
