package appservice

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/configupgrade"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/bridgeconfig"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/registration"
)

func TestGhostRegex(t *testing.T) {
	t.Parallel()
	re, err := GhostRegex("email_{{.}}", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	full := regexp.MustCompile("^(?:" + re + ")$")
	for user, want := range map[string]bool{
		"@email_bob=40example.org:localhost": true,
		"@email_:localhost":                  false,
		"@email:localhost":                   false,
		"@email_x:localhostX":                false,
		"@email_x:local.host":                false,
		"@xemail_x:localhost":                false,
	} {
		if got := full.MatchString(user); got != want {
			t.Errorf("%s matches %s: %v, want %v", re, user, got, want)
		}
	}
	if _, err := GhostRegex("no_placeholder", "hs"); err == nil {
		t.Error("template without {{.}} accepted")
	}
	re, _ = GhostRegex("{{.}}.mail", "a.b")
	if re != `@.+\.mail:a\.b` {
		t.Errorf("suffix template: %s", re)
	}
}

func TestLoadOrCreateRegistration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r1, err := LoadOrCreateRegistration(dir, "email", "email", "email_{{.}}", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "registrations", "email.yaml")
	st1, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if r1.URL != "http://passerelle.internal/_passerelle/appservice/email" || r1.SenderLocalpart != "email" {
		t.Errorf("registration: %+v", r1.Registration)
	}
	r1.SetServerName("localhost")
	if !r1.OwnsUserExclusively("@email_a:localhost") || !r1.OwnsUserExclusively("@email:localhost") ||
		r1.IsInterestedUser("@alice:localhost") {
		t.Error("namespaces wrong")
	}

	// Same config: same tokens, file untouched.
	time.Sleep(10 * time.Millisecond)
	r2, err := LoadOrCreateRegistration(dir, "email", "email", "email_{{.}}", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(path)
	if r2.AppToken != r1.AppToken || r2.ServerToken != r1.ServerToken || !st2.ModTime().Equal(st1.ModTime()) {
		t.Error("unchanged config rewrote the registration or changed its tokens")
	}

	// Changed server name and template: tokens kept, namespaces follow.
	r3, err := LoadOrCreateRegistration(dir, "email", "mailbot", "mail_{{.}}", "example.org")
	if err != nil {
		t.Fatal(err)
	}
	r3.SetServerName("example.org")
	if r3.AppToken != r1.AppToken || !r3.OwnsUserExclusively("@mail_x:example.org") ||
		r3.OwnsUserExclusively("@email_x:localhost") || r3.BotUserID() != "@mailbot:example.org" {
		t.Errorf("registration did not follow the config: %+v", r3.Registration)
	}
	back, err := registration.Load(path)
	if err != nil || back.SenderLocalpart != "mailbot" {
		t.Fatalf("updated registration not saved: %v", err)
	}

	// A corrupt file is an error, not silently replaced (it holds the tokens the bridge DB knows).
	if err := os.WriteFile(path, []byte("id: [broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateRegistration(dir, "email", "email", "email_{{.}}", "localhost"); err == nil {
		t.Error("corrupt registration accepted")
	}
}

// fakeNetwork is the smallest bridgev2.NetworkConnector, enough to build a config and a bridge.
type fakeNetwork struct{ started bool }

func (n *fakeNetwork) Init(*bridgev2.Bridge)       {}
func (n *fakeNetwork) Start(context.Context) error { n.started = true; return nil }
func (n *fakeNetwork) GetCapabilities() *bridgev2.NetworkGeneralCapabilities {
	return &bridgev2.NetworkGeneralCapabilities{}
}
func (n *fakeNetwork) GetName() bridgev2.BridgeName {
	return bridgev2.BridgeName{DisplayName: "Fake", NetworkID: "fake", DefaultCommandPrefix: "!fake"}
}
func (n *fakeNetwork) GetDBMetaTypes() database.MetaTypes                       { return database.MetaTypes{} }
func (n *fakeNetwork) GetConfig() (string, any, configupgrade.Upgrader)         { return "", nil, nil }
func (n *fakeNetwork) GetBridgeInfoVersion() (int, int)                         { return 1, 1 }
func (n *fakeNetwork) LoadUserLogin(context.Context, *bridgev2.UserLogin) error { return nil }
func (n *fakeNetwork) GetLoginFlows() []bridgev2.LoginFlow                      { return nil }
func (n *fakeNetwork) CreateLogin(context.Context, *bridgev2.User, string) (bridgev2.LoginProcess, error) {
	return nil, errors.New("no logins")
}

func TestBridgeConfig(t *testing.T) {
	t.Parallel()
	reg := registration.Generate("fake", InternalBaseURL+MountPrefix+"fake", "fakebot", `@fake_.+:hs`)
	spec := BridgeSpec{ID: "fake", Connector: &fakeNetwork{}, Registration: reg, UsernameTemplate: "fake_{{.}}",
		Admins: []id.UserID{"@root:hs"}}
	cfg, err := BridgeConfig(spec, "hs")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Homeserver.Address != InternalBaseURL || cfg.Homeserver.Domain != "hs" || cfg.Homeserver.Websocket {
		t.Errorf("homeserver section: %+v", cfg.Homeserver)
	}
	as := cfg.AppService
	if !as.NoServer || as.ASToken != reg.AppToken || as.HSToken != reg.ServerToken || as.Bot.Username != "fakebot" ||
		as.ID != "fake" || as.FormatUsername("x") != "fake_x" {
		t.Errorf("appservice section: %+v", as)
	}
	if cfg.Encryption.Allow || cfg.Encryption.Default || len(cfg.DoublePuppet.Secrets) != 0 {
		t.Error("encryption or double puppeting not off")
	}
	if !cfg.Backfill.Enabled || !cfg.Bridge.Backfill.Enabled {
		t.Error("backfill not on")
	}
	if cfg.Provisioning.SharedSecret != "disable" {
		t.Error("provisioning API not disabled")
	}
	if p := cfg.Bridge.Permissions.Get("@alice:hs"); p != bridgeconfig.PermissionLevelUser {
		t.Errorf("local user permission: %+v", p)
	}
	if p := cfg.Bridge.Permissions.Get("@root:hs"); p != bridgeconfig.PermissionLevelAdmin {
		t.Errorf("admin permission: %+v", p)
	}
	if p := cfg.Bridge.Permissions.Get("@eve:elsewhere"); p != bridgeconfig.PermissionLevelBlock {
		t.Errorf("remote user permission: %+v", p)
	}
	if cfg.Bridge.CommandPrefix != "!fake" || cfg.Bridge.PortalEventBuffer <= 0 {
		t.Errorf("bridge defaults: prefix %q buffer %d", cfg.Bridge.CommandPrefix, cfg.Bridge.PortalEventBuffer)
	}
	if cfg.Bridge.BridgeStatusNotices != "errors" {
		t.Errorf("default status notices %q", cfg.Bridge.BridgeStatusNotices)
	}
	spec.StatusNotices = "none"
	if cfg2, err := BridgeConfig(spec, "hs"); err != nil || cfg2.Bridge.BridgeStatusNotices != "none" {
		t.Errorf("status notices override: %v", err)
	}
	spec.StatusNotices = "loud"
	if _, err := BridgeConfig(spec, "hs"); err == nil {
		t.Error("unknown status notices value accepted")
	}
	if !cfg.Bridge.Permissions.IsConfigured() {
		t.Error("bridgev2 would treat the permissions as unconfigured")
	}
}

func TestInProcessTransport(t *testing.T) {
	t.Parallel()
	external := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "external")
	}))
	t.Cleanup(external.Close)

	block := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /echo/{x}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Path", r.PathValue("x"))
		w.Header().Set("X-Auth", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusCreated)
		w.Header().Set("X-Late", "must not be sent")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	mux.HandleFunc("GET /block", func(w http.ResponseWriter, r *http.Request) { <-block })
	t.Cleanup(func() { close(block) })

	tr := NewInProcessTransport(nil)
	cli := tr.Client()
	if _, err := cli.Get(InternalBaseURL + "/x"); err == nil {
		t.Fatal("request before SetHandler succeeded")
	}
	tr.SetHandler(mux)

	req, _ := http.NewRequest(http.MethodPut, InternalBaseURL+"/echo/a%2Fb", strings.NewReader("hello"))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := cli.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || string(body) != "hello" || resp.Header.Get("X-Path") != "a/b" ||
		resp.Header.Get("X-Auth") != "Bearer tok" || resp.Header.Get("X-Late") != "" {
		t.Errorf("in-process response: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	resp, err = cli.Get(external.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "external" {
		t.Errorf("other hosts must use the network: %q", body)
	}

	if _, err := cli.Get(InternalBaseURL + "/panic"); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Errorf("panic not turned into an error: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, InternalBaseURL+"/block", nil)
	start := time.Now()
	if _, err := cli.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("blocked handler: got %v, want deadline exceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("cancelled request did not return promptly")
	}
}

// TestHostStartFailure: a homeserver that refuses the bridge's token makes Start fail with an error (never an
// os.Exit), the bridge is reported as failed, and Stop still returns promptly.
func TestHostStartFailure(t *testing.T) {
	t.Parallel()
	hsHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN_TOKEN","error":"who are you"}`)
	})
	var mounted []string
	host := NewHost(HostConfig{
		ServerName: "hs",
		Transport:  NewInProcessTransport(hsHandler),
		Mount:      func(pattern string, _ http.Handler) { mounted = append(mounted, pattern) },
		Log:        zerolog.Nop(),
	})
	reg := registration.Generate("fake", InternalBaseURL+MountPrefix+"fake", "fakebot", `@fake_.+:hs`)
	db := openDB(t, configs.Database{Type: "sqlite"}, t.TempDir())
	net := &fakeNetwork{}
	if err := host.Add(BridgeSpec{ID: "fake", Connector: net, DB: db, Registration: reg, UsernameTemplate: "fake_{{.}}"}); err != nil {
		t.Fatal(err)
	}
	if err := host.Add(BridgeSpec{ID: "fake", Connector: net, DB: db, Registration: reg}); err == nil {
		t.Error("a second bridge with the same ID was accepted")
	}
	if len(mounted) != 1 || mounted[0] != "/_passerelle/appservice/fake/" {
		t.Errorf("mounted %v", mounted)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := host.Start(ctx)
	if err == nil {
		t.Fatal("Start succeeded against a homeserver that refuses the token")
	}
	st := host.Status()
	if len(st) != 1 || st[0].State != StateFailed || st[0].Error == "" {
		t.Errorf("status: %+v", st)
	}
	if net.started {
		t.Error("network connector started although the Matrix side failed")
	}
	done := make(chan struct{})
	go func() { host.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Stop hung after a failed start")
	}
	if st := host.Status(); st[0].State != StateStopped {
		t.Errorf("after Stop: %+v", st)
	}
	host.Stop() // a second Stop is harmless
}
