package sync

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix"
)

func TestTokenRoundTrip(t *testing.T) {
	cases := []Token{{}, {Events: 1}, {Events: 42, AccountData: 7, Receipts: 3, Typing: 1733240000000, Presence: 9, E2EE: 4}}
	for _, tok := range cases {
		got, err := ParseToken(tok.String())
		if err != nil || got != tok {
			t.Fatalf("round trip %+v: %+v %v", tok, got, err)
		}
	}
	for _, bad := range []string{"", "s", "s1_2_3", "s1_2_3_4_5_6_7", "x1_2_3_4", "s-1_2_3_4", "s1_2_3_+4", "s 1_2_3_4", "s1_2_3_9999999999999999999"} {
		if _, err := ParseToken(bad); err == nil {
			t.Fatalf("ParseToken(%q) accepted", bad)
		}
	}
	if tok, err := ParseToken("s1_2_3_4"); err != nil || tok != (Token{1, 2, 3, 4, 0, 0}) {
		t.Fatalf("four-counter token: %+v %v", tok, err)
	}
	if tok, err := ParseToken("s1_2_3_4_5"); err != nil || tok != (Token{1, 2, 3, 4, 5, 0}) {
		t.Fatalf("five-counter token: %+v %v", tok, err)
	}
	for in, want := range map[string]int64{"s5_0_0_0_0": 5, "s5_0_0_0": 5, "t17": 17, "s9": 9} {
		if got, err := ParseStreamToken(in); err != nil || got != want {
			t.Fatalf("ParseStreamToken(%q) = %d %v", in, got, err)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"s0_0_0_0", "s1_2_3_4", "s1_2_3_4_5", "s1_2_3_4_5_6", "t5", "s", "", "s1__2_3", "s00_1_2_3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		if tok.Events < 0 || tok.AccountData < 0 || tok.Receipts < 0 || tok.Typing < 0 {
			t.Fatalf("negative position from %q: %+v", s, tok)
		}
		// Re-encoding and parsing again gives the same token (the encoding is canonical up to leading zeros).
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("%q → %+v → %q → %+v %v", s, tok, tok.String(), again, err)
		}
		if ev, err := ParseStreamToken(s); err != nil || ev != tok.Events {
			t.Fatalf("ParseStreamToken(%q) = %d %v, want %d", s, ev, err, tok.Events)
		}
	})
}

func TestParseFilter(t *testing.T) {
	f, err := ParseFilter([]byte(`{"room":{"timeline":{"limit":5,"types":["m.room.*"],"not_senders":["@x:y"]},"rooms":["!a:b"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if TimelineLimit(f) != 5 || !RoomAllowed(f, "!a:b") || RoomAllowed(f, "!c:d") {
		t.Fatalf("filter semantics wrong: %+v", f.Room)
	}
	tl := f.Room.Timeline
	if !PartAllows(tl, "!a:b", "@u:v", "m.room.message") || PartAllows(tl, "!a:b", "@u:v", "m.reaction") ||
		PartAllows(tl, "!a:b", "@x:y", "m.room.message") {
		t.Fatal("filter part semantics wrong")
	}
	if TimelineLimit(nil) != DefaultTimelineLimit {
		t.Fatal("default limit")
	}
	big, _ := ParseFilter([]byte(`{"room":{"timeline":{"limit":100000}}}`))
	if TimelineLimit(big) != MaxTimelineLimit {
		t.Fatal("limit not capped")
	}
	zero, err := ParseFilter([]byte(`{"room":{"timeline":{"limit":0}}}`))
	if err != nil || TimelineLimit(zero) != 0 {
		t.Fatalf("explicit limit 0: %d %v", TimelineLimit(zero), err)
	}
	if got := ForClient(zero).Room.Timeline.Limit; got != 0 || zero.Room.Timeline.Limit != zeroTimelineLimit {
		t.Fatalf("ForClient: limit %d, original %d", got, zero.Room.Timeline.Limit)
	}
	for _, bad := range []string{``, `[]`, `{`, `{"room":{"timeline":{"limit":-1}}}`, `{"event_format":"xml"}`, `{"room":5}`,
		`{"room":{"timeline":{"senders":["not_a_sender_id"]}}}`, `{"room":{"timeline":{"rooms":["not_a_room_id"]}}}`,
		`{"room":{"not_rooms":["x"]}}`, `{"presence":{"not_senders":["@nocolon"]}}`} {
		if _, err := ParseFilter([]byte(bad)); err == nil {
			t.Fatalf("ParseFilter(%q) accepted", bad)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{`{}`, `{"room":{"timeline":{"limit":5}}}`, `{"room":{"state":{"types":["m.*"]},"include_leave":true}}`,
		`{"account_data":{"not_types":["*"]}}`, `{"event_format":"client","presence":{"limit":0}}`, `{"room":{"timeline":{"limit":0}}}`,
		`{"room":{"timeline":{"senders":["@a:b"],"rooms":["!r:s"]}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		flt, err := ParseFilter(data)
		if err != nil {
			return
		}
		if l := TimelineLimit(flt); l < 0 || l > MaxTimelineLimit {
			t.Fatalf("timeline limit %d out of range", l)
		}
		// A stored filter is re-encoded and decoded again (SaveFilter, Filter): that must keep the limit.
		raw, err := json.Marshal(flt)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again := new(mautrix.Filter)
		if err := json.Unmarshal(raw, again); err != nil {
			t.Fatalf("re-decode of %s: %v", raw, err)
		}
		// What GET /filter shows is a filter ParseFilter accepts again.
		shown, err := json.Marshal(ForClient(flt))
		if err != nil {
			t.Fatalf("marshal for client: %v", err)
		}
		if _, err := ParseFilter(shown); err != nil {
			t.Fatalf("re-parse of %s: %v", shown, err)
		}
		if TimelineLimit(again) != TimelineLimit(flt) {
			t.Fatalf("limit changed across re-encoding")
		}
		// Filtering never panics on arbitrary input.
		_ = PartAllows(flt.AccountData, "!r:s", "@u:s", "m.room.message")
		_ = RoomAllowed(flt, "!r:s")
		_ = mautrix.Filter{}
	})
}
