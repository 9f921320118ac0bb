package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func TestPostgres(t *testing.T) {
	start := time.Now()
	dsn1 := Postgres(t)
	t.Logf("first database (server start included) in %s", time.Since(start))
	start = time.Now()
	dsn2 := Postgres(t)
	t.Logf("second database in %s", time.Since(start))
	if dsn1 == dsn2 {
		t.Fatalf("two calls returned the same database %s", dsn1)
	}
	ctx := t.Context()
	c1, err := pgx.Connect(ctx, dsn1)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close(context.Background())
	if _, err := c1.Exec(ctx, `CREATE TABLE t (v text)`); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Exec(ctx, `INSERT INTO t VALUES ('x')`); err != nil {
		t.Fatal(err)
	}
	var version string
	if err := c1.QueryRow(ctx, `SHOW server_version`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL %s", version)
	// The second database is fresh: the table of the first does not exist there.
	c2, err := pgx.Connect(ctx, dsn2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(context.Background())
	var n int
	err = c2.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name = 't'`).Scan(&n)
	if err != nil || n != 0 {
		t.Fatalf("fresh database sees table t: n=%d err=%v", n, err)
	}
}

func TestMailDeliverAndRead(t *testing.T) {
	start := time.Now()
	ms := Mail(t)
	t.Logf("mail servers ready in %s (IMAP %s, SMTP %s)", time.Since(start), ms.IMAPAddr, ms.SMTPAddr)
	bob := ms.AddUser(t, "Bob", "bob-secret")
	if bob != "bob@"+Domain {
		t.Fatalf("AddUser returned %q", bob)
	}
	carol := "carol@" + OtherDomain
	ms.AddAddress(t, carol, "carol-secret")

	msg := []byte("From: Carol <" + carol + ">\r\nTo: " + bob + "\r\nSubject: hello\r\n" +
		"Message-ID: <m1@remote.test>\r\n\r\nHi Bob\r\n")
	start = time.Now()
	ms.Deliver(t, carol, []string{bob}, msg)
	got := ms.WaitMessages(t, bob, "bob-secret", "INBOX", 1, 20*time.Second)
	t.Logf("delivered through Postfix and read over IMAP in %s", time.Since(start))
	if len(got) != 1 || !bytes.Contains(got[0], []byte("Message-ID: <m1@remote.test>")) ||
		!bytes.Contains(got[0], []byte("Hi Bob")) {
		t.Fatalf("INBOX = %q", got)
	}

	// Authenticated submission, checked by Dovecot's auth, to the other domain.
	reply := []byte("From: " + bob + "\r\nTo: " + carol + "\r\nSubject: Re: hello\r\n" +
		"In-Reply-To: <m1@remote.test>\r\n\r\nHi Carol\r\n")
	ms.Submit(t, bob, "bob-secret", []string{carol}, reply)
	got = ms.WaitMessages(t, carol, "carol-secret", "INBOX", 1, 20*time.Second)
	if !bytes.Contains(got[0], []byte("In-Reply-To: <m1@remote.test>")) {
		t.Fatalf("carol's INBOX = %q", got)
	}

	// The special folders exist for a client that appends sent copies.
	if msgs := ms.Messages(t, bob, "bob-secret", "Sent"); len(msgs) != 0 {
		t.Fatalf("Sent has %d messages", len(msgs))
	}
}

func TestMailRefusals(t *testing.T) {
	ms := Mail(t)
	dave := ms.AddUser(t, "dave", "dave-secret")
	msg := []byte("Subject: x\r\n\r\nbody\r\n")
	// Wrong password.
	if err := ms.send(saslPlain(dave, "wrong"), dave, []string{"x@" + OtherDomain}, msg); err == nil {
		t.Fatal("SMTP AUTH with a wrong password succeeded")
	}
	// Unauthenticated relay to a domain that is not ours.
	err := ms.send(nil, "x@elsewhere.invalid", []string{"y@elsewhere.invalid"}, msg)
	if err == nil || !strings.Contains(err.Error(), "Relay access denied") {
		t.Fatalf("open relay: err = %v", err)
	}
	// IMAP login with a wrong password.
	if _, err := ms.messages(dave, "wrong", "INBOX"); err == nil {
		t.Fatal("IMAP login with a wrong password succeeded")
	}
}

func TestMailConcurrentUsers(t *testing.T) {
	ms := Mail(t)
	for i := range 5 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			addr := ms.AddUser(t, fmt.Sprintf("user%d", i), fmt.Sprintf("pw%d", i))
			ms.Deliver(t, "someone@"+OtherDomain, []string{addr},
				[]byte(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)))
			got := ms.WaitMessages(t, addr, fmt.Sprintf("pw%d", i), "INBOX", 1, 20*time.Second)
			if !bytes.Contains(got[0], []byte(fmt.Sprintf("body %d", i))) {
				t.Fatalf("got %q", got[0])
			}
		})
	}
}

func saslPlain(user, pass string) sasl.Client { return sasl.NewPlainClient("", user, pass) }

// helperEnv makes the test binary act as a child that starts every server, prints their pids and hangs.
const helperEnv = "PASSERELLE_TESTENV_HELPER"

func TestHelperStartAndHang(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper for TestServersDieWithProcess")
	}
	Postgres(t)
	Mail(t)
	procsMu.Lock()
	for _, p := range procs {
		fmt.Printf("pid %d\n", p.cmd.Process.Pid)
	}
	procsMu.Unlock()
	fmt.Println("ready")
	select {}
}

// TestServersDieWithProcess kills a test process that started servers and checks none of them survives.
func TestServersDieWithProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("running as the helper")
	}
	if _, ok := postgresBinDir(); !ok {
		unavailable(t, "PostgreSQL is not installed")
	}
	if os.Geteuid() != 0 {
		unavailable(t, "mail servers need root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperStartAndHang$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			break
		}
		var pid int
		if _, err := fmt.Sscanf(line, "pid %d", &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 3 {
		_ = cmd.Process.Kill()
		t.Fatalf("helper reported pids %v, want 3 servers", pids)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("server pid %d still running after its test process was killed", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestPostgresParallel(t *testing.T) {
	for i := range 6 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			dsn := Postgres(t)
			c, err := pgx.Connect(t.Context(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			if _, err := c.Exec(t.Context(), `CREATE TABLE t (v int)`); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMailKick(t *testing.T) {
	ms := Mail(t)
	addr := ms.AddUser(t, "kicked", "pw")
	ms.Kick(t, addr) // no session: not an error
	c, err := imapclient.DialInsecure(ms.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(addr, "pw").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	ms.Kick(t, addr)
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("the session survived the kick")
	}
}

func TestMailPasswordChange(t *testing.T) {
	ms := Mail(t)
	addr := ms.AddUser(t, "changer", "old-pw")
	if _, err := ms.messages(addr, "old-pw", "INBOX"); err != nil {
		t.Fatal(err)
	}
	ms.AddUser(t, "changer", "new-pw")
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errNew := ms.messages(addr, "new-pw", "INBOX")
		_, errOld := ms.messages(addr, "old-pw", "INBOX")
		if errNew == nil && errOld != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a password change: new password err %v, old password err %v", errNew, errOld)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stranger listens on a free port and greets like a mail server that is not ours.
func stranger(t *testing.T) (port int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("220 someone else's server\r\n"))
			_ = c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestStartRetriesWhenPortTaken hands the mail servers, on their first attempt, an SMTP port another server
// already answers on: the start must notice (by the greeting) and succeed on fresh ports.
func TestStartRetriesWhenPortTaken(t *testing.T) {
	ms := Mail(t) // the shared instance must exist first: this test starts a second one beside it
	taken := stranger(t)
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		ports, err := freePorts(n)
		if err == nil && calls == 1 && n == 3 {
			ports[2] = taken
		}
		return ports, err
	}
	defer func() { pickPorts = freePorts }()
	base := filepath.Join(ms.dir, "second")
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dovecot, _ := findBinary("dovecot", "/usr/sbin")
	master, _ := findBinary("master", "/usr/lib/postfix/sbin")
	second, err := startMailIn(base, dovecot, master)
	if err != nil {
		t.Fatalf("start with a taken port: %v", err)
	}
	defer func() {
		second.postfix.discard()
		second.dovecot.discard()
	}()
	if calls < 2 || second.SMTPPort == taken {
		t.Fatalf("no retry: %d port picks, SMTP port %d (taken %d)", calls, second.SMTPPort, taken)
	}
	addr := second.AddUser(t, "retry", "pw")
	second.Deliver(t, "x@"+OtherDomain, []string{addr}, []byte("Subject: r\r\n\r\nretried\r\n"))
	if got := second.WaitMessages(t, addr, "pw", "INBOX", 1, 20*time.Second); !bytes.Contains(got[0], []byte("retried")) {
		t.Fatalf("got %q", got[0])
	}
}

func TestWaitBannerSeesStranger(t *testing.T) {
	port := stranger(t)
	cmd := exec.Command("sleep", "30")
	p, err := launch("sleeper", cmd, filepath.Join(t.TempDir(), "log"), true, syscall.SIGKILL, syscall.SIGKILL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.discard()
	err = p.waitBanner(fmt.Sprintf("127.0.0.1:%d", port), bannerToken())
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("waitBanner = %v, want errPortTaken", err)
	}
}

func TestFreePortsBelowEphemeralRange(t *testing.T) {
	lo := ephemeralLow()
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || (lo-20000 >= 2000 && (p < 20000 || p >= lo)) {
			t.Fatalf("ports %v (ephemeral range starts at %d)", ports, lo)
		}
		seen[p] = true
	}
}

func TestHealthReportsDeadServer(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	logPath := filepath.Join(t.TempDir(), "log")
	p, err := launch("sleeper", cmd, logPath, true, syscall.SIGKILL, syscall.SIGKILL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.discard()
	if h := p.health(); h != "" {
		t.Fatalf("running server reported as %q", h)
	}
	// Mark it started, as the start functions do, so that its death is reported on stderr at once.
	p.ready.Store(true)
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for p.health() == "" {
		if time.Now().After(deadline) {
			t.Fatal("a killed server still counts as healthy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h := p.health(); !strings.Contains(h, "sleeper") || !strings.Contains(h, "killed") {
		t.Fatalf("health = %q, want the name and the cause", h)
	}
}
