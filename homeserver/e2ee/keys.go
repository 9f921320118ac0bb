package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// maxKeysPerUpload bounds the one-time and fallback keys in one upload. Clients upload half of what their Olm
// account holds (libolm: 50) at a time; the bound stops one request from filling the table.
const maxKeysPerUpload = 200

// Upload is the body of POST /keys/upload.
type Upload struct {
	// DeviceKeys are the device's identity keys (nil when only one-time keys are uploaded).
	DeviceKeys json.RawMessage `json:"device_keys,omitempty"`
	// OneTimeKeys maps "<algorithm>:<key id>" to the key (a string or a signed object).
	OneTimeKeys map[string]json.RawMessage `json:"one_time_keys,omitempty"`
	// FallbackKeys maps "<algorithm>:<key id>" to the fallback key of that algorithm.
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys,omitempty"`
}

// splitKeyID splits "<algorithm>:<key id>".
func splitKeyID(keyID string) (alg string, err error) {
	alg, rest, ok := strings.Cut(keyID, ":")
	if !ok || alg == "" || rest == "" || len(keyID) > 255 {
		return "", mxerr.InvalidParam("key ID %q is not <algorithm>:<id>", keyID)
	}
	return alg, nil
}

// canonicalObject re-encodes a JSON object canonically without its "unsigned" member (the server adds its own).
func canonicalObject(raw json.RawMessage) (map[string]any, []byte, error) {
	v, err := canonicaljson.Decode(raw)
	if err != nil {
		return nil, nil, mxerr.BadJSON("key is not canonical JSON")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, nil, mxerr.BadJSON("key must be a JSON object")
	}
	delete(obj, "unsigned")
	out, err := canonicaljson.Encode(obj)
	if err != nil {
		return nil, nil, mxerr.BadJSON("key is not canonical JSON")
	}
	return obj, out, nil
}

// canonicalKey re-encodes a one-time or fallback key (a JSON string or object) canonically.
func canonicalKey(raw json.RawMessage) ([]byte, error) {
	v, err := canonicaljson.Decode(raw)
	if err != nil {
		return nil, mxerr.BadJSON("key is not canonical JSON")
	}
	switch k := v.(type) {
	case string:
	case map[string]any:
		delete(k, "unsigned")
	default:
		return nil, mxerr.BadJSON("key must be a string or an object")
	}
	return canonicaljson.Encode(v)
}

// Upload stores the keys of user's device and returns the device's unused one-time key counts per algorithm.
// Device keys must name this user and device (mxerr.InvalidParam otherwise); new or changed device keys are a
// device list change that wakes the /sync of everyone sharing a room with user. One-time keys whose ID is
// already stored are kept as they are; a fallback key replaces the previous one of its algorithm.
func (s *Service) Upload(ctx context.Context, user id.UserID, device id.DeviceID, up *Upload) (map[string]int, error) {
	if device == "" {
		return nil, mxerr.InvalidParam("uploading keys needs a device")
	}
	if len(up.OneTimeKeys)+len(up.FallbackKeys) > maxKeysPerUpload {
		return nil, mxerr.TooLarge("at most %d keys per upload", maxKeysPerUpload)
	}
	var devKeys []byte
	if len(up.DeviceKeys) > 0 && string(up.DeviceKeys) != "null" {
		obj, canon, err := canonicalObject(up.DeviceKeys)
		if err != nil {
			return nil, err
		}
		// Checked on the exact member names: encoding/json would also match "User_ID" to a struct field.
		if uid, _ := obj["user_id"].(string); uid != string(user) {
			return nil, mxerr.InvalidParam("device_keys must be for %s", user)
		}
		if did, _ := obj["device_id"].(string); did != string(device) {
			return nil, mxerr.InvalidParam("device_keys must be for device %s", device)
		}
		if _, ok := obj["keys"].(map[string]any); !ok {
			return nil, mxerr.BadJSON("device_keys.keys must be an object")
		}
		devKeys = canon
	}
	type key struct {
		id, alg string
		json    []byte
	}
	parse := func(m map[string]json.RawMessage) ([]key, error) {
		out := make([]key, 0, len(m))
		for _, kid := range slices.Sorted(maps.Keys(m)) {
			alg, err := splitKeyID(kid)
			if err != nil {
				return nil, err
			}
			raw, err := canonicalKey(m[kid])
			if err != nil {
				return nil, err
			}
			out = append(out, key{id: kid, alg: alg, json: raw})
		}
		return out, nil
	}
	otks, err := parse(up.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	fbks, err := parse(up.FallbackKeys)
	if err != nil {
		return nil, err
	}
	changed := false
	_, err = s.advance(ctx, func(ctx context.Context, pos int64) (bool, error) {
		if devKeys != nil {
			var old string
			err := s.db.QueryRow(ctx, `SELECT key_json FROM e2ee_device_keys WHERE user_id=$1 AND device_id=$2`,
				user, device).Scan(&old)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return false, fmt.Errorf("load device keys: %w", err)
			}
			if old != string(devKeys) {
				_, err = s.db.Exec(ctx, `INSERT INTO e2ee_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
					ON CONFLICT (user_id, device_id) DO UPDATE SET key_json=excluded.key_json`, user, device, string(devKeys))
				if err != nil {
					return false, fmt.Errorf("store device keys: %w", err)
				}
				if err = s.recordChange(ctx, user, pos); err != nil {
					return false, err
				}
				changed = true
			}
		}
		// Claims hand out the oldest upload first (clients expect the keys they uploaded earliest to be used
		// first); keys of one upload share the time and go by key ID.
		uploadedAt := time.Now().UnixNano()
		for _, k := range otks {
			_, err := s.db.Exec(ctx, `INSERT INTO e2ee_one_time_keys (user_id, device_id, algorithm, key_id, key_json, uploaded_at)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id, key_id) DO NOTHING`,
				user, device, k.alg, k.id, string(k.json), uploadedAt)
			if err != nil {
				return false, fmt.Errorf("store one-time key: %w", err)
			}
		}
		for _, k := range fbks {
			// Re-uploading the same fallback key keeps its used flag; a new key starts unused.
			_, err := s.db.Exec(ctx, `INSERT INTO e2ee_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
				SET key_id=excluded.key_id, key_json=excluded.key_json, used=excluded.used
				WHERE e2ee_fallback_keys.key_id<>excluded.key_id OR e2ee_fallback_keys.key_json<>excluded.key_json`,
				user, device, k.alg, k.id, string(k.json), false)
			if err != nil {
				return false, fmt.Errorf("store fallback key: %w", err)
			}
		}
		return changed, nil
	})
	if err != nil {
		return nil, fmt.Errorf("upload keys of %s/%s: %w", user, device, err)
	}
	if changed {
		s.wakeSharers(ctx, user)
	}
	return s.OneTimeKeyCounts(ctx, user, device)
}

// recordChange marks user's device list as changed at pos (inside the caller's transaction).
func (s *Service) recordChange(ctx context.Context, user id.UserID, pos int64) error {
	_, err := s.db.Exec(ctx, `INSERT INTO e2ee_device_changes (user_id, pos) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET pos=excluded.pos`, user, pos)
	if err != nil {
		return fmt.Errorf("record device list change of %s: %w", user, err)
	}
	return nil
}

// wakeSharers wakes the /sync of user and of everyone sharing a joined room with user.
func (s *Service) wakeSharers(ctx context.Context, user id.UserID) {
	if s.waker == nil {
		return
	}
	s.waker.WakeUsers(user)
	rooms, err := s.rooms.RoomsForUser(ctx, user, "join")
	if err != nil {
		s.log.Warn().Err(err).Stringer("user_id", user).Msg("cannot list rooms to wake for a device list change")
		return
	}
	for _, r := range rooms {
		s.waker.WakeRoom(r)
	}
}

// OneTimeKeyCounts returns how many unclaimed one-time keys user's device has, per algorithm. signed_curve25519
// is always present (0 when none are left), as clients read it to decide whether to upload more.
func (s *Service) OneTimeKeyCounts(ctx context.Context, user id.UserID, device id.DeviceID) (map[string]int, error) {
	rows, err := s.db.Query(ctx, `SELECT algorithm, COUNT(*) FROM e2ee_one_time_keys
		WHERE user_id=$1 AND device_id=$2 GROUP BY algorithm`, user, device)
	if err != nil {
		return nil, fmt.Errorf("count one-time keys: %w", err)
	}
	defer rows.Close()
	out := map[string]int{string(id.KeyAlgorithmSignedCurve25519): 0}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, fmt.Errorf("count one-time keys: %w", err)
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// UnusedFallbackKeyTypes returns the algorithms for which user's device has a fallback key nobody claimed yet.
func (s *Service) UnusedFallbackKeyTypes(ctx context.Context, user id.UserID, device id.DeviceID) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT algorithm FROM e2ee_fallback_keys WHERE user_id=$1 AND device_id=$2 AND used=$3
		ORDER BY algorithm`, user, device, false)
	if err != nil {
		return nil, fmt.Errorf("list fallback keys: %w", err)
	}
	out := []string{}
	defer rows.Close()
	for rows.Next() {
		var alg string
		if err := rows.Scan(&alg); err != nil {
			return nil, fmt.Errorf("list fallback keys: %w", err)
		}
		out = append(out, alg)
	}
	return out, rows.Err()
}

// claimRetries bounds how often Claim retries when a concurrent claim took the key it picked.
const claimRetries = 20

// Claim takes one one-time key of each requested user/device/algorithm: each one-time key is handed out at most
// once, even to concurrent callers. When a device has none left its fallback key is returned instead (marked
// used, but handed out again until the device uploads a new one). Devices with neither are left out; users of
// other servers are reported in failures.
func (s *Service) Claim(ctx context.Context, req map[id.UserID]map[id.DeviceID]string) (
	map[id.UserID]map[id.DeviceID]map[string]json.RawMessage, map[string]any, error) {
	out := map[id.UserID]map[id.DeviceID]map[string]json.RawMessage{}
	failures := map[string]any{}
	for user, devs := range req {
		if !s.isLocal(user) {
			_, server, _ := user.Parse()
			failures[server] = map[string]any{"errcode": "M_UNKNOWN", "error": "federation is not supported"}
			continue
		}
		for dev, alg := range devs {
			keyID, key, err := s.claimOne(ctx, user, dev, alg)
			if err != nil {
				return nil, nil, err
			}
			if keyID == "" {
				continue
			}
			if out[user] == nil {
				out[user] = map[id.DeviceID]map[string]json.RawMessage{}
			}
			out[user][dev] = map[string]json.RawMessage{keyID: json.RawMessage(key)}
		}
	}
	return out, failures, nil
}

func (s *Service) claimOne(ctx context.Context, user id.UserID, dev id.DeviceID, alg string) (string, string, error) {
	for range claimRetries {
		var keyID, key string
		err := s.db.QueryRow(ctx, `SELECT key_id, key_json FROM e2ee_one_time_keys
			WHERE user_id=$1 AND device_id=$2 AND algorithm=$3 ORDER BY uploaded_at, key_id LIMIT 1`, user, dev, alg).Scan(&keyID, &key)
		if errors.Is(err, sql.ErrNoRows) {
			return s.claimFallback(ctx, user, dev, alg)
		} else if err != nil {
			return "", "", fmt.Errorf("pick one-time key of %s/%s: %w", user, dev, err)
		}
		// Whoever deletes the row owns the key; a concurrent claimer sees 0 rows affected and picks again.
		res, err := s.db.Exec(ctx, `DELETE FROM e2ee_one_time_keys WHERE user_id=$1 AND device_id=$2 AND key_id=$3`,
			user, dev, keyID)
		if err != nil {
			return "", "", fmt.Errorf("claim one-time key of %s/%s: %w", user, dev, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return keyID, key, nil
		}
	}
	return "", "", fmt.Errorf("claim one-time key of %s/%s: too much contention", user, dev)
}

func (s *Service) claimFallback(ctx context.Context, user id.UserID, dev id.DeviceID, alg string) (string, string, error) {
	var keyID, key string
	err := s.db.QueryRow(ctx, `SELECT key_id, key_json FROM e2ee_fallback_keys
		WHERE user_id=$1 AND device_id=$2 AND algorithm=$3`, user, dev, alg).Scan(&keyID, &key)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	} else if err != nil {
		return "", "", fmt.Errorf("load fallback key of %s/%s: %w", user, dev, err)
	}
	_, err = s.db.Exec(ctx, `UPDATE e2ee_fallback_keys SET used=$4 WHERE user_id=$1 AND device_id=$2 AND algorithm=$3`,
		user, dev, alg, true)
	if err != nil {
		return "", "", fmt.Errorf("mark fallback key used: %w", err)
	}
	return keyID, key, nil
}
