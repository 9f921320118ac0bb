package hub

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// switchUpgrades is the hub's own migration set (version table "hub_version" in the homeserver database): the
// administrators' on/off switch of each in-process bridge, kept across restarts.
var switchUpgrades = dbutil.BuildUpgradeTable().WithRaw(0, 1, 1, "bridge on/off switches", dbutil.TxnModeOn,
	func(ctx context.Context, db *dbutil.Database) error {
		_, err := db.Exec(ctx, `CREATE TABLE hub_bridge_switch (
			bridge_id  TEXT    PRIMARY KEY,
			enabled    BOOLEAN NOT NULL,
			changed_by TEXT    NOT NULL,
			changed_at BIGINT  NOT NULL
		)`)
		return err
	}).Finish()

// switchStore persists the bridge switches. A bridge without a row is enabled.
type switchStore struct {
	db *dbutil.Database
}

func newSwitchStore(ctx context.Context, db *dbutil.Database, log zerolog.Logger) (*switchStore, error) {
	child := db.Child("hub_version", switchUpgrades, dbutil.ZeroLogger(log))
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade hub database: %w", err)
	}
	return &switchStore{db: child}, nil
}

// disabled returns the IDs of the bridges an administrator switched off.
func (s *switchStore) disabled(ctx context.Context) (map[string]bool, error) {
	rows, err := s.db.Query(ctx, `SELECT bridge_id FROM hub_bridge_switch WHERE enabled = $1`, false)
	if err != nil {
		return nil, fmt.Errorf("read bridge switches: %w", err)
	}
	defer rows.Close()
	out := make(map[string]bool)
	for rows.Next() {
		var bridgeID string
		if err := rows.Scan(&bridgeID); err != nil {
			return nil, fmt.Errorf("read bridge switches: %w", err)
		}
		out[bridgeID] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read bridge switches: %w", err)
	}
	return out, nil
}

// set records a switch.
func (s *switchStore) set(ctx context.Context, bridgeID string, enabled bool, by id.UserID) error {
	_, err := s.db.Exec(ctx, `INSERT INTO hub_bridge_switch (bridge_id, enabled, changed_by, changed_at)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (bridge_id) DO UPDATE SET enabled = excluded.enabled, changed_by = excluded.changed_by,
			changed_at = excluded.changed_at`,
		bridgeID, enabled, string(by), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("store switch of bridge %s: %w", bridgeID, err)
	}
	return nil
}
