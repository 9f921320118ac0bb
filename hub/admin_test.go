package hub

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/internal/testenv"
)

// deliveries records the transactions the sender got acknowledged, across hub restarts.
type deliveries struct {
	mu   sync.Mutex
	txns []string     // "asID/txnID" in delivery order
	evs  []id.EventID // event IDs in delivery order (with repeats, if any)
}

func (d *deliveries) record(asID, txnID string, body []byte) {
	var txn struct {
		Events []struct {
			ID id.EventID `json:"event_id"`
		} `json:"events"`
	}
	_ = json.Unmarshal(body, &txn)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txns = append(d.txns, asID+"/"+txnID)
	for _, e := range txn.Events {
		d.evs = append(d.evs, e.ID)
	}
}

// positions returns where each wanted event was delivered (index in d.evs), one slice per event.
func (d *deliveries) positions(want []id.EventID) [][]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([][]int, len(want))
	for i, e := range d.evs {
		if j := slices.Index(want, e); j >= 0 {
			out[j] = append(out[j], i)
		}
	}
	return out
}

// startRecordingHub is startHub with the sender's delivered transactions recorded in d.
func startRecordingHub(t *testing.T, cfg *configs.Config, d *deliveries) *runningHub {
	t.Helper()
	return startHubWithLog(t, cfg, d, testLogger(t))
}

// startHubWithLog is startRecordingHub with the given logger.
func startHubWithLog(t *testing.T, cfg *configs.Config, d *deliveries, log zerolog.Logger) *runningHub {
	t.Helper()
	return startHubWith(t, cfg, log, func(h *Hub) { h.senderTr.onDelivered = d.record })
}

// adminCall makes one bridge admin API request and decodes the answer into out (if not nil).
func adminCall(t *testing.T, base, method, path, token string, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(buf.Bytes(), out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, buf.String(), err)
		}
	}
	return resp.StatusCode
}

func newAdminToken(t *testing.T, rh *runningHub, localpart string) string {
	t.Helper()
	us := rh.Homeserver().Users()
	adminID, err := us.Register(t.Context(), localpart, "long enough password", users.RegisterOpts{Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := us.NewDevice(t.Context(), adminID, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestBridgeSwitch: an admin switches the email bridge off; messages to its bot are not delivered, the user gets
// the notice, the switch and the queue survive a restart, and switching on delivers the held-back events in
// order, exactly once. On SQLite and PostgreSQL.
func TestBridgeSwitch(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testBridgeSwitch(t, testConfig(t)) })
	t.Run("postgres", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Database.Type = "postgres"
		cfg.Database.URI = testenv.Postgres(t)
		testBridgeSwitch(t, cfg)
	})
}

func testBridgeSwitch(t *testing.T, cfg *configs.Config) {
	d := &deliveries{}
	rh := startRecordingHub(t, cfg, d)
	ctx := t.Context()
	bot := id.NewUserID(cfg.Bridges.Email.BotLocalpart, cfg.Server.ServerName)
	alice := newUser(t, rh, "alice")
	s := &syncer{cli: alice}
	s.initial(t)
	dm, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
		Invite: []id.UserID{bot}})
	if err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 30*time.Second, "the bot's welcome", textFrom(bot, dm.RoomID, "management room"))

	// Only admins may switch.
	admin := newAdminToken(t, rh, "root")
	disable := BridgesPath + "/disable/" + EmailBridgeID
	if code := adminCall(t, rh.URL, http.MethodPost, disable, "", nil); code != http.StatusUnauthorized {
		t.Errorf("disable without a token: HTTP %d, want 401", code)
	}
	if code := adminCall(t, rh.URL, http.MethodPost, disable, alice.AccessToken, nil); code != http.StatusForbidden {
		t.Errorf("disable by a non-admin: HTTP %d, want 403", code)
	}
	if code := adminCall(t, rh.URL, http.MethodGet, BridgesPath, alice.AccessToken, nil); code != http.StatusForbidden {
		t.Errorf("list by a non-admin: HTTP %d, want 403", code)
	}
	if code := adminCall(t, rh.URL, http.MethodPost, BridgesPath+"/disable/nosuch", admin, nil); code != http.StatusNotFound {
		t.Errorf("disable an unknown bridge: HTTP %d, want 404", code)
	}
	var info BridgeInfo
	if code := adminCall(t, rh.URL, http.MethodPost, disable, admin, &info); code != http.StatusOK || info.Enabled {
		t.Fatalf("disable: HTTP %d %+v", code, info)
	}

	// Messages to the bot while the bridge is off: held back, and the bot (answered by the hub) says why.
	// One command, then two events of a type the bridge ignores: two commands in one transaction would trip a
	// data race inside mautrix v0.33.0's command processor (handleCommand updates the transaction's shared
	// logger), which -race reports; it is not ours and not what this test is about.
	resp, err := alice.SendText(ctx, dm.RoomID, "help")
	if err != nil {
		t.Fatal(err)
	}
	sent := []id.EventID{resp.EventID}
	for i := range 2 {
		resp, err := alice.SendMessageEvent(ctx, dm.RoomID, event.Type{Type: "org.passerelle.test", Class: event.MessageEventType},
			map[string]any{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, resp.EventID)
	}
	s.waitFor(t, 30*time.Second, "the switched-off notice", textFrom(bot, dm.RoomID, "switched off by the server administrator"))
	time.Sleep(time.Second)
	for i, pos := range d.positions(sent) {
		if len(pos) != 0 {
			t.Fatalf("message %d was delivered to the switched-off bridge", i)
		}
	}
	var st BridgeInfo
	adminCall(t, rh.URL, http.MethodGet, BridgesPath+"/status/"+EmailBridgeID, admin, &st)
	if st.Enabled || st.Queue.Length < len(sent) || st.QueueAgeSeconds <= 0 || st.State != "running" {
		t.Errorf("status while off: %+v, want disabled, running, queue >= %d with an age", st, len(sent))
	}

	// The switch and the queue survive a restart.
	rh.shutdown(t)
	rh = startRecordingHub(t, cfg, d)
	var list BridgeList
	if code := adminCall(t, rh.URL, http.MethodGet, BridgesPath, admin, &list); code != http.StatusOK ||
		len(list.Bridges) != 1 || list.Bridges[0].Enabled || list.Bridges[0].Queue.Length < len(sent) {
		t.Fatalf("list after restart: HTTP %d %+v", code, list)
	}
	time.Sleep(time.Second)
	for i, pos := range d.positions(sent) {
		if len(pos) != 0 {
			t.Fatalf("message %d was delivered to the switched-off bridge after a restart", i)
		}
	}

	// Switching on delivers what was held back, in order, exactly once; the bot then answers "help".
	alice2, err := mautrix.NewClient(rh.URL, alice.UserID, alice.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	s.cli = alice2
	if code := adminCall(t, rh.URL, http.MethodPost, BridgesPath+"/enable/"+EmailBridgeID, admin, &info); code != http.StatusOK || !info.Enabled {
		t.Fatalf("enable: HTTP %d %+v", code, info)
	}
	s.waitFor(t, 30*time.Second, "the bot's help reply after enabling", textFrom(bot, dm.RoomID, "Show this help message"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = BridgeInfo{}
		adminCall(t, rh.URL, http.MethodGet, BridgesPath+"/status/"+EmailBridgeID, admin, &st)
		if (st.Queue.Length == 0 && st.PendingTxn == "") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !st.Enabled || st.Queue.Length != 0 || st.PendingTxn != "" {
		t.Errorf("status after enabling: %+v, want enabled with an empty queue", st)
	}
	pos := d.positions(sent)
	for i, p := range pos {
		if len(p) != 1 {
			t.Fatalf("message %d delivered %d times, want exactly once (deliveries %v)", i, len(p), pos)
		}
		if i > 0 && p[0] < pos[i-1][0] {
			t.Errorf("message %d delivered before message %d", i, i-1)
		}
	}
	d.mu.Lock()
	txns := slices.Clone(d.txns)
	d.mu.Unlock()
	slices.Sort(txns)
	if len(slices.Compact(txns)) != len(d.txns) {
		t.Errorf("a transaction was acknowledged twice: %v", d.txns)
	}
	if strings.Contains(st.LastError, "switched off") && st.Failures > 0 {
		t.Errorf("failures still reported after enabling: %+v", st)
	}
}

// TestAllowedUsers: bridges.email.allowed_users is enforced by bridgev2: a listed user gets the bot, another
// local user's invite is refused.
func TestAllowedUsers(t *testing.T) {
	cfg := testConfig(t)
	cfg.Bridges.Email.AllowedUsers = []string{"@bob:" + cfg.Server.ServerName}
	rh := startHub(t, cfg)
	ctx := t.Context()
	bot := id.NewUserID(cfg.Bridges.Email.BotLocalpart, cfg.Server.ServerName)
	botMember := func(roomID id.RoomID, membership event.Membership) func(id.RoomID, *event.Event) bool {
		return func(r id.RoomID, e *event.Event) bool {
			return r == roomID && e.Type == event.StateMember && e.GetStateKey() == bot.String() &&
				e.Content.AsMember().Membership == membership
		}
	}
	for _, tc := range []struct {
		user string
		want event.Membership
	}{{"bob", event.MembershipJoin}, {"alice", event.MembershipLeave}} {
		cli := newUser(t, rh, tc.user)
		s := &syncer{cli: cli}
		s.initial(t)
		dm, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
			Invite: []id.UserID{bot}})
		if err != nil {
			t.Fatal(err)
		}
		s.waitFor(t, 30*time.Second, tc.user+"'s invite answered with "+string(tc.want), botMember(dm.RoomID, tc.want))
	}
}

// TestRestartSender: the restart that enabling uses to cut a retry backoff short leaves the sender working.
func TestRestartSender(t *testing.T) {
	cfg := testConfig(t)
	rh := startHub(t, cfg)
	rh.restartSender()
	rh.restartSender()
	bot := id.NewUserID(cfg.Bridges.Email.BotLocalpart, cfg.Server.ServerName)
	alice := newUser(t, rh, "alice")
	s := &syncer{cli: alice}
	s.initial(t)
	dm, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
		Invite: []id.UserID{bot}})
	if err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 30*time.Second, "the bot's welcome after sender restarts", textFrom(bot, dm.RoomID, "management room"))
	rh.shutdown(t)
	rh.restartSender() // after shutdown: a no-op, must not start workers again
	if st := rh.Sender().Status(); len(st) != 1 {
		t.Errorf("sender status after shutdown: %+v", st)
	}
}
