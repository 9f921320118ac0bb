package hub

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
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
	"github.com/passerelle/passerelle/registration"
)

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// scrape fetches /metrics and returns every sample as "name{labels}" → value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + MetricsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: HTTP %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsAndSecrets runs a real mailbox login through the bot and a mail into a portal, switches the bridge
// off and on around a second mail, then checks that /metrics shows the traffic with sane values and that the
// captured log (trace level: everything) holds neither the passwords nor any access token. SQLite and PostgreSQL.
func TestMetricsAndSecrets(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testMetricsAndSecrets(t, testConfig(t)) })
	t.Run("postgres", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Database.Type = "postgres"
		cfg.Database.URI = testenv.Postgres(t)
		testMetricsAndSecrets(t, cfg)
	})
}

func testMetricsAndSecrets(t *testing.T, cfg *configs.Config) {
	ms := testenv.Mail(t)
	const mailPass, matrixPass, carolPass = "Mail-Secret-7f3a9c", "Matrix-Secret-b81e2d", "carol mail password"
	aliceAddr := ms.AddUser(t, "alice", mailPass)
	carolAddr := "carol@" + testenv.OtherDomain
	ms.AddAddress(t, carolAddr, carolPass)

	logs := &lockedBuffer{}
	rh := startHubWithLog(t, cfg, &deliveries{}, zerolog.New(logs).Level(zerolog.TraceLevel).With().Timestamp().Logger())
	ctx := t.Context()
	if _, err := rh.Homeserver().Users().Register(ctx, "alice", matrixPass, users.RegisterOpts{}); err != nil {
		t.Fatal(err)
	}
	cli, err := mautrix.NewClient(rh.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: matrixPass,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, StoreCredentials: true}); err != nil {
		t.Fatalf("login: %v", err)
	}
	s := &syncer{cli: cli}
	s.initial(t)
	bot := id.NewUserID(cfg.Bridges.Email.BotLocalpart, cfg.Server.ServerName)
	dm, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bot}})
	if err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 30*time.Second, "the bot's welcome", textFrom(bot, dm.RoomID, "management room"))

	// The login dialogue.
	answers := map[string]string{
		"email address": aliceAddr, "IMAP server": ms.Host, "IMAP port": strconv.Itoa(ms.IMAPPort),
		"IMAP security": "none", "SMTP server": ms.Host, "SMTP port": strconv.Itoa(ms.SMTPPort),
		"SMTP security": "none", "user name": aliceAddr, "password": mailPass,
	}
	if _, err := cli.SendText(ctx, dm.RoomID, "login"); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		e := s.waitFor(t, 30*time.Second, "a reply from the bot", func(r id.RoomID, e *event.Event) bool {
			return r == dm.RoomID && e.Sender == bot && e.Type == event.EventMessage
		})
		body := e.Content.AsMessage().Body
		first, _, _ := strings.Cut(body, "\n")
		switch {
		case strings.HasPrefix(first, "Please enter your "):
			answer, ok := answers[strings.TrimPrefix(first, "Please enter your ")]
			if !ok {
				t.Fatalf("unexpected prompt: %s", body)
			}
			if _, err := cli.SendText(ctx, dm.RoomID, answer); err != nil {
				t.Fatal(err)
			}
		case strings.Contains(body, "Logged in as "+aliceAddr):
			done = true
		case strings.Contains(body, "Failed") || strings.Contains(body, "Unknown command"):
			t.Fatalf("login failed: %s", body)
		}
	}

	// A mail from outside becomes a portal with a ghost's message: a remote event.
	time.Sleep(500 * time.Millisecond)
	ms.Deliver(t, carolAddr, []string{aliceAddr}, []byte("From: Carol <"+carolAddr+">\r\nTo: <"+aliceAddr+">\r\n"+
		"Subject: Metrics\r\nMessage-ID: <metrics-1@remote.test>\r\nDate: Thu, 03 Dec 2026 18:00:00 +0000\r\n\r\nHello there.\r\n"))
	invite := s.waitFor(t, 60*time.Second, "the invite to the portal", func(r id.RoomID, e *event.Event) bool {
		return r != dm.RoomID && e.Type == event.StateMember && e.GetStateKey() == cli.UserID.String()
	})
	portal := invite.RoomID
	if _, err := cli.JoinRoomByID(ctx, portal); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 30*time.Second, "the first mail", messageIn(portal, "Hello there."))

	// Switched off, the bridge leaves the mailbox alone: a mail arriving now is bridged only once it is
	// switched on again, and nothing is lost.
	if err := rh.SetBridgeEnabled(ctx, EmailBridgeID, false, "@root:localhost"); err != nil {
		t.Fatal(err)
	}
	ms.Deliver(t, carolAddr, []string{aliceAddr}, []byte("From: Carol <"+carolAddr+">\r\nTo: <"+aliceAddr+">\r\n"+
		"Subject: Re: Metrics\r\nMessage-ID: <metrics-2@remote.test>\r\nIn-Reply-To: <metrics-1@remote.test>\r\n"+
		"Date: Thu, 03 Dec 2026 18:01:00 +0000\r\n\r\nWritten while the bridge was off.\r\n"))
	ms.WaitMessages(t, aliceAddr, mailPass, "INBOX", 2, 30*time.Second)
	time.Sleep(2 * time.Second) // IDLE would have seen it within about 0.5 s
	s.pending = nil
	ctxPoll, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := cli.FullSyncRequest(ctxPoll, mautrix.ReqSync{Since: s.since, Timeout: 0})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	var timeline []*event.Event
	if jr := resp.Rooms.Join[portal]; jr != nil {
		timeline = jr.Timeline.Events
	}
	for _, e := range timeline {
		if e.Type == event.EventMessage {
			_ = e.Content.ParseRaw(e.Type)
			if strings.Contains(e.Content.AsMessage().Body, "while the bridge was off") {
				t.Fatal("a mail was bridged while the bridge was switched off")
			}
		}
	}
	if err := rh.SetBridgeEnabled(ctx, EmailBridgeID, true, "@root:localhost"); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 60*time.Second, "the mail that arrived while the bridge was off", messageIn(portal, "while the bridge was off"))

	var m map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	for {
		m = scrape(t, rh.URL)
		if (m[`passerelle_bridge_remote_events_total{bridge="email"}`] >= 1 &&
			m[`passerelle_appservice_queue_length{appservice="email"}`] == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	want := func(key string, ok func(float64) bool, what string) {
		t.Helper()
		v, found := m[key]
		if !found || !ok(v) {
			t.Errorf("%s = %v (present %v), want %s", key, v, found, what)
		}
	}
	positive := func(v float64) bool { return v > 0 }
	want(`passerelle_bridge_logins{bridge="email"}`, func(v float64) bool { return v == 1 }, "1")
	want(`passerelle_bridge_portals{bridge="email"}`, func(v float64) bool { return v >= 1 }, ">= 1")
	want(`passerelle_bridge_enabled{bridge="email"}`, func(v float64) bool { return v == 1 }, "1")
	want(`passerelle_bridge_running{bridge="email"}`, func(v float64) bool { return v == 1 }, "1")
	want(`passerelle_bridge_remote_events_total{bridge="email"}`, func(v float64) bool { return v >= 1 }, ">= 1")
	want(`passerelle_bridge_errors_total{bridge="email"}`, func(v float64) bool { return v >= 0 }, "present")
	want(`passerelle_appservice_queue_length{appservice="email"}`, func(v float64) bool { return v == 0 }, "0 once delivered")
	want(`passerelle_appservice_queue_oldest_age_seconds{appservice="email"}`, func(v float64) bool { return v == 0 }, "0")
	want(`passerelle_appservice_transaction_failures_total{appservice="email"}`, func(v float64) bool { return v == 0 }, "0")
	want(`passerelle_appservice_transaction_duration_seconds_count{appservice="email"}`, func(v float64) bool { return v >= 5 }, ">= 5 (login dialogue)")
	want(`passerelle_appservice_transaction_duration_seconds_sum{appservice="email"}`, func(v float64) bool { return v > 0 && v < 60 }, "between 0 and 60 s")
	want(`passerelle_appservice_transactions_delivered{appservice="email"}`, positive, "> 0")
	want(`passerelle_appservice_stream_position{appservice="email"}`, positive, "> 0")
	want(`go_goroutines`, positive, "> 0")
	want(`process_resident_memory_bytes`, positive, "> 0")
	if m[`passerelle_appservice_transaction_duration_seconds_count{appservice="email"}`] !=
		m[`passerelle_appservice_transaction_duration_seconds_bucket{appservice="email",le="+Inf"}`] {
		t.Error("histogram count and +Inf bucket differ")
	}

	// No secret in the log: passwords (mail and Matrix), the user's access token, the bridge's tokens.
	reg := rh.regByID(EmailBridgeID)
	out := logs.String()
	if !strings.Contains(out, `"bridge_id":"email"`) || len(out) < 10000 {
		t.Fatalf("the captured log looks empty (%d bytes); the check below would prove nothing", len(out))
	}
	for name, secret := range map[string]string{
		"mail password": mailPass, "Matrix password": matrixPass, "user access token": cli.AccessToken,
		"as_token": reg.AppToken, "hs_token": reg.ServerToken,
	} {
		if i := strings.Index(out, secret); i >= 0 {
			start, end := max(0, i-300), min(len(out), i+100)
			t.Errorf("the log holds the %s:\n…%s…", name, out[start:end])
		}
	}
}

// messageIn matches an m.room.message in roomID whose body contains text, from anyone.
func messageIn(roomID id.RoomID, text string) func(id.RoomID, *event.Event) bool {
	return func(r id.RoomID, e *event.Event) bool {
		if r != roomID || e.Type != event.EventMessage {
			return false
		}
		msg := e.Content.AsMessage()
		return msg != nil && strings.Contains(msg.Body, text)
	}
}

// TestMetricsFailingAppservice: an external appservice that cannot be reached shows failures, a growing queue
// with an age, and latency observations, while /status tells the same story.
func TestMetricsFailingAppservice(t *testing.T) {
	cfg := testConfig(t)
	cfg.Appservices.Directory = t.TempDir()
	cfg.Appservices.MaxRetryInterval = time.Second
	// Port 1 on loopback refuses connections at once.
	reg := registration.Generate("ext", "http://127.0.0.1:1", "extbot", `@ext_.*:`+cfg.Server.ServerName)
	if err := reg.Save(filepath.Join(cfg.Appservices.Directory, "ext.yaml")); err != nil {
		t.Fatal(err)
	}
	rh := startHub(t, cfg)
	alice := newUser(t, rh, "alice")
	extBot := id.NewUserID("extbot", cfg.Server.ServerName)
	if _, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Invite: []id.UserID{extBot}}); err != nil {
		t.Fatal(err)
	}
	var m map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	for {
		m = scrape(t, rh.URL)
		if m[`passerelle_appservice_transaction_failures_total{appservice="ext"}`] >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if v := m[`passerelle_appservice_transaction_failures_total{appservice="ext"}`]; v < 2 {
		t.Errorf("failures = %v, want >= 2 (retried)", v)
	}
	if v := m[`passerelle_appservice_queue_length{appservice="ext"}`]; v < 1 {
		t.Errorf("queue length = %v, want >= 1 (the invite)", v)
	}
	if v := m[`passerelle_appservice_queue_oldest_age_seconds{appservice="ext"}`]; v <= 0 || v > 60 {
		t.Errorf("queue age = %v s, want between 0 and 60", v)
	}
	if m[`passerelle_appservice_transaction_duration_seconds_count{appservice="ext"}`] < 2 {
		t.Error("failed attempts are not in the latency histogram")
	}
	if v, ok := m[`passerelle_appservice_transaction_failures_total{appservice="email"}`]; !ok || v != 0 {
		t.Errorf("email failures = %v (present %v), want 0", v, ok)
	}
	if _, ok := m[`passerelle_bridge_enabled{bridge="ext"}`]; ok {
		t.Error("an external appservice is reported as an in-process bridge")
	}
}
