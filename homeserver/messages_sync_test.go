package homeserver_test

import (
	"fmt"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestMessagesFilters checks /messages with lazy_load_members (the senders' member events come in state) and
// contains_url, and that every page holding events carries an end token until an empty page ends pagination.
func TestMessagesFilters(t *testing.T) {
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
		if _, err := bob.SendText(ctx(t), room, "hello"); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendMessageEvent(ctx(t), room, event.EventMessage,
			map[string]any{"msgtype": "m.file", "body": "a.png", "url": "mxc://localhost/abc"}); err != nil {
			t.Fatal(err)
		}
		get := func(query string) map[string]any {
			t.Helper()
			status, body := e.do("GET", fmt.Sprintf("/_matrix/client/v3/rooms/%s/messages?%s", room, query), alice.AccessToken, nil)
			if status != 200 {
				t.Fatalf("/messages?%s: %d %v", query, status, body)
			}
			return body
		}
		filter := func(f string) string { return "dir=b&filter=" + url.QueryEscape(f) }

		lazy := get(filter(`{"lazy_load_members":true,"types":["m.room.message"]}`) + "&limit=1")
		chunk, _ := lazy["chunk"].([]any)
		state, _ := lazy["state"].([]any)
		if len(chunk) != 1 || len(state) != 1 {
			t.Fatalf("lazy load: want 1 event and 1 member, got %d and %d", len(chunk), len(state))
		}
		if m := state[0].(map[string]any); m["type"] != "m.room.member" || m["state_key"] != string(alice.UserID) {
			t.Fatalf("lazy load: state is not alice's member event: %v", m)
		}
		if plain := get("dir=b&limit=1"); len(plain["state"].([]any)) != 0 {
			t.Fatal("state without lazy_load_members")
		}

		urls := get(filter(`{"contains_url":true}`))
		if chunk, _ := urls["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["sender"] != string(alice.UserID) {
			t.Fatalf("contains_url: %v", urls["chunk"])
		}
		end, _ := urls["end"].(string)
		if end == "" {
			t.Fatal("contains_url page with an event has no end token")
		}
		last := get(filter(`{"contains_url":true}`) + "&from=" + url.QueryEscape(end))
		if chunk, _ := last["chunk"].([]any); len(chunk) != 0 || last["end"] != nil {
			t.Fatalf("page after the last: want empty without end, got %v", last)
		}
		noURL := get(filter(`{"contains_url":false,"types":["m.room.message"]}`))
		if chunk, _ := noURL["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["sender"] != string(bob.UserID) {
			t.Fatalf("contains_url false: %v", noURL["chunk"])
		}
	})
}

// TestPresenceOfNewRoomPeers checks that an incremental /sync carries the presence of a user who has just come
// to share a room, even though their presence was set before the sync token.
func TestPresenceOfNewRoomPeers(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		resp, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if err := bob.SetPresence(ctx(t), mautrix.ReqPresence{Presence: event.PresenceOnline}); err != nil {
			t.Fatal(err)
		}
		first, err := alice.SyncRequest(ctx(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range first.Presence.Events {
			if ev.Sender == bob.UserID {
				t.Fatal("bob's presence before sharing a room")
			}
		}
		if _, err := bob.JoinRoomByID(ctx(t), resp.RoomID); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, alice, first.NextBatch, func(r *mautrix.RespSync) bool {
			for _, ev := range r.Presence.Events {
				if ev.Sender == bob.UserID {
					return true
				}
			}
			return false
		})
	})
}

// TestPushRulesInSync checks that an initial /sync carries m.push_rules account data before the user changed
// any rule (the server defaults), and that changing a rule sends the new rules in an incremental sync.
func TestPushRulesInSync(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		hasRules := func(r *mautrix.RespSync) map[string]any {
			for _, ev := range r.AccountData.Events {
				if ev.Type.Type == "m.push_rules" {
					g, _ := ev.Content.Raw["global"].(map[string]any)
					return g
				}
			}
			return nil
		}
		first, err := alice.SyncRequest(ctx(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		g := hasRules(first)
		if g == nil || len(g["override"].([]any)) == 0 || len(g["underride"].([]any)) == 0 {
			t.Fatalf("initial sync: want the default push rules, got %v", g)
		}
		status, body := e.do("PUT", "/_matrix/client/v3/pushrules/global/room/%21foo:example.com", alice.AccessToken,
			map[string]any{"actions": []string{"notify"}})
		if status != 200 {
			t.Fatalf("put rule: %d %v", status, body)
		}
		syncUntil(t, alice, first.NextBatch, func(r *mautrix.RespSync) bool {
			g := hasRules(r)
			if g == nil {
				return false
			}
			rooms, _ := g["room"].([]any)
			return len(rooms) == 1 && rooms[0].(map[string]any)["rule_id"] == "!foo:example.com"
		})
	})
}

// TestSyncRoomDetails checks what /sync says about joined rooms beyond their events: unsigned.membership on
// timeline events (MSC4115), the member counts of the room summary, no invites from ignored users, and
// /members?at= giving the membership as of a pagination token.
func TestSyncRoomDetails(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob, carol := e.user("alice"), e.user("bob"), e.user("carol")
		resp, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Invite: []id.UserID{carol.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		pre, err := alice.SendText(ctx(t), room, "prejoin")
		if err != nil {
			t.Fatal(err)
		}
		before, err := alice.SyncRequest(ctx(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if s := before.Rooms.Join[room].Summary; s.JoinedMemberCount == nil || *s.JoinedMemberCount != 1 ||
			s.InvitedMemberCount == nil || *s.InvitedMemberCount != 1 {
			t.Fatalf("summary before bob joins: %+v", s)
		}
		atToken := before.Rooms.Join[room].Timeline.PrevBatch
		if _, err := bob.JoinRoomByID(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		post, err := alice.SendText(ctx(t), room, "postjoin")
		if err != nil {
			t.Fatal(err)
		}
		got, err := bob.SyncRequest(ctx(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		want := map[id.EventID]string{pre.EventID: "leave", post.EventID: "join"}
		for _, ev := range got.Rooms.Join[room].Timeline.Events {
			if w, ok := want[ev.ID]; ok {
				if ev.Unsigned.Membership != event.Membership(w) {
					t.Errorf("unsigned.membership of %s: %q, want %q", ev.ID, ev.Unsigned.Membership, w)
				}
				delete(want, ev.ID)
			}
		}
		if len(want) != 0 {
			t.Fatalf("timeline lacks %v", want)
		}
		if s := got.Rooms.Join[room].Summary; s.JoinedMemberCount == nil || *s.JoinedMemberCount != 2 {
			t.Fatalf("summary after bob joined: %+v", s)
		}
		status, body := e.do("GET", fmt.Sprintf("/_matrix/client/v3/rooms/%s/members?at=%s", room, url.QueryEscape(atToken)), alice.AccessToken, nil)
		if status != 200 {
			t.Fatalf("members at: %d %v", status, body)
		}
		for _, m := range body["chunk"].([]any) {
			if m.(map[string]any)["state_key"] == string(bob.UserID) {
				t.Fatal("members?at= shows bob, who joined later")
			}
		}

		// carol ignores dave; dave's invite never shows up in her sync.
		dave := e.user("dave")
		if err := carol.SetAccountData(ctx(t), "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{string(dave.UserID): map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		daveRoom, err := dave.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Invite: []id.UserID{carol.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		carolSync, err := carol.SyncRequest(ctx(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if carolSync.Rooms.Invite[daveRoom.RoomID] != nil {
			t.Fatal("invite from an ignored user in sync")
		}
		if carolSync.Rooms.Invite[room] == nil {
			t.Fatal("alice's invite missing from sync")
		}
	})
}

// TestDeleteCanonicalAlias checks that deleting an alias that is the room's canonical alias also removes it
// from m.room.canonical_alias.
func TestDeleteCanonicalAlias(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		resp, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		alias := id.RoomAlias("#gone:localhost")
		if _, err := alice.CreateAlias(ctx(t), alias, resp.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx(t), resp.RoomID, event.StateCanonicalAlias, "", map[string]any{"alias": alias}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.DeleteAlias(ctx(t), alias); err != nil {
			t.Fatal(err)
		}
		var content map[string]any
		if err := alice.StateEvent(ctx(t), resp.RoomID, event.StateCanonicalAlias, "", &content); err != nil {
			t.Fatal(err)
		}
		if len(content) != 0 {
			t.Fatalf("canonical alias after deleting the alias: %v", content)
		}

		// A joined member with the power to change the canonical alias may delete someone else's alias; one
		// without it may not.
		bob, carol := e.user("bob"), e.user("carol")
		pub, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat",
			PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.UserID: 100, bob.UserID: 100}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctx(t), pub.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		other := id.RoomAlias("#others:localhost")
		if _, err := alice.CreateAlias(ctx(t), other, pub.RoomID); err != nil {
			t.Fatal(err)
		}
		if status, _ := e.do("DELETE", "/_matrix/client/v3/directory/room/%23others:localhost", carol.AccessToken, nil); status != 403 {
			t.Fatalf("member without power deleted the alias: %d", status)
		}
		if status, body := e.do("DELETE", "/_matrix/client/v3/directory/room/%23others:localhost", bob.AccessToken, nil); status != 200 {
			t.Fatalf("moderator could not delete the alias: %d %v", status, body)
		}
	})
}

// TestForgetRoom checks that forgetting a left room closes its history (/messages answers 403), drops it from
// an initial sync's archive, and that a new invite and join bring it back.
func TestForgetRoom(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		resp, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		if _, err := bob.JoinRoomByID(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		if status, body := e.do("POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/forget", room), bob.AccessToken, map[string]any{}); status != 400 || body["errcode"] != "M_UNKNOWN" {
			t.Fatalf("forget while joined: %d %v", status, body)
		}
		if _, err := alice.SendText(ctx(t), room, "hello"); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.LeaveRoom(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		messages := func() int {
			status, _ := e.do("GET", fmt.Sprintf("/_matrix/client/v3/rooms/%s/messages?dir=b", room), bob.AccessToken, nil)
			return status
		}
		if got := messages(); got != 200 {
			t.Fatalf("/messages after leaving: %d, want 200", got)
		}
		if status, body := e.do("POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/forget", room), bob.AccessToken, map[string]any{}); status != 200 {
			t.Fatalf("forget: %d %v", status, body)
		}
		if got := messages(); got != 403 {
			t.Fatalf("/messages after forgetting: %d, want 403", got)
		}
		if status, _ := e.do("GET", fmt.Sprintf("/_matrix/client/v3/rooms/%s/messages", room), bob.AccessToken, nil); status != 403 {
			t.Fatalf("/messages without dir after forgetting: %d, want 403", status)
		}
		archive, err := bob.FullSyncRequest(ctx(t), mautrix.ReqSync{FilterID: `{"room":{"include_leave":true}}`})
		if err != nil {
			t.Fatal(err)
		}
		if archive.Rooms.Leave[room] != nil {
			t.Fatal("forgotten room in an initial sync's archive")
		}
		if _, err := alice.InviteUser(ctx(t), room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		if got := messages(); got != 200 {
			t.Fatalf("/messages after rejoining: %d, want 200", got)
		}
	})
}
