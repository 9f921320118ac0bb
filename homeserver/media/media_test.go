package media

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/storage"
	"github.com/passerelle/passerelle/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newService(t *testing.T, kind string, max int64) (*Service, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := configs.Database{Type: kind}
	if kind == "postgres" {
		cfg.URI = testenv.Postgres(t)
	}
	db, err := storage.Open(t.Context(), cfg, dir, "homeserver", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	mediaDir := filepath.Join(dir, "media")
	s, err := New(t.Context(), db, mediaDir, "example.org", max, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s, mediaDir
}

func TestUploadOpen(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			s, dir := newService(t, kind, 1000)
			ctx := context.Background()
			data := []byte("hello media")
			uri, err := s.Upload(ctx, "@u:example.org", "text/plain", "hello.txt", bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if uri.Homeserver != "example.org" || !validMediaID(uri.FileID) {
				t.Fatalf("uri %s", uri)
			}
			meta, f, err := s.Open(ctx, "example.org", uri.FileID)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(f)
			f.Close()
			if !bytes.Equal(got, data) || meta.Size != int64(len(data)) || meta.ContentType != "text/plain" ||
				meta.Filename != "hello.txt" || meta.Uploader != "@u:example.org" || len(meta.SHA256) != 64 {
				t.Fatalf("meta %+v, content %q", meta, got)
			}
			// Exactly the limit is fine; one byte more is M_TOO_LARGE and leaves no file behind.
			if _, err := s.Upload(ctx, "@u:example.org", "", "", bytes.NewReader(make([]byte, 1000))); err != nil {
				t.Fatalf("upload at the limit: %v", err)
			}
			_, err = s.Upload(ctx, "@u:example.org", "", "", bytes.NewReader(make([]byte, 1001)))
			if !errors.Is(err, mxerr.TooLarge("")) {
				t.Fatalf("oversize upload: %v", err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 2 {
				t.Fatalf("media dir holds %d files, want 2", len(entries))
			}
			for _, c := range []struct{ server, id string }{
				{"other.org", uri.FileID}, {"example.org", "missing"}, {"example.org", "../../etc/passwd"}, {"example.org", ""},
			} {
				if _, _, err := s.Open(ctx, c.server, c.id); !errors.Is(err, mxerr.NotFound("")) {
					t.Fatalf("Open(%q, %q): %v", c.server, c.id, err)
				}
			}
			if _, err := s.Upload(ctx, "@u:example.org", "", "", io.MultiReader(strings.NewReader("x"), errReader{})); err == nil {
				t.Fatal("a failing reader did not fail the upload")
			}
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("boom") }
