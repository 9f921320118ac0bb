package users

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/dbtest"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newService(t *testing.T, db *dbutil.Database) *Service {
	t.Helper()
	s, err := New(t.Context(), db, "example.org", zerolog.Nop())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.bcryptCost = bcrypt.MinCost
	return s
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	e := mxerr.As(err)
	if e == nil || e.Code != code {
		t.Fatalf("got error %v, want %s", err, code)
	}
}

func TestValidLocalpart(t *testing.T) {
	t.Parallel()
	s := &Service{serverName: "example.org"}
	for name, tc := range map[string]struct {
		localpart string
		ok        bool
	}{
		"simple":           {"alice", true},
		"all allowed":      {"a.b_c=d-e/f+g9", true},
		"empty":            {"", false},
		"uppercase":        {"Alice", false},
		"colon":            {"a:b", false},
		"space":            {"a b", false},
		"non-ascii":        {"élise", false},
		"at sign":          {"@alice", false},
		"max length":       {strings.Repeat("a", 255-len("@:example.org")), true},
		"one over max len": {strings.Repeat("a", 256-len("@:example.org")), false},
	} {
		t.Run(name, func(t *testing.T) {
			err := s.ValidLocalpart(tc.localpart)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok {
				wantCode(t, err, "M_INVALID_USERNAME")
			}
		})
	}
}

func TestAccounts(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		alice, err := s.Register(ctx, "alice", "correct horse", RegisterOpts{Admin: true})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		if alice != "@alice:example.org" {
			t.Fatalf("user ID %s", alice)
		}
		_, err = s.Register(ctx, "alice", "other", RegisterOpts{})
		wantCode(t, err, "M_USER_IN_USE")
		_, err = s.Register(ctx, "Bad Name", "x", RegisterOpts{})
		wantCode(t, err, "M_INVALID_USERNAME")

		ghost, err := s.Register(ctx, "email_bob", "", RegisterOpts{AppserviceID: "email"})
		if err != nil {
			t.Fatalf("Register ghost: %v", err)
		}

		if err = s.CheckPassword(ctx, alice, "correct horse"); err != nil {
			t.Fatalf("CheckPassword good: %v", err)
		}
		wantCode(t, s.CheckPassword(ctx, alice, "wrong"), "M_FORBIDDEN")
		wantCode(t, s.CheckPassword(ctx, "@nobody:example.org", "x"), "M_FORBIDDEN")
		wantCode(t, s.CheckPassword(ctx, ghost, ""), "M_FORBIDDEN")

		for user, want := range map[id.UserID]bool{alice: true, ghost: false, "@nobody:example.org": false} {
			admin, err := s.IsAdmin(ctx, user)
			if err != nil || admin != want {
				t.Errorf("IsAdmin(%s) = %v, %v; want %v", user, admin, err, want)
			}
		}
		for user, want := range map[id.UserID]bool{alice: true, ghost: true, "@nobody:example.org": false} {
			ok, err := s.Exists(ctx, user)
			if err != nil || ok != want {
				t.Errorf("Exists(%s) = %v, %v; want %v", user, ok, err, want)
			}
		}
		acct, err := s.Account(ctx, ghost)
		if err != nil || acct.AppserviceID != "email" || acct.Admin {
			t.Fatalf("Account(ghost) = %+v, %v", acct, err)
		}

		if err = s.SetPassword(ctx, alice, "new secret"); err != nil {
			t.Fatal(err)
		}
		wantCode(t, s.CheckPassword(ctx, alice, "correct horse"), "M_FORBIDDEN")
		if err = s.CheckPassword(ctx, alice, "new secret"); err != nil {
			t.Fatalf("new password refused: %v", err)
		}

		// The stored hash is bcrypt, never the password.
		var hash string
		if err = db.QueryRow(ctx, `SELECT password_hash FROM users_accounts WHERE user_id = $1`, alice).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(hash, "$2") || strings.Contains(hash, "new secret") {
			t.Fatalf("password stored as %q", hash)
		}
	})
}

func TestDevicesAndTokens(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		alice, _ := s.Register(ctx, "alice", "pw", RegisterOpts{})

		dev1, tok1, err := s.NewDevice(ctx, alice, "", "phone")
		if err != nil {
			t.Fatal(err)
		}
		if dev1 == "" || len(tok1) < 40 {
			t.Fatalf("device %q token length %d", dev1, len(tok1))
		}
		dev2, tok2, err := s.NewDevice(ctx, alice, "LAPTOP", "laptop")
		if err != nil || dev2 != "LAPTOP" {
			t.Fatalf("NewDevice fixed id = %s, %v", dev2, err)
		}
		_, _, err = s.NewDevice(ctx, "@nobody:example.org", "", "")
		wantCode(t, err, "M_NOT_FOUND")

		// Tokens are stored hashed only.
		var n int
		if err = db.QueryRow(ctx, `SELECT COUNT(*) FROM users_devices WHERE token_hash = $1 OR token_hash = $2`, tok1, tok2).Scan(&n); err != nil || n != 0 {
			t.Fatalf("raw token found in database (n=%d, err=%v)", n, err)
		}

		for tok, dev := range map[string]id.DeviceID{tok1: dev1, tok2: dev2} {
			u, d, err := s.Authenticate(ctx, tok)
			if err != nil || u != alice || d != dev {
				t.Fatalf("Authenticate = %s %s %v", u, d, err)
			}
		}
		// A cold cache (another process, a restart) still authenticates from the database.
		s2 := newService(t, db)
		if u, d, err := s2.Authenticate(ctx, tok2); err != nil || u != alice || d != dev2 {
			t.Fatalf("cold Authenticate = %s %s %v", u, d, err)
		}
		_, _, err = s.Authenticate(ctx, "psr_nope")
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		_, _, err = s.Authenticate(ctx, "")
		wantCode(t, err, "M_MISSING_TOKEN")

		// Logging in again on an existing device replaces its token.
		_, tok2b, err := s.NewDevice(ctx, alice, "LAPTOP", "")
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = s.Authenticate(ctx, tok2)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		if _, d, err := s.Authenticate(ctx, tok2b); err != nil || d != "LAPTOP" {
			t.Fatalf("new token: %s %v", d, err)
		}
		devs, err := s.Devices(ctx, alice)
		if err != nil || len(devs) != 2 {
			t.Fatalf("Devices = %+v, %v", devs, err)
		}
		if d, err := s.Device(ctx, alice, "LAPTOP"); err != nil || d.DisplayName != "laptop" {
			t.Fatalf("Device = %+v, %v", d, err)
		}

		if err = s.Logout(ctx, tok1); err != nil {
			t.Fatal(err)
		}
		_, _, err = s.Authenticate(ctx, tok1)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		wantCode(t, s.Logout(ctx, tok1), "M_UNKNOWN_TOKEN")

		_, tok3, _ := s.NewDevice(ctx, alice, "", "")
		if err = s.LogoutAll(ctx, alice); err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{tok2b, tok3} {
			_, _, err = s.Authenticate(ctx, tok)
			wantCode(t, err, "M_UNKNOWN_TOKEN")
		}
		if devs, _ := s.Devices(ctx, alice); len(devs) != 0 {
			t.Fatalf("devices left after LogoutAll: %+v", devs)
		}

		_, tok4, _ := s.NewDevice(ctx, alice, "X", "")
		if err = s.Deactivate(ctx, alice); err != nil {
			t.Fatal(err)
		}
		_, _, err = s.Authenticate(ctx, tok4)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		wantCode(t, s.CheckPassword(ctx, alice, "pw"), "M_FORBIDDEN")
	})
}

func TestProfile(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		alice, _ := s.Register(ctx, "alice", "pw", RegisterOpts{})
		if name, avatar, err := s.Profile(ctx, alice); err != nil || name != "" || avatar != "" {
			t.Fatalf("empty profile = %q %q %v", name, avatar, err)
		}
		if err := s.SetDisplayName(ctx, alice, "Alice ✨"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetAvatarURL(ctx, alice, "mxc://example.org/abc"); err != nil {
			t.Fatal(err)
		}
		if name, avatar, err := s.Profile(ctx, alice); err != nil || name != "Alice ✨" || avatar != "mxc://example.org/abc" {
			t.Fatalf("profile = %q %q %v", name, avatar, err)
		}
		_, _, err := s.Profile(ctx, "@nobody:example.org")
		wantCode(t, err, "M_NOT_FOUND")
		wantCode(t, s.SetDisplayName(ctx, "@nobody:example.org", "x"), "M_NOT_FOUND")
	})
}

func TestAccountData(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		alice, _ := s.Register(ctx, "alice", "pw", RegisterOpts{})
		bob, _ := s.Register(ctx, "bob", "pw", RegisterOpts{})

		if pos, err := s.MaxAccountDataPos(ctx); err != nil || pos != 0 {
			t.Fatalf("initial pos %d %v", pos, err)
		}
		p1, err := s.SetAccountData(ctx, alice, "", "m.direct", json.RawMessage(`{"@bob:example.org":["!r:example.org"]}`))
		if err != nil {
			t.Fatal(err)
		}
		p2, err := s.SetAccountData(ctx, alice, "!r:example.org", "m.tag", json.RawMessage(`{"tags":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		p3, err := s.SetAccountData(ctx, bob, "", "m.direct", json.RawMessage(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		if !(p1 < p2 && p2 < p3) {
			t.Fatalf("positions not increasing: %d %d %d", p1, p2, p3)
		}
		_, err = s.SetAccountData(ctx, alice, "", "m.direct", json.RawMessage(`[1]`))
		wantCode(t, err, "M_BAD_JSON")

		got, err := s.AccountData(ctx, alice, "", "m.direct")
		if err != nil || !strings.Contains(string(got), "!r:example.org") {
			t.Fatalf("AccountData = %s %v", got, err)
		}
		_, err = s.AccountData(ctx, alice, "", "m.nothing")
		wantCode(t, err, "M_NOT_FOUND")

		items, err := s.AccountDataSince(ctx, alice, 0)
		if err != nil || len(items) != 2 || items[0].Type != "m.direct" || items[1].RoomID != "!r:example.org" {
			t.Fatalf("AccountDataSince(0) = %+v %v", items, err)
		}
		items, _ = s.AccountDataSince(ctx, alice, p1)
		if len(items) != 1 || items[0].Type != "m.tag" {
			t.Fatalf("AccountDataSince(p1) = %+v", items)
		}
		// Replacing moves the entry to a new position.
		p4, _ := s.SetAccountData(ctx, alice, "", "m.direct", json.RawMessage(`{}`))
		items, _ = s.AccountDataSince(ctx, alice, p3)
		if len(items) != 1 || items[0].Pos != p4 || string(items[0].Content) != `{}` {
			t.Fatalf("after replace: %+v", items)
		}
		if max, _ := s.MaxAccountDataPos(ctx); max != p4 {
			t.Fatalf("MaxAccountDataPos = %d, want %d", max, p4)
		}
	})
}

// TestAccountDataConcurrentPositions checks that concurrent writers get distinct, gap-free positions.
func TestAccountDataConcurrentPositions(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := context.Background()
		s := newService(t, db)
		alice, _ := s.Register(ctx, "alice", "pw", RegisterOpts{})
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			pos = map[int64]bool{}
		)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := s.SetAccountData(ctx, alice, "", "t"+string(rune('a'+i)), json.RawMessage(`{}`))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				pos[p] = true
				mu.Unlock()
			}()
		}
		wg.Wait()
		for i := int64(1); i <= 20; i++ {
			if !pos[i] {
				t.Fatalf("position %d missing: %v", i, pos)
			}
		}
	})
}

// TestRevocationFromAnotherProcess: a device deleted or an account deactivated through another Service on the same
// database (the CLI, a second node) stops working here once the cached token's TTL has passed, not at restart.
func TestRevocationFromAnotherProcess(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		hub := newService(t, db)
		cli := newService(t, db)
		alice, _ := hub.Register(ctx, "alice", "pw", RegisterOpts{})
		dev, tok, err := hub.NewDevice(ctx, alice, "", "phone")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err = hub.Authenticate(ctx, tok); err != nil {
			t.Fatalf("fresh token refused: %v", err)
		}
		if err = cli.DeleteDevice(ctx, alice, dev); err != nil {
			t.Fatal(err)
		}
		// Within the TTL the cache still answers (that is the point of the cache).
		if _, _, err = hub.Authenticate(ctx, tok); err != nil {
			t.Fatalf("cached token refused before its TTL: %v", err)
		}
		hub.tokenTTL = 0 // the TTL has passed
		_, _, err = hub.Authenticate(ctx, tok)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
		// And it stays refused once the TTL is back to normal: the entry was dropped.
		hub.tokenTTL = tokenCacheTTL
		_, _, err = hub.Authenticate(ctx, tok)
		wantCode(t, err, "M_UNKNOWN_TOKEN")
	})
}
