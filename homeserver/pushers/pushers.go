// Package pushers stores the pushers clients register with POST /_matrix/client/v3/pushers/set: where a push
// gateway should be told about a user's notifications. It keeps them per user and device (the device whose
// access token set them), so a password change or logout can remove the pushers of other sessions.
//
// Delivering notifications to push gateways is not part of this package. It imports only storage helpers and
// mxerr; it must not import the HTTP layer or other homeserver services.
package pushers

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

//go:embed upgrades/*.sql
var upgradesFS embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgradesFS, "upgrades").Finish()

// Service stores pushers.
type Service struct {
	db *dbutil.Database
}

// New runs the pusher migrations on db (version table pushers_version).
func New(ctx context.Context, db *dbutil.Database, log zerolog.Logger) (*Service, error) {
	child := db.Child("pushers_version", upgradeTable, dbutil.ZeroLogger(log.With().Str("db_section", "pushers").Logger()))
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade pushers database: %w", err)
	}
	return &Service{db: child}, nil
}

// Pusher is one pusher as the Client-Server API describes it (GET /pushers lists these).
type Pusher struct {
	AppID             string          `json:"app_id"`
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// Validate checks the fields the spec requires of a pusher being added.
func (p *Pusher) Validate() error {
	switch {
	case p.AppID == "":
		return mxerr.MissingParam("app_id is required")
	case len(p.AppID) > 64:
		return mxerr.InvalidParam("app_id is longer than 64 characters")
	case p.PushKey == "":
		return mxerr.MissingParam("pushkey is required")
	case len(p.PushKey) > 512:
		return mxerr.InvalidParam("pushkey is longer than 512 bytes")
	case p.AppDisplayName == "":
		return mxerr.MissingParam("app_display_name is required")
	case p.DeviceDisplayName == "":
		return mxerr.MissingParam("device_display_name is required")
	case p.Lang == "":
		return mxerr.MissingParam("lang is required")
	case p.Kind != "http":
		return mxerr.InvalidParam("unsupported pusher kind %q (only http)", p.Kind)
	}
	var data struct {
		URL string `json:"url"`
	}
	if len(p.Data) == 0 || json.Unmarshal(p.Data, &data) != nil {
		return mxerr.MissingParam("data is required and must be an object")
	}
	if data.URL == "" {
		return mxerr.MissingParam("data.url is required for http pushers")
	}
	return nil
}

// Set adds or replaces user's pusher p, made by device. Unless appendToOthers, the same app ID and push key
// are removed from every other user first, as the spec says for append=false.
func (s *Service) Set(ctx context.Context, user id.UserID, device id.DeviceID, p *Pusher, appendToOthers bool) error {
	if err := p.Validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode pusher: %w", err)
	}
	return s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if !appendToOthers {
			if _, err := s.db.Exec(ctx, `DELETE FROM pushers WHERE app_id=$1 AND pushkey=$2`, p.AppID, p.PushKey); err != nil {
				return fmt.Errorf("replace pusher: %w", err)
			}
		}
		_, err := s.db.Exec(ctx, `INSERT INTO pushers (user_id, app_id, pushkey, device_id, pusher, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET device_id=excluded.device_id, pusher=excluded.pusher`,
			user, p.AppID, p.PushKey, device, string(raw), time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("store pusher: %w", err)
		}
		return nil
	})
}

// Delete removes user's pusher for appID and pushKey (absent is fine).
func (s *Service) Delete(ctx context.Context, user id.UserID, appID, pushKey string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM pushers WHERE user_id=$1 AND app_id=$2 AND pushkey=$3`, user, appID, pushKey); err != nil {
		return fmt.Errorf("delete pusher: %w", err)
	}
	return nil
}

// List returns user's pushers, oldest first.
func (s *Service) List(ctx context.Context, user id.UserID) ([]*Pusher, error) {
	rows, err := s.db.Query(ctx, `SELECT pusher FROM pushers WHERE user_id=$1 ORDER BY created_ts, app_id, pushkey`, user)
	if err != nil {
		return nil, fmt.Errorf("list pushers: %w", err)
	}
	defer rows.Close()
	out := []*Pusher{}
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, fmt.Errorf("read pusher: %w", err)
		}
		var p Pusher
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			return nil, fmt.Errorf("decode pusher: %w", err)
		}
		out = append(out, &p)
	}
	return out, rows.Err()
}

// DeleteExceptDevice removes user's pushers made by any device but keep (on a password change the current
// session keeps its pushers). An empty keep removes all of them.
func (s *Service) DeleteExceptDevice(ctx context.Context, user id.UserID, keep id.DeviceID) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM pushers WHERE user_id=$1 AND device_id<>$2`, user, keep); err != nil {
		return fmt.Errorf("delete pushers: %w", err)
	}
	return nil
}

// DeleteDevice removes the pushers made by one device (when it is logged out or deleted).
func (s *Service) DeleteDevice(ctx context.Context, user id.UserID, device id.DeviceID) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM pushers WHERE user_id=$1 AND device_id=$2`, user, device); err != nil {
		return fmt.Errorf("delete device pushers: %w", err)
	}
	return nil
}
