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
	all, single, plain := p.tally()
	if want := (counts{pass: 1, fail: 2, skip: 2, noResult: 1}); all != want {
		t.Fatalf("all = %+v, want %+v", all, want)
	}
	if want := (counts{pass: 1, fail: 2, skip: 1, noResult: 1}); single != want {
		t.Fatalf("single = %+v, want %+v", single, want)
	}
	if want := (counts{pass: 1, fail: 1, skip: 1, noResult: 1}); plain != want {
		t.Fatalf("plain = %+v, want %+v", plain, want)
	}
	if got := p.class("TestF"); got != classFederation {
		t.Errorf("class(TestF) = %q", got)
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
		"| github.com/matrix-org/complement/tests/csapi | 6: 1/3/2 | 5: 1/3/1 | 4: 1/2/1 |",
		"| TestB | fail |  | CSAPI.Must",
		"| TestE | no result (timeout or crash) |  | panic",
		"| TestC | skip | multi-server |",
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
	if got := oneLine("a\n b|c " + long + " END"); strings.Contains(got, "\n") || !strings.Contains(got, `b\|c`) ||
		!strings.HasSuffix(got, " END") || !strings.Contains(got, " … ") || len([]rune(got)) > 245 {
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
			all, single, plain := p.tally()
			if all.total() != len(p.topLevel()) || single.total() > all.total() || plain.total() > single.total() {
				t.Fatalf("inconsistent tally %v %v %v for %d top-level tests", all, single, plain, len(p.topLevel()))
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
