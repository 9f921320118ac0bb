package pushers

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/storage"
	"github.com/passerelle/passerelle/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newService(t *testing.T, kind string) *Service {
	t.Helper()
	dir := t.TempDir()
	cfg := configs.Database{Type: kind}
	if kind == "postgres" {
		cfg.URI = testenv.Postgres(t)
	}
	db, err := storage.Open(t.Context(), cfg, dir, "homeserver", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s, err := New(t.Context(), db, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pusher(app, key string) *Pusher {
	return &Pusher{AppID: app, PushKey: key, Kind: "http", AppDisplayName: "App", DeviceDisplayName: "Phone",
		Lang: "en", Data: json.RawMessage(`{"url":"https://push.example.org/_matrix/push/v1/notify"}`)}
}

func keys(t *testing.T, s *Service, user string) []string {
	t.Helper()
	list, err := s.List(context.Background(), id.UserID("@"+user+":example.org"))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, p := range list {
		out = append(out, p.AppID+"/"+p.PushKey)
	}
	return out
}

// TestPushers: set, replace, append, delete and the per-device removals.
func TestPushers(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			s := newService(t, kind)
			ctx := context.Background()
			const alice, bob = "@alice:example.org", "@bob:example.org"
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(s.Set(ctx, alice, "A1", pusher("app", "k1"), false))
			must(s.Set(ctx, alice, "A2", pusher("app", "k2"), false))
			// Same app and key for bob without append takes it away from alice; with append both keep it.
			must(s.Set(ctx, bob, "B1", pusher("app", "k1"), false))
			if got := keys(t, s, "alice"); len(got) != 1 || got[0] != "app/k2" {
				t.Fatalf("alice after bob took k1: %v", got)
			}
			must(s.Set(ctx, alice, "A1", pusher("app", "k1"), true))
			if len(keys(t, s, "alice")) != 2 || len(keys(t, s, "bob")) != 1 {
				t.Fatalf("append: %v %v", keys(t, s, "alice"), keys(t, s, "bob"))
			}
			// Replacing keeps one row and updates the fields.
			p := pusher("app", "k2")
			p.Lang = "fr"
			must(s.Set(ctx, alice, "A2", p, true))
			list, _ := s.List(ctx, alice)
			langs := map[string]string{}
			for _, p := range list {
				langs[p.PushKey] = p.Lang + "/" + p.Kind
			}
			if len(list) != 2 || langs["k2"] != "fr/http" || langs["k1"] != "en/http" {
				t.Fatalf("replace: %v", langs)
			}
			// A password change on A1 drops A2's pushers; deleting A1 drops the rest.
			must(s.DeleteExceptDevice(ctx, alice, "A1"))
			if got := keys(t, s, "alice"); len(got) != 1 || got[0] != "app/k1" {
				t.Fatalf("after password change: %v", got)
			}
			must(s.DeleteDevice(ctx, alice, "A1"))
			if got := keys(t, s, "alice"); len(got) != 0 {
				t.Fatalf("after device delete: %v", got)
			}
			must(s.Delete(ctx, bob, "app", "k1"))
			if got := keys(t, s, "bob"); len(got) != 0 {
				t.Fatalf("after delete: %v", got)
			}
			// Validation.
			for name, mutate := range map[string]func(*Pusher){
				"no app_id": func(p *Pusher) { p.AppID = "" }, "no pushkey": func(p *Pusher) { p.PushKey = "" },
				"no url": func(p *Pusher) { p.Data = json.RawMessage(`{}`) }, "bad kind": func(p *Pusher) { p.Kind = "sms" },
				"no lang": func(p *Pusher) { p.Lang = "" }, "data not object": func(p *Pusher) { p.Data = json.RawMessage(`[]`) },
			} {
				p := pusher("app", "x")
				mutate(p)
				if e := mxerr.As(s.Set(ctx, alice, "A1", p, false)); e == nil || e.Status != 400 {
					t.Errorf("%s: got %v, want a 400", name, e)
				}
			}
		})
	}
}
