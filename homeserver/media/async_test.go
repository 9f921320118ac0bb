package media

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if e := mxerr.As(err); e == nil || e.Code != code {
		t.Fatalf("got %v, want %s", err, code)
	}
}

// TestAsyncUpload: Create reserves an ID that is pending until its owner uploads to it once; others, unknown
// IDs, a second upload and too many reservations are refused.
func TestAsyncUpload(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			s, _ := newService(t, kind, 1000)
			ctx := context.Background()
			const alice, bob = "@alice:example.org", "@bob:example.org"
			uri, expires, err := s.Create(ctx, alice)
			if err != nil {
				t.Fatal(err)
			}
			if uri.Homeserver != "example.org" || !validMediaID(uri.FileID) || time.Until(expires) < PendingLifetime-time.Minute {
				t.Fatalf("create: %s %s", uri, expires)
			}
			if p, err := s.Pending(ctx, "example.org", uri.FileID); err != nil || !p {
				t.Fatalf("pending before upload: %v %v", p, err)
			}
			_, _, err = s.Open(ctx, "example.org", uri.FileID)
			wantCode(t, err, "M_NOT_FOUND")
			wantCode(t, s.UploadTo(ctx, bob, "example.org", uri.FileID, "text/plain", "", strings.NewReader("x")), "M_FORBIDDEN")
			wantCode(t, s.UploadTo(ctx, alice, "example.org", "nope", "text/plain", "", strings.NewReader("x")), "M_NOT_FOUND")
			wantCode(t, s.UploadTo(ctx, alice, "other.org", uri.FileID, "text/plain", "", strings.NewReader("x")), "M_NOT_FOUND")
			wantCode(t, s.UploadTo(ctx, alice, "example.org", uri.FileID, "", "", bytes.NewReader(make([]byte, 1001))), "M_TOO_LARGE")
			if err := s.UploadTo(ctx, alice, "example.org", uri.FileID, "text/plain", "a.txt", strings.NewReader("hello")); err != nil {
				t.Fatal(err)
			}
			if p, err := s.Pending(ctx, "example.org", uri.FileID); err != nil || p {
				t.Fatalf("pending after upload: %v %v", p, err)
			}
			meta, f, err := s.Open(ctx, "example.org", uri.FileID)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(f)
			f.Close()
			if string(got) != "hello" || meta.Filename != "a.txt" || meta.Uploader != alice {
				t.Fatalf("meta %+v content %q", meta, got)
			}
			wantCode(t, s.UploadTo(ctx, alice, "example.org", uri.FileID, "text/plain", "", strings.NewReader("again")), "M_CANNOT_OVERWRITE_MEDIA")
			// A plain upload's ID cannot be overwritten either.
			plain, err := s.Upload(ctx, alice, "text/plain", "", strings.NewReader("p"))
			if err != nil {
				t.Fatal(err)
			}
			wantCode(t, s.UploadTo(ctx, alice, "example.org", plain.FileID, "", "", strings.NewReader("x")), "M_CANNOT_OVERWRITE_MEDIA")
			for range MaxPendingPerUser {
				if _, _, err := s.Create(ctx, bob); err != nil {
					t.Fatal(err)
				}
			}
			_, _, err = s.Create(ctx, bob)
			wantCode(t, err, "M_LIMIT_EXCEEDED")
			// An expired reservation is gone.
			if _, err := s.db.Exec(ctx, `UPDATE media_pending SET expires_ts = 1 WHERE uploader = $1`, bob); err != nil {
				t.Fatal(err)
			}
			if _, _, err = s.Create(ctx, bob); err != nil {
				t.Fatalf("create after expiry: %v", err)
			}
		})
	}
}
