package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
	"github.com/passerelle/passerelle/homeserver/internal/dbtest"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	uAlice id.UserID = "@alice:example.org"
	uBob   id.UserID = "@bob:example.org"
	uCarol id.UserID = "@carol:example.org"
)

var nopLog = zerolog.Nop()

func newService(t *testing.T, db *dbutil.Database) *Service {
	t.Helper()
	s, err := New(t.Context(), db, "example.org", zerolog.Nop())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	e := mxerr.As(err)
	if e == nil || e.Code != code {
		t.Fatalf("got error %v, want %s", err, code)
	}
}

func must[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func msg(room id.RoomID, sender id.UserID, body string) SendRequest {
	return SendRequest{RoomID: room, Sender: sender, Type: "m.room.message",
		Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))}
}

func stateReq(room id.RoomID, sender id.UserID, evType, key, content string) SendRequest {
	return SendRequest{RoomID: room, Sender: sender, Type: evType, StateKey: &key, Content: json.RawMessage(content)}
}

// checkStoredEvent re-derives the event ID from the stored PDU: the ID must be the reference hash.
func checkStoredEvent(t *testing.T, s *Service, ev *Event, version string) {
	t.Helper()
	var raw string
	if err := s.db.QueryRow(t.Context(), `SELECT pdu FROM rooms_events WHERE event_id = $1`, ev.ID).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	v, err := canonicaljson.Decode([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	pdu := v.(map[string]any)
	got, err := EventID(version, pdu)
	if err != nil || got != ev.ID {
		t.Fatalf("stored PDU hashes to %s (%v), event ID is %s", got, err, ev.ID)
	}
	if !ev.Redacted {
		hash, _ := ContentHash(pdu)
		if pdu["hashes"].(map[string]any)["sha256"] != hash {
			t.Fatal("content hash does not match the stored PDU")
		}
	}
	if _, has := pdu["origin"]; has != (version == V10) {
		t.Fatalf("origin present=%v in room version %s", has, version)
	}
}

func TestCreateRoom(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		for _, version := range []string{V10, V11} {
			t.Run("v"+version, func(t *testing.T) {
				ctx := t.Context()
				s := newService(t, db)
				s.SetProfileSource(func(ctx context.Context, u id.UserID) (string, string) {
					return strings.ToUpper(u.Localpart()), ""
				})
				var seen []*Event
				s.Subscribe(func(ev *Event) { seen = append(seen, ev) })
				pl := &event.PowerLevelsEventContent{Users: map[id.UserID]int{uAlice: 100, uCarol: 50}}
				roomID, err := s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{
					RoomVersion:        id.RoomVersion(version),
					Preset:             PresetTrustedPrivateChat,
					Invite:             []id.UserID{uBob},
					IsDirect:           true,
					Name:               "Team " + version,
					Topic:              "Plans",
					RoomAliasName:      "team" + version,
					CreationContent:    map[string]any{"m.federate": false},
					PowerLevelOverride: pl,
					InitialState: []*event.Event{{
						Type: event.StateHistoryVisibility, StateKey: sk(""),
						Content: event.Content{VeryRaw: json.RawMessage(`{"history_visibility":"joined"}`)},
					}, {
						Type: event.Type{Type: "com.example.custom"}, StateKey: sk("k"),
						Content: event.Content{VeryRaw: json.RawMessage(`{"x":1}`)},
					}},
				})
				if err != nil {
					t.Fatalf("CreateRoom: %v", err)
				}
				if !strings.HasSuffix(string(roomID), ":example.org") || roomID[0] != '!' {
					t.Fatalf("room ID %s", roomID)
				}
				// The spec's order.
				var order []string
				for _, ev := range seen {
					order = append(order, ev.Type+"/"+ev.StateKeyString())
				}
				want := []string{
					"m.room.create/", "m.room.member/" + string(uAlice), "m.room.power_levels/", "m.room.canonical_alias/",
					"m.room.join_rules/", "m.room.guest_access/", "m.room.history_visibility/", "com.example.custom/k",
					"m.room.name/", "m.room.topic/", "m.room.member/" + string(uBob),
				}
				if strings.Join(order, " ") != strings.Join(want, " ") {
					t.Fatalf("events:\n%v\nwant\n%v", order, want)
				}
				for i, ev := range seen {
					if i > 0 && (ev.StreamPos != seen[i-1].StreamPos+1 || ev.Depth != seen[i-1].Depth+1 || ev.PrevEvents[0] != seen[i-1].ID) {
						t.Fatalf("event %d not chained: pos %d depth %d prev %v", i, ev.StreamPos, ev.Depth, ev.PrevEvents)
					}
					checkStoredEvent(t, s, ev, version)
				}
				create := seen[0]
				var cc map[string]any
				_ = json.Unmarshal(create.Content, &cc)
				if cc["room_version"] != version || cc["m.federate"] != false {
					t.Fatalf("create content %s", create.Content)
				}
				if _, has := cc["creator"]; has != (version == V10) {
					t.Fatalf("creator in create content (v%s): %s", version, create.Content)
				}
				if len(create.PrevEvents) != 0 || create.Depth != 1 || len(create.AuthEvents) != 0 {
					t.Fatalf("create event graph: %+v", create)
				}
				// Auth events of the invite: create, power levels, sender's member, join rules (target has none).
				invite := seen[len(seen)-1]
				if len(invite.AuthEvents) != 4 {
					t.Fatalf("invite auth events %v", invite.AuthEvents)
				}
				var ic map[string]any
				_ = json.Unmarshal(invite.Content, &ic)
				if ic["is_direct"] != true || ic["membership"] != "invite" || ic["displayname"] != "BOB" {
					t.Fatalf("invite content %s", invite.Content)
				}
				var jc map[string]any
				_ = json.Unmarshal(seen[1].Content, &jc)
				if jc["displayname"] != "ALICE" {
					t.Fatalf("creator join content %s", seen[1].Content)
				}
				// Power levels: override replaced users (trusted_private_chat's bob=100 is overridden by users).
				plEv := must[*Event](t)(s.StateEvent(ctx, roomID, "m.room.power_levels", ""))
				levels, err := parsePowerLevels(plEv.Content)
				if err != nil {
					t.Fatal(err)
				}
				if levels.users[uAlice] != 100 || levels.users[uCarol] != 50 || levels.events["m.room.power_levels"] != 100 || levels.stateDefault != 50 {
					t.Fatalf("power levels %s", plEv.Content)
				}
				hv := must[*Event](t)(s.StateEvent(ctx, roomID, "m.room.history_visibility", ""))
				if !strings.Contains(string(hv.Content), "joined") {
					t.Fatalf("initial_state did not replace the preset: %s", hv.Content)
				}
				jr := must[*Event](t)(s.StateEvent(ctx, roomID, "m.room.join_rules", ""))
				if !strings.Contains(string(jr.Content), `"invite"`) {
					t.Fatalf("join rules %s", jr.Content)
				}
				if got := must[id.RoomID](t)(s.ResolveAlias(ctx, id.RoomAlias("#team"+version+":example.org"))); got != roomID {
					t.Fatalf("alias resolves to %s", got)
				}
				if m, _, _ := s.MembershipOf(ctx, roomID, uBob); m != "invite" {
					t.Fatalf("bob membership %s", m)
				}
				if v, _ := s.RoomVersion(ctx, roomID); v != version {
					t.Fatalf("room version %s", v)
				}
				state := must[[]*Event](t)(s.CurrentState(ctx, roomID))
				if len(state) != len(want) {
					t.Fatalf("current state has %d events, want %d", len(state), len(want))
				}
			})
		}
	})
}

func TestCreateRoomPresetsAndErrors(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		pub := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Visibility: "public"}))
		for evType, want := range map[string]string{"m.room.join_rules": `"public"`, "m.room.guest_access": `"forbidden"`, "m.room.history_visibility": `"shared"`} {
			ev := must[*Event](t)(s.StateEvent(ctx, pub, evType, ""))
			if !strings.Contains(string(ev.Content), want) {
				t.Errorf("%s = %s, want %s", evType, ev.Content, want)
			}
		}
		if v, _ := s.Visibility(ctx, pub); v != "public" {
			t.Errorf("visibility %s", v)
		}
		if rooms, _ := s.PublicRooms(ctx); len(rooms) != 1 || rooms[0] != pub {
			t.Errorf("public rooms %v", rooms)
		}
		priv := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Invite: []id.UserID{uBob}}))
		ev := must[*Event](t)(s.StateEvent(ctx, priv, "m.room.power_levels", ""))
		if strings.Contains(string(ev.Content), string(uBob)) {
			t.Errorf("private_chat gave the invitee a power level: %s", ev.Content)
		}
		trusted := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{uBob}}))
		ev = must[*Event](t)(s.StateEvent(ctx, trusted, "m.room.power_levels", ""))
		if lv, _ := parsePowerLevels(ev.Content); lv.users[uBob] != 100 {
			t.Errorf("trusted_private_chat invitee level: %s", ev.Content)
		}

		before := must[int64](t)(s.MaxStreamPos(ctx))
		_, err := s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{RoomVersion: "9"})
		wantCode(t, err, "M_UNSUPPORTED_ROOM_VERSION")
		_, err = s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Preset: "party"})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{RoomAliasName: "bad:alias"})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Invite: []id.UserID{"not-a-user"}})
		wantCode(t, err, "M_INVALID_PARAM")
		must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{RoomAliasName: "taken"}))
		before = must[int64](t)(s.MaxStreamPos(ctx))
		_, err = s.CreateRoom(ctx, uBob, &mautrix.ReqCreateRoom{RoomAliasName: "taken"})
		wantCode(t, err, "M_ROOM_IN_USE")
		// Power levels override that takes the creator's power away makes the later name event fail: the
		// whole creation rolls back and nothing is stored.
		_, err = s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Name: "x",
			PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{uAlice: 10}}})
		wantCode(t, err, "M_FORBIDDEN")
		if after := must[int64](t)(s.MaxStreamPos(ctx)); after != before {
			t.Fatalf("failed createRoom left events behind: %d -> %d", before, after)
		}
		var n int
		_ = db.QueryRow(ctx, `SELECT COUNT(*) FROM rooms_rooms`).Scan(&n)
		if n != 4 {
			t.Fatalf("%d rooms stored, want 4", n)
		}
	})
}

func TestSendAndMemberships(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		room := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Preset: "private_chat"}))

		// Bob is not invited: joining, sending and leaving are refused and nothing is stored.
		before := must[int64](t)(s.MaxStreamPos(ctx))
		_, err := s.Join(ctx, room, uBob)
		wantCode(t, err, "M_FORBIDDEN")
		_, err = s.Send(ctx, msg(room, uBob, "let me in"))
		wantCode(t, err, "M_FORBIDDEN")
		_, err = s.Leave(ctx, room, uBob, "")
		wantCode(t, err, "M_FORBIDDEN")
		if after := must[int64](t)(s.MaxStreamPos(ctx)); after != before {
			t.Fatalf("refused events were stored: %d -> %d", before, after)
		}

		must[*Event](t)(s.Invite(ctx, room, uAlice, uBob, "join us"))
		must[*Event](t)(s.Join(ctx, room, uBob))
		if m, ev, _ := s.MembershipOf(ctx, room, uBob); m != "join" || ev.Unsigned["prev_content"] == nil {
			t.Fatalf("bob membership %s, unsigned %v", m, ev.Unsigned)
		}
		if rooms := must[[]id.RoomID](t)(s.RoomsForUser(ctx, uBob, "join")); len(rooms) != 1 || rooms[0] != room {
			t.Fatalf("RoomsForUser %v", rooms)
		}
		if joined := must[[]id.UserID](t)(s.JoinedMembers(ctx, room)); len(joined) != 2 {
			t.Fatalf("joined %v", joined)
		}

		m1 := must[*Event](t)(s.Send(ctx, msg(room, uBob, "hello")))
		// Bob (level 0) cannot set the topic (state_default 50) nor kick Alice.
		_, err = s.Send(ctx, stateReq(room, uBob, "m.room.topic", "", `{"topic":"mine"}`))
		wantCode(t, err, "M_FORBIDDEN")
		_, err = s.Kick(ctx, room, uBob, uAlice, "")
		wantCode(t, err, "M_FORBIDDEN")

		// Floats and non-objects are refused before authorisation.
		_, err = s.Send(ctx, SendRequest{RoomID: room, Sender: uBob, Type: "m.room.message", Content: json.RawMessage(`{"n":1.5}`)})
		wantCode(t, err, "M_BAD_JSON")
		_, err = s.Send(ctx, SendRequest{RoomID: room, Sender: uBob, Type: "m.room.message", Content: json.RawMessage(`[1]`)})
		wantCode(t, err, "M_BAD_JSON")
		_, err = s.Send(ctx, SendRequest{RoomID: room, Sender: uBob, Type: "m.room.message", Content: json.RawMessage(`{`)})
		wantCode(t, err, "M_NOT_JSON")
		_, err = s.Send(ctx, SendRequest{RoomID: room, Sender: uBob, Type: "m.room.message",
			Content: json.RawMessage(`{"body":"` + strings.Repeat("x", 70000) + `"}`)})
		wantCode(t, err, "M_TOO_LARGE")
		_, err = s.Send(ctx, msg("!nowhere:example.org", uBob, "x"))
		wantCode(t, err, "M_NOT_FOUND")

		// Alice sets a topic; prev_content is in unsigned of the next change.
		t1 := must[*Event](t)(s.Send(ctx, stateReq(room, uAlice, "m.room.topic", "", `{"topic":"one"}`)))
		t2 := must[*Event](t)(s.Send(ctx, stateReq(room, uAlice, "m.room.topic", "", `{"topic":"two"}`)))
		if t2.Unsigned["replaces_state"] != string(t1.ID) {
			t.Fatalf("unsigned %v", t2.Unsigned)
		}
		cur := must[*Event](t)(s.StateEvent(ctx, room, "m.room.topic", ""))
		if cur.ID != t2.ID {
			t.Fatal("current state not updated")
		}
		// State at the first topic shows "one".
		st := must[[]*Event](t)(s.StateAt(ctx, room, t1.StreamPos))
		found := false
		for _, ev := range st {
			if ev.Type == "m.room.topic" {
				found = ev.ID == t1.ID
			}
		}
		if !found {
			t.Fatal("StateAt did not return the state at that position")
		}

		// Kick, ban, unban by Alice.
		must[*Event](t)(s.Kick(ctx, room, uAlice, uBob, "bye"))
		if m, _, _ := s.MembershipOf(ctx, room, uBob); m != "leave" {
			t.Fatalf("after kick: %s", m)
		}
		_, err = s.Send(ctx, msg(room, uBob, "still here?"))
		wantCode(t, err, "M_FORBIDDEN")
		must[*Event](t)(s.Ban(ctx, room, uAlice, uBob, "spam"))
		must[*Event](t)(s.Invite(ctx, room, uAlice, uCarol, ""))
		_, err = s.Invite(ctx, room, uAlice, uBob, "")
		wantCode(t, err, "M_FORBIDDEN")
		_, err = s.Unban(ctx, room, uAlice, uCarol, "")
		wantCode(t, err, "M_FORBIDDEN")
		must[*Event](t)(s.Unban(ctx, room, uAlice, uBob, ""))
		if m, _, _ := s.MembershipOf(ctx, room, uBob); m != "leave" {
			t.Fatalf("after unban: %s", m)
		}
		if rooms := must[[]id.RoomID](t)(s.RoomsForUser(ctx, uCarol, "invite")); len(rooms) != 1 {
			t.Fatalf("carol invites %v", rooms)
		}
		if mem := must[[]*Event](t)(s.UserMemberships(ctx, uCarol, "invite")); len(mem) != 1 || mem[0].RoomID != room || mem[0].Membership() != "invite" {
			t.Fatalf("UserMemberships %v", mem)
		}
		if mem := must[[]*Event](t)(s.UserMemberships(ctx, uCarol, "join")); len(mem) != 0 {
			t.Fatalf("UserMemberships join %v", mem)
		}
		inv := must[[]*Event](t)(s.InviteState(ctx, room, uCarol))
		var invTypes []string
		for _, ev := range inv {
			invTypes = append(invTypes, ev.Type+"/"+ev.StateKeyString())
		}
		if got := strings.Join(invTypes, " "); got != "m.room.create/ m.room.member/"+string(uAlice)+" m.room.join_rules/ m.room.topic/ m.room.member/"+string(uCarol) {
			t.Fatalf("invite state %s", got)
		}
		members := must[[]*Event](t)(s.Members(ctx, room))
		if len(members) != 3 {
			t.Fatalf("%d member events", len(members))
		}
		// The appservice timestamp is honoured.
		old := must[*Event](t)(s.Send(ctx, SendRequest{RoomID: room, Sender: uAlice, Type: "m.room.message", Content: json.RawMessage(`{}`), TS: 1234}))
		if old.OriginServerTS != 1234 {
			t.Fatalf("ts %d", old.OriginServerTS)
		}
		got := must[*Event](t)(s.Event(ctx, m1.ID))
		if got.ID != m1.ID || string(got.Content) != string(m1.Content) || got.StreamPos != m1.StreamPos {
			t.Fatalf("Event() = %+v, want %+v", got, m1)
		}
		_, err = s.Event(ctx, "$missing")
		wantCode(t, err, "M_NOT_FOUND")
		_, err = s.StateEvent(ctx, room, "m.room.avatar", "")
		wantCode(t, err, "M_NOT_FOUND")
	})
}

func TestTransactionIdempotency(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		room := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, nil))
		req := msg(room, uAlice, "once")
		req.TxnID, req.DeviceID = "txn1", "DEV"
		var calls int
		s.Subscribe(func(*Event) { calls++ })
		first := must[*Event](t)(s.Send(ctx, req))
		again := must[*Event](t)(s.Send(ctx, req))
		if first.ID != again.ID || first.StreamPos != again.StreamPos || calls != 1 {
			t.Fatalf("repeat gave %s (calls %d), first %s", again.ID, calls, first.ID)
		}
		// Concurrent retries give one event.
		var wg sync.WaitGroup
		ids := make([]id.EventID, 8)
		req.TxnID = "txn2"
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ev, err := s.Send(ctx, req)
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = ev.ID
			}()
		}
		wg.Wait()
		for _, x := range ids {
			if x != ids[0] {
				t.Fatalf("concurrent retries gave different events: %v", ids)
			}
		}
		// Another device or another txn ID is a new event.
		req.DeviceID = "OTHER"
		other := must[*Event](t)(s.Send(ctx, req))
		if other.ID == ids[0] {
			t.Fatal("other device reused the event")
		}
		if other.TxnID != "txn2" || other.DeviceID != "OTHER" {
			t.Fatalf("txn fields %q %q", other.TxnID, other.DeviceID)
		}
	})
}

func TestRedaction(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		for _, version := range []string{V10, V11} {
			t.Run("v"+version, func(t *testing.T) {
				ctx := t.Context()
				s := newService(t, db)
				room := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(version)}))
				must[*Event](t)(s.Join(ctx, room, uBob))
				aliceMsg := must[*Event](t)(s.Send(ctx, msg(room, uAlice, "secret")))
				bobMsg := must[*Event](t)(s.Send(ctx, msg(room, uBob, "oops")))

				// Bob may not redact Alice's message, but may redact his own.
				_, err := s.Send(ctx, SendRequest{RoomID: room, Sender: uBob, Type: "m.room.redaction", Redacts: aliceMsg.ID, Content: json.RawMessage(`{}`)})
				wantCode(t, err, "M_FORBIDDEN")
				red := must[*Event](t)(s.Send(ctx, SendRequest{RoomID: room, Sender: uBob, Type: "m.room.redaction", Redacts: bobMsg.ID, Content: json.RawMessage(`{"reason":"typo"}`)}))
				if red.Redacts != bobMsg.ID {
					t.Fatalf("redacts %s", red.Redacts)
				}
				if strings.Contains(string(red.Content), "redacts") != (version == V11) {
					t.Fatalf("v%s redaction content %s", version, red.Content)
				}
				checkStoredEvent(t, s, red, version)
				got := must[*Event](t)(s.Event(ctx, bobMsg.ID))
				if !got.Redacted || string(got.Content) != "{}" {
					t.Fatalf("redacted event content %s redacted=%v", got.Content, got.Redacted)
				}
				because, ok := got.Unsigned["redacted_because"].(map[string]any)
				if !ok || because["event_id"] != string(red.ID) {
					t.Fatalf("redacted_because %v", got.Unsigned)
				}
				// The event ID still matches the redacted PDU.
				checkStoredEvent(t, s, got, version)
				client := got.ClientEvent()
				if client.Unsigned.RedactedBecause == nil || client.Unsigned.RedactedBecause.ID != red.ID {
					t.Fatalf("client event unsigned %+v", client.Unsigned)
				}
				// A reloaded redaction carries redacts in both versions.
				rel := must[*Event](t)(s.Event(ctx, red.ID))
				if rel.Redacts != bobMsg.ID {
					t.Fatalf("reloaded redacts %q", rel.Redacts)
				}
				// Alice (level 100) redacts Bob's join event: membership survives.
				_, join, _ := s.MembershipOf(ctx, room, uBob)
				must[*Event](t)(s.Send(ctx, SendRequest{RoomID: room, Sender: uAlice, Type: "m.room.redaction", Content: json.RawMessage(`{"redacts":"` + string(join.ID) + `"}`)}))
				if m, ev, _ := s.MembershipOf(ctx, room, uBob); m != "join" || !ev.Redacted {
					t.Fatalf("after redacting join: %s %v", m, ev.Redacted)
				}
				_, err = s.Send(ctx, SendRequest{RoomID: room, Sender: uAlice, Type: "m.room.redaction", Content: json.RawMessage(`{}`)})
				wantCode(t, err, "M_MISSING_PARAM")
			})
		}
	})
}

func TestStreamAndPagination(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		r1 := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, nil))
		r2 := must[id.RoomID](t)(s.CreateRoom(ctx, uBob, nil))
		start := must[int64](t)(s.MaxStreamPos(ctx))
		var sent []*Event
		for i := range 10 {
			room, sender := r1, uAlice
			if i%2 == 1 {
				room, sender = r2, uBob
			}
			sent = append(sent, must[*Event](t)(s.Send(ctx, msg(room, sender, fmt.Sprint(i)))))
		}
		end := must[int64](t)(s.MaxStreamPos(ctx))
		if end != start+10 {
			t.Fatalf("stream advanced %d, want 10", end-start)
		}
		after := must[[]*Event](t)(s.EventsAfter(ctx, start, 0))
		if len(after) != 10 {
			t.Fatalf("EventsAfter gave %d", len(after))
		}
		for i, ev := range after {
			if ev.ID != sent[i].ID {
				t.Fatalf("EventsAfter[%d] = %s, want %s", i, ev.ID, sent[i].ID)
			}
		}
		if page := must[[]*Event](t)(s.EventsAfter(ctx, start, 3)); len(page) != 3 || page[2].ID != sent[2].ID {
			t.Fatalf("EventsAfter limit")
		}

		// Backwards from the end of r1: 5 messages then the creation events.
		evs, next, err := s.Messages(ctx, r1, end, 'b', 3)
		if err != nil || len(evs) != 3 || evs[0].ID != sent[8].ID || evs[2].ID != sent[4].ID {
			t.Fatalf("Messages b page 1: %v %v", ids(evs), err)
		}
		evs2, next2, _ := s.Messages(ctx, r1, next, 'b', 3)
		if len(evs2) != 3 || evs2[0].ID != sent[2].ID || evs2[1].ID != sent[0].ID {
			t.Fatalf("Messages b page 2: %v", ids(evs2))
		}
		var all []*Event
		for tok := next2; tok != 0; {
			var page []*Event
			page, tok, _ = s.Messages(ctx, r1, tok, 'b', 3)
			all = append(all, page...)
		}
		if len(all) == 0 || all[len(all)-1].Type != "m.room.create" {
			t.Fatalf("backwards pagination did not reach the create event")
		}
		// Forwards from the start position.
		fwd, fnext, _ := s.Messages(ctx, r1, start, 'f', 10)
		if len(fwd) != 5 || fwd[0].ID != sent[0].ID || fnext != 0 {
			t.Fatalf("Messages f: %v next %d", ids(fwd), fnext)
		}
		_, _, err = s.Messages(ctx, r1, 0, 'x', 1)
		wantCode(t, err, "M_INVALID_PARAM")

		if changed := must[[]id.RoomID](t)(s.RoomsWithEventsBetween(ctx, uAlice, sent[0].StreamPos, sent[1].StreamPos)); len(changed) != 0 {
			t.Fatalf("alice's changed rooms %v, want none (only bob's room changed)", changed)
		}
		if changed := must[[]id.RoomID](t)(s.RoomsWithEventsBetween(ctx, uAlice, start, end)); len(changed) != 1 || changed[0] != r1 {
			t.Fatalf("alice's changed rooms %v", changed)
		}
		between, limited, err := s.RoomEventsBetween(ctx, r2, start, end, 3)
		if err != nil || !limited || len(between) != 3 || between[0].ID != sent[5].ID || between[2].ID != sent[9].ID {
			t.Fatalf("RoomEventsBetween: %v limited=%v %v", ids(between), limited, err)
		}
		between, limited, _ = s.RoomEventsBetween(ctx, r2, start, end, 10)
		if limited || len(between) != 5 {
			t.Fatalf("RoomEventsBetween unlimited: %d %v", len(between), limited)
		}
	})
}

func ids(evs []*Event) []id.EventID {
	out := make([]id.EventID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// TestConcurrentSendsStreamOrder sends from many goroutines while a reader follows EventsAfter: the reader
// must never see a gap (position N+1 before N), and subscribers get events in stream order.
func TestConcurrentSendsStreamOrder(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		room := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Preset: "public_chat"}))
		for _, u := range []id.UserID{uBob, uCarol} {
			must[*Event](t)(s.Join(ctx, room, u))
		}
		var (
			mu      sync.Mutex
			lastSub int64
			subErr  error
		)
		s.Subscribe(func(ev *Event) {
			mu.Lock()
			defer mu.Unlock()
			if lastSub != 0 && ev.StreamPos != lastSub+1 && subErr == nil {
				subErr = fmt.Errorf("subscriber saw %d after %d", ev.StreamPos, lastSub)
			}
			lastSub = ev.StreamPos
		})
		start := must[int64](t)(s.MaxStreamPos(ctx))
		const perSender = 15
		done := make(chan struct{})
		readerErr := make(chan error, 1)
		go func() {
			pos := start
			for {
				evs, err := s.EventsAfter(context.Background(), pos, 100)
				if err != nil {
					readerErr <- err
					return
				}
				for _, ev := range evs {
					if ev.StreamPos != pos+1 {
						readerErr <- fmt.Errorf("reader saw %d after %d", ev.StreamPos, pos)
						return
					}
					pos = ev.StreamPos
				}
				select {
				case <-done:
					if pos == start+3*perSender {
						readerErr <- nil
						return
					}
				default:
				}
			}
		}()
		var wg sync.WaitGroup
		for _, u := range []id.UserID{uAlice, uBob, uCarol} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perSender {
					if _, err := s.Send(ctx, msg(room, u, fmt.Sprint(i))); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(done)
		if err := <-readerErr; err != nil {
			t.Fatal(err)
		}
		if subErr != nil {
			t.Fatal(subErr)
		}
		// The room's history is one chain: each event's prev_event is the one before it.
		evs, _, _ := s.RoomEventsBetween(ctx, room, 0, 1<<62, 1000)
		for i := 1; i < len(evs); i++ {
			if evs[i].PrevEvents[0] != evs[i-1].ID || evs[i].Depth != evs[i-1].Depth+1 {
				t.Fatalf("history forks at %d", i)
			}
		}
	})
}

func TestAliases(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		room := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, nil))
		if err := s.SetAlias(ctx, "#lobby:example.org", room, uAlice); err != nil {
			t.Fatal(err)
		}
		wantCode(t, s.SetAlias(ctx, "#lobby:example.org", room, uBob), "M_ROOM_IN_USE")
		wantCode(t, s.SetAlias(ctx, "#lobby:elsewhere.org", room, uBob), "M_INVALID_PARAM")
		wantCode(t, s.SetAlias(ctx, "lobby", room, uBob), "M_INVALID_PARAM")
		wantCode(t, s.SetAlias(ctx, "#x:example.org", "!nope:example.org", uBob), "M_NOT_FOUND")
		if got := must[id.RoomID](t)(s.ResolveAlias(ctx, "#lobby:example.org")); got != room {
			t.Fatalf("resolve %s", got)
		}
		if c := must[id.UserID](t)(s.AliasCreator(ctx, "#lobby:example.org")); c != uAlice {
			t.Fatalf("creator %s", c)
		}
		if as := must[[]id.RoomAlias](t)(s.Aliases(ctx, room)); len(as) != 1 {
			t.Fatalf("aliases %v", as)
		}
		// m.room.canonical_alias must name aliases of this room.
		must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{RoomAliasName: "other"}))
		must[*Event](t)(s.Send(ctx, stateReq(room, uAlice, "m.room.canonical_alias", "", `{"alias":"#lobby:example.org"}`)))
		for name, content := range map[string]string{
			"alias of another room": `{"alias":"#other:example.org"}`,
			"unknown alias":         `{"alias":"#nowhere:example.org"}`,
			"remote alias":          `{"alt_aliases":["#x:remote.org"]}`,
		} {
			_, err := s.Send(ctx, stateReq(room, uAlice, "m.room.canonical_alias", "", content))
			if e := mxerr.As(err); e == nil || e.Code != "M_BAD_ALIAS" {
				t.Fatalf("%s: got %v, want M_BAD_ALIAS", name, err)
			}
		}
		_, err := s.Send(ctx, stateReq(room, uAlice, "m.room.canonical_alias", "", `{"alt_aliases":"#lobby:example.org"}`))
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.Send(ctx, stateReq(room, uAlice, "m.room.canonical_alias", "", `{"alias":"lobby"}`))
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.Send(ctx, stateReq(room, uAlice, "m.room.canonical_alias", "", `{"alias":"%bad:example.org"}`))
		wantCode(t, err, "M_INVALID_PARAM")
		must[*Event](t)(s.Send(ctx, stateReq(room, uAlice, "m.room.canonical_alias", "", `{}`)))
		// Senders of other servers are refused.
		_, err = s.Send(ctx, msg(room, "@mallory:elsewhere.org", "hi"))
		wantCode(t, err, "M_FORBIDDEN")

		if err := s.DeleteAlias(ctx, "#lobby:example.org"); err != nil {
			t.Fatal(err)
		}
		_, err = s.ResolveAlias(ctx, "#lobby:example.org")
		wantCode(t, err, "M_NOT_FOUND")
		wantCode(t, s.DeleteAlias(ctx, "#lobby:example.org"), "M_NOT_FOUND")
	})
}

func TestMarshalClient(t *testing.T) {
	sk := "@a:x"
	ev := &Event{ID: "$e", RoomID: "!r:x", Sender: "@a:x", Type: "m.room.member", StateKey: &sk,
		Content: json.RawMessage(`{"membership":"join"}`), OriginServerTS: 1, Unsigned: map[string]any{"prev_content": map[string]any{"membership": "invite"}}}
	var got map[string]any
	if err := json.Unmarshal(ev.MarshalClient(), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"content", "event_id", "origin_server_ts", "room_id", "sender", "state_key", "type", "unsigned"} {
		if _, ok := got[k]; !ok {
			t.Errorf("client event lacks %s: %v", k, got)
		}
	}
	unsigned := got["unsigned"].(map[string]any)
	if unsigned["age"].(float64) <= 0 || unsigned["prev_content"] == nil {
		t.Errorf("unsigned %v", unsigned)
	}
	ce := ev.ClientEvent()
	if ce.Content.AsMember().Membership != event.MembershipJoin || ce.Unsigned.PrevContent == nil {
		t.Errorf("ClientEvent %+v", ce)
	}
}

// TestStateAtMatchesReplay compares StateAt at every position with the state obtained by replaying the room's
// history from the start.
func TestStateAtMatchesReplay(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		room := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Preset: "public_chat", Topic: "t0"}))
		other := must[id.RoomID](t)(s.CreateRoom(ctx, uBob, nil))
		for i := range 4 {
			must[*Event](t)(s.Join(ctx, room, uBob))
			must[*Event](t)(s.Send(ctx, msg(room, uBob, "hi")))
			must[*Event](t)(s.Send(ctx, stateReq(room, uAlice, "m.room.topic", "", fmt.Sprintf(`{"topic":"t%d"}`, i+1))))
			must[*Event](t)(s.Send(ctx, stateReq(room, uAlice, "com.example.k", fmt.Sprint(i), `{}`)))
			must[*Event](t)(s.Send(ctx, msg(other, uBob, "elsewhere")))
			if i%2 == 0 {
				must[*Event](t)(s.Leave(ctx, room, uBob, ""))
			}
		}
		all := must[[]*Event](t)(s.EventsAfter(ctx, 0, 0))
		replay := map[string]id.EventID{}
		for i, ev := range all {
			if ev.RoomID == room && ev.StateKey != nil {
				replay[ev.Type+"\x00"+*ev.StateKey] = ev.ID
			}
			positions := []int64{ev.StreamPos}
			if i == 0 {
				positions = append(positions, 0)
			}
			for _, pos := range positions {
				got := must[[]*Event](t)(s.StateAt(ctx, room, pos))
				if pos == 0 {
					if len(got) != 0 {
						t.Fatalf("state before the room existed: %d events", len(got))
					}
					continue
				}
				gotMap := map[string]id.EventID{}
				for j, g := range got {
					if j > 0 && got[j-1].StreamPos >= g.StreamPos {
						t.Fatalf("StateAt(%d) not in stream order", pos)
					}
					gotMap[g.Type+"\x00"+*g.StateKey] = g.ID
				}
				if fmt.Sprint(gotMap) != fmt.Sprint(replay) {
					t.Fatalf("StateAt(%d):\n%v\nreplay:\n%v", pos, gotMap, replay)
				}
			}
		}
	})
}

// TestRefusesNewerDatabase checks that a database migrated by a newer binary is not touched.
func TestRefusesNewerDatabase(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		newService(t, db)
		if _, err := db.Exec(ctx, `UPDATE rooms_version SET version = 99, compat = 99`); err != nil {
			t.Fatal(err)
		}
		if _, err := New(ctx, db, "example.org", nopLog); err == nil {
			t.Fatal("opened a database of a newer version")
		}
		// Re-opening at the current version is a no-op.
		if _, err := db.Exec(ctx, `UPDATE rooms_version SET version = $1, compat = $1`, len(upgradeTable)); err != nil {
			t.Fatal(err)
		}
		newService(t, db)
	})
}
