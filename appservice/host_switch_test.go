package appservice

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/bridgev2/bridgeconfig"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/registration"
)

func TestBridgeConfigAllowedUsers(t *testing.T) {
	t.Parallel()
	reg := registration.Generate("fake", InternalBaseURL+MountPrefix+"fake", "fakebot", `@fake_.+:hs`)
	spec := BridgeSpec{ID: "fake", Connector: &fakeNetwork{}, Registration: reg, UsernameTemplate: "fake_{{.}}",
		Admins: []id.UserID{"@root:hs"}, AllowedUsers: []string{"@bob:hs", "partner.example"}}
	cfg, err := BridgeConfig(spec, "hs")
	if err != nil {
		t.Fatal(err)
	}
	for user, want := range map[id.UserID]bridgeconfig.Permissions{
		"@bob:hs":                bridgeconfig.PermissionLevelUser,
		"@carol:partner.example": bridgeconfig.PermissionLevelUser,
		"@alice:hs":              bridgeconfig.PermissionLevelBlock, // a local user not on the list
		"@eve:elsewhere":         bridgeconfig.PermissionLevelBlock,
		"@root:hs":               bridgeconfig.PermissionLevelAdmin,
		"@bob:hs.evil.example":   bridgeconfig.PermissionLevelBlock,
		"@partner.example:hs":    bridgeconfig.PermissionLevelBlock,
		"@x:sub.partner.example": bridgeconfig.PermissionLevelBlock,
	} {
		if got := cfg.Bridge.Permissions.Get(user); got != want {
			t.Errorf("%s: %+v, want %+v", user, got, want)
		}
	}
	if !cfg.Bridge.Permissions.IsConfigured() {
		t.Error("bridgev2 would treat the permissions as unconfigured")
	}
	spec.AllowedUsers = []string{"*"}
	if cfg, err := BridgeConfig(spec, "hs"); err != nil || cfg.Bridge.Permissions.Get("@eve:elsewhere") != bridgeconfig.PermissionLevelUser {
		t.Errorf(`"*" does not allow everyone: %v`, err)
	}
	// Globs and malformed entries would match nobody in bridgev2: refused.
	for _, bad := range []string{"@*:hs", "*.hs", "@alice", "", "alice@hs", "a b"} {
		spec.AllowedUsers = []string{bad}
		if _, err := BridgeConfig(spec, "hs"); err == nil {
			t.Errorf("allowed user %q accepted", bad)
		}
	}
}

// TestHostSwitch checks the switch itself on a bridge that is not running: state, WaitEnabled blocking and
// release, unknown IDs, and a bridge added switched off.
func TestHostSwitch(t *testing.T) {
	t.Parallel()
	host := NewHost(HostConfig{ServerName: "hs", Mount: func(string, http.Handler) {}, Log: zerolog.Nop()})
	regA := registration.Generate("a", InternalBaseURL+MountPrefix+"a", "abot", `@a_.+:hs`)
	regB := registration.Generate("b", InternalBaseURL+MountPrefix+"b", "bbot", `@b_.+:hs`)
	dir := t.TempDir()
	dbA := openDB(t, configs.Database{Type: "sqlite"}, dir+"/a")
	dbB := openDB(t, configs.Database{Type: "sqlite"}, dir+"/b")
	if err := host.Add(BridgeSpec{ID: "a", Connector: &fakeNetwork{}, DB: dbA, Registration: regA, UsernameTemplate: "a_{{.}}"}); err != nil {
		t.Fatal(err)
	}
	if err := host.Add(BridgeSpec{ID: "b", Connector: &fakeNetwork{}, DB: dbB, Registration: regB, UsernameTemplate: "b_{{.}}",
		Disabled: true}); err != nil {
		t.Fatal(err)
	}
	defer host.Stop()
	ctx := t.Context()

	if on, ok := host.Enabled("a"); !on || !ok {
		t.Errorf("a: enabled %v known %v, want enabled", on, ok)
	}
	if on, ok := host.Enabled("b"); on || !ok {
		t.Errorf("b (added disabled): enabled %v known %v", on, ok)
	}
	if !host.AnyDisabled() {
		t.Error("AnyDisabled false with b switched off")
	}
	if _, ok := host.Enabled("zzz"); ok {
		t.Error("unknown bridge reported as known")
	}
	if err := host.SetEnabled(ctx, "zzz", false); !errors.Is(err, ErrUnknownBridge) {
		t.Errorf("switch unknown bridge: %v", err)
	}
	if err := host.WaitEnabled(ctx, "a"); err != nil {
		t.Errorf("WaitEnabled on an enabled bridge: %v", err)
	}
	if err := host.WaitEnabled(ctx, "zzz"); err != nil {
		t.Errorf("WaitEnabled on an unknown bridge (external appservice): %v", err)
	}
	if err := host.SetEnabled(ctx, "a", false); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := host.WaitEnabled(short, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitEnabled on a disabled bridge: %v, want the context's deadline", err)
	}
	released := make(chan error, 1)
	go func() { released <- host.WaitEnabled(ctx, "a") }()
	select {
	case err := <-released:
		t.Fatalf("WaitEnabled returned %v before the bridge was enabled", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := host.SetEnabled(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-released:
		if err != nil {
			t.Errorf("WaitEnabled after enabling: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("enabling did not release WaitEnabled")
	}
	// Switching to the current state is a no-op; switching twice works.
	for _, on := range []bool{true, false, false, true} {
		if err := host.SetEnabled(ctx, "b", on); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range host.Status() {
		if !st.Enabled {
			t.Errorf("status %+v, want enabled", st)
		}
	}
	if host.AnyDisabled() {
		t.Error("AnyDisabled true with every bridge on")
	}
}

// FuzzValidAllowedUser: whatever ValidAllowedUser accepts, BridgeConfig accepts and bridgev2 can match: "*",
// a user ID without glob characters, or a bare server name without '@', globs, slashes or spaces.
func FuzzValidAllowedUser(f *testing.F) {
	for _, s := range []string{"*", "@alice:example.org", "example.org", "@*:hs", "*.hs", "", "a b", "@a:b:c",
		"@\x00:hs", "hs:8448", "@alice:[::1]:8448"} {
		f.Add(s)
	}
	reg := registration.Generate("fake", InternalBaseURL+MountPrefix+"fake", "fakebot", `@fake_.+:hs`)
	f.Fuzz(func(t *testing.T, entry string) {
		err := ValidAllowedUser(entry)
		if err != nil {
			return
		}
		if entry != "*" && strings.ContainsAny(entry, "*? \t/\\") {
			t.Fatalf("accepted %q with a glob, space or slash", entry)
		}
		if entry != "*" && !strings.HasPrefix(entry, "@") && strings.Contains(entry, "@") {
			t.Fatalf("accepted %q: neither a user ID nor a server name", entry)
		}
		cfg, err := BridgeConfig(BridgeSpec{ID: "fake", Connector: &fakeNetwork{}, Registration: reg,
			UsernameTemplate: "fake_{{.}}", AllowedUsers: []string{entry}}, "hs")
		if err != nil {
			t.Fatalf("ValidAllowedUser accepted %q but BridgeConfig refused it: %v", entry, err)
		}
		if _, ok := cfg.Bridge.Permissions[entry]; !ok {
			t.Fatalf("%q missing from the permissions", entry)
		}
		if entry != "*" && cfg.Bridge.Permissions.Get("@someone:hs") == bridgeconfig.PermissionLevelUser &&
			entry != "hs" && entry != "@someone:hs" {
			t.Fatalf("allowing %q lets every local user in", entry)
		}
	})
}
