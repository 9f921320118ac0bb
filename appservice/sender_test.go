package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
	"github.com/passerelle/passerelle/homeserver/storage"
	"github.com/passerelle/passerelle/internal/testenv"
	"github.com/passerelle/passerelle/registration"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fakeSource is an in-memory EventSource: a global stream plus current members and canonical aliases.
type fakeSource struct {
	mu      sync.Mutex
	events  []*rooms.Event
	members map[id.RoomID][]*rooms.Event
	aliases map[id.RoomID]*rooms.Event
	subs    []func(*rooms.Event)
}

func newFakeSource() *fakeSource {
	return &fakeSource{members: map[id.RoomID][]*rooms.Event{}, aliases: map[id.RoomID]*rooms.Event{}}
}

func (f *fakeSource) add(roomID id.RoomID, sender id.UserID, evType string, stateKey *string, content string) *rooms.Event {
	f.mu.Lock()
	ev := &rooms.Event{
		ID:             id.EventID(fmt.Sprintf("$e%d", len(f.events)+1)),
		RoomID:         roomID,
		Sender:         sender,
		Type:           evType,
		StateKey:       stateKey,
		Content:        json.RawMessage(content),
		OriginServerTS: time.Now().UnixMilli(),
		StreamPos:      int64(len(f.events) + 1),
	}
	f.events = append(f.events, ev)
	if evType == "m.room.member" {
		ms := f.members[roomID]
		ms = slices.DeleteFunc(ms, func(m *rooms.Event) bool { return *m.StateKey == *stateKey })
		f.members[roomID] = append(ms, ev)
	}
	if evType == "m.room.canonical_alias" {
		f.aliases[roomID] = ev
	}
	subs := f.subs
	f.mu.Unlock()
	for _, fn := range subs {
		fn(ev)
	}
	return ev
}

func (f *fakeSource) msg(roomID id.RoomID, sender id.UserID, body string) *rooms.Event {
	return f.add(roomID, sender, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))
}

func (f *fakeSource) join(roomID id.RoomID, user id.UserID) *rooms.Event {
	sk := string(user)
	return f.add(roomID, user, "m.room.member", &sk, `{"membership":"join"}`)
}

func (f *fakeSource) EventsAfter(_ context.Context, after int64, limit int) ([]*rooms.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if after >= int64(len(f.events)) {
		return nil, nil
	}
	end := min(int(after)+limit, len(f.events))
	return slices.Clone(f.events[after:end]), nil
}

func (f *fakeSource) MaxStreamPos(context.Context) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.events)), nil
}

func (f *fakeSource) Members(_ context.Context, roomID id.RoomID) ([]*rooms.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.members[roomID]), nil
}

func (f *fakeSource) StateEvent(_ context.Context, roomID id.RoomID, evType, stateKey string) (*rooms.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ev := f.aliases[roomID]; ev != nil && evType == "m.room.canonical_alias" && stateKey == "" {
		return ev, nil
	}
	return nil, mxerr.NotFound("no such state event")
}

func (f *fakeSource) Subscribe(fn func(*rooms.Event)) {
	f.mu.Lock()
	f.subs = append(f.subs, fn)
	f.mu.Unlock()
}

// recvTxn is one transaction as the fake appservice saw it.
type recvTxn struct {
	ID       string
	Body     string
	EventIDs []id.EventID
	Accepted bool
}

// fakeAS is an httptest appservice that refuses the first failFirst transactions with a 500 (or all of them
// while failAll is set) and records every attempt.
type fakeAS struct {
	t       testing.TB
	hsToken string

	mu        sync.Mutex
	failFirst int
	failAll   bool
	attempts  []recvTxn
	changed   chan struct{}
}

func newFakeAS(t testing.TB, hsToken string, failFirst int) *fakeAS {
	return &fakeAS{t: t, hsToken: hsToken, failFirst: failFirst, changed: make(chan struct{}, 1)}
}

func (a *fakeAS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut || !strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") {
		http.Error(w, "unexpected request", http.StatusNotFound)
		a.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+a.hsToken {
		http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
		a.t.Errorf("wrong Authorization header")
		return
	}
	body, _ := io.ReadAll(r.Body)
	var txn struct {
		Events []struct {
			EventID  id.EventID `json:"event_id"`
			Unsigned struct {
				Age *int64 `json:"age"`
			} `json:"unsigned"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &txn); err != nil {
		a.t.Errorf("bad transaction JSON: %v", err)
	}
	rec := recvTxn{ID: strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"), Body: string(body)}
	for _, e := range txn.Events {
		rec.EventIDs = append(rec.EventIDs, e.EventID)
	}
	a.mu.Lock()
	fail := a.failAll || a.failFirst > 0
	if a.failFirst > 0 {
		a.failFirst--
	}
	rec.Accepted = !fail
	a.attempts = append(a.attempts, rec)
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
	if fail {
		http.Error(w, `{"errcode":"M_UNKNOWN","error":"try later"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))
}

// accepted returns the event IDs of acknowledged transactions in order, de-duplicating transactions that were
// acknowledged twice (the same txn ID means the same events to an appservice).
func (a *fakeAS) accepted() []id.EventID {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []id.EventID
	seen := map[string]bool{}
	for _, r := range a.attempts {
		if r.Accepted && !seen[r.ID] {
			seen[r.ID] = true
			out = append(out, r.EventIDs...)
		}
	}
	return out
}

func (a *fakeAS) snapshot() []recvTxn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.attempts)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dbCase opens the same logical database again on every call (so a test can "restart").
type dbCase struct {
	name string
	open func(t testing.TB) *dbutil.Database
}

func allDatabases(t *testing.T) []dbCase {
	sqliteDir := map[string]string{}
	var mu sync.Mutex
	return []dbCase{
		{"sqlite", func(t testing.TB) *dbutil.Database {
			mu.Lock()
			dir, ok := sqliteDir[t.Name()]
			if !ok {
				dir = t.TempDir()
				sqliteDir[t.Name()] = dir
			}
			mu.Unlock()
			return openDB(t, configs.Database{Type: "sqlite"}, dir)
		}},
		{"postgres", func(t testing.TB) *dbutil.Database {
			mu.Lock()
			dsn, ok := sqliteDir["pg:"+t.Name()]
			mu.Unlock()
			if !ok {
				dsn = testenv.Postgres(t)
				mu.Lock()
				sqliteDir["pg:"+t.Name()] = dsn
				mu.Unlock()
			}
			return openDB(t, configs.Database{Type: "postgres", URI: dsn}, "")
		}},
	}
}

func openDB(t testing.TB, cfg configs.Database, dir string) *dbutil.Database {
	t.Helper()
	db, err := storage.Open(t.Context(), cfg, dir, "homeserver", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func testReg(t testing.TB, asURL string) *registration.Registration {
	reg := registration.Generate("bridge", asURL, "bridgebot", `@bridge_.*:hs`)
	reg.Namespaces.RoomAliases = appservice.NamespaceList{{Regex: `#bridge_.*:hs`, Exclusive: true}}
	reg.Namespaces.RoomIDs = appservice.NamespaceList{{Regex: `!portal.*:hs`}}
	if _, err := registration.NewSet("hs", reg); err != nil {
		t.Fatal(err)
	}
	return reg
}

// populate writes a mix of events, returns the IDs the appservice must receive, in order.
func populate(f *fakeSource, n int) []id.EventID {
	var want []id.EventID
	keep := func(ev *rooms.Event) { want = append(want, ev.ID) }
	ca := ""
	// Interest is decided on the room's current state when the batch is built (as Synapse does), so alice's
	// join counts: by then the ghost has joined too.
	keep(f.join("!joined:hs", "@alice:hs"))
	keep(f.join("!joined:hs", "@bridge_ghost:hs")) // target in namespace
	f.join("!other:hs", "@alice:hs")
	keep(f.add("!aliased:hs", "@alice:hs", "m.room.canonical_alias", &ca, `{"alias":"#bridge_x:hs"}`))
	for i := range n {
		switch i % 5 {
		case 0:
			keep(f.msg("!other:hs", "@bridge_ghost:hs", fmt.Sprint("ghost ", i))) // sender in namespace
		case 1:
			keep(f.msg("!joined:hs", "@alice:hs", fmt.Sprint("joined ", i))) // room has a joined ghost
		case 2:
			f.msg("!other:hs", "@alice:hs", fmt.Sprint("unrelated ", i)) // must not be sent
		case 3:
			keep(f.msg("!portal1:hs", "@alice:hs", fmt.Sprint("room ns ", i))) // room ID namespace
		case 4:
			keep(f.msg("!aliased:hs", "@alice:hs", fmt.Sprint("alias ", i))) // canonical alias namespace
		}
	}
	return want
}

func TestSenderRetriesAndKeepsOrder(t *testing.T) {
	for _, dc := range allDatabases(t) {
		t.Run(dc.name, func(t *testing.T) {
			src := newFakeSource()
			as := newFakeAS(t, "", 3)
			srv := httptest.NewServer(as)
			t.Cleanup(srv.Close)
			reg := testReg(t, srv.URL)
			as.hsToken = reg.ServerToken

			db := dc.open(t)
			s, err := NewSender(t.Context(), db, src, []*registration.Registration{reg}, srv.Client(),
				configs.Appservices{MaxRetryInterval: 20 * time.Millisecond}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			src.msg("!joined:hs", "@bridge_ghost:hs", "before start: never sent (new appservice starts at the end)")
			if err := s.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Stop)
			want := populate(src, 260)
			waitFor(t, "all events", 20*time.Second, func() bool { return len(as.accepted()) >= len(want) })
			got := as.accepted()
			if !slices.Equal(got, want) {
				t.Fatalf("appservice got %d events, want %d; first difference at %d", len(got), len(want),
					firstDiff(got, want))
			}
			atts := as.snapshot()
			// The first three attempts failed: each retry repeats the same txn ID and byte-identical body.
			for i := 1; i <= 3; i++ {
				if atts[i].ID != atts[0].ID || atts[i].Body != atts[0].Body {
					t.Fatalf("retry %d changed the transaction: %q vs %q", i, atts[i].ID, atts[0].ID)
				}
			}
			seenIDs := map[string]bool{}
			for _, a := range atts {
				if len(a.EventIDs) > maxTxnEvents || len(a.EventIDs) == 0 {
					t.Errorf("transaction %s has %d events", a.ID, len(a.EventIDs))
				}
				if a.Accepted {
					if seenIDs[a.ID] {
						t.Errorf("transaction %s acknowledged twice", a.ID)
					}
					seenIDs[a.ID] = true
				}
			}
			// The appservice has the events slightly before the sender records the acknowledgement.
			waitFor(t, "the sender to record the last acknowledgement", 5*time.Second, func() bool {
				st := s.Status()
				return len(st) == 1 && st[0].PendingTxn == "" && st[0].StreamPos == int64(len(src.events)) && st[0].Failures == 0
			})
		})
	}
}

func firstDiff(a, b []id.EventID) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestSenderSurvivesRestart(t *testing.T) {
	for _, dc := range allDatabases(t) {
		t.Run(dc.name, func(t *testing.T) {
			src := newFakeSource()
			as := newFakeAS(t, "", 0)
			as.failAll = true
			srv := httptest.NewServer(as)
			t.Cleanup(srv.Close)
			reg := testReg(t, srv.URL)
			as.hsToken = reg.ServerToken
			cfg := configs.Appservices{MaxRetryInterval: 20 * time.Millisecond}

			db1 := dc.open(t)
			s1, err := NewSender(t.Context(), db1, src, []*registration.Registration{reg}, srv.Client(), cfg, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if err := s1.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			want := populate(src, 30)
			waitFor(t, "a few failed attempts", 10*time.Second, func() bool { return len(as.snapshot()) >= 3 })
			s1.Stop()
			_ = db1.Close()
			first := as.snapshot()[0]

			// More events arrive while the hub is down; then the appservice recovers.
			for i := range 20 {
				want = append(want, src.msg("!other:hs", "@bridge_ghost:hs", fmt.Sprint("while down ", i)).ID)
			}
			as.mu.Lock()
			as.failAll = false
			n := len(as.attempts)
			as.mu.Unlock()

			db2 := dc.open(t)
			s2, err := NewSender(t.Context(), db2, src, []*registration.Registration{reg}, srv.Client(), cfg, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if err := s2.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s2.Stop)
			waitFor(t, "all events after restart", 10*time.Second, func() bool { return len(as.accepted()) >= len(want) })
			after := as.snapshot()[n]
			if after.ID != first.ID || after.Body != first.Body {
				t.Fatalf("after restart the first transaction was %s, want the persisted %s resent unchanged", after.ID, first.ID)
			}
			if got := as.accepted(); !slices.Equal(got, want) {
				t.Fatalf("got %d events, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
			// Transaction IDs keep growing across the restart.
			ids := map[string]bool{}
			for _, a := range as.snapshot()[n:] {
				ids[a.ID] = true
			}
			if len(ids) < 2 || !ids["2"] {
				t.Errorf("expected a new transaction 2 after the resent 1, got %v", ids)
			}
		})
	}
}

// roundTripFunc routes requests to a function, with no network, so synctest's fake clock can run.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestSenderBackoffIsCapped(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		db, err := storage.Open(t.Context(), configs.Database{Type: "sqlite"}, dir, "homeserver", zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		src := newFakeSource()
		reg := testReg(t, "http://bridge.invalid")
		var (
			mu       sync.Mutex
			attempts []time.Time
		)
		const failures = 7
		client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			_, _ = io.Copy(io.Discard, r.Body)
			mu.Lock()
			defer mu.Unlock()
			attempts = append(attempts, time.Now())
			status := http.StatusOK
			if len(attempts) <= failures {
				status = http.StatusBadGateway
			}
			return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader("{}")), Header: http.Header{}}, nil
		})}
		s, err := NewSender(t.Context(), db, src, []*registration.Registration{reg}, client,
			configs.Appservices{MaxRetryInterval: 10 * time.Second}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		src.msg("!r:hs", "@bridge_x:hs", "hello")
		time.Sleep(2 * time.Minute)
		s.Stop()

		mu.Lock()
		defer mu.Unlock()
		if len(attempts) != failures+1 {
			t.Fatalf("got %d attempts, want %d", len(attempts), failures+1)
		}
		wantGaps := []time.Duration{1, 2, 4, 8, 10, 10, 10}
		for i, want := range wantGaps {
			if gap := attempts[i+1].Sub(attempts[i]); gap != want*time.Second {
				t.Errorf("gap before attempt %d = %v, want %v", i+2, gap, want*time.Second)
			}
		}
		if attempts[0].Sub(start) != 0 {
			t.Errorf("first attempt after %v, want at once", attempts[0].Sub(start))
		}
		if st := s.Status()[0]; st.Delivered != 1 || st.PendingTxn != "" {
			t.Errorf("status: %+v", st)
		}
	})
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	cases := []struct {
		attempt int
		cap     time.Duration
		want    time.Duration
	}{
		{1, time.Minute, time.Second},
		{2, time.Minute, 2 * time.Second},
		{6, time.Minute, 32 * time.Second},
		{7, time.Minute, time.Minute},
		{1000, time.Minute, time.Minute},
		{1, 100 * time.Millisecond, 100 * time.Millisecond},
	}
	for _, c := range cases {
		if got := retryDelay(c.attempt, c.cap); got != c.want {
			t.Errorf("retryDelay(%d, %v) = %v, want %v", c.attempt, c.cap, got, c.want)
		}
	}
}

func TestSenderSkipsRegistrationWithoutURL(t *testing.T) {
	t.Parallel()
	db := openDB(t, configs.Database{Type: "sqlite"}, filepath.Join(t.TempDir()))
	reg := testReg(t, "")
	s, err := NewSender(t.Context(), db, newFakeSource(), []*registration.Registration{reg}, nil, configs.Appservices{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Status()) != 0 {
		t.Fatalf("a registration without url got a worker: %+v", s.Status())
	}
}

// TestSenderStopDuringTransaction stops the sender while the appservice is still holding a PUT: Stop returns
// promptly, and the next sender resends that very transaction before anything else.
func TestSenderStopDuringTransaction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := newFakeSource()
	release := make(chan struct{})
	var (
		mu   sync.Mutex
		seen []string
	)
	hanging := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.URL.Path+" "+string(body))
		hang := hanging
		mu.Unlock()
		if hang {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	reg := testReg(t, srv.URL)
	cfg := configs.Appservices{MaxRetryInterval: 20 * time.Millisecond}

	db1 := openDB(t, configs.Database{Type: "sqlite"}, dir)
	s1, err := NewSender(t.Context(), db1, src, []*registration.Registration{reg}, srv.Client(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	src.msg("!r:hs", "@bridge_a:hs", "in flight at shutdown")
	waitFor(t, "the PUT to arrive", 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 1 })
	start := time.Now()
	s1.Stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Stop took %v with a transaction in flight", d)
	}
	_ = db1.Close()

	mu.Lock()
	hanging = false
	first := seen[0]
	mu.Unlock()
	src.msg("!r:hs", "@bridge_a:hs", "after restart")
	db2 := openDB(t, configs.Database{Type: "sqlite"}, dir)
	s2, err := NewSender(t.Context(), db2, src, []*registration.Registration{reg}, srv.Client(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s2.Stop)
	waitFor(t, "both transactions", 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) >= 3 })
	mu.Lock()
	defer mu.Unlock()
	if seen[1] != first {
		t.Fatalf("first request after restart was %.80q, want the interrupted transaction %.80q", seen[1], first)
	}
	if !strings.Contains(seen[2], "/transactions/2 ") || !strings.Contains(seen[2], "after restart") {
		t.Fatalf("second request after restart: %.120q", seen[2])
	}
}
