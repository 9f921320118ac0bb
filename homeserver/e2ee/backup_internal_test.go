package e2ee

import "testing"

func TestBackupReplacementRules(t *testing.T) {
	k := func(verified bool, fmi, fwd int64) *BackupKey {
		return &BackupKey{IsVerified: verified, FirstMessageIndex: fmi, ForwardedCount: fwd}
	}
	cases := []struct {
		name     string
		new, old *BackupKey
		want     bool
	}{
		{"verified beats unverified", k(true, 9, 9), k(false, 0, 0), true},
		{"unverified never beats verified", k(false, 0, 0), k(true, 9, 9), false},
		{"lower first index wins", k(false, 1, 5), k(false, 2, 0), true},
		{"higher first index loses", k(false, 3, 0), k(false, 2, 5), false},
		{"same index: fewer forwards win", k(true, 2, 0), k(true, 2, 1), true},
		{"identical does not replace", k(true, 2, 1), k(true, 2, 1), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := better(c.new, c.old); got != c.want {
				t.Fatalf("better = %v, want %v", got, c.want)
			}
		})
	}
}
