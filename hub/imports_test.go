package hub

import (
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/passerelle/passerelle"

// importRules says which project packages each part of the tree must never reach, directly or through
// other project packages (DESIGN.md: cmd → appservice/bridges → homeserver → registration).
var importRules = []struct {
	from      string // package path prefix below the module
	forbidden []string
}{
	{"homeserver", []string{"appservice", "hub", "bridges", "cmd", "e2e"}},
	{"registration", []string{"homeserver", "appservice", "hub", "bridges", "cmd"}},
	{"configs", []string{"homeserver", "appservice", "hub", "bridges", "registration", "cmd"}},
	{"bridges", []string{"homeserver", "appservice", "hub", "cmd"}},
	{"appservice", []string{"hub", "bridges", "cmd"}},
}

// TestImportDirection fails when a package reaches a part of the project it must not depend on, e.g. the
// homeserver importing a bridge. It reads import lists with go/build (no compiler run), test files excluded.
func TestImportDirection(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ctx := build.Default
	ctx.BuildTags = append(ctx.BuildTags, "goolm")
	ctx.CgoEnabled = true

	imports := map[string][]string{} // project package → project packages it imports
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "data" || name == "bin") {
			return filepath.SkipDir
		}
		pkg, err := ctx.ImportDir(path, 0)
		if err != nil {
			return nil // no Go files here
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		for _, imp := range pkg.Imports {
			if sub, ok := strings.CutPrefix(imp, module+"/"); ok {
				imports[rel] = append(imports[rel], sub)
			}
		}
		if _, ok := imports[rel]; !ok {
			imports[rel] = nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(imports) < 5 || !slices.Contains(imports["hub"], "homeserver") || !slices.Contains(imports["homeserver"], "registration") {
		t.Fatalf("the import scan is broken: %d packages, hub → %v", len(imports), imports["hub"])
	}

	// reach returns every project package pkg depends on, with one path to it for the error message.
	reach := func(pkg string) map[string]string {
		seen := map[string]string{}
		var walk func(p, via string)
		walk = func(p, via string) {
			for _, dep := range imports[p] {
				if _, ok := seen[dep]; ok {
					continue
				}
				seen[dep] = via + " → " + dep
				walk(dep, seen[dep])
			}
		}
		walk(pkg, pkg)
		return seen
	}
	under := func(pkg, prefix string) bool { return pkg == prefix || strings.HasPrefix(pkg, prefix+"/") }
	for pkg := range imports {
		for _, rule := range importRules {
			if !under(pkg, rule.from) {
				continue
			}
			for dep, path := range reach(pkg) {
				for _, bad := range rule.forbidden {
					if under(dep, bad) {
						t.Errorf("%s must not depend on %s, but does: %s", pkg, bad, path)
					}
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
}
