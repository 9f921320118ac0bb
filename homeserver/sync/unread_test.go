package sync

import "testing"

func TestContainsWord(t *testing.T) {
	for _, c := range []struct {
		text, word string
		want       bool
	}{
		{"hi alice!", "alice", true}, {"Alice: look", "alice", true}, {"malice", "alice", false},
		{"alice_b", "alice", false}, {"", "alice", false}, {"alicealice alice", "alice", true},
	} {
		if got := containsWord(c.text, c.word); got != c.want {
			t.Errorf("containsWord(%q, %q) = %v", c.text, c.word, got)
		}
	}
}
