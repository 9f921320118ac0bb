package msgconv

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func isValidUTF8(s string) bool { return utf8.ValidString(s) }

var scriptURLRe = regexp.MustCompile(`(?i)(href|src)\s*=\s*["']?\s*(javascript|vbscript|data):`)

var onAttrRe = regexp.MustCompile(`(?i)<[^>]*\son[a-z]+\s*=`)

// assertSafeHTML checks the sanitiser's promises on an output.
func assertSafeHTML(t *testing.T, h string) {
	t.Helper()
	l := strings.ToLower(h)
	for _, bad := range []string{"<script", "<style", "<iframe", "<object", "<svg", "<embed", "<form", "<input"} {
		if strings.Contains(l, bad) {
			t.Errorf("sanitised HTML contains %q: %q", bad, h)
		}
	}
	if scriptURLRe.MatchString(h) {
		t.Errorf("sanitised HTML has a script URL: %q", h)
	}
	if onAttrRe.MatchString(h) {
		t.Errorf("sanitised HTML has an on* attribute: %q", h)
	}
}
