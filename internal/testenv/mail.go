package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Domain is the mail domain whose mailboxes live on the test Dovecot.
const Domain = "example.test"

// OtherDomain is a second local mail domain, for correspondents "outside" the user's provider. Mail to it is
// delivered into Dovecot like mail to Domain, so a test can read what the bridge sent to an outside address.
const OtherDomain = "remote.test"

// MailServers is the mail system shared by the tests of this process: Dovecot serving IMAP and LMTP, and
// Postfix accepting SMTP and relaying into Dovecot over LMTP. No TLS anywhere; plaintext authentication is
// allowed (clients must set their "allow insecure" option).
//
// Incoming mail (no authentication) is accepted only for Domain and OtherDomain. Authenticated clients (SMTP
// AUTH PLAIN/LOGIN with a mailbox's address and password, checked by Dovecot) may send anywhere; mail to
// other domains is bounced, never sent off this machine.
type MailServers struct {
	// IMAPAddr is Dovecot's IMAP listener, "127.0.0.1:port" (plaintext, no STARTTLS).
	IMAPAddr string
	// SMTPAddr is Postfix's SMTP listener, "127.0.0.1:port" (plaintext; AUTH allowed without TLS).
	SMTPAddr string
	// LMTPAddr is Dovecot's LMTP listener, for tests that want to deliver without Postfix.
	LMTPAddr string
	// Host is the listeners' host, "127.0.0.1".
	Host string
	// IMAPPort and SMTPPort are the listeners' ports.
	IMAPPort, SMTPPort int
	// Domain is the test mail domain (the constant Domain); AddUser creates addresses in it.
	Domain string

	dir      string
	mailUID  int
	mailGID  int
	usersMu  sync.Mutex
	dovecot  *process
	postfix  *process
	postLogs string
}

var mail lazy[*MailServers]

// Mail returns the process's mail servers, starting them on first use. They need root (Dovecot runs as root
// and drops privileges; Postfix's data directory must belong to the postfix user).
func Mail(t testing.TB) *MailServers {
	t.Helper()
	dovecot, ok1 := findBinary("dovecot", "/usr/sbin")
	master, ok2 := findBinary("master", "/usr/lib/postfix/sbin")
	switch {
	case !ok1:
		unavailable(t, "Dovecot is not installed (packages dovecot-imapd dovecot-lmtpd)")
	case !ok2:
		unavailable(t, "Postfix is not installed (package postfix)")
	case os.Geteuid() != 0:
		unavailable(t, "the Dovecot/Postfix test servers need root (Dovecot drops privileges to the mail user)")
	}
	srv, err := mail.get(func() (*MailServers, error) { return startMail(dovecot, master) })
	if err != nil {
		t.Fatalf("testenv: start mail servers: %v", err)
	}
	return srv
}

// AddUser creates the mailbox local@Domain with password and returns its address; it can be used at once.
// Adding an address that already exists replaces its password (Dovecot notices within about a second).
// It is safe for concurrent use.
func (m *MailServers) AddUser(t testing.TB, local, password string) string {
	t.Helper()
	addr := strings.ToLower(local) + "@" + m.Domain
	m.AddAddress(t, addr, password)
	return addr
}

// AddAddress creates the mailbox for a full address in Domain or OtherDomain.
func (m *MailServers) AddAddress(t testing.TB, address, password string) {
	t.Helper()
	address = strings.ToLower(address)
	local, domain, ok := strings.Cut(address, "@")
	if !ok || local == "" || (domain != Domain && domain != OtherDomain) {
		t.Fatalf("testenv: address %q must be local@%s or local@%s", address, Domain, OtherDomain)
	}
	// The passwd-file format is colon-separated lines.
	if strings.ContainsAny(address, ":/\n\r ") || strings.ContainsAny(password, ":\n\r") {
		t.Fatalf("testenv: address %q or its password contains a character a passwd-file cannot hold", address)
	}
	if err := m.addAddress(address, password); err != nil {
		t.Fatalf("testenv: add mailbox %s: %v", address, err)
	}
}

func (m *MailServers) addAddress(address, password string) error {
	m.usersMu.Lock()
	defer m.usersMu.Unlock()
	home := filepath.Join(m.dir, "mail", address)
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	if err := os.Chown(home, m.mailUID, m.mailGID); err != nil {
		return err
	}
	// One passwd-file per address: Dovecot opens a file the first time the address is looked up, so a new
	// mailbox is usable at once. (A single shared file is re-read at most once per second, which makes a
	// freshly added user unknown for up to a second.) Replace atomically so a reader never sees half a line.
	line := fmt.Sprintf("%s:{PLAIN}%s:%d:%d::%s::\n", address, password, m.mailUID, m.mailGID, home)
	path := filepath.Join(m.dir, "dovecot", "users", address)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(line), 0o644); err != nil {
		return err
	}
	// Dovecot notices a changed passwd-file by its mtime (whole seconds) and size: a replacement must carry
	// a later second than the file it replaces, or a same-length password change would go unseen.
	if old, err := os.Stat(path); err == nil {
		mtime := time.Now().Truncate(time.Second)
		if !mtime.After(old.ModTime()) {
			mtime = old.ModTime().Truncate(time.Second).Add(time.Second)
		}
		if err := os.Chtimes(tmp, mtime, mtime); err != nil {
			return err
		}
	}
	return os.Rename(tmp, path)
}

// Deliver sends msg over SMTP without authentication, as another mail server would: from is the envelope
// sender, to the envelope recipients (which must be in Domain or OtherDomain). msg uses CRLF line endings.
func (m *MailServers) Deliver(t testing.TB, from string, to []string, msg []byte) {
	t.Helper()
	if err := m.send(nil, from, to, msg); err != nil {
		t.Fatalf("testenv: deliver mail from %s to %v: %v%s", from, to, err, m.health())
	}
}

// Submit sends msg over SMTP after authenticating as a mailbox (AUTH PLAIN), as a mail client would.
func (m *MailServers) Submit(t testing.TB, address, password string, to []string, msg []byte) {
	t.Helper()
	if err := m.send(sasl.NewPlainClient("", address, password), address, to, msg); err != nil {
		t.Fatalf("testenv: submit mail as %s to %v: %v%s", address, to, err, m.health())
	}
}

func (m *MailServers) send(auth sasl.Client, from string, to []string, msg []byte) error {
	c, err := smtp.Dial(m.SMTPAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return err
		}
	}
	if err := c.SendMail(from, to, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// Messages logs in as address and returns the full raw text of every message in mailbox (e.g. "INBOX" or
// "Sent"), oldest first.
func (m *MailServers) Messages(t testing.TB, address, password, mailbox string) [][]byte {
	t.Helper()
	msgs, err := m.messages(address, password, mailbox)
	if err != nil {
		t.Fatalf("testenv: read %s of %s: %v%s", mailbox, address, err, m.health())
	}
	return msgs
}

// WaitMessages polls mailbox until it holds at least n messages and returns them all, failing the test
// after timeout. Delivery through Postfix takes a fraction of a second.
func (m *MailServers) WaitMessages(t testing.TB, address, password, mailbox string, n int, timeout time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := m.messages(address, password, mailbox)
		if err == nil && len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: %s of %s has %d messages (err %v), want %d after %s%s%s", mailbox, address,
				len(msgs), err, n, timeout, fileTail(m.postLogs), m.health())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *MailServers) messages(address, password, mailbox string) ([][]byte, error) {
	c, err := imapclient.DialInsecure(m.IMAPAddr, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Login(address, password).Wait(); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	if sel.NumMessages == 0 {
		_ = c.Logout().Wait()
		return nil, nil
	}
	section := &imap.FetchItemBodySection{Peek: true}
	bufs, err := c.Fetch(imap.SeqSetNum(seqRange(sel.NumMessages)...), &imap.FetchOptions{
		UID:         true,
		BodySection: []*imap.FetchItemBodySection{section},
	}).Collect()
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	out := make([][]byte, 0, len(bufs))
	for _, b := range bufs {
		out = append(out, b.FindBodySection(section))
	}
	_ = c.Logout().Wait()
	return out, nil
}

func seqRange(n uint32) []uint32 {
	s := make([]uint32, n)
	for i := range s {
		s[i] = uint32(i) + 1
	}
	return s
}

// Kick disconnects every IMAP session of address at once (doveadm kick), as a provider dropping connections
// would. Clients must notice and reconnect.
func (m *MailServers) Kick(t testing.TB, address string) {
	t.Helper()
	doveadm, ok := findBinary("doveadm", "/usr/bin")
	if !ok {
		t.Fatal("testenv: doveadm is not installed (package dovecot-core)")
	}
	cmd := exec.Command(doveadm, "-c", filepath.Join(m.dir, "dovecot", "dovecot.conf"), "kick", strings.ToLower(address))
	if err := run(cmd); err != nil {
		// doveadm exits 68 (EX_NOUSER) when the user had no session: nothing to kick is fine.
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 68 {
			return
		}
		t.Fatalf("testenv: kick %s: %v", address, err)
	}
}

// startMail writes Dovecot's and Postfix's configuration into the process's temp root and starts both,
// retrying with fresh ports when a port turns out to be taken.
func startMail(dovecotBin, masterBin string) (*MailServers, error) {
	base, err := root()
	if err != nil {
		return nil, err
	}
	return startMailIn(base, dovecotBin, masterBin)
}

// startMailIn is startMail with its files under base.
func startMailIn(base, dovecotBin, masterBin string) (*MailServers, error) {
	ids, err := lookupIDs("mail", "postfix", "postdrop")
	if err != nil {
		return nil, err
	}
	var errs []error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		m, err := startMailOnce(base, ids, dovecotBin, masterBin)
		if err == nil {
			return m, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
	}
	return nil, errors.Join(errs...)
}

func startMailOnce(base string, ids ids, dovecotBin, masterBin string) (*MailServers, error) {
	ports, err := pickPorts(3)
	if err != nil {
		return nil, err
	}
	m := &MailServers{
		Host:     "127.0.0.1",
		IMAPPort: ports[0],
		SMTPPort: ports[2],
		IMAPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		LMTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
		SMTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2])),
		Domain:   Domain,
		dir:      base,
		mailUID:  ids.uid["mail"],
		mailGID:  ids.gid["mail"],
	}
	if err := m.startDovecot(dovecotBin); err != nil {
		if m.dovecot != nil {
			m.dovecot.discard()
		}
		return nil, err
	}
	if err := m.startPostfix(masterBin, ids); err != nil {
		if m.postfix != nil {
			m.postfix.discard()
		}
		m.dovecot.discard()
		return nil, err
	}
	m.dovecot.ready.Store(true)
	m.postfix.ready.Store(true)
	return m, nil
}

// health returns "" while both servers run, else which one is gone and why (with its log).
func (m *MailServers) health() string {
	var out []string
	for _, p := range []*process{m.dovecot, m.postfix} {
		if h := p.health(); h != "" {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "\n" + strings.Join(out, "\n")
}

// ids holds system user and group IDs by name.
type ids struct {
	uid map[string]int
	gid map[string]int
}

func lookupIDs(users ...string) (ids, error) {
	r := ids{uid: map[string]int{}, gid: map[string]int{}}
	for _, name := range users {
		if u, err := user.Lookup(name); err == nil {
			r.uid[name], _ = strconv.Atoi(u.Uid)
			r.gid[name], _ = strconv.Atoi(u.Gid)
		}
		if g, err := user.LookupGroup(name); err == nil {
			r.gid[name], _ = strconv.Atoi(g.Gid)
		}
	}
	for _, need := range []string{"mail", "postfix"} {
		if _, ok := r.uid[need]; !ok {
			return r, fmt.Errorf("system user %q is missing", need)
		}
	}
	if _, ok := r.gid["postdrop"]; !ok {
		return r, fmt.Errorf("system group postdrop is missing")
	}
	return r, nil
}

var dovecotConf = template.Must(template.New("dovecot.conf").Parse(`# Written by internal/testenv for one test process.
base_dir = {{.Dir}}/dovecot/run
state_dir = {{.Dir}}/dovecot/state
log_path = {{.Dir}}/dovecot/dovecot.log
instance_name = passerelle-test-{{.PID}}
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Lu
login_greeting = passerelle-testenv-{{.PID}} ready
# Tests log in with wrong passwords on purpose: no failure delay (and no per-IP penalty, see service anvil)
# slowing down the next test's logins.
auth_failure_delay = 0 secs
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {{.MailUID}}
first_valid_gid = {{.MailGID}}
mail_location = maildir:~/Maildir
# An IDLE client hears about new mail within a second instead of Dovecot's default.
mailbox_idle_check_interval = 1 secs
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {{.Dir}}/dovecot/users/%Lu
}
userdb {
  driver = passwd-file
  args = username_format=%Lu {{.Dir}}/dovecot/users/%Lu
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \Junk
    auto = subscribe
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{.IMAPPort}}
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = {{.LMTPPort}}
  }
}
# Mode 0 on this socket is Dovecot's documented way to turn the authentication penalty off.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  unix_listener {{.Dir}}/dovecot/run/auth-postfix {
    mode = 0666
  }
}
protocol lmtp {
  postmaster_address = postmaster@{{.Domain}}
}
`))

func (m *MailServers) startDovecot(bin string) error {
	dir := filepath.Join(m.dir, "dovecot")
	mailDir := filepath.Join(m.dir, "mail")
	for _, d := range []string{dir, filepath.Join(dir, "run"), filepath.Join(dir, "state"), filepath.Join(dir, "users"), mailDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chown(mailDir, m.mailUID, m.mailGID); err != nil {
		return err
	}
	var conf bytes.Buffer
	err := dovecotConf.Execute(&conf, map[string]any{
		"Dir": m.dir, "PID": os.Getpid(), "MailUID": m.mailUID, "MailGID": m.mailGID,
		"IMAPPort": m.IMAPPort, "LMTPPort": portOf(m.LMTPAddr), "Domain": m.Domain,
	})
	if err != nil {
		return err
	}
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(bin, "-F", "-c", confPath)
	p, err := launch("dovecot", cmd, filepath.Join(dir, "stdout.log"), true, syscall.SIGTERM, syscall.SIGTERM)
	if err != nil {
		return err
	}
	m.dovecot = p
	p.extraLogs = []string{filepath.Join(dir, "dovecot.log")}
	for _, addr := range []string{m.IMAPAddr, m.LMTPAddr} {
		if err := p.waitBanner(addr, bannerToken()); err != nil {
			return err
		}
	}
	return nil
}

var postfixMain = template.Must(template.New("main.cf").Parse(`# Written by internal/testenv for one test process.
compatibility_level = 3.6
queue_directory = {{.Dir}}/postfix/queue
data_directory = {{.Dir}}/postfix/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {{.Dir}}/postfix
maillog_file = {{.Dir}}/postfix/maillog
myhostname = mx.{{.Domain}}
mydomain = {{.Domain}}
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.1/32
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
biff = no
# Only the two test domains are delivered (into Dovecot); nothing ever leaves this machine.
virtual_mailbox_domains = {{.Domain}} {{.OtherDomain}}
virtual_transport = lmtp:inet:[127.0.0.1]:{{.LMTPPort}}
local_transport = error:5.1.1 local delivery is disabled in tests
default_transport = error:5.4.4 mail to other domains is disabled in tests
relay_transport = error:5.4.4 mail to other domains is disabled in tests
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {{.Dir}}/dovecot/run/auth-postfix
smtpd_sasl_security_options = noanonymous
smtpd_tls_security_level = none
smtp_tls_security_level = none
lmtp_tls_security_level = none
smtpd_banner = $myhostname ESMTP passerelle-testenv-{{.PID}}
# Refused commands are answered at once: tests provoke them on purpose.
smtpd_error_sleep_time = 0
message_size_limit = 67108864
delay_warning_time = 0
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 30s
`))

// postfixMaster lists only the services the test relay needs, none of them chrooted.
var postfixMaster = template.Must(template.New("master.cf").Parse(`# Written by internal/testenv for one test process.
{{.SMTPAddr}} inet n - n - - smtpd
pickup     unix n - n 60   1 pickup
cleanup    unix n - n -    0 cleanup
qmgr       unix n - n 300  1 qmgr
rewrite    unix - - n -    - trivial-rewrite
bounce     unix - - n -    0 bounce
defer      unix - - n -    0 bounce
trace      unix - - n -    0 bounce
verify     unix - - n -    1 verify
flush      unix n - n 1000? 0 flush
proxymap   unix - - n -    - proxymap
proxywrite unix - - n -    1 proxymap
smtp       unix - - n -    - smtp
relay      unix - - n -    - smtp
showq      unix n - n -    - showq
error      unix - - n -    - error
retry      unix - - n -    - error
discard    unix - - n -    - discard
lmtp       unix - - n -    - lmtp
anvil      unix - - n -    1 anvil
scache     unix - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
`))

func (m *MailServers) startPostfix(master string, ids ids) error {
	dir := filepath.Join(m.dir, "postfix")
	queue := filepath.Join(dir, "queue")
	data := filepath.Join(dir, "data")
	pfUID, pfGID, dropGID := ids.uid["postfix"], ids.gid["postfix"], ids.gid["postdrop"]
	// The queue layout Postfix's post-install would create.
	type ownedDir struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}
	dirs := []ownedDir{
		{dir, 0, 0, 0o755},
		{queue, 0, 0, 0o755},
		{data, pfUID, pfGID, 0o700},
		{filepath.Join(queue, "pid"), 0, 0, 0o755},
		{filepath.Join(queue, "public"), pfUID, dropGID, 0o710},
		{filepath.Join(queue, "maildrop"), pfUID, dropGID, 0o730},
	}
	for _, sub := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
		"incoming", "private", "saved", "trace"} {
		dirs = append(dirs, ownedDir{filepath.Join(queue, sub), pfUID, 0, 0o700})
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
	}
	vars := map[string]any{
		"Dir": m.dir, "Domain": m.Domain, "OtherDomain": OtherDomain, "PID": os.Getpid(),
		"LMTPPort": portOf(m.LMTPAddr), "SMTPAddr": m.SMTPAddr,
	}
	for name, tmpl := range map[string]*template.Template{"main.cf": postfixMain, "master.cf": postfixMaster} {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, vars); err != nil {
			return err
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return err
		}
		// Postfix re-reads a config file modified in the last two seconds until it is that old (it could be
		// half-written by an editor); backdating it saves those seconds at every start.
		old := time.Now().Add(-time.Minute)
		if err := os.Chtimes(path, old, old); err != nil {
			return err
		}
	}
	m.postLogs = filepath.Join(dir, "maillog")
	// Postfix's master switches its effective UID while it starts, and the kernel clears a parent-death
	// signal on such a switch. So a small shell stands between: it runs master in the foreground and a
	// reader on a pipe from this process; when the pipe closes (Stop, or this process dying for any reason)
	// the reader sends master SIGTERM, which stops its daemons and exits.
	stopR, stopW, err := os.Pipe()
	if err != nil {
		return err
	}
	// (An asynchronous list's stdin is /dev/null unless redirected explicitly, hence fd 3.)
	const script = `exec 3<&0
"$1" -c "$2" -s </dev/null 3<&- & pid=$!
{ read -r _; kill -TERM "$pid"; } <&3 &
exec 3<&-
wait "$pid"`
	cmd := exec.Command("/bin/sh", "-c", script, "sh", master, dir)
	cmd.Stdin = stopR
	p, err := launch("postfix", cmd, filepath.Join(dir, "stdout.log"), true, 0, syscall.SIGTERM)
	_ = stopR.Close()
	if err != nil {
		_ = stopW.Close()
		return err
	}
	p.stopPipe = stopW
	p.pidFile = filepath.Join(queue, "pid", "master.pid")
	m.postfix = p
	p.extraLogs = []string{m.postLogs}
	return p.waitBanner(m.SMTPAddr, bannerToken())
}

// bannerToken is in the greeting of every server this process starts, so that readiness checks can tell
// them from another process's server that took the same port.
func bannerToken() string { return fmt.Sprintf("passerelle-testenv-%d", os.Getpid()) }

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
