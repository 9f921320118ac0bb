package email

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealerCreatesPrivateKeyAndRoundTrips(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", secretKeyFile)
	s := NewSealer(path)
	sealed, err := s.Seal("hunter2-päss")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("key file not created: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(sealed, "hunter2") || !strings.HasPrefix(sealed, sealedPrefix) {
		t.Fatalf("sealed value %q reveals the password or lacks the version prefix", sealed)
	}
	again, _ := s.Seal("hunter2-päss")
	if again == sealed {
		t.Fatal("two seals of the same password are identical (nonce reused)")
	}
	// A new process (new Sealer on the same file) opens what the old one sealed.
	plain, err := NewSealer(path).Open(sealed)
	if err != nil || plain != "hunter2-päss" {
		t.Fatalf("Open = %q, %v", plain, err)
	}
}

func TestSealerRejectsOtherKeyAndTampering(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := NewSealer(filepath.Join(dir, "a.key"))
	b := NewSealer(filepath.Join(dir, "b.key"))
	sealed, err := a.Seal("secret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(sealed); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("Open with another key: %v, want ErrBadSecret", err)
	}
	raw := []byte(sealed)
	raw[len(raw)-3] ^= 1
	if _, err := a.Open(string(raw)); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("Open of tampered value: %v, want ErrBadSecret", err)
	}
	for _, bad := range []string{"", "secret", "v1:", "v1:!!!", "v2:abcd"} {
		if _, err := a.Open(bad); !errors.Is(err, ErrBadSecret) {
			t.Errorf("Open(%q) = %v, want ErrBadSecret", bad, err)
		}
	}
}

func TestSealerRefusesCorruptKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, []byte("not base64 at all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSealer(path).Seal("x"); err == nil {
		t.Fatal("Seal with a corrupt key file succeeded")
	}
}
