package e2ee

import (
	"context"
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// QueryResult is the answer to POST /keys/query.
type QueryResult struct {
	Failures        map[string]any                               `json:"failures"`
	DeviceKeys      map[id.UserID]map[id.DeviceID]map[string]any `json:"device_keys"`
	MasterKeys      map[id.UserID]map[string]any                 `json:"master_keys"`
	SelfSigningKeys map[id.UserID]map[string]any                 `json:"self_signing_keys"`
	UserSigningKeys map[id.UserID]map[string]any                 `json:"user_signing_keys"`
}

// Query returns the device keys and cross-signing keys of the requested users (an empty device list means every
// device), with the signatures uploaded for them that querier may see: the owner's own, and querier's. Keys of
// devices that no longer exist are left out. A user-signing key is only shown to its owner. Users of other servers
// are reported in failures.
func (s *Service) Query(ctx context.Context, querier id.UserID, req map[id.UserID][]id.DeviceID) (*QueryResult, error) {
	res := &QueryResult{
		Failures: map[string]any{}, DeviceKeys: map[id.UserID]map[id.DeviceID]map[string]any{},
		MasterKeys: map[id.UserID]map[string]any{}, SelfSigningKeys: map[id.UserID]map[string]any{},
		UserSigningKeys: map[id.UserID]map[string]any{},
	}
	for user, want := range req {
		if !s.isLocal(user) {
			_, server, _ := user.Parse()
			res.Failures[server] = map[string]any{"errcode": "M_UNKNOWN", "error": "federation is not supported"}
			continue
		}
		if err := s.queryUser(ctx, querier, user, want, res); err != nil {
			return nil, fmt.Errorf("query keys of %s: %w", user, err)
		}
	}
	return res, nil
}

func (s *Service) queryUser(ctx context.Context, querier, user id.UserID, want []id.DeviceID, res *QueryResult) error {
	out := map[id.DeviceID]map[string]any{}
	res.DeviceKeys[user] = out
	devs, err := s.devices.Devices(ctx, user)
	if err != nil {
		return err
	}
	names := make(map[id.DeviceID]string, len(devs))
	for _, d := range devs {
		names[d.DeviceID] = d.DisplayName
	}
	wanted := func(d id.DeviceID) bool {
		if len(want) == 0 {
			return true
		}
		for _, w := range want {
			if w == d {
				return true
			}
		}
		return false
	}
	sigs, err := s.signaturesFor(ctx, querier, user)
	if err != nil {
		return err
	}
	rows, err := s.db.Query(ctx, `SELECT device_id, key_json FROM e2ee_device_keys WHERE user_id=$1`, user)
	if err != nil {
		return fmt.Errorf("load device keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var dev id.DeviceID
		var raw string
		if err := rows.Scan(&dev, &raw); err != nil {
			return fmt.Errorf("load device keys: %w", err)
		}
		name, exists := names[dev]
		if !exists || !wanted(dev) {
			continue
		}
		obj := map[string]any{}
		if err := json.Unmarshal([]byte(raw), &obj); err != nil {
			return fmt.Errorf("decode stored device keys of %s: %w", dev, err)
		}
		mergeSignatures(obj, sigs[string(dev)])
		if name != "" {
			obj["unsigned"] = map[string]any{"device_display_name": name}
		}
		out[dev] = obj
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load device keys: %w", err)
	}
	cs, err := s.crossSigningKeys(ctx, user)
	if err != nil {
		return err
	}
	for typ, obj := range cs {
		mergeSignatures(obj, sigs[firstKey(obj)])
		switch typ {
		case keyMaster:
			res.MasterKeys[user] = obj
		case keySelfSigning:
			res.SelfSigningKeys[user] = obj
		case keyUserSigning:
			if querier == user {
				res.UserSigningKeys[user] = obj
			}
		}
	}
	return nil
}

// signaturesFor returns the uploaded signatures on user's keys that querier may see, by target key ID, then
// signer, then signing key ID.
func (s *Service) signaturesFor(ctx context.Context, querier, user id.UserID) (map[string]map[string]map[string]string, error) {
	rows, err := s.db.Query(ctx, `SELECT target_key_id, signer_user, signer_key_id, signature FROM e2ee_signatures
		WHERE target_user=$1 AND (signer_user=$1 OR signer_user=$2)`, user, querier)
	if err != nil {
		return nil, fmt.Errorf("load signatures: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]map[string]string{}
	for rows.Next() {
		var target, signer, keyID, sig string
		if err := rows.Scan(&target, &signer, &keyID, &sig); err != nil {
			return nil, fmt.Errorf("load signatures: %w", err)
		}
		if out[target] == nil {
			out[target] = map[string]map[string]string{}
		}
		if out[target][signer] == nil {
			out[target][signer] = map[string]string{}
		}
		out[target][signer][keyID] = sig
	}
	return out, rows.Err()
}

// mergeSignatures adds extra signatures to a key object's "signatures" member.
func mergeSignatures(obj map[string]any, extra map[string]map[string]string) {
	if len(extra) == 0 {
		return
	}
	all, _ := obj["signatures"].(map[string]any)
	if all == nil {
		all = map[string]any{}
		obj["signatures"] = all
	}
	for signer, bySigner := range extra {
		m, _ := all[signer].(map[string]any)
		if m == nil {
			m = map[string]any{}
			all[signer] = m
		}
		for kid, sig := range bySigner {
			m[kid] = sig
		}
	}
}
