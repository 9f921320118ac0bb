package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/passerelle/passerelle/homeserver/storage"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/hub"
)

// bridgesCmd runs `passerelle bridges ARGS...` and returns its outputs.
func bridgesCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := cmdBridges(t.Context(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestBridgesCommand drives list/status/enable/disable against a running hub, with the three ways to
// authenticate, on SQLite and PostgreSQL.
func TestBridgesCommand(t *testing.T) {
	for name, db := range databases() {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			path, _ := writeConfig(t, db(t), ln.Addr().String())
			if code, _, errOut := runCmd(t, "", "user", "create", "root", "--password", "correct horse", "--admin", "-c", path); code != 0 {
				t.Fatalf("create admin: %s", errOut)
			}
			if code, _, errOut := runCmd(t, "", "user", "create", "bob", "--password", "correct horse", "-c", path); code != 0 {
				t.Fatalf("create user: %s", errOut)
			}
			cfg, err := loadConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			h, err := hub.New(ctx, cfg, zerolog.Nop())
			if err != nil {
				cancel()
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- h.Serve(ctx, ln) }()
			t.Cleanup(func() {
				cancel()
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					t.Error("hub did not stop")
				}
			})
			select {
			case <-h.Ready():
			case <-time.After(60 * time.Second):
				t.Fatal("hub not ready")
			}

			// --as mints a one-use token: the admin has no device left afterwards.
			out, errOut, err := bridgesCmd(t, "list", "-c", path, "--as", "root")
			if err != nil || !strings.Contains(out, "BRIDGE") || !strings.Contains(out, "email") || !strings.Contains(out, " on ") {
				t.Fatalf("list: %v\n%s%s", err, out, errOut)
			}
			sdb, err := storage.Open(t.Context(), cfg.Database, cfg.Server.DataDir, "homeserver", zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			defer sdb.Close()
			us, err := users.New(t.Context(), sdb, cfg.Server.ServerName, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if devs, err := us.Devices(t.Context(), us.UserID("root")); err != nil || len(devs) != 0 {
				t.Errorf("admin devices after --as: %d, %v; want the one-use device deleted", len(devs), err)
			}

			out, _, err = bridgesCmd(t, "disable", "email", "--as", "@root:localhost", "-c", path)
			if err != nil || !strings.Contains(out, "switch:") || !strings.Contains(out, "off") {
				t.Fatalf("disable: %v\n%s", err, out)
			}

			// A token from the environment; a non-admin's is refused.
			_, bobTok, err := us.NewDevice(t.Context(), us.UserID("bob"), "", "")
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv(AdminTokenEnv, bobTok)
			if _, _, err := bridgesCmd(t, "status", "email", "-c", path); err == nil || !strings.Contains(err.Error(), "M_FORBIDDEN") {
				t.Errorf("status with a non-admin token: %v, want M_FORBIDDEN", err)
			}
			_, rootTok, err := us.NewDevice(t.Context(), us.UserID("root"), "", "")
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv(AdminTokenEnv, rootTok)
			out, _, err = bridgesCmd(t, "status", "email", "-c", path)
			if err != nil || !strings.Contains(out, "off") || !strings.Contains(out, "queue:") || !strings.Contains(out, "logins:") {
				t.Errorf("status: %v\n%s", err, out)
			}
			// --url and --token need no config file.
			t.Setenv(AdminTokenEnv, "")
			out, _, err = bridgesCmd(t, "enable", "email", "--url", "http://"+ln.Addr().String(), "--token", rootTok,
				"-c", "/nonexistent.yaml")
			if err != nil || !strings.Contains(out, "on") {
				t.Errorf("enable: %v\n%s", err, out)
			}
			if on, _ := h.Bridges().Enabled("email"); !on {
				t.Error("the bridge is still off after enable")
			}
			if _, _, err := bridgesCmd(t, "status", "nosuch", "--token", rootTok, "-c", path); err == nil ||
				!strings.Contains(err.Error(), "M_NOT_FOUND") {
				t.Errorf("unknown bridge: %v, want M_NOT_FOUND", err)
			}
			// Mistakes on the command line are usage errors (exit 2).
			for _, args := range [][]string{{}, {"status"}, {"frobnicate", "email"}, {"list", "--token", "x", "--as", "root"}} {
				if _, _, err := bridgesCmd(t, args...); !errors.As(err, new(usageError)) {
					t.Errorf("bridges %q: %v, want a usage error", args, err)
				}
			}
			if _, _, err := bridgesCmd(t, "list", "-c", path); !errors.As(err, new(usageError)) {
				t.Errorf("no token at all: %v, want a usage error", err)
			}
		})
	}
}
