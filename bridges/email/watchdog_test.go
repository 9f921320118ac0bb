package email

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
)

// scriptedIMAP is a minimal IMAP server on one end of a net.Pipe: enough of LOGIN, SELECT, UID SEARCH, IDLE and
// NOOP for the watcher. With stallAfterIdle set it goes silent once IDLE starts: it reads but never answers,
// like a server behind a dead NAT mapping.
func scriptedIMAP(conn net.Conn, stallAfterIdle bool) {
	scriptedIMAPCaps(conn, stallAfterIdle, "IMAP4rev1 IDLE", nil)
}

// scriptedIMAPCaps is scriptedIMAP with a chosen capability list; every received command verb is sent to seen.
func scriptedIMAPCaps(conn net.Conn, stallAfterIdle bool, caps string, seen chan<- string) {
	defer func() { _ = conn.Close() }()
	w := func(s string) bool { _, err := conn.Write([]byte(s)); return err == nil }
	if !w("* OK [CAPABILITY " + caps + "] fake ready\r\n") {
		return
	}
	r := bufio.NewReader(conn)
	idling := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		if idling != "" {
			if stallAfterIdle {
				continue
			}
			if strings.EqualFold(line, "DONE") {
				w(idling + " OK idle done\r\n")
				idling = ""
			}
			continue
		}
		tag, cmd, _ := strings.Cut(line, " ")
		verb := strings.ToUpper(strings.Fields(cmd + " x")[0])
		if seen != nil {
			select {
			case seen <- verb:
			default:
			}
		}
		switch verb {
		case "CAPABILITY":
			w("* CAPABILITY " + caps + "\r\n" + tag + " OK done\r\n")
		case "SELECT":
			w("* 0 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 1] n\r\n" + tag + " OK [READ-WRITE] selected\r\n")
		case "UID":
			w("* SEARCH\r\n" + tag + " OK searched\r\n")
		case "IDLE":
			idling = tag
			w("+ idling\r\n")
		case "LOGOUT":
			w("* BYE\r\n" + tag + " OK bye\r\n")
			return
		default:
			w(tag + " OK done\r\n")
		}
	}
}

// TestWatchdogTiming runs the watcher with the default timings in a synctest bubble: a server that stops
// answering during IDLE is detected exactly IdleTimeout + CommandTimeout after IDLE began (5m30s), and the
// watcher reconnects right after.
func TestWatchdogTiming(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		dials := 0
		var stalledAt, reconnectedAt time.Time
		start := time.Now()
		w := &Watcher{
			Account:       &Account{Address: "a@x.test", IMAP: Server{Host: "fake", Port: 143, Security: SecurityNone}, Username: "a", Password: "p"},
			LoginID:       "a@x.test",
			Store:         &memStore{},
			Handle:        func(context.Context, *Mail) error { return nil },
			AllowInsecure: true,
			MaxBackoff:    2 * time.Second,
			Log:           zerolog.Nop(),
		}
		w.dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			client, server := net.Pipe()
			mu.Lock()
			dials++
			first := dials == 1
			mu.Unlock()
			go scriptedIMAP(server, first)
			return client, nil
		}
		w.OnState = func(st ConnState) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case st.Err != nil && errors.Is(st.Err, errStalled) && stalledAt.IsZero():
				stalledAt = time.Now()
			case st.Connected && !stalledAt.IsZero() && reconnectedAt.IsZero():
				reconnectedAt = time.Now()
			}
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if stalledAt.IsZero() {
			t.Fatal("the stall was never detected")
		}
		if got, want := stalledAt.Sub(start), 5*time.Minute+30*time.Second; got != want {
			t.Fatalf("stall detected after %s, want IdleTimeout+CommandTimeout = %s", got, want)
		}
		if reconnectedAt.IsZero() || reconnectedAt.Sub(stalledAt) > 2*time.Second {
			t.Fatalf("reconnected at %v, %s after the stall; want within the 1s (+jitter) first backoff", reconnectedAt, reconnectedAt.Sub(stalledAt))
		}
		// The healthy second connection kept going through watchdog rounds without being dropped.
		if dials != 2 {
			t.Fatalf("%d connections, want 2 (the stalled one and its replacement)", dials)
		}
	})
}

// TestUIDValidityChangeResetsPosition: when the server renumbered the mailbox (new UIDVALIDITY), the saved
// last UID means nothing any more; keeping it would skip every new mail below it. The watcher rescans instead.
func TestUIDValidityChangeResetsPosition(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		store := &memStore{}
		old := MailboxState{UIDValidity: 6, LastUID: 50, Updated: time.Now()}
		if err := store.SaveState(t.Context(), "a@x.test", "INBOX", old); err != nil {
			t.Fatal(err)
		}
		w := &Watcher{
			Account:       &Account{Address: "a@x.test", IMAP: Server{Host: "fake", Port: 143, Security: SecurityNone}, Username: "a", Password: "p"},
			LoginID:       "a@x.test",
			Store:         store,
			Handle:        func(context.Context, *Mail) error { return nil },
			AllowInsecure: true,
			Log:           zerolog.Nop(),
		}
		w.dial = func(context.Context, string, string) (net.Conn, error) {
			client, server := net.Pipe()
			go scriptedIMAP(server, false)
			return client, nil
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		time.Sleep(time.Second)
		synctest.Wait()
		cancel()
		<-done
		st, _, _ := store.LoadState(t.Context(), "a@x.test", "INBOX")
		if st.UIDValidity != 7 || st.LastUID != 0 {
			t.Fatalf("state after UIDVALIDITY change: %+v, want validity 7 and position reset to 0", st)
		}
	})
}

// TestWatcherPollsServersWithoutIdle: a server without IDLE is polled with NOOP every minute instead of being
// sent an IDLE it would refuse (which would mean a reconnect loop).
func TestWatcherPollsServersWithoutIdle(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		seen := make(chan string, 1000)
		w := &Watcher{
			Account:       &Account{Address: "a@x.test", IMAP: Server{Host: "fake", Port: 143, Security: SecurityNone}, Username: "a", Password: "p"},
			LoginID:       "a@x.test",
			Store:         &memStore{},
			Handle:        func(context.Context, *Mail) error { return nil },
			AllowInsecure: true,
			Log:           zerolog.Nop(),
		}
		dials := 0
		w.dial = func(context.Context, string, string) (net.Conn, error) {
			dials++
			client, server := net.Pipe()
			go scriptedIMAPCaps(server, false, "IMAP4rev1", seen)
			return client, nil
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		time.Sleep(5*time.Minute + 30*time.Second)
		synctest.Wait()
		cancel()
		<-done
		close(seen)
		counts := map[string]int{}
		for v := range seen {
			counts[v]++
		}
		if counts["IDLE"] != 0 || dials != 1 {
			t.Fatalf("sent IDLE %d times over %d connections to a server without IDLE", counts["IDLE"], dials)
		}
		if counts["NOOP"] != 5 {
			t.Fatalf("%d NOOP polls in 5m30s, want 5 (one a minute)", counts["NOOP"])
		}
	})
}
