package e2e

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/passerelle/passerelle"

// importRules are DESIGN.md's one-way import graph: cmd → appservice/bridges → homeserver → registration.
// Each rule names packages (a prefix) and the project packages they must not depend on, even indirectly.
var importRules = []struct {
	pkgs      string
	forbidden []string
	why       string
}{
	{"homeserver", []string{"appservice", "bridges", "hub", "cmd", "e2e"},
		"the homeserver never imports a bridge or the hub; bridges reach it over the Matrix APIs"},
	{"registration", []string{"homeserver", "appservice", "bridges", "hub", "cmd"},
		"registration sits below the homeserver"},
	{"bridges", []string{"homeserver", "appservice", "registration", "hub", "cmd"},
		"a bridge talks to the homeserver only through the Matrix APIs (bridgev2's Matrix connector)"},
	{"appservice", []string{"bridges", "hub", "cmd"}, "the bridge host runs connectors it is given"},
	{"configs", []string{""}, "configs is a leaf every component can import"},
	{"internal/testenv", []string{""}, "the test harness must be importable by every package"},
}

// TestImportDirection fails when a package depends on something DESIGN.md says it must not.
func TestImportDirection(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(gobin, "list", "-tags", "goolm", "-f", `{{.ImportPath}} {{join .Deps " "}}`, module+"/...")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	under := func(pkg, prefix string) bool {
		if prefix == "" {
			return strings.HasPrefix(pkg, module+"/")
		}
		p := module + "/" + prefix
		return pkg == p || strings.HasPrefix(pkg, p+"/")
	}
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg, deps := fields[0], fields[1:]
		for _, rule := range importRules {
			if !under(pkg, rule.pkgs) {
				continue
			}
			checked++
			for _, dep := range deps {
				for _, f := range rule.forbidden {
					// A package may always use its own subpackages.
					if under(dep, f) && !under(dep, rule.pkgs) {
						t.Errorf("%s depends on %s: %s", strings.TrimPrefix(pkg, module+"/"),
							strings.TrimPrefix(dep, module+"/"), rule.why)
					}
				}
			}
		}
		// Only the command and tests build a whole hub.
		if !under(pkg, "cmd") && !under(pkg, "hub") && !under(pkg, "e2e") {
			for _, dep := range deps {
				if under(dep, "hub") {
					t.Errorf("%s depends on the hub: only cmd/ and tests may", strings.TrimPrefix(pkg, module+"/"))
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("go list matched no package of the rules")
	}
}
