package homeserver_test

import (
	"fmt"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestHistoryVisibility checks that /event, /messages and /context only show what m.room.history_visibility
// allows: joined-only history stays hidden from later joiners, invited history opens at the invite, shared
// history opens to members only, and world_readable history is readable from outside the room.
func TestHistoryVisibility(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		n := 0
		newRoom := func(vis string) id.RoomID {
			t.Helper()
			resp, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat",
				InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: ptr(""),
					Content: event.Content{Raw: map[string]any{"history_visibility": vis}}}}})
			if err != nil {
				t.Fatalf("createRoom %s: %v", vis, err)
			}
			return resp.RoomID
		}
		say := func(room id.RoomID, body string) id.EventID {
			t.Helper()
			resp, err := alice.SendText(ctx(t), room, body)
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			return resp.EventID
		}
		fetch := func(cli *mautrix.Client, room id.RoomID, ev id.EventID) int {
			status, _ := e.do("GET", fmt.Sprintf("/_matrix/client/v3/rooms/%s/event/%s", room, url.PathEscape(string(ev))), cli.AccessToken, nil)
			return status
		}
		bodies := func(cli *mautrix.Client, room id.RoomID) map[string]bool {
			t.Helper()
			msgs, err := cli.Messages(ctx(t), room, "", "", mautrix.DirectionBackward, nil, 100)
			if err != nil {
				t.Fatalf("messages: %v", err)
			}
			out := map[string]bool{}
			for _, ev := range msgs.Chunk {
				if b, ok := ev.Content.Raw["body"].(string); ok {
					out[b] = true
				}
			}
			return out
		}
		next := func() *mautrix.Client { n++; return e.user(fmt.Sprintf("bob%d", n)) }

		t.Run("joined", func(t *testing.T) {
			room := newRoom("joined")
			before := say(room, "before")
			bob := next()
			if _, err := bob.JoinRoomByID(ctx(t), room); err != nil {
				t.Fatal(err)
			}
			after := say(room, "after")
			if got := fetch(bob, room, before); got != 404 {
				t.Errorf("/event before join: %d, want 404", got)
			}
			if got := fetch(bob, room, after); got != 200 {
				t.Errorf("/event after join: %d, want 200", got)
			}
			if b := bodies(bob, room); b["before"] || !b["after"] {
				t.Errorf("/messages: %v, want only after", b)
			}
			if c, err := bob.Context(ctx(t), room, after, nil, 10); err != nil {
				t.Errorf("/context: %v", err)
			} else {
				for _, ev := range c.EventsBefore {
					if ev.ID == before {
						t.Errorf("/context leaked the pre-join event")
					}
				}
			}
			if _, err := bob.Context(ctx(t), room, before, nil, 10); err == nil {
				t.Errorf("/context on pre-join event succeeded")
			}
		})
		t.Run("invited", func(t *testing.T) {
			room := newRoom("invited")
			before := say(room, "before")
			bob := next()
			if _, err := alice.InviteUser(ctx(t), room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatal(err)
			}
			between := say(room, "between")
			if _, err := bob.JoinRoomByID(ctx(t), room); err != nil {
				t.Fatal(err)
			}
			if got := fetch(bob, room, before); got != 404 {
				t.Errorf("/event before invite: %d, want 404", got)
			}
			if got := fetch(bob, room, between); got != 200 {
				t.Errorf("/event while invited: %d, want 200", got)
			}
			if b := bodies(bob, room); b["before"] || !b["between"] {
				t.Errorf("/messages: %v, want between only", b)
			}
		})
		t.Run("shared", func(t *testing.T) {
			room := newRoom("shared")
			before := say(room, "before")
			bob := next()
			if got := fetch(bob, room, before); got != 404 {
				t.Errorf("/event by non-member: %d, want 404", got)
			}
			if _, err := bob.Messages(ctx(t), room, "", "", mautrix.DirectionBackward, nil, 10); err == nil {
				t.Errorf("/messages by non-member succeeded")
			}
			if _, err := bob.JoinRoomByID(ctx(t), room); err != nil {
				t.Fatal(err)
			}
			if got := fetch(bob, room, before); got != 200 {
				t.Errorf("/event from before join: %d, want 200", got)
			}
			if b := bodies(bob, room); !b["before"] {
				t.Errorf("/messages: %v, want before", b)
			}
		})
		t.Run("world_readable", func(t *testing.T) {
			room := newRoom("world_readable")
			ev := say(room, "public")
			bob := next()
			if got := fetch(bob, room, ev); got != 200 {
				t.Errorf("/event by non-member: %d, want 200", got)
			}
			if b := bodies(bob, room); !b["public"] {
				t.Errorf("/messages by non-member: %v, want public", b)
			}
		})
	})
}

// TestLeftRoomSync checks a left room in /sync with include_leave: the timeline keeps what happened before the
// leave and honours the timeline filter, and with an empty timeline the state carries the leave and the state
// from before it, never anything sent after the user left.
func TestLeftRoomSync(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		resp, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		if _, err := bob.JoinRoomByID(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		madeUp := event.Type{Type: "org.example.madeup", Class: event.StateEventType}
		step := func(label string) {
			t.Helper()
			if _, err := alice.SendText(ctx(t), room, label); err != nil {
				t.Fatal(err)
			}
			if _, err := alice.SendStateEvent(ctx(t), room, madeUp, "", map[string]any{"my_key": label}); err != nil {
				t.Fatal(err)
			}
		}
		step("before")
		if _, err := bob.LeaveRoom(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		step("after")

		filtered, err := bob.FullSyncRequest(ctx(t), mautrix.ReqSync{FilterID: `{"room":{"include_leave":true,` +
			`"timeline":{"types":["m.room.message","org.example.madeup"]},"state":{"types":["org.example.madeup"]}}}`})
		if err != nil {
			t.Fatal(err)
		}
		lr := filtered.Rooms.Leave[room]
		if lr == nil {
			t.Fatal("left room missing from rooms.leave")
		}
		if len(lr.Timeline.Events) != 2 || lr.Timeline.Events[0].Content.Raw["body"] != "before" ||
			lr.Timeline.Events[1].Content.Raw["my_key"] != "before" {
			t.Fatalf("timeline: want the two events from before the leave, got %d: %+v", len(lr.Timeline.Events), lr.Timeline.Events)
		}
		if len(lr.State.Events) != 0 {
			t.Fatalf("state: want none (the timeline covers it), got %d", len(lr.State.Events))
		}

		empty, err := bob.FullSyncRequest(ctx(t), mautrix.ReqSync{FilterID: `{"room":{"include_leave":true,"timeline":{"limit":0}}}`})
		if err != nil {
			t.Fatal(err)
		}
		lr = empty.Rooms.Leave[room]
		if lr == nil || len(lr.Timeline.Events) != 0 {
			t.Fatalf("limit 0: want an empty timeline, got %+v", lr)
		}
		sawLeave := false
		for _, ev := range lr.State.Events {
			if ev.Type == madeUp && ev.Content.Raw["my_key"] != "before" {
				t.Errorf("state from after the leave: %v", ev.Content.Raw)
			}
			if ev.Type == event.StateMember && ev.GetStateKey() == string(bob.UserID) {
				sawLeave = ev.Content.Raw["membership"] == "leave"
			}
		}
		if !sawLeave {
			t.Error("state lacks bob's leave")
		}
	})
}

// TestRelationsRespectHistoryVisibility: /relations and /threads hide what the caller could not see when it was
// sent, like /event and /messages do — a thread reply written while Bob was out of a joined-only room stays
// hidden after he comes back, and relations of an event he never saw are a 404.
func TestRelationsRespectHistoryVisibility(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		resp, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat",
			InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: ptr(""),
				Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		send := func(content map[string]any) id.EventID {
			t.Helper()
			r, err := alice.SendMessageEvent(ctx(t), room, event.EventMessage, content)
			if err != nil {
				t.Fatal(err)
			}
			return r.EventID
		}
		reply := func(root id.EventID, body string) id.EventID {
			return send(map[string]any{"msgtype": "m.text", "body": body,
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		}
		if _, err = bob.JoinRoomByID(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		root := send(map[string]any{"msgtype": "m.text", "body": "root"})
		seen := reply(root, "while bob is here")
		if _, err = bob.LeaveRoom(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		hidden := reply(root, "while bob is away")
		unseenRoot := send(map[string]any{"msgtype": "m.text", "body": "unseen root"})
		if _, err = bob.JoinRoomByID(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		later := reply(root, "after bob is back")

		rel, err := bob.GetRelations(ctx(t), room, root, &mautrix.ReqGetRelations{Limit: 50})
		if err != nil {
			t.Fatalf("relations: %v", err)
		}
		got := map[id.EventID]bool{}
		for _, ev := range rel.Chunk {
			got[ev.ID] = true
		}
		if !got[seen] || !got[later] || got[hidden] {
			t.Errorf("relations for bob = %v; want %s and %s, not %s", evIDs(rel.Chunk), seen, later, hidden)
		}
		status, _ := e.do("GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/relations/%s", room,
			url.PathEscape(string(unseenRoot))), bob.AccessToken, nil)
		if status != 404 {
			t.Errorf("relations of an event bob never saw: %d, want 404", status)
		}
		// Alice, who saw everything, gets all three replies.
		rel, err = alice.GetRelations(ctx(t), room, root, &mautrix.ReqGetRelations{Limit: 50})
		if err != nil || len(rel.Chunk) != 3 {
			t.Errorf("relations for alice: %d events, %v; want 3", len(rel.Chunk), err)
		}
	})
}
