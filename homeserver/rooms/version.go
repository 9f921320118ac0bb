package rooms

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// Room versions this server creates and serves.
const (
	V10 = "10"
	V11 = "11"
)

// DefaultRoomVersion is used when createRoom names none. Version 10 is what current clients and bridges
// expect by default; 11 is offered for those that ask.
const DefaultRoomVersion = V10

// maxPDUSize is the spec's limit on a whole event in canonical JSON.
const maxPDUSize = 65536

// SupportedVersions lists the room versions this server supports (for /capabilities).
func SupportedVersions() []string { return []string{V10, V11} }

// IsSupportedVersion reports whether v is a room version this server supports.
func IsSupportedVersion(v string) bool { return v == V10 || v == V11 }

// redactionKeepTop lists the top-level PDU keys the redaction algorithm keeps, per room version.
var redactionKeepTop = map[string]map[string]bool{
	V10: set("event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth",
		"prev_events", "prev_state", "auth_events", "origin", "origin_server_ts", "membership"),
	V11: set("event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth",
		"prev_events", "auth_events", "origin_server_ts"),
}

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// Redact applies the redaction algorithm of the room version to a PDU in generic form (as decoded by
// canonicaljson.Decode) and returns a new map; pdu is not modified. Unknown versions are redacted as v11.
func Redact(version string, pdu map[string]any) map[string]any {
	keepTop, ok := redactionKeepTop[version]
	if !ok {
		version, keepTop = V11, redactionKeepTop[V11]
	}
	out := make(map[string]any, len(keepTop))
	for k, v := range pdu {
		if keepTop[k] {
			out[k] = v
		}
	}
	evType, _ := pdu["type"].(string)
	content, _ := pdu["content"].(map[string]any)
	out["content"] = redactContent(version, evType, content)
	return out
}

func redactContent(version, evType string, content map[string]any) map[string]any {
	var keep []string
	switch evType {
	case "m.room.member":
		keep = []string{"membership", "join_authorised_via_users_server"}
		if version == V11 {
			keep = append(keep, "third_party_invite")
		}
	case "m.room.create":
		if version == V11 {
			return copyMap(content)
		}
		keep = []string{"creator"}
	case "m.room.join_rules":
		keep = []string{"join_rule", "allow"}
	case "m.room.power_levels":
		keep = []string{"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
		if version == V11 {
			keep = append(keep, "invite")
		}
	case "m.room.history_visibility":
		keep = []string{"history_visibility"}
	case "m.room.redaction":
		if version == V11 {
			keep = []string{"redacts"}
		}
	}
	out := make(map[string]any, len(keep))
	for _, k := range keep {
		v, ok := content[k]
		if !ok {
			continue
		}
		if k == "third_party_invite" {
			// v11 keeps only third_party_invite.signed.
			tpi, _ := v.(map[string]any)
			signed, has := tpi["signed"]
			if !has {
				continue
			}
			v = map[string]any{"signed": signed}
		}
		out[k] = v
	}
	return out
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

var (
	stdB64 = base64.RawStdEncoding
	urlB64 = base64.RawURLEncoding
)

// ContentHash returns the spec's content hash of a PDU (SHA-256 over the canonical JSON of the event without
// unsigned, signatures and hashes), unpadded standard base64.
func ContentHash(pdu map[string]any) (string, error) {
	stripped := make(map[string]any, len(pdu))
	for k, v := range pdu {
		switch k {
		case "unsigned", "signatures", "hashes":
		default:
			stripped[k] = v
		}
	}
	data, err := canonicaljson.Encode(stripped)
	if err != nil {
		return "", fmt.Errorf("content hash: %w", err)
	}
	sum := sha256.Sum256(data)
	return stdB64.EncodeToString(sum[:]), nil
}

// EventID returns the event ID of a PDU in room versions 4 and later: "$" followed by the unpadded URL-safe
// base64 of the reference hash (SHA-256 over the canonical JSON of the redacted event without signatures and
// unsigned).
func EventID(version string, pdu map[string]any) (id.EventID, error) {
	red := Redact(version, pdu)
	delete(red, "signatures")
	delete(red, "unsigned")
	delete(red, "event_id")
	data, err := canonicaljson.Encode(red)
	if err != nil {
		return "", fmt.Errorf("reference hash: %w", err)
	}
	sum := sha256.Sum256(data)
	return id.EventID("$" + urlB64.EncodeToString(sum[:])), nil
}

// buildPDU assembles the PDU of e in generic form for its room version, with its content hash set, and
// computes the event ID into e.ID. content must already be decoded by canonicaljson.
func (s *Service) buildPDU(version string, e *Event, content map[string]any) (map[string]any, []byte, error) {
	pdu := map[string]any{
		"auth_events":      idsToAny(e.AuthEvents),
		"content":          content,
		"depth":            e.Depth,
		"origin_server_ts": e.OriginServerTS,
		"prev_events":      idsToAny(e.PrevEvents),
		"room_id":          string(e.RoomID),
		"sender":           string(e.Sender),
		"type":             e.Type,
	}
	if version == V10 {
		// v11 dropped origin from the PDU format; v10 servers still send it.
		pdu["origin"] = s.serverName
	}
	if e.StateKey != nil {
		pdu["state_key"] = *e.StateKey
	}
	if e.Redacts != "" {
		if version == V11 {
			content["redacts"] = string(e.Redacts)
		} else {
			pdu["redacts"] = string(e.Redacts)
		}
	}
	hash, err := ContentHash(pdu)
	if err != nil {
		return nil, nil, err
	}
	pdu["hashes"] = map[string]any{"sha256": hash}
	if e.ID, err = EventID(version, pdu); err != nil {
		return nil, nil, err
	}
	data, err := canonicaljson.Encode(pdu)
	if err != nil {
		return nil, nil, err
	}
	if len(data) > maxPDUSize {
		return nil, nil, mxerr.TooLarge("event is larger than %d bytes", maxPDUSize)
	}
	e.Content, err = canonicaljson.Encode(content)
	if err != nil {
		return nil, nil, err
	}
	return pdu, data, nil
}

func idsToAny(ids []id.EventID) []any {
	out := make([]any, len(ids))
	for i, v := range ids {
		out[i] = string(v)
	}
	return out
}

// storedPDU is the stored PDU as read back.
type storedPDU struct {
	AuthEvents     []id.EventID    `json:"auth_events"`
	Content        json.RawMessage `json:"content"`
	Depth          int64           `json:"depth"`
	OriginServerTS int64           `json:"origin_server_ts"`
	PrevEvents     []id.EventID    `json:"prev_events"`
	Redacts        id.EventID      `json:"redacts"`
	RoomID         id.RoomID       `json:"room_id"`
	Sender         id.UserID       `json:"sender"`
	StateKey       *string         `json:"state_key"`
	Type           string          `json:"type"`
}
