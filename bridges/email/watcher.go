package email

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/rs/zerolog"
)

// Mail is one message fetched from the mailbox, handed to a Handler.
type Mail struct {
	// UID is the message's IMAP UID in the watched mailbox.
	UID uint32
	// Size is the length of Body in bytes.
	Size int64
	// Body is the full RFC 5322 message; it is valid only during the Handler call.
	Body io.ReadSeeker
}

// Handler receives each new message in UID order. Returning nil marks the message as bridged (the sync position
// advances past it). An error means "could not hand it over now" (the bridge is down, the database failed):
// the watcher reconnects and retries it, and after maxAttempts failures skips it so one message can never stop
// the mailbox. A malformed message is not an error: the handler bridges what it can and returns nil.
type Handler func(ctx context.Context, m *Mail) error

// ConnState is reported by the watcher whenever its connection changes.
type ConnState struct {
	// Connected is true once logged in with the mailbox selected.
	Connected bool
	// Err is the reason of a disconnect (nil when connected or stopped).
	Err error
	// BadCredentials is true when the server refused the password.
	BadCredentials bool
}

// Watcher keeps one mailbox of one account bridged: it fetches every message with a UID above the saved
// position, then waits in IDLE for more. IDLE is ended by a watchdog at least every IdleTimeout and the server
// must answer DONE and NOOP within CommandTimeout, so a connection that stalls without closing is detected;
// any error or stall closes the connection and reconnects with capped exponential backoff. The sync position
// (UIDVALIDITY + last UID) is saved after each message, so nothing is lost or fetched twice across reconnects
// and restarts.
type Watcher struct {
	// Account is the mailbox account (with the clear-text password).
	Account *Account
	// LoginID keys the saved sync state.
	LoginID string
	// Mailbox is the folder to watch (default "INBOX").
	Mailbox string
	// Store saves the sync position.
	Store StateStore
	// Handle receives each new message.
	Handle Handler
	// OnState, when set, is called on every connection change (from the watcher's goroutine).
	OnState func(ConnState)
	// IdleTimeout is the longest an IDLE may stay silent before the watchdog ends it (default 5m).
	IdleTimeout time.Duration
	// CommandTimeout bounds one small command such as ending IDLE or NOOP (default 30s).
	CommandTimeout time.Duration
	// FetchTimeout bounds fetching one message body (default 5m: a 25 MiB attachment on a slow link).
	FetchTimeout time.Duration
	// MaxBackoff caps the delay between reconnects (default 5m).
	MaxBackoff time.Duration
	// AllowInsecure permits plaintext connections.
	AllowInsecure bool
	// Log is the watcher's logger.
	Log zerolog.Logger

	// dial replaces the TCP dialer (tests).
	dial dialFunc

	failMu   sync.Mutex
	failures map[uint32]int
}

// maxAttempts is how many times one message is retried before the watcher skips it.
const maxAttempts = 3

// memSpoolLimit is the message size kept in memory while fetching; larger messages are spooled to a temporary
// file so a 25 MiB attachment does not sit in RAM twice.
const memSpoolLimit = 4 << 20

// errStalled is returned when the server did not answer a command in time.
var errStalled = errors.New("IMAP server stopped answering")

func (w *Watcher) defaults() {
	if w.Mailbox == "" {
		w.Mailbox = "INBOX"
	}
	if w.IdleTimeout <= 0 {
		w.IdleTimeout = 5 * time.Minute
	}
	if w.CommandTimeout <= 0 {
		w.CommandTimeout = defaultCommandTimeout
	}
	if w.FetchTimeout <= 0 {
		w.FetchTimeout = 5 * time.Minute
	}
	if w.MaxBackoff <= 0 {
		w.MaxBackoff = 5 * time.Minute
	}
	if w.failures == nil {
		w.failures = make(map[uint32]int)
	}
}

// Run watches the mailbox until ctx is cancelled, reconnecting as needed. It returns ctx's error.
func (w *Watcher) Run(ctx context.Context) error {
	w.defaults()
	attempt := 0
	for {
		connected, err := w.session(ctx)
		if ctx.Err() != nil {
			w.report(ConnState{})
			return ctx.Err()
		}
		if connected {
			attempt = 0
		}
		bad := errors.Is(err, ErrAuthFailed)
		w.report(ConnState{Err: err, BadCredentials: bad})
		delay := Backoff(attempt, w.MaxBackoff)
		if bad {
			// A refused password will not fix itself in a second; do not hammer the server.
			delay = w.MaxBackoff
		}
		attempt++
		w.Log.Warn().Err(err).Dur("retry_in", delay).Msg("IMAP connection lost, reconnecting")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			w.report(ConnState{})
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Backoff is the delay before reconnect attempt n (0-based): 1s doubling up to max, with ±20% jitter so many
// logins do not reconnect in lockstep after a server restart.
func Backoff(n int, max time.Duration) time.Duration {
	d := time.Second
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return max1(d+jitter, 100*time.Millisecond)
}

func max1(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func (w *Watcher) report(st ConnState) {
	if w.OnState != nil {
		w.OnState(st)
	}
}

// conn is one live IMAP connection with a watchdog for every command.
type conn struct {
	c    *imapclient.Client
	ctx  context.Context
	wake chan struct{}
}

// do runs f and closes the connection when it does not finish within d or ctx ends: go-imap has no read
// timeout while it waits for a response to start, so a stalled server would otherwise block f forever.
func (cn *conn) do(d time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		_ = cn.c.Close()
		<-done
		return errStalled
	case <-cn.ctx.Done():
		_ = cn.c.Close()
		<-done
		return cn.ctx.Err()
	}
}

// session runs one connection until it fails. connected reports whether it got as far as selecting the mailbox.
func (w *Watcher) session(ctx context.Context) (connected bool, err error) {
	cn := &conn{ctx: ctx, wake: make(chan struct{}, 1)}
	handler := &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				select {
				case cn.wake <- struct{}{}:
				default:
				}
			}
		},
	}
	dialCtx, cancel := context.WithTimeout(ctx, dialTimeout+w.CommandTimeout)
	c, err := dialIMAPWith(dialCtx, w.dial, w.Account, w.AllowInsecure, handler)
	cancel()
	if err != nil {
		return false, err
	}
	cn.c = c
	defer func() { _ = c.Close() }()

	var sel *imap.SelectData
	err = cn.do(w.CommandTimeout, func() (err error) {
		sel, err = c.Select(w.Mailbox, nil).Wait()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("select %s: %w", w.Mailbox, err)
	}
	st, err := w.initialState(ctx, cn, sel)
	if err != nil {
		return false, err
	}
	w.report(ConnState{Connected: true})
	w.Log.Debug().Uint32("uid_validity", st.UIDValidity).Uint32("last_uid", st.LastUID).Msg("IMAP mailbox selected")

	for {
		if err := w.fetchNew(ctx, cn, &st); err != nil {
			return true, err
		}
		if err := w.idle(cn); err != nil {
			return true, err
		}
	}
}

// initialState loads the saved position; a first sync starts at the current end of the mailbox, and a changed
// UIDVALIDITY (the server renumbered the folder) rescans everything since the last save so nothing is lost —
// bridgev2's Message-ID dedupe keeps already-bridged mail from appearing twice.
func (w *Watcher) initialState(ctx context.Context, cn *conn, sel *imap.SelectData) (MailboxState, error) {
	st, found, err := w.Store.LoadState(ctx, w.LoginID, w.Mailbox)
	if err != nil {
		return st, err
	}
	if found && st.UIDValidity == sel.UIDValidity {
		return st, nil
	}
	if !found {
		last := uint32(0)
		if sel.UIDNext > 0 {
			last = uint32(sel.UIDNext) - 1
		}
		st = MailboxState{UIDValidity: sel.UIDValidity, LastUID: last, Updated: time.Now()}
		w.Log.Info().Uint32("last_uid", last).Msg("First sync of mailbox: bridging mail from now on")
		return st, w.Store.SaveState(ctx, w.LoginID, w.Mailbox, st)
	}
	since := st.Updated.Add(-24 * time.Hour)
	w.Log.Warn().Uint32("old_uid_validity", st.UIDValidity).Uint32("new_uid_validity", sel.UIDValidity).
		Time("rescan_since", since).Msg("UIDVALIDITY changed, rescanning recent mail")
	var data *imap.SearchData
	err = cn.do(w.CommandTimeout, func() (err error) {
		data, err = cn.c.UIDSearch(&imap.SearchCriteria{Since: since}, nil).Wait()
		return err
	})
	if err != nil {
		return st, fmt.Errorf("search after UIDVALIDITY change: %w", err)
	}
	last := uint32(0)
	if uids := data.AllUIDs(); len(uids) > 0 {
		last = uint32(slices.Min(uids)) - 1
	} else if sel.UIDNext > 0 {
		last = uint32(sel.UIDNext) - 1
	}
	st = MailboxState{UIDValidity: sel.UIDValidity, LastUID: last, Updated: time.Now()}
	return st, w.Store.SaveState(ctx, w.LoginID, w.Mailbox, st)
}

// fetchNew hands over every message with a UID above st.LastUID, one at a time, saving the position after each.
func (w *Watcher) fetchNew(ctx context.Context, cn *conn, st *MailboxState) error {
	var data *imap.SearchData
	err := cn.do(w.CommandTimeout, func() (err error) {
		var set imap.UIDSet
		set.AddRange(imap.UID(st.LastUID+1), 0) // "last+1:*"
		data, err = cn.c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{set}}, nil).Wait()
		return err
	})
	if err != nil {
		return fmt.Errorf("search new mail: %w", err)
	}
	uids := data.AllUIDs()
	slices.Sort(uids)
	for _, uid := range uids {
		// "n:*" always matches the highest UID, even when it is below n.
		if uint32(uid) <= st.LastUID {
			continue
		}
		if err := w.fetchOne(ctx, cn, uint32(uid)); err != nil {
			return err
		}
		st.LastUID = uint32(uid)
		st.Updated = time.Now()
		if err := w.Store.SaveState(ctx, w.LoginID, w.Mailbox, *st); err != nil {
			return err
		}
	}
	return nil
}

func (w *Watcher) fetchOne(ctx context.Context, cn *conn, uid uint32) error {
	sp := &spool{}
	defer sp.Close()
	section := &imap.FetchItemBodySection{Peek: true}
	found := false
	err := cn.do(w.FetchTimeout, func() error {
		cmd := cn.c.Fetch(imap.UIDSetNum(imap.UID(uid)), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}})
		defer func() { _ = cmd.Close() }()
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			for item := msg.Next(); item != nil; item = msg.Next() {
				if body, ok := item.(imapclient.FetchItemDataBodySection); ok && body.Literal != nil && !found {
					found = true
					if _, err := io.Copy(sp, body.Literal); err != nil {
						return err
					}
				}
			}
		}
		return cmd.Close()
	})
	if err != nil {
		return fmt.Errorf("fetch UID %d: %w", uid, err)
	}
	if !found {
		w.Log.Debug().Uint32("uid", uid).Msg("Message vanished before it could be fetched")
		return nil
	}
	r, size, err := sp.Reader()
	if err != nil {
		return fmt.Errorf("spool UID %d: %w", uid, err)
	}
	if err := w.safeHandle(ctx, &Mail{UID: uid, Size: size, Body: r}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.failMu.Lock()
		w.failures[uid]++
		n := w.failures[uid]
		if n >= maxAttempts {
			delete(w.failures, uid)
		}
		w.failMu.Unlock()
		if n >= maxAttempts {
			w.Log.Error().Err(err).Uint32("uid", uid).Int("attempts", n).Msg("Giving up on message after repeated failures")
			return nil
		}
		return fmt.Errorf("hand over UID %d: %w", uid, err)
	}
	w.failMu.Lock()
	delete(w.failures, uid)
	w.failMu.Unlock()
	return nil
}

// safeHandle calls the handler, turning a panic (a parser bug on some mail) into an error so one message can
// never take the mailbox loop, or the process, down; after maxAttempts the message is skipped.
func (w *Watcher) safeHandle(ctx context.Context, m *Mail) (err error) {
	defer func() {
		if p := recover(); p != nil {
			w.Log.Error().Any("panic", p).Uint32("uid", m.UID).Bytes("stack", debug.Stack()).Msg("Mail handler panicked")
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return w.Handle(ctx, m)
}

// idle waits in IDLE until the server announces new mail, the watchdog fires, or ctx ends; then it ends IDLE
// and checks the connection with NOOP, both under CommandTimeout.
func (w *Watcher) idle(cn *conn) error {
	caps := cn.c.Caps()
	if !caps.Has(imap.CapIdle) && !caps.Has(imap.CapIMAP4rev2) {
		return w.poll(cn)
	}
	var cmd *imapclient.IdleCommand
	err := cn.do(w.CommandTimeout, func() (err error) {
		cmd, err = cn.c.Idle()
		return err
	})
	if err != nil {
		return fmt.Errorf("start IDLE: %w", err)
	}
	watchdog := time.NewTimer(w.IdleTimeout)
	defer watchdog.Stop()
	select {
	case <-cn.wake:
	case <-watchdog.C:
		w.Log.Trace().Msg("IDLE watchdog fired")
	case <-cn.c.Closed():
		return fmt.Errorf("IDLE: connection closed by server")
	case <-cn.ctx.Done():
		_ = cn.c.Close()
		return cn.ctx.Err()
	}
	err = cn.do(w.CommandTimeout, func() error {
		if err := cmd.Close(); err != nil {
			return err
		}
		return cmd.Wait()
	})
	if err != nil {
		return fmt.Errorf("end IDLE: %w", err)
	}
	err = cn.do(w.CommandTimeout, func() error { return cn.c.Noop().Wait() })
	if err != nil {
		return fmt.Errorf("NOOP: %w", err)
	}
	return nil
}

// pollInterval is how often a server without IDLE is asked for new mail (at most IdleTimeout).
const pollInterval = time.Minute

// poll is idle for servers without the IDLE extension: wait, then NOOP (which also reports new mail).
func (w *Watcher) poll(cn *conn) error {
	t := time.NewTimer(min(pollInterval, w.IdleTimeout))
	defer t.Stop()
	select {
	case <-t.C:
	case <-cn.c.Closed():
		return fmt.Errorf("poll: connection closed by server")
	case <-cn.ctx.Done():
		_ = cn.c.Close()
		return cn.ctx.Err()
	}
	if err := cn.do(w.CommandTimeout, func() error { return cn.c.Noop().Wait() }); err != nil {
		return fmt.Errorf("NOOP: %w", err)
	}
	return nil
}

// spool buffers a message in memory up to memSpoolLimit, then in a temporary file.
type spool struct {
	mem  bytes.Buffer
	file *os.File
	size int64
}

// Write implements io.Writer, moving to a temporary file once the message outgrows memSpoolLimit.
func (s *spool) Write(p []byte) (int, error) {
	if s.file == nil && s.mem.Len()+len(p) > memSpoolLimit {
		f, err := os.CreateTemp("", "passerelle-mail-*")
		if err != nil {
			return 0, err
		}
		_ = os.Remove(f.Name()) // unlinked: the space is freed when it is closed, even after a crash
		if _, err := f.Write(s.mem.Bytes()); err != nil {
			_ = f.Close()
			return 0, err
		}
		s.mem = bytes.Buffer{}
		s.file = f
	}
	var n int
	var err error
	if s.file != nil {
		n, err = s.file.Write(p)
	} else {
		n, err = s.mem.Write(p)
	}
	s.size += int64(n)
	return n, err
}

// Reader returns the spooled content from the start.
func (s *spool) Reader() (io.ReadSeeker, int64, error) {
	if s.file != nil {
		if _, err := s.file.Seek(0, io.SeekStart); err != nil {
			return nil, 0, err
		}
		return s.file, s.size, nil
	}
	return bytes.NewReader(s.mem.Bytes()), s.size, nil
}

// Close releases the temporary file, if any.
func (s *spool) Close() {
	if s.file != nil {
		_ = s.file.Close()
	}
}
