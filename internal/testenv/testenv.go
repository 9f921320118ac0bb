// Package testenv starts real servers for tests: PostgreSQL, Dovecot (IMAP + LMTP) and Postfix (SMTP relaying
// into Dovecot), all on 127.0.0.1 with free ports and private temporary directories.
//
// Servers are started lazily, once per test binary, by the first test that asks for them, and shared by every
// later test in the same binary. They never outlive the test process: each is started from one dedicated OS
// thread with a parent-death signal, and Stop (called by Main) shuts them down and removes their directories.
// A package that wants its directories removed at the end calls testenv.Main from its TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Without it the servers still die with the process, and the next run removes the left-over directories.
//
// When a server's binaries are not installed the test is skipped with the reason, unless the environment
// variable PASSERELLE_REQUIRE_SERVERS is set (make test sets it), in which case the test fails.
//
// This package is for tests only. It must not import any Passerelle package, so every package can use it.
package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// RequireEnv is the environment variable that turns "server not installed" from a skip into a failure.
const RequireEnv = "PASSERELLE_REQUIRE_SERVERS"

// KeepEnv is the environment variable that keeps the servers' directories (configs, logs, mailboxes) after
// Stop, for debugging; they are removed by the next run that finds them orphaned.
const KeepEnv = "PASSERELLE_TESTENV_KEEP"

// rootPrefix names the per-process directory under os.TempDir; the pid lets a later run sweep orphans.
const rootPrefix = "passerelle-testenv-"

// startTimeout bounds how long one server may take to accept connections. Each takes well under a second
// here; the margin covers two loaded cores shared by parallel test binaries.
const startTimeout = 30 * time.Second

// stopTimeout is how long a server gets to exit after its stop signal before its process group is killed.
const stopTimeout = 10 * time.Second

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error

	procsMu sync.Mutex
	procs   []*process
	stopped bool
)

// Main runs the tests, stops every server this package started and removes their directories, then exits
// with the tests' status. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop shuts down every server started by this package (newest first) and removes their directories.
// Later calls to Postgres or Mail in the same process fail. It is safe to call more than once.
func Stop() {
	procsMu.Lock()
	ps := procs
	procs = nil
	stopped = true
	procsMu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		ps[i].stop()
	}
	if rootDir != "" && os.Getenv(KeepEnv) == "" {
		_ = os.RemoveAll(rootDir)
	}
}

// root returns the private directory of this process, creating it on first use and removing directories
// left behind by test processes that no longer exist.
func root() (string, error) {
	rootOnce.Do(func() {
		sweepOrphans()
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", rootPrefix, os.Getpid()))
		if err != nil {
			rootErr = fmt.Errorf("create test root: %w", err)
			return
		}
		// Servers drop privileges (postgres, mail, postfix users) and must traverse this directory.
		if err = os.Chmod(dir, 0o755); err != nil {
			rootErr = fmt.Errorf("chmod test root: %w", err)
			return
		}
		rootDir = dir
	})
	return rootDir, rootErr
}

// sweepOrphans removes directories of earlier test processes that died without calling Stop.
func sweepOrphans() {
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, rootPrefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(name, rootPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = os.RemoveAll(filepath.Join(os.TempDir(), name))
		}
	}
}

// unavailable skips or fails t because a server cannot be run here.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("%s (%s is set, so this is a failure; run scripts/install-test-deps.sh)", msg, RequireEnv)
	}
	t.Skipf("%s (set %s=1 to make this a failure; scripts/install-test-deps.sh installs it)", msg, RequireEnv)
}

// findBinary looks for name in dirs (in order), then in PATH.
func findBinary(name string, dirs ...string) (string, bool) {
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	return "", false
}

// freePorts picks n distinct free TCP ports on 127.0.0.1 for servers to bind, from below the kernel's
// ephemeral range: outgoing connections (of this or any other test process) take their local ports from that
// range, so a port picked there could be taken between the check here and the server's bind. Ports are
// chosen at random and checked by binding them; parallel test binaries rarely pick the same one, and
// startup retries with new ports when a server cannot bind or another server answers on its port.
func freePorts(n int) ([]int, error) {
	lo := ephemeralLow()
	const min = 20000
	if lo-min < 2000 {
		return kernelPorts(n)
	}
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n && tries < 500; tries++ {
		p := min + rand.IntN(lo-min)
		if slices.Contains(ports, p) {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("no %d free ports between %d and %d", n, min, lo)
	}
	return ports, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 on Linux by default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}

// kernelPorts lets the kernel choose n free ports (used when the ephemeral range leaves no room below it).
func kernelPorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// pickPorts is freePorts; self-tests replace it to hand out a port another server holds.
var pickPorts = freePorts

// startAttempts is how often a server's start is tried with fresh ports before giving up.
const startAttempts = 3

// spawnRequest asks the spawner thread to start a command.
type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan spawnRequest
)

// startCmd starts cmd from a dedicated, locked OS thread that never exits. The kernel delivers a child's
// parent-death signal when the thread that forked it exits, not when the process does; starting every
// server from one immortal thread makes the signal fire exactly when the test process dies.
func startCmd(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: this goroutine and its thread live as long as the process
			for req := range spawnCh {
				req.done <- req.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnCh <- spawnRequest{cmd: cmd, done: done}
	return <-done
}

// process is one running server.
type process struct {
	name    string
	cmd     *exec.Cmd
	stopSig syscall.Signal
	exited  chan struct{}
	waitErr error
	logPath string
	// stopPipe, when set, stops the server by being closed instead of by stopSig.
	stopPipe *os.File
	// pidFile, when set, names a file holding the pid of a daemon that leads its own process group apart
	// from the process started here; it is killed too if it lingers.
	pidFile string
	// ready is set once the server answered; stopping once Stop or a failed start began to stop it. An exit
	// while ready and not stopping is reported at once on stderr, so a test that then times out has the cause.
	ready, stopping atomic.Bool
	// extraLogs are more log files worth showing when the server fails (e.g. Postfix's maillog).
	extraLogs []string
}

// launch starts a long-running server. Its stdout and stderr go to logPath. deathSig is what the server gets
// if the test process dies, stopSig what Stop sends it. The server must lead its own process group (either
// through setpgid here or by calling setsid itself) so that Stop can kill stragglers with it.
func launch(name string, cmd *exec.Cmd, logPath string, setpgid bool, deathSig, stopSig syscall.Signal) (*process, error) {
	procsMu.Lock()
	if stopped {
		procsMu.Unlock()
		return nil, errors.New("testenv: Stop was already called")
	}
	procsMu.Unlock()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer logFile.Close()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = deathSig
	cmd.SysProcAttr.Setpgid = setpgid
	if err := startCmd(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, stopSig: stopSig, exited: make(chan struct{}), logPath: logPath}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
		if p.ready.Load() && !p.stopping.Load() {
			fmt.Fprintf(os.Stderr, "\ntestenv: %s (pid %d) EXITED UNEXPECTEDLY: %v%s\n", p.name, cmd.Process.Pid,
				p.waitErr, p.logTail())
		}
	}()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

// stop asks the server to exit, waits, and then kills its whole process group.
func (p *process) stop() {
	p.stopping.Store(true)
	pid := p.cmd.Process.Pid
	if p.stopPipe != nil {
		_ = p.stopPipe.Close()
	} else {
		_ = syscall.Kill(pid, p.stopSig)
	}
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
	}
	// Children of a server that exited uncleanly must not linger either.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	if p.pidFile != "" {
		if b, err := os.ReadFile(p.pidFile); err == nil {
			if dpid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && dpid > 1 {
				_ = syscall.Kill(-dpid, syscall.SIGKILL)
			}
		}
	}
	<-p.exited
}

// discard stops a server whose start failed and forgets it.
func (p *process) discard() {
	p.stop()
	procsMu.Lock()
	defer procsMu.Unlock()
	procs = slices.DeleteFunc(procs, func(q *process) bool { return q == p })
}

// health returns "" while the server runs, else why it is gone, with its log.
func (p *process) health() string {
	select {
	case <-p.exited:
		return fmt.Sprintf("%s (pid %d) has exited: %v%s", p.name, p.cmd.Process.Pid, p.waitErr, p.logTail())
	default:
		return ""
	}
}

// errPortTaken means another server answered on a port picked for ours; the start is retried with new ports.
var errPortTaken = errors.New("another server answers on the port")

// waitBanner waits until addr accepts connections and greets with a first line containing token (our
// servers' greetings carry the test process's pid), failing early if the server exits. A different greeting
// means some other server holds the port: errPortTaken.
func (p *process) waitBanner(addr, token string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			_ = c.Close()
			switch {
			case rerr == nil && strings.Contains(line, token):
				return nil
			case rerr == nil:
				return fmt.Errorf("%s: %w %s: %q", p.name, errPortTaken, addr, strings.TrimSpace(line))
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before answering on %s (%v)%s", p.name, addr, p.waitErr, p.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering on %s after %s%s", p.name, addr, startTimeout, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitTCP waits until addr accepts connections, failing early if the server exits.
func (p *process) waitTCP(addr string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before listening on %s (%v)%s", p.name, addr, p.waitErr, p.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after %s%s", p.name, addr, startTimeout, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logTail returns the end of the server's logs, for error messages.
func (p *process) logTail() string {
	out := fileTail(p.logPath)
	for _, l := range p.extraLogs {
		out += fileTail(l)
	}
	return out
}

// fileTail returns the last 2 KiB of a file, prefixed for an error message, or "" when it is empty.
func fileTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return "\n--- " + path + " ---\n" + string(b)
}

// run executes a short command (setup tools such as initdb), returning its combined output on failure.
func run(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}

// lazy memoises the start of one server: the first caller starts it, later callers get the same result.
type lazy[T any] struct {
	once sync.Once
	val  T
	err  error
}

func (l *lazy[T]) get(start func() (T, error)) (T, error) {
	l.once.Do(func() { l.val, l.err = start() })
	return l.val, l.err
}
