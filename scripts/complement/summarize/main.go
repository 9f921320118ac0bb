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

// dockerMarker is part of the error of tests that use complement.OldDeploy (Docker blueprints), which the
// custom deployer cannot serve.
const dockerMarker = "OldDeploy: Failed to construct blueprint"

// federationMarkers appear in the output of single-server tests that drive Complement's in-process
// federation server against the homeserver: IDs or media on that server (named host.docker.internal:PORT),
// or requests to federation/key endpoints. A plain URL to host.docker.internal (URL previews) is not one.
var federationMarkers = []string{":host.docker.internal", "/download/host.docker.internal", "server_name=host.docker.internal",
	"/_matrix/federation/", "/_matrix/key/", "[SSAPI]"}

// Test classes; a test in none of them is an ordinary single-server Client-Server API test.
const (
	classMultiServer = "multi-server"
	classDocker      = "needs Docker blueprint"
	classFederation  = "needs federation"
)

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
	noisyLines = []string{"[CSAPI]", "server log kept in", "called runtime.SkipIf", "=== ", "--- "}
)

// reason picks a one-line cause from the output of top and its subtests: the first red (ct.Errorf/Fatalf)
// message with its continuation lines, else the first panic, else the first file:line message of a test
// that did not pass (the last one of a failing leaf test first).
func (p *pkgResult) reason(top string) string {
	names := []string{top}
	for _, n := range p.order {
		if strings.HasPrefix(n, top+"/") {
			names = append(names, n)
		}
	}
	for _, n := range names {
		out := p.tests[n].output
		for i, raw := range out {
			if !strings.Contains(raw, "\x1b[31m") || isNoise(raw) {
				continue
			}
			block := []string{raw}
			for j := i + 1; j < len(out) && !strings.Contains(block[len(block)-1], "\x1b[39m"); j++ {
				block = append(block, out[j])
			}
			msg := ansi.ReplaceAllString(strings.Join(block, " "), "")
			if m := fileLine.FindStringSubmatch(strings.TrimSpace(strings.SplitN(msg, "\n", 2)[0])); m != nil {
				msg = m[1]
			}
			return oneLine(msg)
		}
	}
	for _, n := range names {
		for _, raw := range p.tests[n].output {
			if line := strings.TrimSpace(ansi.ReplaceAllString(raw, "")); strings.HasPrefix(line, "panic:") {
				return oneLine(line)
			}
		}
	}
	// A failing leaf's last message is usually its t.Errorf; earlier ones are progress logs.
	for _, n := range names {
		if p.tests[n].result == "fail" && !p.hasFailingChild(n, names) {
			if msg := lastMessage(p.tests[n].output); msg != "" {
				return oneLine(msg)
			}
		}
	}
	for _, n := range names {
		tr := p.tests[n]
		if tr.result == "pass" {
			continue
		}
		for _, raw := range tr.output {
			if msg := message(raw); msg != "" {
				return oneLine(msg)
			}
		}
	}
	return ""
}

func (p *pkgResult) hasFailingChild(n string, names []string) bool {
	for _, c := range names {
		if strings.HasPrefix(c, n+"/") && p.tests[c].result == "fail" {
			return true
		}
	}
	return false
}

// message returns the text of a "file.go:N: text" output line, or "" for other and noisy lines.
func message(raw string) string {
	line := ansi.ReplaceAllString(raw, "")
	if isNoise(line) {
		return ""
	}
	if m := fileLine.FindStringSubmatch(line); m != nil {
		return strings.TrimSpace(m[1])
	}
	return ""
}

func lastMessage(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if msg := message(lines[i]); msg != "" {
			return msg
		}
	}
	return ""
}

// class puts top in classMultiServer, classDocker, classFederation or "" (plain single-server test).
func (p *pkgResult) class(top string) string {
	reason := p.reason(top)
	switch {
	case strings.Contains(reason, multiServerMarker):
		return classMultiServer
	case strings.Contains(reason, dockerMarker):
		return classDocker
	}
	for _, n := range p.order {
		if n != top && !strings.HasPrefix(n, top+"/") {
			continue
		}
		for _, line := range p.tests[n].output {
			for _, m := range federationMarkers {
				if strings.Contains(line, m) {
					return classFederation
				}
			}
		}
	}
	return ""
}

func isNoise(line string) bool {
	for _, n := range noisyLines {
		if strings.Contains(line, n) {
			return true
		}
	}
	return false
}

// oneLine squeezes a message into one Markdown-table-safe line of at most about 240 characters, keeping its
// start and its end (where MustSyncUntil puts what it last saw).
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 240 {
		s = string(r[:150]) + " … " + string(r[len(r)-85:])
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

// counts is the tally of top-level tests of one package.
type counts struct{ pass, fail, skip, noResult int }

func (c counts) total() int { return c.pass + c.fail + c.skip + c.noResult }

func (c *counts) add(result string) {
	switch result {
	case "pass":
		c.pass++
	case "fail":
		c.fail++
	case "skip":
		c.skip++
	default:
		c.noResult++
	}
}

func (p *pkgResult) topLevel() []string {
	var out []string
	for _, n := range p.order {
		if !strings.Contains(n, "/") {
			out = append(out, n)
		}
	}
	return out
}

// tally counts the top-level tests: all of them, the single-server ones (every class but multi-server),
// and the plain ones (single-server, needing neither Docker blueprints nor federation).
func (p *pkgResult) tally() (all, single, plain counts) {
	for _, n := range p.topLevel() {
		r := p.tests[n].result
		all.add(r)
		switch p.class(n) {
		case classMultiServer:
		case "":
			single.add(r)
			plain.add(r)
		default:
			single.add(r)
		}
	}
	return all, single, plain
}

func write(w io.Writer, rep *report) {
	fmt.Fprintf(w, "# Complement against Passerelle\n\n")
	fmt.Fprintf(w, "Counts are top-level tests as total: pass/fail/skip (fail includes tests with no result).\n")
	fmt.Fprintf(w, "single-server = all but multi-server; plain = single-server needing neither federation nor Docker blueprints.\n\n")
	fmt.Fprintf(w, "| package | all | single-server | plain single-server |\n|---|---|---|---|\n")
	for _, name := range rep.order {
		all, single, plain := rep.pkgs[name].tally()
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", name, all, single, plain)
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
		fmt.Fprintf(w, "| test | result | class | reason / first error |\n|---|---|---|---|\n")
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
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", n, orNone(tr.result), p.class(n), reason)
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

// String renders the tally as "total: pass/fail/skip".
func (c counts) String() string {
	return fmt.Sprintf("%d: %d/%d/%d", c.total(), c.pass, c.fail+c.noResult, c.skip)
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
