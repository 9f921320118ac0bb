package rooms

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/id"
)

// FuzzParsePowerLevels checks the power levels parser: it never panics, accepted content only yields valid
// user IDs, and re-encoding what it parsed parses back to the same levels.
func FuzzParsePowerLevels(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"users":{"@a:x":100},"users_default":0,"events":{"m.room.name":50},"ban":50,"kick":"50"}`,
		`{"users":{"a":1}}`, `{"notifications":{"room":50}}`, `{"events_default":1e2}`, `{"invite":1.5}`,
		`{"users":[]}`, `[]`, `{"state_default":-9007199254740991}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pl, err := parsePowerLevels(json.RawMessage(data))
		if err != nil {
			return
		}
		for u := range pl.users {
			if _, _, err := id.UserID(u).ParseAndValidateRelaxed(); err != nil {
				t.Fatalf("accepted invalid user ID %q", u)
			}
		}
		out := map[string]any{}
		for _, k := range plScalarKeys {
			if pl.present[k] {
				out[k] = pl.scalar(k)
			}
		}
		out["users"], out["events"], out["notifications"] = pl.users, pl.events, pl.notifications
		raw, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parsePowerLevels(raw)
		if err != nil {
			t.Fatalf("re-encoded levels refused: %v\n%s", err, raw)
		}
		for _, k := range plScalarKeys {
			if again.scalar(k) != pl.scalar(k) || again.present[k] != pl.present[k] {
				t.Fatalf("%s changed: %d -> %d", k, pl.scalar(k), again.scalar(k))
			}
		}
		if len(again.users) != len(pl.users) || len(again.events) != len(pl.events) {
			t.Fatal("maps changed on round trip")
		}
	})
}
