package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/storage"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/internal/testenv"
	"github.com/passerelle/passerelle/registration"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// runCmd runs one command line and returns its exit status and outputs.
func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(t.Context(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// writeConfig writes a config for a temp data dir, with the given database section and listen address.
func writeConfig(t *testing.T, db configs.Database, listen string) (path string, cfg *configs.Config) {
	return writeConfigExtra(t, db, listen, "")
}

// writeConfigExtra is writeConfig with extra top-level YAML sections prepended.
func writeConfigExtra(t *testing.T, db configs.Database, listen, extraYAML string) (path string, cfg *configs.Config) {
	t.Helper()
	dir := t.TempDir()
	cfg = configs.Default()
	cfg.Server.DataDir = filepath.Join(dir, "data")
	cfg.Database = db
	if db.MaxOpenConns == 0 {
		cfg.Database.MaxOpenConns = 20
	}
	if listen != "" {
		cfg.Server.Listen = listen
		cfg.Server.PublicBaseURL = "http://" + listen
	}
	cfg.Logging.Pretty = false
	text := extraYAML + fmt.Sprintf(`server:
  data_dir: %q
  listen: %q
  public_base_url: %q
database:
  type: %q
  uri: %q
logging:
  pretty: false
`, cfg.Server.DataDir, cfg.Server.Listen, cfg.Server.PublicBaseURL, cfg.Database.Type, cfg.Database.URI)
	path = filepath.Join(dir, "passerelle.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, cfg
}

// databases are the storage engines every storage-touching test runs on.
func databases() map[string]func(t *testing.T) configs.Database {
	return map[string]func(t *testing.T) configs.Database{
		"sqlite": func(t *testing.T) configs.Database { return configs.Database{Type: "sqlite"} },
		"postgres": func(t *testing.T) configs.Database {
			return configs.Database{Type: "postgres", URI: testenv.Postgres(t)}
		},
	}
}

func TestUserCreate(t *testing.T) {
	for name, db := range databases() {
		t.Run(name, func(t *testing.T) {
			path, cfg := writeConfig(t, db(t), "")
			code, out, errOut := runCmd(t, "", "user", "create", "alice", "--password", "correct horse", "--admin", "-c", path)
			if code != 0 || strings.TrimSpace(out) != "Created admin @alice:localhost" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			// Flags before the name, password from standard input, full user ID.
			code, out, errOut = runCmd(t, "battery staple\n", "user", "create", "-c", path, "--password", "-", "@bob:localhost")
			if code != 0 || strings.TrimSpace(out) != "Created user @bob:localhost" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			// The accounts really exist with those passwords and roles.
			ctx := t.Context()
			sdb, err := storage.Open(ctx, cfg.Database, cfg.Server.DataDir, "homeserver", zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			defer sdb.Close()
			svc, err := users.New(ctx, sdb, "localhost", zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			for user, pass := range map[string]string{"@alice:localhost": "correct horse", "@bob:localhost": "battery staple"} {
				if err := svc.CheckPassword(ctx, idOf(user), pass); err != nil {
					t.Errorf("%s: password check: %v", user, err)
				}
				if err := svc.CheckPassword(ctx, idOf(user), "wrong"); err == nil {
					t.Errorf("%s: wrong password accepted", user)
				}
			}
			if admin, err := svc.IsAdmin(ctx, "@alice:localhost"); err != nil || !admin {
				t.Errorf("alice admin = %v, %v", admin, err)
			}
			if admin, err := svc.IsAdmin(ctx, "@bob:localhost"); err != nil || admin {
				t.Errorf("bob admin = %v, %v", admin, err)
			}
			// Refusals.
			code, _, errOut = runCmd(t, "", "user", "create", "alice", "--password", "x", "-c", path)
			if code != 1 || !strings.Contains(errOut, "M_USER_IN_USE") {
				t.Errorf("duplicate: exit %d, stderr %q", code, errOut)
			}
			code, _, errOut = runCmd(t, "", "user", "create", "Alice!", "--password", "x", "-c", path)
			if code != 1 || !strings.Contains(errOut, "M_INVALID_USERNAME") {
				t.Errorf("bad name: exit %d, stderr %q", code, errOut)
			}
			code, _, errOut = runCmd(t, "", "user", "create", "carol", "-c", path)
			if code != 2 || !strings.Contains(errOut, "--password is required") {
				t.Errorf("no password: exit %d, stderr %q", code, errOut)
			}
			code, _, errOut = runCmd(t, "", "user", "create", "@carol:elsewhere.org", "--password", "x", "-c", path)
			if code != 2 || !strings.Contains(errOut, "not to this server") {
				t.Errorf("foreign user ID: exit %d, stderr %q", code, errOut)
			}
		})
	}
}

func TestUserCreateBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passerelle.yaml")
	if err := os.WriteFile(path, []byte("server:\n  server_name: 'a b'\nlogging:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCmd(t, "", "user", "create", "alice", "--password", "x", "-c", path)
	if code != 1 || !strings.Contains(errOut, "server.server_name") || !strings.Contains(errOut, "logging.level") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runCmd(t, "", "user", "create", "alice", "--password", "x", "-c", path+".missing")
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("missing config: exit %d, stderr %q", code, errOut)
	}
}

func TestGenerateRegistration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "regs", "whatsapp.yaml")
	code, out, errOut := runCmd(t, "", "generate-registration", "--id", "whatsapp", "--url", "http://127.0.0.1:29318",
		"--sender-localpart", "whatsappbot", "--user-regex", "@whatsapp_.*:localhost", "-o", path)
	if code != 0 || !strings.Contains(out, path) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	reg, err := registration.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg.SetServerName("localhost")
	if reg.ID != "whatsapp" || reg.URL != "http://127.0.0.1:29318" || reg.SenderLocalpart != "whatsappbot" ||
		len(reg.AppToken) < 32 || len(reg.ServerToken) < 32 || reg.AppToken == reg.ServerToken {
		t.Fatalf("registration %+v", reg)
	}
	if !reg.OwnsUserExclusively("@whatsapp_123:localhost") || reg.OwnsUserExclusively("@alice:localhost") {
		t.Fatal("namespace not as requested")
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("registration file must be private: %v %v", st.Mode(), err)
	}
	// To standard output, and two runs give different tokens.
	_, out1, _ := runCmd(t, "", "generate-registration", "--id", "x", "--sender-localpart", "xbot")
	_, out2, _ := runCmd(t, "", "generate-registration", "--id", "x", "--sender-localpart", "xbot")
	r1, err1 := registration.Parse([]byte(out1))
	r2, err2 := registration.Parse([]byte(out2))
	if err1 != nil || err2 != nil || r1.AppToken == r2.AppToken {
		t.Fatalf("stdout registrations: %v %v", err1, err2)
	}
	code, _, _ = runCmd(t, "", "generate-registration", "--url", "http://x")
	if code != 2 {
		t.Fatalf("missing --id: exit %d", code)
	}
}

func TestVersionAndUsage(t *testing.T) {
	code, out, _ := runCmd(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "passerelle ") || len(strings.TrimSpace(out)) <= len("passerelle ") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
	if code, _, errOut := runCmd(t, ""); code != 2 || !strings.Contains(errOut, "Usage:") {
		t.Fatalf("no args: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCmd(t, "", "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Fatalf("unknown: exit %d, %q", code, errOut)
	}
	if code, _, _ := runCmd(t, "", "serve", "extra"); code != 2 {
		t.Fatalf("serve extra: exit %d", code)
	}
}

// TestServe starts the real hub through the serve command, checks it answers Matrix requests (including
// Synapse-style shared-secret registration) with the email bridge in-process, and stops it with SIGTERM.
func TestServe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	const secret = "a shared secret of some length"
	path, cfg := writeConfigExtra(t, configs.Database{Type: "sqlite"}, addr,
		"registration:\n  shared_secret: \""+secret+"\"\n")
	// The same signal handling as main: the test ends the server with a real SIGTERM.
	ctx, cancel := signalContext()
	defer cancel()
	done := make(chan int, 1)
	var errOut syncBuffer
	go func() { done <- run(ctx, []string{"serve", "-c", path}, strings.NewReader(""), &errOut, &errOut) }()

	var versions struct {
		Versions []string `json:"versions"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/_matrix/client/versions")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&versions)
			_ = resp.Body.Close()
			if err == nil {
				break
			}
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited with %d before answering: %s", code, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not answering: %v\n%s", err, errOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	found := false
	for _, v := range versions.Versions {
		found = found || v == "v1.11"
	}
	if !found {
		t.Errorf("/versions = %v, want v1.11 among them", versions.Versions)
	}
	// With a shared secret configured, Synapse-compatible tooling can create users.
	userID := sharedSecretRegister(t, "http://"+addr, secret, "dave", "dave's password", true)
	if userID != "@dave:localhost" {
		t.Errorf("shared-secret registration returned %q", userID)
	}
	cli, err := mautrix.NewClient("http://"+addr, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "dave"},
		Password:   "dave's password"}); err != nil {
		t.Errorf("login as the user created with the shared secret: %v", err)
	}
	// The email bridge runs in the same process: its bot exists.
	if resp, err := cli.GetDisplayName(t.Context(), "@email:localhost"); err != nil {
		t.Errorf("the email bridge bot is not there: %v", err)
	} else {
		t.Logf("bot display name %q", resp.DisplayName)
	}
	// The SQLite databases live in the configured data directory.
	if _, err := os.Stat(filepath.Join(cfg.Server.DataDir, "homeserver.db")); err != nil {
		t.Errorf("homeserver database: %v", err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited with %d after SIGTERM: %s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s of SIGTERM")
	}
	if _, err := http.Get("http://" + addr + "/_matrix/client/versions"); err == nil {
		t.Error("still serving after SIGTERM")
	}
}

func idOf(s string) id.UserID { return id.UserID(s) }

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sharedSecretRegister creates a user through /_synapse/admin/v1/register as Synapse's register_new_matrix_user
// does (nonce, then HMAC-SHA1 over nonce, user, password and admin flag) and returns the new user ID.
func sharedSecretRegister(t *testing.T, base, secret, user, password string, admin bool) string {
	t.Helper()
	resp, err := http.Get(base + "/_synapse/admin/v1/register")
	if err != nil {
		t.Fatal(err)
	}
	var n struct {
		Nonce string `json:"nonce"`
	}
	err = json.NewDecoder(resp.Body).Decode(&n)
	_ = resp.Body.Close()
	if err != nil || n.Nonce == "" {
		t.Fatalf("nonce: %v (status %d)", err, resp.StatusCode)
	}
	mac := hmac.New(sha1.New, []byte(secret))
	adminStr := "notadmin"
	if admin {
		adminStr = "admin"
	}
	mac.Write([]byte(n.Nonce + "\x00" + user + "\x00" + password + "\x00" + adminStr))
	body, _ := json.Marshal(map[string]any{"nonce": n.Nonce, "username": user, "password": password,
		"admin": admin, "mac": hex.EncodeToString(mac.Sum(nil))})
	resp, err = http.Post(base+"/_synapse/admin/v1/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		UserID string `json:"user_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("shared-secret register: status %d, %v", resp.StatusCode, err)
	}
	return out.UserID
}

// TestServeFirstStart is `make run` on a fresh checkout: no config yet, default path and port. The config
// must be written (exactly the commented example) before anything else; if port 8008 is free the hub must come
// up with SQLite under ./data and stop cleanly, and if another process holds the port the failure must say so.
func TestServeFirstStart(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve"}, strings.NewReader(""), &errOut, &errOut) }()

	cfgPath := filepath.Join(dir, "data", "passerelle.yaml")
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case code := <-done:
			// Only acceptable early exit: someone else serves on 127.0.0.1:8008 on this machine.
			if code != 1 || !strings.Contains(errOut.String(), "address already in use") {
				t.Fatalf("serve exited with %d: %s", code, errOut.String())
			}
			t.Logf("port 8008 is taken on this machine; checked only the first-start config")
			checkWrittenConfig(t, cfgPath)
			return
		default:
		}
		if _, err := os.Stat(filepath.Join(dir, "data", "bridge-email.db")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hub not up after 60s: %s", errOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkWrittenConfig(t, cfgPath)
	for _, f := range []string{"homeserver.db", "bridge-email.db"} {
		if _, err := os.Stat(filepath.Join(dir, "data", f)); err != nil {
			t.Errorf("./data/%s: %v", f, err)
		}
	}
	// Wait for the listener (or for the exit that says the port is taken).
	for served := false; !served; {
		select {
		case code := <-done:
			if code != 1 || !strings.Contains(errOut.String(), "address already in use") {
				t.Fatalf("serve exited with %d: %s", code, errOut.String())
			}
			t.Logf("port 8008 is taken on this machine; checked the first-start config and databases only")
			return
		default:
		}
		if resp, err := http.Get("http://127.0.0.1:8008/_matrix/client/versions"); err == nil {
			_ = resp.Body.Close()
			served = resp.StatusCode == http.StatusOK
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing answers on 127.0.0.1:8008: %s", errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code == 1 && strings.Contains(errOut.String(), "address already in use") {
			t.Logf("port 8008 is taken on this machine; checked the first-start config and databases only")
		} else if code != 0 {
			t.Fatalf("serve exited with %d: %s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func checkWrittenConfig(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("first start did not write %s: %v", path, err)
	}
	if !bytes.Equal(data, configs.Example) {
		t.Errorf("%s is not the commented example", path)
	}
}
