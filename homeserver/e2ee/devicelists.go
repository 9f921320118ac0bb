package e2ee

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"maunium.net/go/mautrix/id"
)

// SyncData is the end-to-end encryption part of one /sync response.
type SyncData struct {
	// ToDevice are the device's queued messages (client format: sender, type, content).
	ToDevice []json.RawMessage
	// Changed are the users (sharing a joined room with the syncer, or the syncer) whose devices or
	// cross-signing keys changed, or who started sharing a room with the syncer.
	Changed []id.UserID
	// Left are the users who no longer share any room with the syncer.
	Left []id.UserID
	// OneTimeKeyCounts is device_one_time_keys_count.
	OneTimeKeyCounts map[string]int
	// UnusedFallbackKeyTypes is device_unused_fallback_key_types.
	UnusedFallbackKeyTypes []string
	// Pos is the e2ee position the next sync token must carry: upTo, or less when not every to-device message
	// fitted.
	Pos int64
}

// Sync returns what changed for user's device between the e2ee positions since and upTo (since 0 on an initial
// sync). Syncing with since acknowledges every to-device message up to since, which is then deleted.
func (s *Service) Sync(ctx context.Context, user id.UserID, device id.DeviceID, since, upTo int64, initial bool) (*SyncData, error) {
	d := &SyncData{ToDevice: []json.RawMessage{}, Changed: []id.UserID{}, Left: []id.UserID{}, UnusedFallbackKeyTypes: []string{}, Pos: upTo}
	if initial {
		since = 0
	}
	ack, fromMsg := since > 0, since
	if since > upTo {
		// A token from the future (a database restored from a backup): the client cannot have seen what is
		// pending now, so acknowledge nothing, deliver every pending message, and report device changes from here on.
		since, ack, fromMsg = upTo, false, 0
	}
	var err error
	if device != "" {
		if ack {
			if err = s.ackToDevice(ctx, user, device, since); err != nil {
				return nil, err
			}
		}
		if d.ToDevice, d.Pos, err = s.toDevice(ctx, user, device, fromMsg, upTo, MaxToDevicePerSync); err != nil {
			return nil, err
		}
		if d.OneTimeKeyCounts, err = s.OneTimeKeyCounts(ctx, user, device); err != nil {
			return nil, err
		}
		if d.UnusedFallbackKeyTypes, err = s.UnusedFallbackKeyTypes(ctx, user, device); err != nil {
			return nil, err
		}
	} else {
		d.OneTimeKeyCounts = map[string]int{string(id.KeyAlgorithmSignedCurve25519): 0}
	}
	if !initial {
		if d.Changed, d.Left, err = s.Changes(ctx, user, since, d.Pos); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Changes returns how user's view of other users' devices changed between the e2ee positions from (exclusive)
// and to (inclusive). changed: users sharing a joined room with user (or user) whose devices or cross-signing
// keys changed, and users who started sharing a room with user. left: users who share no room with user any
// more. It answers /keys/changes and the device_lists member of /sync.
func (s *Service) Changes(ctx context.Context, user id.UserID, from, to int64) (changed, left []id.UserID, err error) {
	changed, left = []id.UserID{}, []id.UserID{}
	if to <= from {
		return changed, left, nil
	}
	rows, err := s.db.Query(ctx, `SELECT user_id FROM e2ee_device_changes WHERE pos>$1 AND pos<=$2 ORDER BY user_id`, from, to)
	if err != nil {
		return nil, nil, fmt.Errorf("load device list changes: %w", err)
	}
	var candidates []id.UserID
	for rows.Next() {
		var u id.UserID
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("load device list changes: %w", err)
		}
		candidates = append(candidates, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("load device list changes: %w", err)
	}
	joins, leaves, err := s.membershipChanges(ctx, user, from, to)
	if err != nil {
		return nil, nil, err
	}
	if len(candidates) > 0 {
		mine, err := s.rooms.RoomsForUser(ctx, user, "join")
		if err != nil {
			return nil, nil, fmt.Errorf("rooms of %s: %w", user, err)
		}
		for _, u := range candidates {
			if u == user {
				changed = append(changed, u)
				continue
			}
			theirs, err := s.rooms.RoomsForUser(ctx, u, "join")
			if err != nil {
				return nil, nil, fmt.Errorf("rooms of %s: %w", u, err)
			}
			if slices.ContainsFunc(theirs, func(r id.RoomID) bool { return slices.Contains(mine, r) }) {
				changed = append(changed, u)
			}
		}
	}
	for _, u := range joins {
		if !slices.Contains(changed, u) {
			changed = append(changed, u)
		}
	}
	for _, u := range leaves {
		if !slices.Contains(changed, u) {
			left = append(left, u)
		}
	}
	slices.Sort(changed)
	return changed, left, nil
}

// DeleteDevice forgets a deleted device: its device keys, one-time and fallback keys and queued to-device
// messages. When it had device keys, this is a device list change for everyone sharing a room with user.
func (s *Service) DeleteDevice(ctx context.Context, user id.UserID, device id.DeviceID) error {
	_, err := s.advance(ctx, func(ctx context.Context, pos int64) (bool, error) {
		res, err := s.db.Exec(ctx, `DELETE FROM e2ee_device_keys WHERE user_id=$1 AND device_id=$2`, user, device)
		if err != nil {
			return false, fmt.Errorf("delete device keys: %w", err)
		}
		for _, q := range []string{
			`DELETE FROM e2ee_one_time_keys WHERE user_id=$1 AND device_id=$2`,
			`DELETE FROM e2ee_fallback_keys WHERE user_id=$1 AND device_id=$2`,
			`DELETE FROM e2ee_to_device WHERE user_id=$1 AND device_id=$2`,
			`DELETE FROM e2ee_signatures WHERE target_user=$1 AND target_key_id=$2`,
		} {
			if _, err := s.db.Exec(ctx, q, user, device); err != nil {
				return false, fmt.Errorf("delete device data: %w", err)
			}
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return false, nil
		}
		return true, s.recordChange(ctx, user, pos)
	})
	if err != nil {
		return fmt.Errorf("forget device %s of %s: %w", device, user, err)
	}
	s.wakeSharers(ctx, user)
	return nil
}

// DeleteAllDevices forgets every device of user that is no longer logged in (after a logout from all devices).
func (s *Service) DeleteAllDevices(ctx context.Context, user id.UserID) error {
	devs, err := s.devices.Devices(ctx, user)
	if err != nil {
		return fmt.Errorf("list devices of %s: %w", user, err)
	}
	live := map[id.DeviceID]bool{}
	for _, d := range devs {
		live[d.DeviceID] = true
	}
	rows, err := s.db.Query(ctx, `SELECT device_id FROM e2ee_device_keys WHERE user_id=$1
		UNION SELECT device_id FROM e2ee_one_time_keys WHERE user_id=$1
		UNION SELECT device_id FROM e2ee_fallback_keys WHERE user_id=$1
		UNION SELECT device_id FROM e2ee_to_device WHERE user_id=$1`, user)
	if err != nil {
		return fmt.Errorf("list key devices of %s: %w", user, err)
	}
	var gone []id.DeviceID
	for rows.Next() {
		var d id.DeviceID
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return fmt.Errorf("list key devices of %s: %w", user, err)
		}
		if !live[d] {
			gone = append(gone, d)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list key devices of %s: %w", user, err)
	}
	for _, d := range gone {
		if err := s.DeleteDevice(ctx, user, d); err != nil {
			return err
		}
	}
	return nil
}
