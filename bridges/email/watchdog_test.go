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
	defer func() { _ = conn.Close() }()
	w := func(s string) bool { _, err := conn.Write([]byte(s)); return err == nil }
	if !w("* OK [CAPABILITY IMAP4rev1 IDLE] fake ready\r\n") {
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
		switch verb {
		case "CAPABILITY":
			w("* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + " OK done\r\n")
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
