package e2ee_test

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
	"testing/fstest"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/e2ee"
	"github.com/passerelle/passerelle/homeserver/internal/dbtest"
)

// TestUpgradeFromV1 creates the e2ee tables as schema v1 (the first released migration alone), stores keys in
// them, then lets e2ee.New upgrade to the current schema: the keys survive and the new features work.
func TestUpgradeFromV1(t *testing.T) {
	v1, err := os.ReadFile("upgrades/00-latest.sql")
	if err != nil {
		t.Fatal(err)
	}
	oldTable := dbutil.BuildUpgradeTable().WithFS(fstest.MapFS{"00-latest.sql": {Data: v1}}).Finish()
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		old := db.Child("e2ee_version", oldTable, dbutil.ZeroLogger(zerolog.Nop()))
		if err := old.Upgrade(ctx); err != nil {
			t.Fatalf("create v1 schema: %v", err)
		}
		if _, err := old.Exec(ctx, `INSERT INTO e2ee_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)`,
			"@alice:e2ee.test", "ADEV", `{"device_id":"ADEV","keys":{},"user_id":"@alice:e2ee.test"}`); err != nil {
			t.Fatal(err)
		}
		if _, err := old.Exec(ctx, `INSERT INTO e2ee_device_changes (user_id, pos) VALUES ($1, $2)`, "@alice:e2ee.test", 7); err != nil {
			t.Fatal(err)
		}
		f := newFixture(t, db) // runs e2ee.New, which upgrades
		if f.svc.Pos() != 7 {
			t.Fatalf("position after upgrade %d, want 7", f.svc.Pos())
		}
		alice := f.user("alice", "ADEV")
		bob := f.user("bob", "BDEV")
		res, err := f.svc.Query(ctx, bob, map[id.UserID][]id.DeviceID{alice: nil})
		if err != nil || res.DeviceKeys[alice]["ADEV"] == nil {
			t.Fatalf("v1 keys lost: %v %v", res, err)
		}
		f.sharedRoom(alice, bob) // needs the v2 membership table
		if ch, _, err := f.svc.Changes(ctx, bob, 7, f.svc.Pos()); err != nil || !slices.Contains(ch, alice) {
			t.Fatalf("changes after upgrade: %v %v", ch, err)
		}
		if v, err := f.svc.CreateBackupVersion(ctx, alice, "m.megolm_backup.v1.curve25519-aes-sha2", json.RawMessage(`{}`)); err != nil || v != "1" {
			t.Fatalf("backup after upgrade: %q %v", v, err)
		}
		var version int
		if err := db.QueryRow(ctx, `SELECT version FROM e2ee_version`).Scan(&version); err != nil || version != 3 {
			t.Fatalf("schema version %d %v, want 3", version, err)
		}
		_ = e2ee.MaxToDevicePerSync
	})
}
