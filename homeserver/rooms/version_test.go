package rooms

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
)

func loadPDU(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := canonicaljson.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return v.(map[string]any)
}

// TestEventIDGolden checks content hashes and event IDs against values computed independently with Python's
// json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) and hashlib, following the spec.
func TestEventIDGolden(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		file, version, hash, eventID string
	}{
		"v10 message": {"testdata/pdu_v10.json", V10,
			"hBAQhd5N5T6Q4X1X8VpexA0RAgwd2BrqSF6RlOI7reg", "$k2lcfAG5zXMzfvY7XprFhZPSj17x-2vCDqc_Hs3PZNs"},
		"v11 member with third_party_invite": {"testdata/pdu_member_v11.json", V11,
			"j2WM5jybn9FHBBgSEFuxorgaYEGxAIDYCBKZql9TR/I", "$rBAGxVu8ofAUiJxNrG1oL7Lo_QpVRcr15-F5dZuWbGE"},
	} {
		t.Run(name, func(t *testing.T) {
			pdu := loadPDU(t, tc.file)
			hash, err := ContentHash(pdu)
			if err != nil {
				t.Fatal(err)
			}
			if hash != tc.hash {
				t.Fatalf("content hash %s, want %s", hash, tc.hash)
			}
			pdu["hashes"] = map[string]any{"sha256": hash}
			evID, err := EventID(tc.version, pdu)
			if err != nil {
				t.Fatal(err)
			}
			if string(evID) != tc.eventID {
				t.Fatalf("event ID %s, want %s", evID, tc.eventID)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	base := func(evType string, content string, extra map[string]any) map[string]any {
		var c map[string]any
		if err := json.Unmarshal([]byte(content), &c); err != nil {
			t.Fatal(err)
		}
		pdu := map[string]any{
			"type": evType, "room_id": "!r:x", "sender": "@a:x", "content": c, "depth": 3, "prev_events": []any{},
			"auth_events": []any{}, "origin_server_ts": 1, "hashes": map[string]any{"sha256": "h"},
			"signatures": map[string]any{}, "unsigned": map[string]any{"age": 1}, "origin": "x", "membership": "join",
			"prev_state": []any{}, "redacts": "$e", "extra": true,
		}
		for k, v := range extra {
			pdu[k] = v
		}
		return pdu
	}
	for name, tc := range map[string]struct {
		version     string
		evType      string
		content     string
		wantContent string
		wantTop     []string
	}{
		"v10 message": {V10, "m.room.message", `{"body":"hi","msgtype":"m.text"}`, `{}`,
			[]string{"auth_events", "content", "depth", "hashes", "membership", "origin", "origin_server_ts", "prev_events", "prev_state", "room_id", "sender", "signatures", "type"}},
		"v11 message drops origin membership prev_state": {V11, "m.room.message", `{"body":"hi"}`, `{}`,
			[]string{"auth_events", "content", "depth", "hashes", "origin_server_ts", "prev_events", "room_id", "sender", "signatures", "type"}},
		"v10 member": {V10, "m.room.member", `{"membership":"join","displayname":"A","join_authorised_via_users_server":"@b:x","third_party_invite":{"signed":{}}}`,
			`{"join_authorised_via_users_server":"@b:x","membership":"join"}`, nil},
		"v11 member keeps third_party_invite.signed": {V11, "m.room.member", `{"membership":"invite","third_party_invite":{"signed":{"token":"t"},"display_name":"d"}}`,
			`{"membership":"invite","third_party_invite":{"signed":{"token":"t"}}}`, nil},
		"v10 create keeps creator only": {V10, "m.room.create", `{"creator":"@a:x","room_version":"10","m.federate":false}`,
			`{"creator":"@a:x"}`, nil},
		"v11 create keeps everything": {V11, "m.room.create", `{"room_version":"11","m.federate":false,"type":"m.space"}`,
			`{"m.federate":false,"room_version":"11","type":"m.space"}`, nil},
		"join rules": {V10, "m.room.join_rules", `{"join_rule":"restricted","allow":[{"type":"m.room_membership"}],"x":1}`,
			`{"allow":[{"type":"m.room_membership"}],"join_rule":"restricted"}`, nil},
		"v10 power levels drop invite": {V10, "m.room.power_levels", `{"ban":50,"events":{},"events_default":0,"invite":0,"kick":50,"notifications":{"room":50},"redact":50,"state_default":50,"users":{},"users_default":0}`,
			`{"ban":50,"events":{},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{},"users_default":0}`, nil},
		"v11 power levels keep invite": {V11, "m.room.power_levels", `{"ban":50,"invite":0,"notifications":{"room":50}}`,
			`{"ban":50,"invite":0}`, nil},
		"history visibility":            {V10, "m.room.history_visibility", `{"history_visibility":"shared","x":1}`, `{"history_visibility":"shared"}`, nil},
		"v10 redaction content emptied": {V10, "m.room.redaction", `{"redacts":"$e","reason":"spam"}`, `{}`, nil},
		"v11 redaction keeps redacts":   {V11, "m.room.redaction", `{"redacts":"$e","reason":"spam"}`, `{"redacts":"$e"}`, nil},
		"v10 aliases not special":       {V10, "m.room.aliases", `{"aliases":["#a:x"]}`, `{}`, nil},
	} {
		t.Run(name, func(t *testing.T) {
			pdu := base(tc.evType, tc.content, nil)
			got := Redact(tc.version, pdu)
			gotContent, _ := json.Marshal(got["content"])
			var want map[string]any
			_ = json.Unmarshal([]byte(tc.wantContent), &want)
			wantJSON, _ := json.Marshal(want)
			if string(gotContent) != string(wantJSON) {
				t.Fatalf("content %s, want %s", gotContent, wantJSON)
			}
			if tc.wantTop != nil {
				var keys []string
				for k := range got {
					keys = append(keys, k)
				}
				if !sameSet(keys, tc.wantTop) {
					t.Fatalf("top-level keys %v, want %v", keys, tc.wantTop)
				}
			}
			if _, has := pdu["extra"]; !has {
				t.Fatal("Redact modified its input")
			}
		})
	}
}

func sameSet(a, b []string) bool {
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// FuzzRedact checks the redaction algorithm's invariants on arbitrary PDUs: redacting is idempotent, keeps
// only allowed top-level keys, never grows the content, and leaves the event ID unchanged (the reference hash
// is computed over the redacted form).
func FuzzRedact(f *testing.F) {
	for _, seed := range []string{
		`{"type":"m.room.message","content":{"body":"x"},"sender":"@a:x","room_id":"!r:x","depth":1,"unsigned":{"a":1}}`,
		`{"type":"m.room.member","content":{"membership":"join","third_party_invite":{"signed":{"a":1}}},"membership":"join"}`,
		`{"type":"m.room.create","content":{"creator":"@a:x","room_version":"11"},"origin":"x"}`,
		`{"type":"m.room.power_levels","content":{"users":{"@a:x":100},"invite":0,"notifications":{}}}`,
		`{"type":"m.room.redaction","content":{"redacts":"$x"},"redacts":"$x"}`,
		`{"type":"m.room.join_rules","content":{"join_rule":"public"}}`,
		`{"content":"not an object","type":5}`,
	} {
		f.Add([]byte(seed), true)
		f.Add([]byte(seed), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, v11 bool) {
		v, err := canonicaljson.Decode(data)
		if err != nil {
			return
		}
		pdu, ok := v.(map[string]any)
		if !ok {
			return
		}
		version := V10
		if v11 {
			version = V11
		}
		before, _ := canonicaljson.Encode(pdu)
		once := Redact(version, pdu)
		twice := Redact(version, once)
		if !reflect.DeepEqual(once, twice) {
			t.Fatalf("not idempotent:\n%v\n%v", once, twice)
		}
		if after, _ := canonicaljson.Encode(pdu); string(after) != string(before) {
			t.Fatal("Redact modified its input")
		}
		for k := range once {
			if !redactionKeepTop[version][k] {
				t.Fatalf("kept top-level key %q", k)
			}
		}
		content, ok := once["content"].(map[string]any)
		if !ok {
			t.Fatalf("redacted content is %T, want object", once["content"])
		}
		orig, _ := pdu["content"].(map[string]any)
		if len(content) > len(orig) {
			t.Fatalf("content grew: %v -> %v", orig, content)
		}
		for k := range content {
			if _, had := orig[k]; !had {
				t.Fatalf("content key %q appeared", k)
			}
		}
		id1, err1 := EventID(version, pdu)
		id2, err2 := EventID(version, once)
		if (err1 == nil) != (err2 == nil) || id1 != id2 {
			t.Fatalf("event ID changed by redaction: %s (%v) vs %s (%v)", id1, err1, id2, err2)
		}
	})
}
