package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/appservice"
	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/internal/testenv"
	"github.com/passerelle/passerelle/registration"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testLogger writes to the test log at debug level when -v is given, else only warnings.
func testLogger(t *testing.T) zerolog.Logger {
	level := zerolog.WarnLevel
	if testing.Verbose() {
		level = zerolog.DebugLevel
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(level).With().Timestamp().Logger()
}

// runningHub starts a hub on a temp data dir and a free port; it stops when the test ends.
type runningHub struct {
	*Hub
	URL  string
	done chan error
	stop context.CancelFunc
}

func startHub(t *testing.T, cfg *configs.Config) *runningHub {
	t.Helper()
	return startHubWith(t, cfg, testLogger(t), nil)
}

// startHubWith starts a hub on a loopback port with the given logger, calling tweak (if not nil) on it before it
// serves, and stops it when the test ends.
func startHubWith(t *testing.T, cfg *configs.Config, log zerolog.Logger, tweak func(*Hub)) *runningHub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h, err := New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("hub.New: %v", err)
	}
	if tweak != nil {
		tweak(h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	rh := &runningHub{Hub: h, URL: "http://" + ln.Addr().String(), done: make(chan error, 1), stop: cancel}
	go func() { rh.done <- h.Serve(ctx, ln) }()
	select {
	case <-h.Ready():
	case err := <-rh.done:
		cancel()
		t.Fatalf("hub stopped during start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("hub did not become ready")
	}
	t.Cleanup(func() { rh.shutdown(t) })
	return rh
}

func (rh *runningHub) shutdown(t *testing.T) {
	rh.stop()
	select {
	case err := <-rh.done:
		if err != nil {
			t.Errorf("hub.Serve returned %v", err)
		}
		rh.done <- nil // let a second call return at once
	case <-time.After(30 * time.Second):
		t.Error("hub did not stop within 30 s")
	}
}

func testConfig(t *testing.T) *configs.Config {
	cfg := configs.Default()
	cfg.Server.DataDir = t.TempDir()
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Bridges.Email.AllowInsecure = true
	return cfg
}

// newUser creates an account through the users service and returns a logged-in mautrix client.
func newUser(t *testing.T, rh *runningHub, localpart string) *mautrix.Client {
	t.Helper()
	ctx := t.Context()
	us := rh.Homeserver().Users()
	userID, err := us.Register(ctx, localpart, "correct horse battery", users.RegisterOpts{})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	_, token, err := us.NewDevice(ctx, userID, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := mautrix.NewClient(rh.URL, userID, token)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// syncer follows /sync for one client; events not yet matched stay queued for later waits.
type syncer struct {
	cli     *mautrix.Client
	since   string
	pending []*event.Event
}

// initial does the first /sync so that later waits only see new events.
func (s *syncer) initial(t *testing.T) {
	t.Helper()
	resp, err := s.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{})
	if err != nil {
		t.Fatalf("initial sync: %v", err)
	}
	s.since = resp.NextBatch
}

// waitFor long-polls /sync until match returns true for a timeline (or invite state) event, or the timeout
// passes. Events before the match are dropped; events after it stay queued.
func (s *syncer) waitFor(t *testing.T, timeout time.Duration, what string, match func(roomID id.RoomID, evt *event.Event) bool) *event.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for i, evt := range s.pending {
			if match(evt.RoomID, evt) {
				s.pending = s.pending[i+1:]
				return evt
			}
		}
		s.pending = nil
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		resp, err := s.cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: s.since, Timeout: 2000})
		cancel()
		if err != nil {
			t.Fatalf("sync while waiting for %s: %v", what, err)
		}
		s.since = resp.NextBatch
		add := func(roomID id.RoomID, evts []*event.Event) {
			for _, evt := range evts {
				evt.RoomID = roomID
				_ = evt.Content.ParseRaw(evt.Type)
				s.pending = append(s.pending, evt)
			}
		}
		for roomID, room := range resp.Rooms.Join {
			add(roomID, room.Timeline.Events)
		}
		for roomID, room := range resp.Rooms.Invite {
			add(roomID, room.State.Events)
		}
	}
}

func textFrom(sender id.UserID, roomID id.RoomID, contains string) func(id.RoomID, *event.Event) bool {
	return func(r id.RoomID, evt *event.Event) bool {
		if r != roomID || evt.Sender != sender || evt.Type != event.EventMessage {
			return false
		}
		msg := evt.Content.AsMessage()
		return msg != nil && strings.Contains(strings.ToLower(msg.Body), strings.ToLower(contains))
	}
}

// TestBotDM is the backbone: hub → appservice transaction → bridgev2 → bot reply → homeserver → /sync, on
// SQLite and on PostgreSQL (homeserver and bridge tables in one database).
func TestBotDM(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testBotDM(t, testConfig(t)) })
	t.Run("postgres", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Database.Type = "postgres"
		cfg.Database.URI = testenv.Postgres(t)
		testBotDM(t, cfg)
	})
}

func testBotDM(t *testing.T, cfg *configs.Config) {
	rh := startHub(t, cfg)
	ctx := t.Context()

	for _, st := range rh.Bridges().Status() {
		if st.State != appservice.StateRunning {
			t.Fatalf("bridge %s is %s: %s", st.ID, st.State, st.Error)
		}
	}
	bot := id.NewUserID(cfg.Bridges.Email.BotLocalpart, cfg.Server.ServerName)
	alice := newUser(t, rh, "alice")
	s := &syncer{cli: alice}
	s.initial(t)

	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset:   "trusted_private_chat",
		IsDirect: true,
		Invite:   []id.UserID{bot},
	})
	if err != nil {
		t.Fatalf("create DM: %v", err)
	}
	s.waitFor(t, 30*time.Second, "the bot to join", func(r id.RoomID, evt *event.Event) bool {
		return r == resp.RoomID && evt.Type == event.StateMember && evt.GetStateKey() == bot.String() &&
			evt.Content.AsMember().Membership == event.MembershipJoin
	})

	s.waitFor(t, 30*time.Second, "the bot's welcome", textFrom(bot, resp.RoomID, "management room"))

	if _, err := alice.SendText(ctx, resp.RoomID, "help"); err != nil {
		t.Fatalf("send help: %v", err)
	}
	reply := s.waitFor(t, 30*time.Second, "the bot's help reply", func(r id.RoomID, evt *event.Event) bool {
		return textFrom(bot, resp.RoomID, "Show this help message")(r, evt) &&
			evt.Content.AsMessage().MsgType == event.MsgNotice
	})
	body := reply.Content.AsMessage().Body
	for _, want := range []string{"login", "logout"} {
		if !strings.Contains(body, want) {
			t.Errorf("help reply does not list %q:\n%s", want, body)
		}
	}

	// The sender delivered everything it had to the bridge.
	st := rh.Sender().Status()
	if len(st) != 1 || st[0].ID != EmailBridgeID || st[0].Delivered == 0 {
		t.Errorf("sender status: %+v", st)
	}
}

// TestRestartKeepsRegistration checks that the bridge registration is generated once and reused, and that the
// hub restarts cleanly on the same data directory with the bot still answering.
func TestRestartKeepsRegistration(t *testing.T) {
	cfg := testConfig(t)
	rh := startHub(t, cfg)
	regPath := filepath.Join(cfg.Server.DataDir, "registrations", EmailBridgeID+".yaml")
	first, err := registration.Load(regPath)
	if err != nil {
		t.Fatalf("registration not saved: %v", err)
	}
	if st, err := os.Stat(regPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("registration file mode: %v %v", st.Mode(), err)
	}
	alice := newUser(t, rh, "alice")
	rh.shutdown(t)

	rh2 := startHub(t, cfg)
	second, err := registration.Load(regPath)
	if err != nil {
		t.Fatal(err)
	}
	if first.AppToken != second.AppToken || first.ServerToken != second.ServerToken {
		t.Fatal("registration tokens changed across a restart")
	}
	ctx := t.Context()
	alice2, err := mautrix.NewClient(rh2.URL, alice.UserID, alice.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice2.Whoami(ctx); err != nil {
		t.Fatalf("token from before the restart: %v", err)
	}
	bot := id.NewUserID(cfg.Bridges.Email.BotLocalpart, cfg.Server.ServerName)
	resp, err := alice2.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bot}})
	if err != nil {
		t.Fatal(err)
	}
	s := &syncer{cli: alice2}
	s.waitFor(t, 30*time.Second, "the bot to join after restart", func(r id.RoomID, evt *event.Event) bool {
		return r == resp.RoomID && evt.Type == event.StateMember && evt.GetStateKey() == bot.String() &&
			evt.Content.AsMember().Membership == event.MembershipJoin
	})
}

// TestForeignAppserviceCannotActAsGhost checks the namespace wiring end to end: a plain user cannot register
// a name in the bridge's exclusive namespace.
func TestExclusiveNamespace(t *testing.T) {
	cfg := testConfig(t)
	cfg.Registration.Enabled = true
	rh := startHub(t, cfg)
	cli, err := mautrix.NewClient(rh.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = cli.Register(t.Context(), &mautrix.ReqRegister[any]{
		Username: "email_mallory", Password: "xxxxxxxxxxxx", Auth: map[string]any{"type": "m.login.dummy"},
	})
	if !errors.Is(err, mautrix.MExclusive) {
		t.Fatalf("registering in the bridge namespace: got %v, want M_EXCLUSIVE", err)
	}
}

// TestStatusEndpoint: the bridge and queue status is for server admins only.
func TestStatusEndpoint(t *testing.T) {
	cfg := testConfig(t)
	rh := startHub(t, cfg)
	ctx := t.Context()
	us := rh.Homeserver().Users()
	get := func(token string) (int, StatusResponse) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rh.URL+StatusPath, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body StatusResponse
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("no token: HTTP %d", code)
	}
	if code, _ := get("nonsense"); code != http.StatusUnauthorized {
		t.Errorf("bad token: HTTP %d", code)
	}
	plain := newUser(t, rh, "plain")
	if code, _ := get(plain.AccessToken); code != http.StatusForbidden {
		t.Errorf("non-admin: HTTP %d", code)
	}
	adminID, err := us.Register(ctx, "root", "long enough password", users.RegisterOpts{Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := us.NewDevice(ctx, adminID, "", "")
	if err != nil {
		t.Fatal(err)
	}
	code, st := get(tok)
	if code != http.StatusOK || len(st.Bridges) != 1 || st.Bridges[0].ID != EmailBridgeID ||
		st.Bridges[0].State != appservice.StateRunning || len(st.Appservices) != 1 {
		t.Errorf("admin: HTTP %d %+v", code, st)
	}
}

// TestShutdownDuringLongPoll: cancelling the hub's context while a client waits in /sync ends the hub
// promptly, answers the long-poll, and the next start serves the same data.
func TestShutdownDuringLongPoll(t *testing.T) {
	cfg := testConfig(t)
	rh := startHub(t, cfg)
	alice := newUser(t, rh, "alice")
	s := &syncer{cli: alice}
	s.initial(t)
	polled := make(chan error, 1)
	go func() {
		_, err := alice.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: s.since, Timeout: 120000})
		polled <- err
	}()
	time.Sleep(300 * time.Millisecond) // let the long-poll start waiting
	start := time.Now()
	rh.shutdown(t)
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("shutdown took %v with a long-poll waiting", d)
	}
	select {
	case <-polled:
	case <-time.After(5 * time.Second):
		t.Error("the waiting /sync was not answered at shutdown")
	}
}
