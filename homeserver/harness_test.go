package homeserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver"
	"github.com/passerelle/passerelle/internal/testenv"
	"github.com/passerelle/passerelle/registration"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is one homeserver under test behind an httptest server.
type env struct {
	t   testing.TB
	cfg *configs.Config
	hs  *homeserver.Server
	srv *httptest.Server
	url string
}

const sharedSecret = "correct horse battery staple"

// forEachDB runs fn once on SQLite and once on PostgreSQL, each with a fresh homeserver.
func forEachDB(t *testing.T, fn func(t *testing.T, e *env), regs ...func() []*registration.Registration) {
	t.Helper()
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			var rs []*registration.Registration
			if len(regs) > 0 {
				rs = regs[0]()
			}
			fn(t, newEnv(t, kind, rs, nil))
		})
	}
}

func newEnv(t testing.TB, kind string, regs []*registration.Registration, asClient *http.Client) *env {
	t.Helper()
	cfg := configs.Default()
	cfg.Server.DataDir = t.TempDir()
	cfg.Registration.Enabled = true
	cfg.Registration.SharedSecret = sharedSecret
	cfg.Media.MaxUploadBytes = 1 << 20
	if kind == "postgres" {
		cfg.Database.Type = "postgres"
		cfg.Database.URI = testenv.Postgres(t)
	}
	return newEnvWith(t, cfg, regs, asClient)
}

func newEnvFromConfig(t testing.TB, cfg *configs.Config) *env { return newEnvWith(t, cfg, nil, nil) }

func newEnvWith(t testing.TB, cfg *configs.Config, regs []*registration.Registration, asClient *http.Client) *env {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	hs, err := homeserver.New(t.Context(), cfg, homeserver.Options{Appservices: regs, ASClient: asClient, Log: log})
	if err != nil {
		t.Fatalf("homeserver.New: %v", err)
	}
	srv := httptest.NewServer(hs.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		hs.Close()
	})
	cfg.Server.PublicBaseURL = srv.URL
	return &env{t: t, cfg: cfg, hs: hs, srv: srv, url: srv.URL}
}

// client returns an anonymous mautrix client for the server.
func (e *env) client() *mautrix.Client {
	e.t.Helper()
	cli, err := mautrix.NewClient(e.url, "", "")
	if err != nil {
		e.t.Fatal(err)
	}
	return cli
}

// user registers localpart (password "pw-"+localpart) through /register and returns a logged-in client.
func (e *env) user(localpart string) *mautrix.Client {
	e.t.Helper()
	cli := e.client()
	resp, err := cli.RegisterDummy(e.t.Context(), &mautrix.ReqRegister[any]{Username: localpart, Password: "pw-" + localpart})
	if err != nil {
		e.t.Fatalf("register %s: %v", localpart, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return cli
}

// do sends a raw request and returns status and decoded JSON body.
func (e *env) do(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(data) > 0 && data[0] == '{' {
		if err := json.Unmarshal(data, &out); err != nil {
			e.t.Fatalf("%s %s: response is not JSON: %q", method, path, data)
		}
	} else if resp.StatusCode >= 400 {
		e.t.Fatalf("%s %s: error response is not a JSON object: %d %q", method, path, resp.StatusCode, data)
	}
	return resp.StatusCode, out
}

// wantErr asserts that err is a Matrix error with the given code.
func wantErr(t *testing.T, err error, code string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.RespError == nil {
		t.Fatalf("want %s, got %v", code, err)
	}
	if he.RespError.ErrCode != code {
		t.Fatalf("want %s, got %s (%s)", code, he.RespError.ErrCode, he.RespError.Err)
	}
}

// syncUntil polls /sync (long-poll) until cond holds for the accumulated response, or fails after 10 s.
func syncUntil(t *testing.T, cli *mautrix.Client, since string, cond func(*mautrix.RespSync) bool) (*mautrix.RespSync, string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := cli.SyncRequest(t.Context(), 2000, since, "", false, "")
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		if cond(resp) {
			return resp, since
		}
	}
	t.Fatalf("sync: condition not met within 10 s")
	return nil, ""
}

func ctx(t testing.TB) context.Context { return t.Context() }
