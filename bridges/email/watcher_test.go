package email

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/passerelle/passerelle/internal/testenv"
)

// memStore is an in-memory StateStore that survives "restarts" of a watcher within one test.
type memStore struct {
	mu sync.Mutex
	m  map[string]MailboxState
}

func (s *memStore) LoadState(_ context.Context, login, mailbox string) (MailboxState, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.m[login+"/"+mailbox]
	return st, ok, nil
}

func (s *memStore) SaveState(_ context.Context, login, mailbox string, st MailboxState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]MailboxState)
	}
	s.m[login+"/"+mailbox] = st
	return nil
}

var userSeq struct {
	sync.Mutex
	n int
}

// newMailbox creates a fresh test mailbox and returns its account (plaintext, as the test servers are).
func newMailbox(t *testing.T, ms *testenv.MailServers) *Account {
	t.Helper()
	userSeq.Lock()
	userSeq.n++
	local := fmt.Sprintf("%s%d", strings.ToLower(strings.NewReplacer("/", "", "_", "").Replace(t.Name())), userSeq.n)
	userSeq.Unlock()
	if len(local) > 40 {
		local = local[len(local)-40:]
	}
	addr := ms.AddUser(t, local, "secret-"+local)
	return &Account{
		Address:  addr,
		IMAP:     Server{Host: ms.Host, Port: ms.IMAPPort, Security: SecurityNone},
		SMTP:     Server{Host: ms.Host, Port: ms.SMTPPort, Security: SecurityNone},
		Username: addr,
		Password: "secret-" + local,
	}
}

func testMail(from, to, subject, msgID string, extra ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Outside Person <%s>\r\nTo: <%s>\r\nSubject: %s\r\n", from, to, subject)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%s>\r\n", time.Now().Format(time.RFC1123Z), msgID)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello from " + msgID + "\r\n")
	return []byte(b.String())
}

// collector is a Handler recording the Message-ID of each handed-over mail.
type collector struct {
	mu   sync.Mutex
	ids  []string
	ch   chan string
	fail func(msgID string) error
}

func newCollector() *collector { return &collector{ch: make(chan string, 100)} }

func (c *collector) handle(_ context.Context, m *Mail) error {
	raw, err := io.ReadAll(m.Body)
	if err != nil {
		return err
	}
	if int64(len(raw)) != m.Size {
		return fmt.Errorf("size %d != %d", len(raw), m.Size)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	id := strings.Trim(msg.Header.Get("Message-ID"), "<>")
	if c.fail != nil {
		if err := c.fail(id); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.ids = append(c.ids, id)
	c.mu.Unlock()
	c.ch <- id
	return nil
}

func (c *collector) wait(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case got := <-c.ch:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("mail %s not handed over within %s (got %v)", want, timeout, c.all())
		}
	}
}

func (c *collector) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ids...)
}

type runningWatcher struct {
	cancel    context.CancelFunc
	done      chan error
	connected chan struct{}
	states    chan ConnState
}

func startWatcher(t *testing.T, w *Watcher) *runningWatcher {
	t.Helper()
	rw := &runningWatcher{done: make(chan error, 1), connected: make(chan struct{}, 10), states: make(chan ConnState, 100)}
	w.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	w.OnState = func(st ConnState) {
		select {
		case rw.states <- st:
		default:
		}
		if st.Connected {
			rw.connected <- struct{}{}
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	rw.cancel = cancel
	go func() { rw.done <- w.Run(ctx) }()
	t.Cleanup(func() { rw.stop(t) })
	return rw
}

func (rw *runningWatcher) waitConnected(t *testing.T) {
	t.Helper()
	select {
	case <-rw.connected:
	case <-time.After(20 * time.Second):
		t.Fatal("watcher did not connect")
	}
}

func (rw *runningWatcher) stop(t *testing.T) {
	rw.cancel()
	select {
	case err := <-rw.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
		rw.done <- err // idempotent for Cleanup
	case <-time.After(10 * time.Second):
		t.Error("watcher did not stop within 10s of cancel")
	}
}

func TestWatcherBridgesNewMailOnly(t *testing.T) {
	t.Parallel()
	ms := testenv.Mail(t)
	acct := newMailbox(t, ms)
	// Mail that is already there at the first sync is history, not news: it is not bridged.
	ms.Deliver(t, "old@remote.test", []string{acct.Address}, testMail("old@remote.test", acct.Address, "Old", "old-1@remote.test"))
	ms.WaitMessages(t, acct.Address, acct.Password, "INBOX", 1, 10*time.Second)

	col := newCollector()
	rw := startWatcher(t, &Watcher{Account: acct, LoginID: acct.Address, Store: &memStore{}, Handle: col.handle,
		IdleTimeout: time.Minute, AllowInsecure: true})
	rw.waitConnected(t)
	start := time.Now()
	ms.Deliver(t, "bob@remote.test", []string{acct.Address}, testMail("bob@remote.test", acct.Address, "Hello", "new-1@remote.test"))
	col.wait(t, "new-1@remote.test", 15*time.Second)
	t.Logf("IDLE delivered the mail %s after SMTP", time.Since(start))
	if got := col.all(); len(got) != 1 || got[0] != "new-1@remote.test" {
		t.Fatalf("handed over %v, want only new-1", got)
	}
}

func TestWatcherNoLossNoDuplicatesAcrossReconnectAndRestart(t *testing.T) {
	t.Parallel()
	ms := testenv.Mail(t)
	acct := newMailbox(t, ms)
	proxy := newStallProxy(t, ms.IMAPAddr)
	viaProxy := *acct
	viaProxy.IMAP.Port = portOf(t, proxy.Addr())
	store := &memStore{}
	col := newCollector()
	newW := func() *Watcher {
		return &Watcher{Account: &viaProxy, LoginID: acct.Address, Store: store, Handle: col.handle,
			IdleTimeout: time.Minute, CommandTimeout: 2 * time.Second, MaxBackoff: 300 * time.Millisecond, AllowInsecure: true}
	}
	rw := startWatcher(t, newW())
	rw.waitConnected(t)
	ms.Deliver(t, "bob@remote.test", []string{acct.Address}, testMail("bob@remote.test", acct.Address, "One", "m1@remote.test"))
	col.wait(t, "m1@remote.test", 15*time.Second)

	// Drop the connection under the watcher: it must reconnect and find m2, delivered meanwhile.
	proxy.CloseAll()
	ms.Deliver(t, "bob@remote.test", []string{acct.Address}, testMail("bob@remote.test", acct.Address, "Two", "m2@remote.test"))
	col.wait(t, "m2@remote.test", 15*time.Second)
	if proxy.Connections() < 2 {
		t.Fatalf("proxy saw %d connections, want a reconnect", proxy.Connections())
	}

	// "Restart": a new watcher on the same store, mail delivered while nothing was running.
	rw.stop(t)
	ms.Deliver(t, "bob@remote.test", []string{acct.Address}, testMail("bob@remote.test", acct.Address, "Three", "m3@remote.test"))
	ms.WaitMessages(t, acct.Address, acct.Password, "INBOX", 3, 10*time.Second)
	rw2 := startWatcher(t, newW())
	rw2.waitConnected(t)
	col.wait(t, "m3@remote.test", 15*time.Second)
	// Give a duplicate the chance to show up before checking.
	time.Sleep(500 * time.Millisecond)
	want := []string{"m1@remote.test", "m2@remote.test", "m3@remote.test"}
	if got := col.all(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("handed over %v, want exactly %v in order", got, want)
	}
}

func TestWatcherDetectsStalledIdle(t *testing.T) {
	t.Parallel()
	ms := testenv.Mail(t)
	acct := newMailbox(t, ms)
	proxy := newStallProxy(t, ms.IMAPAddr)
	viaProxy := *acct
	viaProxy.IMAP.Port = portOf(t, proxy.Addr())
	col := newCollector()
	rw := startWatcher(t, &Watcher{Account: &viaProxy, LoginID: acct.Address, Store: &memStore{}, Handle: col.handle,
		IdleTimeout: 1500 * time.Millisecond, CommandTimeout: time.Second, MaxBackoff: 300 * time.Millisecond, AllowInsecure: true})
	rw.waitConnected(t)
	// Let the watcher enter IDLE, then freeze the connection without closing it.
	time.Sleep(300 * time.Millisecond)
	proxy.StallAll()
	start := time.Now()
	ms.Deliver(t, "bob@remote.test", []string{acct.Address}, testMail("bob@remote.test", acct.Address, "During stall", "stall-1@remote.test"))
	col.wait(t, "stall-1@remote.test", 20*time.Second)
	t.Logf("mail delivered during the stall arrived after %s", time.Since(start))
	if proxy.Connections() < 2 {
		t.Fatalf("proxy saw %d connections; the stalled one should have been replaced", proxy.Connections())
	}
	sawStall := false
	for len(rw.states) > 0 {
		if st := <-rw.states; st.Err != nil && errors.Is(st.Err, errStalled) {
			sawStall = true
		}
	}
	if !sawStall {
		t.Error("no state change reported the stall (errStalled)")
	}
}

// TestWatcherSkipsMessageThatKeepsFailing: a message whose handling keeps failing (here: an error, then a panic,
// then an error) is retried maxAttempts times and skipped; the mail after it is still bridged.
func TestWatcherSkipsMessageThatKeepsFailing(t *testing.T) {
	t.Parallel()
	ms := testenv.Mail(t)
	acct := newMailbox(t, ms)
	col := newCollector()
	var mu sync.Mutex
	attempts := 0
	col.fail = func(id string) error {
		if id != "poison@remote.test" {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts == 2 {
			panic("parser bug")
		}
		return errors.New("bridge refused it")
	}
	rw := startWatcher(t, &Watcher{Account: acct, LoginID: acct.Address, Store: &memStore{}, Handle: col.handle,
		IdleTimeout: time.Minute, MaxBackoff: 200 * time.Millisecond, AllowInsecure: true})
	rw.waitConnected(t)
	ms.Deliver(t, "bob@remote.test", []string{acct.Address}, testMail("bob@remote.test", acct.Address, "Bad", "poison@remote.test"))
	// Postfix may reorder two mails in its queue; deliver the good one only once the poison one has its UID.
	ms.WaitMessages(t, acct.Address, acct.Password, "INBOX", 1, 10*time.Second)
	ms.Deliver(t, "bob@remote.test", []string{acct.Address}, testMail("bob@remote.test", acct.Address, "Good", "after@remote.test"))
	col.wait(t, "after@remote.test", 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if attempts != maxAttempts {
		t.Fatalf("poison message tried %d times, want %d", attempts, maxAttempts)
	}
}

func TestWatcherWrongPasswordReportsBadCredentials(t *testing.T) {
	t.Parallel()
	ms := testenv.Mail(t)
	acct := newMailbox(t, ms)
	bad := *acct
	bad.Password = "wrong"
	rw := startWatcher(t, &Watcher{Account: &bad, LoginID: acct.Address, Store: &memStore{}, Handle: newCollector().handle,
		AllowInsecure: true})
	select {
	case st := <-rw.states:
		if !st.BadCredentials || st.Connected {
			t.Fatalf("state %+v, want BadCredentials", st)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no state reported")
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	prev := time.Duration(0)
	for n := range 12 {
		d := Backoff(n, time.Minute)
		if d < 100*time.Millisecond || d > time.Minute+time.Minute/10 {
			t.Fatalf("Backoff(%d) = %s out of range", n, d)
		}
		if n < 5 && d < prev/2 {
			t.Fatalf("Backoff(%d) = %s shrank from %s", n, d, prev)
		}
		prev = d
	}
	if d := Backoff(30, time.Minute); d < 54*time.Second {
		t.Fatalf("Backoff(30) = %s, want about the cap", d)
	}
}
