package homeserver_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestHomeserverImportsNoBridge enforces DESIGN.md's one-way imports: nothing under homeserver/ may import the
// appservice host, the hub, a bridge or the command (bridges talk to the homeserver only over the Matrix APIs).
func TestHomeserverImportsNoBridge(t *testing.T) {
	forbidden := []string{"/appservice", "/hub", "/bridges", "/cmd"}
	const module = "github.com/passerelle/passerelle"
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if p == module+bad || strings.HasPrefix(p, module+bad+"/") {
					t.Errorf("%s imports %s", path, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
