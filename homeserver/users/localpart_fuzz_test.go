package users

import (
	"strings"
	"testing"
)

// FuzzValidLocalpart checks that every accepted localpart uses only the allowed characters and keeps the full
// user ID within 255 bytes.
func FuzzValidLocalpart(f *testing.F) {
	for _, seed := range []string{"alice", "a.b_c=d-e/f+g", "", "Alice", "a:b", "élise", strings.Repeat("x", 300)} {
		f.Add(seed)
	}
	s := &Service{serverName: "example.org"}
	f.Fuzz(func(t *testing.T, localpart string) {
		if s.ValidLocalpart(localpart) != nil {
			return
		}
		if localpart == "" || len("@"+localpart+":example.org") > 255 {
			t.Fatalf("accepted %q", localpart)
		}
		for _, c := range localpart {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("._=-/+", c)) {
				t.Fatalf("accepted %q with %q", localpart, c)
			}
		}
	})
}
