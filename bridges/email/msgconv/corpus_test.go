package msgconv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
)

func parseFile(t *testing.T, path string, opts ParseOptions) *Email {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, err := Parse(f, opts)
	if err != nil {
		t.Fatalf("Parse %s: %v", path, err)
	}
	checkInvariants(t, e)
	return e
}

func corpus(t *testing.T, name string) *Email {
	t.Helper()
	return parseFile(t, filepath.Join("testdata", "corpus", name), goldenOptions)
}

func hasProblem(e *Email, substr string) bool {
	for _, p := range e.Problems {
		if strings.Contains(p, substr) {
			return true
		}
	}
	return false
}

func emails(list []Address) []string {
	var out []string
	for _, a := range list {
		out = append(out, a.Email)
	}
	return out
}

// TestCorpus checks each message of the shared corpus against what its
// README says a correct bridge does with it.
func TestCorpus(t *testing.T) {
	t.Parallel()
	t.Run("01 ISO-2022-JP name and subject", func(t *testing.T) {
		e := corpus(t, "01-charset-iso2022jp-from.eml")
		if e.From.Name != "佐藤" || e.From.Email != "sato@example.com" {
			t.Errorf("From = %+v", e.From)
		}
		if e.Subject != "メールテスト" {
			t.Errorf("Subject = %q", e.Subject)
		}
		if !strings.HasPrefix(e.Text, "This body is plain ASCII on purpose") {
			t.Errorf("Text = %q", e.Text)
		}
	})
	t.Run("02 encoded word split across the header", func(t *testing.T) {
		e := corpus(t, "02-broken-encoded-word-subject.eml")
		if e.Subject != "héllo wörld again" {
			t.Errorf("Subject = %q", e.Subject)
		}
		if !strings.HasPrefix(e.Text, "The sending software split an encoded-word") ||
			!strings.HasSuffix(e.Text, "what a parser reads as the body.") {
			t.Errorf("body not intact: %q", e.Text)
		}
		if e.MessageID != "case02.broken-subject@example.com" || !slices.Equal(emails(e.To), []string{"room42@example.com"}) {
			t.Errorf("header after the stray blank line lost: id %q to %v", e.MessageID, e.To)
		}
		if !hasProblem(e, "blank line") {
			t.Errorf("problem not recorded: %v", e.Problems)
		}
	})
	t.Run("03 missing final boundary", func(t *testing.T) {
		e := corpus(t, "03-missing-final-boundary.eml")
		if e.Text != "Please find the scan attached." {
			t.Errorf("Text = %q", e.Text)
		}
		if len(e.Attachments) != 1 || e.Attachments[0].Filename != "scan.pdf" ||
			e.Attachments[0].ContentType != "application/pdf" || !strings.HasPrefix(string(e.Attachments[0].Data), "%PDF-1.4") ||
			!strings.HasSuffix(string(e.Attachments[0].Data), "%%EOF\n") {
			t.Fatalf("attachment = %+v", e.Attachments)
		}
		if !hasProblem(e, "closing boundary") {
			t.Errorf("problem not recorded: %v", e.Problems)
		}
		cm := toMatrix(t, e, MatrixOptions{})
		if len(cm) != 2 || cm[1].MsgType != event.MsgFile || cm[1].FileName != "scan.pdf" {
			t.Errorf("parts = %+v", cm)
		}
	})
	t.Run("04 RFC 2231 continued filename", func(t *testing.T) {
		e := corpus(t, "04-rfc2231-continued-filename.eml")
		if len(e.Attachments) != 1 || e.Attachments[0].Filename != "Bericht äöüß.pdf" {
			t.Fatalf("attachments = %+v", e.Attachments)
		}
		if string(e.Attachments[0].Data) != "%PDF-1.4\n%%EOF\n" {
			t.Errorf("data = %q", e.Attachments[0].Data)
		}
	})
	t.Run("06 HTML-only Windows-1252 quoted-printable", func(t *testing.T) {
		e := corpus(t, "06-html-only-body.eml")
		want := "Grüße aus der Behörde – the only body is HTML,\nthere is no text/plain part and the charset is Windows-1252."
		if e.Text != want {
			t.Errorf("Text = %q, want %q", e.Text, want)
		}
		if e.HTML != "<div>Grüße aus der Behörde – the only body is HTML,<br/>there is no text/plain part and the charset is Windows-1252.</div>" {
			t.Errorf("HTML = %q", e.HTML)
		}
	})
	t.Run("07 TNEF winmail.dat", func(t *testing.T) {
		e := corpus(t, "07-tnef-winmail-dat.eml")
		if len(e.Attachments) != 1 || e.Attachments[0].Filename != "contract.txt" ||
			string(e.Attachments[0].Data) != "The contract text is inside winmail.dat.\n" ||
			e.Attachments[0].ContentType != "text/plain" {
			t.Fatalf("attachments = %+v", e.Attachments)
		}
		if e.Text != "Please see attached contract." {
			t.Errorf("Text = %q", e.Text)
		}
	})
	t.Run("10 list message", func(t *testing.T) {
		e := corpus(t, "10-list-message-refetched-after-reconnect.eml")
		if !e.AutoSubmitted {
			t.Error("Precedence: list not flagged")
		}
		if e.MessageID != "case10.digest@lists.example.com" || BaseSubject(e.Subject) != "Weekly digest" {
			t.Errorf("id %q, base subject %q", e.MessageID, BaseSubject(e.Subject))
		}
	})
	t.Run("11 plain message", func(t *testing.T) {
		e := corpus(t, "11-arrives-during-silent-idle-drop.eml")
		if e.AutoSubmitted || e.From.Email != "bob@example.com" || !strings.HasSuffix(e.Text, "until it reconnects.") || len(e.Problems) != 0 {
			t.Errorf("got %+v", e)
		}
	})
	t.Run("13 out-of-office reply", func(t *testing.T) {
		e := corpus(t, "13-out-of-office-autoreply.eml")
		if !e.AutoSubmitted {
			t.Error("Auto-Submitted: auto-replied not flagged")
		}
		if !slices.Equal(ThreadCandidates(e), []string{"case13.room-msg@bridge.example.com"}) {
			t.Errorf("ThreadCandidates = %v", ThreadCandidates(e))
		}
		cm := toMatrix(t, e, MatrixOptions{})
		if len(cm) != 1 || cm[0].MsgType != event.MsgNotice {
			t.Errorf("an automatic reply should be an m.notice: %+v", cm)
		}
		if BaseSubject(e.Subject) != "Permit application 2024-117" {
			t.Errorf("base subject = %q", BaseSubject(e.Subject))
		}
	})
	t.Run("15 malformed To", func(t *testing.T) {
		e := corpus(t, "15-malformed-to-header.eml")
		if !slices.Equal(emails(e.To), []string{"room42@example.com", "clerk@example.com"}) {
			t.Errorf("To = %+v", e.To)
		}
		if !strings.HasPrefix(e.Text, "The To header is not a valid address-list") || e.Subject != "Form submission" {
			t.Errorf("message not bridged: %+v", e)
		}
		if !hasProblem(e, "To:") {
			t.Errorf("problem not recorded: %v", e.Problems)
		}
	})
	t.Run("17 GB2312", func(t *testing.T) {
		e := corpus(t, "17-gb2312-subject-and-body.eml")
		if e.Subject != "会议通知：周五下午" || e.From.Name != "王小明" || e.Text != "各位好，周五下午三点开会。" {
			t.Errorf("subject %q name %q text %q", e.Subject, e.From.Name, e.Text)
		}
	})
	t.Run("19 Gmail reply", func(t *testing.T) {
		e := corpus(t, "19-gmail-style-reply.eml")
		if !slices.Equal(ThreadCandidates(e), []string{"case19.root@bridge.example.com", "case19.room@bridge.example.com"}) {
			t.Errorf("ThreadCandidates = %v", ThreadCandidates(e))
		}
		if e.Text != "Yes, Tuesday works for me." {
			t.Errorf("Text = %q", e.Text)
		}
		if !strings.Contains(e.Quoted, "Could we meet on Tuesday?") {
			t.Errorf("Quoted = %q", e.Quoted)
		}
		before, folded, ok := strings.Cut(e.HTML, "<details>")
		if !ok || strings.Contains(before, "Could we meet") || !strings.Contains(folded, "Could we meet") {
			t.Errorf("quoted history not folded: %q", e.HTML)
		}
	})
	t.Run("20 Outlook reply", func(t *testing.T) {
		e := corpus(t, "20-outlook-style-reply.eml")
		if e.Text != "Gut, Dienstag 10 Uhr.\n\nMit freundlichen Grüßen\nOfficer" {
			t.Errorf("Text = %q", e.Text)
		}
		if !slices.Contains(ThreadCandidates(e), "CAcase19gmailstyle@mail.example.com") ||
			ThreadCandidates(e)[0] != "case19.root@bridge.example.com" {
			t.Errorf("ThreadCandidates = %v", ThreadCandidates(e))
		}
		if BaseSubject(e.Subject) != "Permit application 2024-117" {
			t.Errorf("base subject = %q", BaseSubject(e.Subject))
		}
		before, folded, ok := strings.Cut(e.HTML, "<details>")
		if !ok || strings.Contains(before, "Tuesday works") || !strings.Contains(folded, "Tuesday works") {
			t.Errorf("quoted history not folded: %q", e.HTML)
		}
	})
}

// toMatrix converts with a fake upload and returns the part contents.
func toMatrix(t *testing.T, e *Email, opts MatrixOptions) []*event.MessageEventContent {
	t.Helper()
	up := &fakeUpload{}
	cm, err := ToMatrixWith(t.Context(), e, up.upload, opts)
	if err != nil {
		t.Fatalf("ToMatrix: %v", err)
	}
	var out []*event.MessageEventContent
	for _, p := range cm.Parts {
		if p.Type != event.EventMessage {
			t.Errorf("part type %v", p.Type)
		}
		out = append(out, p.Content)
	}
	return out
}

// genHuge expands 12-huge-attachment.eml with the corpus script.
func genHuge(t *testing.T, mib int) string {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to run gen-huge.sh")
	}
	out := filepath.Join(t.TempDir(), "huge.eml")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sh", filepath.Join("testdata", "corpus", "gen-huge.sh"), strconv.Itoa(mib))
	cmd.Stdout = f
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gen-huge.sh: %v", err)
	}
	return out
}

// allocDuring reports the bytes allocated while fn runs.
func allocDuring(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHugeAttachment: 22 MiB decoded (about 30 MB of base64). Over the
// limit it is dropped with a notice and Parse allocates little more than the
// message; under it, kept, and the total allocated during Parse stays under
// three times the file size.
func TestHugeAttachment(t *testing.T) {
	if testing.Short() {
		t.Skip("generates a 30 MB message")
	}
	path := genHuge(t, 22)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := uint64(st.Size())
	const decoded = 22 << 20

	t.Run("over the limit", func(t *testing.T) {
		var e *Email
		alloc := allocDuring(func() { e = parseFile(t, path, ParseOptions{MaxAttachmentBytes: 10 << 20}) })
		// A dropped attachment is counted, never buffered: the message itself
		// is the only large allocation.
		if alloc > size*3/2 {
			t.Errorf("allocated %d bytes for a %d byte message", alloc, size)
		}
		t.Logf("allocated %.1f MiB for a %.1f MiB message", float64(alloc)/(1<<20), float64(size)/(1<<20))
		if len(e.Attachments) != 1 {
			t.Fatalf("attachments = %d", len(e.Attachments))
		}
		a := e.Attachments[0]
		if a.Data != nil || a.Dropped == "" || a.Size != decoded || a.Filename != "scan.tiff" {
			t.Errorf("attachment = %q size %d dropped %q data %d", a.Filename, a.Size, a.Dropped, len(a.Data))
		}
		parts := toMatrix(t, e, MatrixOptions{})
		if len(parts) != 2 || parts[1].MsgType != event.MsgNotice || !strings.Contains(parts[1].Body, "scan.tiff (22.0 MiB)") ||
			!strings.Contains(parts[1].Body, "10.0 MiB limit") {
			t.Errorf("no notice for the dropped file: %+v", parts)
		}
		if parts[0].Body != "Scan attached (about 22 MB decoded)." {
			t.Errorf("text = %q", parts[0].Body)
		}
	})
	t.Run("within the limit", func(t *testing.T) {
		var e *Email
		alloc := allocDuring(func() { e = parseFile(t, path, ParseOptions{MaxAttachmentBytes: 50 << 20}) })
		if alloc > 3*size {
			t.Errorf("allocated %d bytes for a %d byte message", alloc, size)
		}
		t.Logf("allocated %.1f MiB for a %.1f MiB message", float64(alloc)/(1<<20), float64(size)/(1<<20))
		if len(e.Attachments) != 1 || len(e.Attachments[0].Data) != decoded || e.Attachments[0].Dropped != "" {
			t.Fatalf("attachment not kept whole")
		}
		if len(e.Problems) != 0 {
			t.Errorf("problems: %v", e.Problems)
		}
	})
}
