package e2ee

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// Cross-signing key types, as stored and as named in their "usage" member.
const (
	keyMaster      = "master"
	keySelfSigning = "self_signing"
	keyUserSigning = "user_signing"
)

// errInvalidSignature is the spec's refusal of a key or signature that does not verify.
func errInvalidSignature(format string, a ...any) *mxerr.Error {
	return mxerr.New(400, "M_INVALID_SIGNATURE", format, a...)
}

// CrossSigningUpload is the body of POST /keys/device_signing/upload (without the auth member).
type CrossSigningUpload struct {
	Master      json.RawMessage `json:"master_key,omitempty"`
	SelfSigning json.RawMessage `json:"self_signing_key,omitempty"`
	UserSigning json.RawMessage `json:"user_signing_key,omitempty"`
}

// firstKey returns the public key of a cross-signing key object (the value of its single "ed25519:…" key).
func firstKey(obj map[string]any) string {
	keys, _ := obj["keys"].(map[string]any)
	for _, v := range keys {
		if s, ok := v.(string); ok {
			return s
		}
	}
	return ""
}

// checkCrossSigningKey validates one uploaded cross-signing key and returns it decoded, canonical and its public key.
func checkCrossSigningKey(raw json.RawMessage, user id.UserID, usage string) (map[string]any, []byte, string, error) {
	obj, canon, err := canonicalObject(raw)
	if err != nil {
		return nil, nil, "", err
	}
	if uid, _ := obj["user_id"].(string); uid != string(user) {
		return nil, nil, "", mxerr.InvalidParam("%s key must belong to %s", usage, user)
	}
	usages, _ := obj["usage"].([]any)
	if !slices.Contains(usages, any(usage)) {
		return nil, nil, "", mxerr.InvalidParam("%s key must have usage %q", usage, usage)
	}
	keys, _ := obj["keys"].(map[string]any)
	if len(keys) != 1 {
		return nil, nil, "", mxerr.InvalidParam("%s key must have exactly one key", usage)
	}
	pub := firstKey(obj)
	for kid := range keys {
		if kid != "ed25519:"+pub || pub == "" {
			return nil, nil, "", mxerr.InvalidParam("%s key ID must be ed25519:<public key>", usage)
		}
	}
	if _, err := decodeB64(pub); err != nil {
		return nil, nil, "", mxerr.InvalidParam("%s public key is not unpadded base64", usage)
	}
	return obj, canon, pub, nil
}

// UploadCrossSigning stores user's cross-signing keys (any of master, self-signing and user-signing). The
// self-signing and user-signing keys must be signed by the master key (the one uploaded along, or the stored
// one), else M_INVALID_SIGNATURE. The caller has done user-interactive authentication.
func (s *Service) UploadCrossSigning(ctx context.Context, user id.UserID, up *CrossSigningUpload) error {
	type item struct {
		typ   string
		canon []byte
	}
	var items []item
	masterPub := ""
	present := func(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }
	if present(up.Master) {
		_, canon, pub, err := checkCrossSigningKey(up.Master, user, keyMaster)
		if err != nil {
			return err
		}
		masterPub = pub
		items = append(items, item{keyMaster, canon})
	} else {
		cs, err := s.crossSigningKeys(ctx, user)
		if err != nil {
			return err
		}
		if m := cs[keyMaster]; m != nil {
			masterPub = firstKey(m)
		}
	}
	for _, sub := range []struct {
		typ string
		raw json.RawMessage
	}{{keySelfSigning, up.SelfSigning}, {keyUserSigning, up.UserSigning}} {
		if !present(sub.raw) {
			continue
		}
		obj, canon, _, err := checkCrossSigningKey(sub.raw, user, sub.typ)
		if err != nil {
			return err
		}
		if masterPub == "" {
			return mxerr.InvalidParam("upload a master key before the %s key", sub.typ)
		}
		if err := verifySigned(obj, user, "ed25519:"+masterPub, masterPub); err != nil {
			return errInvalidSignature("%s key is not signed by the master key: %v", sub.typ, err)
		}
		items = append(items, item{sub.typ, canon})
	}
	if len(items) == 0 {
		return nil
	}
	_, err := s.advance(ctx, func(ctx context.Context, pos int64) (bool, error) {
		for _, it := range items {
			_, err := s.db.Exec(ctx, `INSERT INTO e2ee_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, key_type) DO UPDATE SET key_json=excluded.key_json`, user, it.typ, string(it.canon))
			if err != nil {
				return false, fmt.Errorf("store %s key: %w", it.typ, err)
			}
		}
		return true, s.recordChange(ctx, user, pos)
	})
	if err != nil {
		return fmt.Errorf("upload cross-signing keys of %s: %w", user, err)
	}
	s.wakeSharers(ctx, user)
	return nil
}

// crossSigningKeys returns user's stored cross-signing keys by type.
func (s *Service) crossSigningKeys(ctx context.Context, user id.UserID) (map[string]map[string]any, error) {
	rows, err := s.db.Query(ctx, `SELECT key_type, key_json FROM e2ee_cross_signing_keys WHERE user_id=$1`, user)
	if err != nil {
		return nil, fmt.Errorf("load cross-signing keys: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		var typ, raw string
		if err := rows.Scan(&typ, &raw); err != nil {
			return nil, fmt.Errorf("load cross-signing keys: %w", err)
		}
		obj := map[string]any{}
		if err := json.Unmarshal([]byte(raw), &obj); err != nil {
			return nil, fmt.Errorf("decode stored %s key: %w", typ, err)
		}
		out[typ] = obj
	}
	return out, rows.Err()
}

func decodeB64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// signedBytes is the canonical JSON a signature covers: the object without "signatures" and "unsigned".
func signedBytes(obj map[string]any) ([]byte, error) {
	c := make(map[string]any, len(obj))
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			c[k] = v
		}
	}
	return canonicaljson.Encode(c)
}

// verifySigned checks the signature by signer's key keyID (public key pub) on obj.
func verifySigned(obj map[string]any, signer id.UserID, keyID, pub string) error {
	sigs, _ := obj["signatures"].(map[string]any)
	bySigner, _ := sigs[string(signer)].(map[string]any)
	sig, _ := bySigner[keyID].(string)
	if sig == "" {
		return fmt.Errorf("no signature by %s %s", signer, keyID)
	}
	return verifySignature(obj, sig, pub)
}

func verifySignature(obj map[string]any, sig, pub string) error {
	pk, err := decodeB64(pub)
	if err != nil || len(pk) != ed25519.PublicKeySize {
		return fmt.Errorf("bad public key")
	}
	sb, err := decodeB64(sig)
	if err != nil {
		return fmt.Errorf("signature is not base64")
	}
	msg, err := signedBytes(obj)
	if err != nil {
		return fmt.Errorf("object is not canonical JSON")
	}
	if !ed25519.Verify(ed25519.PublicKey(pk), msg, sb) {
		return fmt.Errorf("signature does not verify")
	}
	return nil
}

// UploadSignatures stores signer's signatures on keys: signer's own devices (signed by their self-signing key),
// signer's own master key (signed by one of their devices), and other users' master keys (signed by signer's
// user-signing key). Each object must be the stored key plus the new signatures, and each signature must
// verify; what is refused is reported per user and key ID (the rest is stored). Signatures by anyone but
// signer in the uploaded objects are ignored.
func (s *Service) UploadSignatures(ctx context.Context, signer id.UserID, req map[id.UserID]map[string]json.RawMessage) (
	map[id.UserID]map[string]any, error) {
	failures := map[id.UserID]map[string]any{}
	fail := func(u id.UserID, kid string, e *mxerr.Error) {
		if failures[u] == nil {
			failures[u] = map[string]any{}
		}
		failures[u][kid] = map[string]any{"errcode": e.Code, "error": e.Message}
	}
	signerCS, err := s.crossSigningKeys(ctx, signer)
	if err != nil {
		return nil, err
	}
	type sigRow struct {
		target      id.UserID
		targetKey   string
		signerKeyID string
		sig         string
	}
	var rows []sigRow
	changed := map[id.UserID]bool{}
	for target, byKey := range req {
		if !s.isLocal(target) {
			for kid := range byKey {
				fail(target, kid, mxerr.InvalidParam("federation is not supported"))
			}
			continue
		}
		targetCS, err := s.crossSigningKeys(ctx, target)
		if err != nil {
			return nil, err
		}
		for kid, raw := range byKey {
			obj, _, err := canonicalObject(raw)
			if err != nil {
				fail(target, kid, mxerr.As(err))
				continue
			}
			if target != signer && (targetCS[keyMaster] == nil || firstKey(targetCS[keyMaster]) != kid) {
				// Other users' keys are signed only through their master key (with the user-signing key).
				fail(target, kid, mxerr.InvalidParam("only another user's master key can be signed"))
				continue
			}
			stored, ok, err := s.storedKey(ctx, target, kid, targetCS)
			if err != nil {
				return nil, err
			}
			if !ok {
				fail(target, kid, mxerr.NotFound("no such key"))
				continue
			}
			a, errA := signedBytes(obj)
			b, errB := signedBytes(stored)
			if errA != nil || errB != nil || string(a) != string(b) {
				fail(target, kid, errInvalidSignature("the signed object is not the stored key"))
				continue
			}
			sigs, _ := obj["signatures"].(map[string]any)
			bySigner, _ := sigs[string(signer)].(map[string]any)
			good := 0
			for signerKeyID, v := range bySigner {
				sig, _ := v.(string)
				pub, err := s.signingKey(ctx, signer, signerKeyID, signerCS, target == signer)
				if err != nil {
					return nil, err
				}
				if pub == "" || sig == "" {
					continue
				}
				if verifySignature(obj, sig, pub) != nil {
					continue
				}
				rows = append(rows, sigRow{target, kid, signerKeyID, sig})
				good++
			}
			if good == 0 {
				fail(target, kid, errInvalidSignature("no valid signature by %s", signer))
				continue
			}
			changed[target] = true
		}
	}
	if len(rows) == 0 {
		return failures, nil
	}
	_, err = s.advance(ctx, func(ctx context.Context, pos int64) (bool, error) {
		for _, r := range rows {
			_, err := s.db.Exec(ctx, `INSERT INTO e2ee_signatures (target_user, target_key_id, signer_user, signer_key_id, signature)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user, target_key_id, signer_user, signer_key_id)
				DO UPDATE SET signature=excluded.signature`, r.target, r.targetKey, signer, r.signerKeyID, r.sig)
			if err != nil {
				return false, fmt.Errorf("store signature: %w", err)
			}
		}
		for u := range changed {
			if err := s.recordChange(ctx, u, pos); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("upload signatures of %s: %w", signer, err)
	}
	for u := range changed {
		s.wakeSharers(ctx, u)
	}
	return failures, nil
}

// storedKey finds the key a signature upload names: a device of target (by device ID) or target's master key
// (by its public key).
func (s *Service) storedKey(ctx context.Context, target id.UserID, kid string, cs map[string]map[string]any) (map[string]any, bool, error) {
	if m := cs[keyMaster]; m != nil && firstKey(m) == kid {
		return m, true, nil
	}
	var raw string
	err := s.db.QueryRow(ctx, `SELECT key_json FROM e2ee_device_keys WHERE user_id=$1 AND device_id=$2`, target, kid).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("load device keys of %s/%s: %w", target, kid, err)
	}
	obj := map[string]any{}
	if err := json.Unmarshal([]byte(raw), &obj); err != nil {
		return nil, false, fmt.Errorf("decode stored device keys: %w", err)
	}
	return obj, true, nil
}

// signingKey returns the public key behind signer's key ID "ed25519:<x>": one of signer's cross-signing keys
// (self-signing or master for their own keys, user-signing for other users' keys) or, for their own keys, one
// of their devices. "" when there is none.
func (s *Service) signingKey(ctx context.Context, signer id.UserID, keyID string, cs map[string]map[string]any, own bool) (string, error) {
	x, ok := strings.CutPrefix(keyID, "ed25519:")
	if !ok || x == "" {
		return "", nil
	}
	types := []string{keyUserSigning}
	if own {
		types = []string{keySelfSigning, keyMaster}
	}
	for _, t := range types {
		if k := cs[t]; k != nil && firstKey(k) == x {
			return x, nil
		}
	}
	if !own {
		return "", nil
	}
	var raw string
	err := s.db.QueryRow(ctx, `SELECT key_json FROM e2ee_device_keys WHERE user_id=$1 AND device_id=$2`, signer, x).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("load device keys of %s/%s: %w", signer, x, err)
	}
	var dk struct {
		Keys map[string]string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(raw), &dk); err != nil {
		return "", fmt.Errorf("decode stored device keys: %w", err)
	}
	return dk.Keys["ed25519:"+x], nil
}
