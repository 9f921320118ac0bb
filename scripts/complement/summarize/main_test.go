package main

import (
	"os"
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	f, err := os.Open("testdata/run.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := parse(f)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.pkgs["github.com/matrix-org/complement/tests/csapi"]
	if p == nil || p.result != "fail" {
		t.Fatalf("package not parsed or wrong result: %+v", p)
	}
	c := p.tally()
	want := counts{pass: 1, fail: 1, skip: 2, noResult: 1, multiServer: 1}
	if c != want {
		t.Fatalf("tally = %+v, want %+v", c, want)
	}
	if got := p.reason("TestB"); got != `CSAPI.Must: POST /createRoom returned non-2xx code: 400 \| x` {
		t.Errorf("reason(TestB) = %q", got)
	}
	if got := p.reason("TestE"); got != "panic: test timed out after 1m0s" {
		t.Errorf("reason(TestE) = %q", got)
	}
	var sb strings.Builder
	write(&sb, rep)
	out := sb.String()
	for _, s := range []string{
		"| github.com/matrix-org/complement/tests/csapi | 5 | 1 | 1 | 2 | 1 | 4 (1/2/1) |",
		"| TestB | fail | CSAPI.Must",
		"| TestE | no result (timeout or crash) | panic",
		"- TestB/sub",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("summary lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "| TestA | pass | [CSAPI]") {
		t.Errorf("passing test got a reason:\n%s", out)
	}
}

func TestOneLine(t *testing.T) {
	long := strings.Repeat("x", 300)
	if got := oneLine("a\n b|c " + long); strings.Contains(got, "\n") || !strings.Contains(got, `b\|c`) || len(got) > 210 {
		t.Errorf("oneLine = %q", got)
	}
}

// FuzzParse checks that any stream parses without error and that the tally accounts for every top-level test once.
func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile("testdata/run.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add(`{"Action":"run","Package":"p","Test":"T/x"}` + "\n" + `{"Action":"fail","Package":"p","Test":"T"}`)
	f.Fuzz(func(t *testing.T, in string) {
		rep, err := parse(strings.NewReader(in))
		if err != nil {
			t.Skip("line longer than the scanner buffer")
		}
		for _, name := range rep.order {
			p := rep.pkgs[name]
			c := p.tally()
			if c.total() != len(p.topLevel()) || c.multiServer > c.skip {
				t.Fatalf("inconsistent tally %+v for %d top-level tests", c, len(p.topLevel()))
			}
			for _, n := range p.topLevel() {
				if r := p.reason(n); strings.Contains(r, "\n") {
					t.Fatalf("multi-line reason %q", r)
				}
			}
		}
		var sb strings.Builder
		write(&sb, rep)
	})
}
