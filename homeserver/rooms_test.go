package homeserver_test

import (
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func TestCreateRoomVariants(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{
			Preset: "trusted_private_chat", Invite: []id.UserID{bob.UserID}, IsDirect: true, Name: "Tea party",
			Topic: "Why is a raven like a writing desk?", RoomVersion: "11", RoomAliasName: "tea",
			InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: ptr(""),
				Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}},
			CreationContent: map[string]any{"m.federate": false},
			PowerLevelOverride: &event.PowerLevelsEventContent{
				Users: map[id.UserID]int{alice.UserID: 100}, EventsDefault: 10,
			},
		})
		if err != nil {
			t.Fatalf("createRoom: %v", err)
		}
		var name event.RoomNameEventContent
		if err := alice.StateEvent(ctx(t), room.RoomID, event.StateRoomName, "", &name); err != nil || name.Name != "Tea party" {
			t.Fatalf("name: %+v %v", name, err)
		}
		var hv event.HistoryVisibilityEventContent
		if err := alice.StateEvent(ctx(t), room.RoomID, event.StateHistoryVisibility, "", &hv); err != nil || hv.HistoryVisibility != "joined" {
			t.Fatalf("initial_state: %+v %v", hv, err)
		}
		var pl event.PowerLevelsEventContent
		if err := alice.StateEvent(ctx(t), room.RoomID, event.StatePowerLevels, "", &pl); err != nil || pl.EventsDefault != 10 {
			t.Fatalf("power level override: events_default %d %v", pl.EventsDefault, err)
		}
		var create map[string]any
		if err := alice.StateEvent(ctx(t), room.RoomID, event.StateCreate, "", &create); err != nil ||
			create["room_version"] != "11" || create["m.federate"] != false {
			t.Fatalf("create: %v %v", create, err)
		}
		// The alias resolves, and the invite is visible to bob with is_direct.
		status, body := e.do("GET", "/_matrix/client/v3/directory/room/%23tea:localhost", alice.AccessToken, nil)
		if status != 200 || body["room_id"] != string(room.RoomID) {
			t.Fatalf("alias: %d %v", status, body)
		}
		resp, _ := syncUntil(t, bob, "", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room.RoomID] != nil })
		inv := resp.Rooms.Invite[room.RoomID]
		var sawName, sawInvite bool
		for _, ev := range inv.State.Events {
			if ev.Type == event.StateRoomName {
				sawName = true
			}
			if ev.Type == event.StateMember && ev.GetStateKey() == string(bob.UserID) {
				sawInvite = ev.Content.Raw["is_direct"] == true
			}
		}
		if !sawName || !sawInvite {
			t.Fatalf("invite_state lacks name or direct invite: %+v", inv.State.Events)
		}

		// Alias PUT/DELETE: taken aliases are refused, only the creator (or an admin) may delete.
		status, body = e.do("PUT", "/_matrix/client/v3/directory/room/%23garden:localhost", alice.AccessToken, map[string]any{"room_id": room.RoomID})
		if status != 200 {
			t.Fatalf("put alias: %d %v", status, body)
		}
		status, body = e.do("PUT", "/_matrix/client/v3/directory/room/%23garden:localhost", alice.AccessToken, map[string]any{"room_id": room.RoomID})
		if status != 409 && status != 400 || body["errcode"] != "M_ROOM_IN_USE" {
			t.Fatalf("put taken alias: %d %v", status, body)
		}
		status, body = e.do("PUT", "/_matrix/client/v3/directory/room/%23x:localhost", alice.AccessToken, `{}`)
		if status != 400 || body["errcode"] != "M_MISSING_PARAM" {
			t.Fatalf("put alias without room: %d %v", status, body)
		}
		status, body = e.do("DELETE", "/_matrix/client/v3/directory/room/%23garden:localhost", bob.AccessToken, nil)
		if status != 403 {
			t.Fatalf("delete someone else's alias: %d %v", status, body)
		}
		status, body = e.do("DELETE", "/_matrix/client/v3/directory/room/%23garden:localhost", alice.AccessToken, nil)
		if status != 200 {
			t.Fatalf("delete alias: %d %v", status, body)
		}
		status, body = e.do("GET", "/_matrix/client/v3/directory/room/%23garden:localhost", alice.AccessToken, nil)
		if status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("deleted alias still resolves: %d %v", status, body)
		}

		// Unsupported room version and bad presets are refused with the spec's codes.
		_, err = alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{RoomVersion: "1"})
		wantErr(t, err, "M_UNSUPPORTED_ROOM_VERSION")
		status, body = e.do("POST", "/_matrix/client/v3/createRoom", alice.AccessToken, `{"preset":"party"}`)
		if status != 400 || body["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("bad preset: %d %v", status, body)
		}
		// Public preset: anyone may join by alias.
		pub, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby"})
		if err != nil {
			t.Fatal(err)
		}
		carol := e.user("carol")
		j, err := carol.JoinRoom(ctx(t), "#lobby:localhost", nil)
		if err != nil || j.RoomID != pub.RoomID {
			t.Fatalf("join by alias: %+v %v", j, err)
		}
	})
}

func TestMembershipFlows(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob, eve := e.user("alice"), e.user("bob"), e.user("eve")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		// Private room: joining uninvited is forbidden and leaves no trace.
		_, err = eve.JoinRoomByID(ctx(t), room.RoomID)
		wantErr(t, err, "M_FORBIDDEN")
		// Not a member: cannot send, cannot read.
		_, err = eve.SendText(ctx(t), room.RoomID, "hi")
		wantErr(t, err, "M_FORBIDDEN")
		_, err = eve.Messages(ctx(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 10)
		wantErr(t, err, "M_FORBIDDEN")
		// Bob cannot invite while not in the room.
		_, err = bob.InviteUser(ctx(t), room.RoomID, &mautrix.ReqInviteUser{UserID: eve.UserID})
		wantErr(t, err, "M_FORBIDDEN")

		// Eve is invited and rejects: that does not open the room's history to her.
		if _, err := alice.InviteUser(ctx(t), room.RoomID, &mautrix.ReqInviteUser{UserID: eve.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := eve.LeaveRoom(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		_, err = eve.Messages(ctx(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 10)
		wantErr(t, err, "M_FORBIDDEN")

		if _, err := alice.InviteUser(ctx(t), room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		// Bob (power 0) cannot kick alice.
		_, err = bob.KickUser(ctx(t), room.RoomID, &mautrix.ReqKickUser{UserID: alice.UserID})
		wantErr(t, err, "M_FORBIDDEN")
		if _, err := alice.KickUser(ctx(t), room.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "nap"}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.BanUser(ctx(t), room.RoomID, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		var m event.MemberEventContent
		if err := alice.StateEvent(ctx(t), room.RoomID, event.StateMember, string(bob.UserID), &m); err != nil || m.Membership != event.MembershipBan {
			t.Fatalf("ban: %+v %v", m, err)
		}
		// A banned user cannot rejoin even with an invite attempt.
		_, err = alice.InviteUser(ctx(t), room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID})
		wantErr(t, err, "M_FORBIDDEN")
		if _, err := alice.UnbanUser(ctx(t), room.RoomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		_, err = alice.UnbanUser(ctx(t), room.RoomID, &mautrix.ReqUnbanUser{UserID: bob.UserID})
		wantErr(t, err, "M_FORBIDDEN")
		joined, err := alice.JoinedRooms(ctx(t))
		if err != nil || len(joined.JoinedRooms) != 1 || joined.JoinedRooms[0] != room.RoomID {
			t.Fatalf("joined_rooms: %+v %v", joined, err)
		}
		if _, err := alice.LeaveRoom(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		status, _ := e.do("POST", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/forget", alice.AccessToken, "{}")
		if status != 200 {
			t.Fatalf("forget: %d", status)
		}
		joined, _ = alice.JoinedRooms(ctx(t))
		if len(joined.JoinedRooms) != 0 {
			t.Fatalf("still joined after leave: %v", joined.JoinedRooms)
		}
	})
}

func TestSendStateRedactMessages(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		// Idempotent send per transaction ID.
		content := map[string]any{"msgtype": "m.text", "body": "once"}
		r1, err := alice.SendMessageEvent(ctx(t), room.RoomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn1"})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := alice.SendMessageEvent(ctx(t), room.RoomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn1"})
		if err != nil || r2.EventID != r1.EventID {
			t.Fatalf("txn retry gave %v (%v), want %s", r2, err, r1.EventID)
		}
		// Same txn ID from another user is a different event.
		r3, err := bob.SendMessageEvent(ctx(t), room.RoomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn1"})
		if err != nil || r3.EventID == r1.EventID {
			t.Fatalf("bob's txn1: %v %v", r3, err)
		}
		for i := 0; i < 25; i++ {
			if _, err := alice.SendText(ctx(t), room.RoomID, fmt.Sprintf("msg %d", i)); err != nil {
				t.Fatal(err)
			}
		}
		ev, err := bob.GetEvent(ctx(t), room.RoomID, r1.EventID)
		if err != nil || ev.Sender != alice.UserID || ev.Content.Raw["body"] != "once" {
			t.Fatalf("get event: %+v %v", ev, err)
		}
		// Only the sending device sees its transaction ID.
		if ev.Unsigned.TransactionID != "" {
			t.Fatalf("bob sees alice's transaction id")
		}
		if own, err := alice.GetEvent(ctx(t), room.RoomID, r1.EventID); err != nil || own.Unsigned.TransactionID != "txn1" {
			t.Fatalf("sender's own event lacks transaction_id: %+v %v", own, err)
		}

		// State with and without state key; bob (power 0) may not set state.
		if _, err := alice.SendStateEvent(ctx(t), room.RoomID, event.StateTopic, "", map[string]any{"topic": "croquet"}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx(t), room.RoomID, event.Type{Type: "org.example.flag", Class: event.StateEventType}, "k/1", map[string]any{"v": 1}); err != nil {
			t.Fatal(err)
		}
		var flag map[string]any
		if err := bob.StateEvent(ctx(t), room.RoomID, event.Type{Type: "org.example.flag", Class: event.StateEventType}, "k/1", &flag); err != nil || flag["v"] != float64(1) {
			t.Fatalf("state with slash key: %v %v", flag, err)
		}
		_, err = bob.SendStateEvent(ctx(t), room.RoomID, event.StateTopic, "", map[string]any{"topic": "mine"})
		wantErr(t, err, "M_FORBIDDEN")
		var topic event.TopicEventContent
		if err := bob.StateEvent(ctx(t), room.RoomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "croquet" {
			t.Fatalf("forbidden state was stored: %+v %v", topic, err)
		}
		state, err := bob.State(ctx(t), room.RoomID)
		if err != nil || state[event.StateCreate][""] == nil || len(state[event.StateMember]) != 2 {
			t.Fatalf("full state: %v %v", state, err)
		}
		err = bob.StateEvent(ctx(t), room.RoomID, event.StateRoomAvatar, "", &map[string]any{})
		wantErr(t, err, "M_NOT_FOUND")

		// Redaction: bob cannot redact alice's event, alice can.
		_, err = bob.RedactEvent(ctx(t), room.RoomID, r1.EventID)
		wantErr(t, err, "M_FORBIDDEN")
		red, err := alice.RedactEvent(ctx(t), room.RoomID, r1.EventID, mautrix.ReqRedact{Reason: "oops"})
		if err != nil {
			t.Fatal(err)
		}
		ev, err = bob.GetEvent(ctx(t), room.RoomID, r1.EventID)
		if err != nil || ev.Content.Raw["body"] != nil {
			t.Fatalf("redacted event still has body: %+v %v", ev.Content.Raw, err)
		}
		if ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.ID != red.EventID {
			t.Fatalf("redacted_because missing in unsigned: %+v", ev.Unsigned)
		}

		// Pagination backwards through everything, then forwards from the start; no gaps, no repeats.
		var back []id.EventID
		from := ""
		for pages := 0; pages < 20; pages++ {
			resp, err := bob.Messages(ctx(t), room.RoomID, from, "", mautrix.DirectionBackward, nil, 7)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Chunk {
				back = append(back, ev.ID)
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		if back[len(back)-1] == "" || len(back) < 30 {
			t.Fatalf("backward pagination returned %d events", len(back))
		}
		seen := map[id.EventID]bool{}
		for _, evID := range back {
			if seen[evID] {
				t.Fatalf("event %s twice in backward pagination", evID)
			}
			seen[evID] = true
		}
		var fwd []id.EventID
		from = ""
		for pages := 0; pages < 20; pages++ {
			resp, err := bob.Messages(ctx(t), room.RoomID, from, "", mautrix.DirectionForward, nil, 9)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Chunk {
				fwd = append(fwd, ev.ID)
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		if len(fwd) != len(back) {
			t.Fatalf("forward %d events, backward %d", len(fwd), len(back))
		}
		for i := range fwd {
			if fwd[i] != back[len(back)-1-i] {
				t.Fatalf("forward and backward orders differ at %d", i)
			}
		}
		// Context around the 11th text message: 3 before, 3 after, in order, and tokens that continue.
		all, err := bob.Messages(ctx(t), room.RoomID, "", "", mautrix.DirectionForward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		var texts []*event.Event
		for _, ev := range all.Chunk {
			if ev.Type == event.EventMessage && ev.Content.Raw["body"] != nil {
				texts = append(texts, ev)
			}
		}
		mid := texts[11]
		cx, err := bob.Context(ctx(t), room.RoomID, mid.ID, nil, 6)
		if err != nil {
			t.Fatal(err)
		}
		if cx.Event.ID != mid.ID || len(cx.EventsBefore) != 3 || len(cx.EventsAfter) != 3 ||
			cx.EventsBefore[0].ID != texts[10].ID || cx.EventsAfter[0].ID != texts[12].ID || len(cx.State) == 0 {
			t.Fatalf("context: event %s, %d before, %d after", cx.Event.ID, len(cx.EventsBefore), len(cx.EventsAfter))
		}
		nextPage, err := bob.Messages(ctx(t), room.RoomID, cx.End, "", mautrix.DirectionForward, nil, 1)
		if err != nil || len(nextPage.Chunk) != 1 || nextPage.Chunk[0].ID != texts[15].ID {
			t.Fatalf("context end token: %+v %v", nextPage, err)
		}

		// A type filter on /messages.
		resp, err := bob.Messages(ctx(t), room.RoomID, "", "", mautrix.DirectionBackward,
			&mautrix.FilterPart{Types: []event.Type{event.StateTopic}}, 50)
		if err != nil || len(resp.Chunk) != 1 || resp.Chunk[0].Type != event.StateTopic {
			t.Fatalf("filtered messages: %v %v", resp, err)
		}

		// Members.
		mem, err := bob.Members(ctx(t), room.RoomID)
		if err != nil || len(mem.Chunk) != 2 {
			t.Fatalf("members: %v %v", mem, err)
		}
		status, body := e.do("GET", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/members?membership=leave", bob.AccessToken, nil)
		if status != 200 || len(body["chunk"].([]any)) != 0 {
			t.Fatalf("members?membership=leave: %d %v", status, body)
		}
	})
}

func ptr[T any](v T) *T { return &v }

func TestRoomDirectory(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public",
			Name: "Town square", Topic: "all welcome", RoomAliasName: "square"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		status, body := e.do("GET", "/_matrix/client/v3/publicRooms", "", nil)
		chunk, _ := body["chunk"].([]any)
		if status != 200 || len(chunk) != 1 {
			t.Fatalf("publicRooms: %d %v", status, body)
		}
		entry := chunk[0].(map[string]any)
		if entry["room_id"] != string(room.RoomID) || entry["name"] != "Town square" || entry["num_joined_members"] != float64(2) ||
			entry["canonical_alias"] != "#square:localhost" || entry["join_rule"] != "public" {
			t.Fatalf("directory entry: %v", entry)
		}
		status, body = e.do("POST", "/_matrix/client/v3/publicRooms", alice.AccessToken, `{"filter":{"generic_search_term":"nothing like it"}}`)
		if chunk, _ := body["chunk"].([]any); status != 200 || len(chunk) != 0 {
			t.Fatalf("search: %d %v", status, body)
		}
		// User directory: members of shared rooms by name, and exact IDs of anyone local.
		carol := e.user("carol")
		if err := bob.SetDisplayName(ctx(t), "Bobby Tables"); err != nil {
			t.Fatal(err)
		}
		res, err := alice.SearchUserDirectory(ctx(t), "tables", 10)
		if err != nil || len(res.Results) != 1 || res.Results[0].UserID != bob.UserID ||
			res.Results[0].Extra["display_name"] != "Bobby Tables" { // the spec's field name (mautrix reads "displayname")
			t.Fatalf("user directory by name: %+v %v", res.Results[0], err)
		}
		res, err = alice.SearchUserDirectory(ctx(t), "carol", 10)
		if err != nil || len(res.Results) != 0 {
			t.Fatalf("user directory found a stranger by name: %+v %v", res, err)
		}
		res, err = alice.SearchUserDirectory(ctx(t), string(carol.UserID), 10)
		if err != nil || len(res.Results) != 1 {
			t.Fatalf("user directory by exact ID: %+v %v", res, err)
		}
		status, body = e.do("GET", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/aliases", bob.AccessToken, nil)
		if aliases, _ := body["aliases"].([]any); status != 200 || len(aliases) != 1 {
			t.Fatalf("aliases: %d %v", status, body)
		}
		// Bob (power 0) may not unpublish; alice may.
		path := "/_matrix/client/v3/directory/list/room/" + string(room.RoomID)
		if status, _ = e.do("PUT", path, bob.AccessToken, `{"visibility":"private"}`); status != 403 {
			t.Fatalf("bob unpublished: %d", status)
		}
		if status, body = e.do("PUT", path, alice.AccessToken, `{"visibility":"private"}`); status != 200 {
			t.Fatalf("unpublish: %d %v", status, body)
		}
		status, body = e.do("GET", path, "", nil)
		if status != 200 || body["visibility"] != "private" {
			t.Fatalf("visibility: %d %v", status, body)
		}
		_, body = e.do("GET", "/_matrix/client/v3/publicRooms", "", nil)
		if chunk, _ := body["chunk"].([]any); len(chunk) != 0 {
			t.Fatalf("unpublished room still listed: %v", body)
		}
	})
}
