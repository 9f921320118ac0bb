// Command summarize turns the `go test -json` stream of a Complement run into a Markdown summary: per
// package, the pass/fail/skip counts of top-level tests (all of them, and the single-server ones, i.e. those
// not skipped by the Passerelle deployer for asking for two homeservers), then one row per top-level test
// with its result and a one-line reason taken from its output, and the failing subtests.
//
// Usage: go run ./scripts/complement/summarize -in run.json -out summary.md
//
// It uses the standard library only and must not import anything from Passerelle or Complement.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// multiServerMarker is part of the skip message the deployer gives tests that ask for more than one server.
const multiServerMarker = "only single-server deployments are supported"

// event is one line of `go test -json` (test2json) output.
type event struct {
	Action  string `json:"Action"`
	Package string `json:"Package"`
	Test    string `json:"Test"`
	Output  string `json:"Output"`
}

// testResult is what the stream says about one test or subtest.
type testResult struct {
	name   string
	result string // pass, fail, skip, or "" when the run ended (timeout, crash) before the test did
	output []string
}

// pkgResult collects the tests of one package in the order they started.
type pkgResult struct {
	name   string
	order  []string
	tests  map[string]*testResult
	result string
	output []string
}

// report is the parsed run.
type report struct {
	order []string
	pkgs  map[string]*pkgResult
}

func parse(r io.Reader) (*report, error) {
	rep := &report{pkgs: map[string]*pkgResult{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // build output or other noise between JSON lines
		}
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			continue
		}
		if ev.Package == "" {
			continue
		}
		p := rep.pkgs[ev.Package]
		if p == nil {
			p = &pkgResult{name: ev.Package, tests: map[string]*testResult{}}
			rep.pkgs[ev.Package] = p
			rep.order = append(rep.order, ev.Package)
		}
		if ev.Test == "" {
			switch ev.Action {
			case "pass", "fail", "skip":
				p.result = ev.Action
			case "output":
				p.output = append(p.output, strings.TrimRight(ev.Output, "\n"))
			}
			continue
		}
		tr := p.tests[ev.Test]
		if tr == nil {
			tr = &testResult{name: ev.Test}
			p.tests[ev.Test] = tr
			p.order = append(p.order, ev.Test)
		}
		switch ev.Action {
		case "pass", "fail", "skip":
			tr.result = ev.Action
		case "output":
			tr.output = append(tr.output, strings.TrimRight(ev.Output, "\n"))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read test2json stream: %w", err)
	}
	return rep, nil
}

var (
	ansi       = regexp.MustCompile("\x1b\\[[0-9;]*m")
	fileLine   = regexp.MustCompile(`^\s*[\w.-]+\.go:\d+: (.*)$`)
	noisyLines = []string{"[CSAPI]", "server log kept in", "retrying with a longer one", "=== ", "--- "}
)

// reason picks the first line of t's (and its subtests') output that reads like an error or skip message.
func (p *pkgResult) reason(top string) string {
	var fallback string
	names := []string{top}
	for _, n := range p.order {
		if strings.HasPrefix(n, top+"/") {
			names = append(names, n)
		}
	}
	for _, n := range names {
		tr := p.tests[n]
		for _, raw := range tr.output {
			line := ansi.ReplaceAllString(raw, "")
			if isNoise(line) {
				continue
			}
			if m := fileLine.FindStringSubmatch(line); m != nil {
				msg := strings.TrimSpace(m[1])
				if msg == "" {
					continue
				}
				if strings.Contains(raw, "\x1b[31m") || tr.result != "pass" {
					return oneLine(msg)
				}
				if fallback == "" {
					fallback = msg
				}
			}
			if strings.HasPrefix(strings.TrimSpace(line), "panic:") {
				return oneLine(strings.TrimSpace(line))
			}
		}
	}
	return oneLine(fallback)
}

func isNoise(line string) bool {
	for _, n := range noisyLines {
		if strings.Contains(line, n) {
			return true
		}
	}
	return false
}

// oneLine trims a message to one Markdown-table-safe line of at most 200 characters.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// counts is the tally of top-level tests of one package.
type counts struct{ pass, fail, skip, noResult, multiServer int }

func (c counts) total() int { return c.pass + c.fail + c.skip + c.noResult }

func (p *pkgResult) topLevel() []string {
	var out []string
	for _, n := range p.order {
		if !strings.Contains(n, "/") {
			out = append(out, n)
		}
	}
	return out
}

func (p *pkgResult) tally() counts {
	var c counts
	for _, n := range p.topLevel() {
		switch p.tests[n].result {
		case "pass":
			c.pass++
		case "fail":
			c.fail++
		case "skip":
			c.skip++
			if strings.Contains(p.reason(n), multiServerMarker) {
				c.multiServer++
			}
		default:
			c.noResult++
		}
	}
	return c
}

func write(w io.Writer, rep *report) {
	fmt.Fprintf(w, "# Complement against Passerelle\n\n")
	fmt.Fprintf(w, "| package | top-level | pass | fail | skip | no result | single-server (pass/fail/skip) |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|\n")
	for _, name := range rep.order {
		p := rep.pkgs[name]
		c := p.tally()
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d (%d/%d/%d) |\n", name, c.total(), c.pass, c.fail, c.skip,
			c.noResult, c.total()-c.multiServer, c.pass, c.fail+c.noResult, c.skip-c.multiServer)
	}
	for _, name := range rep.order {
		p := rep.pkgs[name]
		fmt.Fprintf(w, "\n## %s (package result: %s)\n\n", name, orNone(p.result))
		if len(p.topLevel()) == 0 {
			for _, l := range lastLines(p.output, 15) {
				fmt.Fprintf(w, "    %s\n", ansi.ReplaceAllString(l, ""))
			}
			continue
		}
		fmt.Fprintf(w, "| test | result | reason / first error |\n|---|---|---|\n")
		tops := p.topLevel()
		sort.SliceStable(tops, func(i, j int) bool {
			return rank(p.tests[tops[i]].result) < rank(p.tests[tops[j]].result) ||
				rank(p.tests[tops[i]].result) == rank(p.tests[tops[j]].result) && tops[i] < tops[j]
		})
		for _, n := range tops {
			tr := p.tests[n]
			reason := ""
			if tr.result != "pass" {
				reason = p.reason(n)
			}
			fmt.Fprintf(w, "| %s | %s | %s |\n", n, orNone(tr.result), reason)
		}
		var failedSubs []string
		for _, n := range p.order {
			if strings.Contains(n, "/") && p.tests[n].result == "fail" {
				failedSubs = append(failedSubs, n)
			}
		}
		if len(failedSubs) > 0 {
			fmt.Fprintf(w, "\nFailing subtests (%d):\n\n", len(failedSubs))
			for _, n := range failedSubs {
				fmt.Fprintf(w, "- %s\n", n)
			}
		}
	}
}

func rank(result string) int {
	switch result {
	case "fail":
		return 0
	case "":
		return 1
	case "skip":
		return 2
	}
	return 3
}

func orNone(s string) string {
	if s == "" {
		return "no result (timeout or crash)"
	}
	return s
}

func lastLines(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

func main() {
	in := flag.String("in", "-", "go test -json output (- for stdin)")
	out := flag.String("out", "-", "Markdown summary (- for stdout)")
	flag.Parse()
	var r io.Reader = os.Stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			fmt.Fprintln(os.Stderr, "summarize:", err)
			os.Exit(1)
		}
		defer f.Close()
		r = f
	}
	rep, err := parse(r)
	if err != nil {
		fmt.Fprintln(os.Stderr, "summarize:", err)
		os.Exit(1)
	}
	var w io.Writer = os.Stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "summarize:", err)
			os.Exit(1)
		}
		defer f.Close()
		w = f
	}
	write(w, rep)
}
