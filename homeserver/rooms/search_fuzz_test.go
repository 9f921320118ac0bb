package rooms

import (
	"strings"
	"testing"
)

// FuzzEscapeLike checks that escapeLike leaves no bare LIKE wildcard or escape character and that undoing the
// escapes gives the input back.
func FuzzEscapeLike(f *testing.F) {
	for _, s := range []string{"", "plain", "100%", "a_b", `back\slash`, `%_\%\_`, "ünïcode %"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		esc := escapeLike(s)
		var b strings.Builder
		for i := 0; i < len(esc); i++ {
			c := esc[i]
			switch c {
			case '%', '_':
				t.Fatalf("escapeLike(%q) = %q has a bare wildcard at %d", s, esc, i)
			case '\\':
				if i+1 >= len(esc) || !strings.ContainsRune(`\%_`, rune(esc[i+1])) {
					t.Fatalf("escapeLike(%q) = %q has a dangling escape at %d", s, esc, i)
				}
				i++
				c = esc[i]
			}
			b.WriteByte(c)
		}
		if b.String() != s {
			t.Fatalf("unescaping %q gives %q, want %q", esc, b.String(), s)
		}
	})
}
