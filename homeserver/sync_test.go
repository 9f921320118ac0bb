package homeserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	stdsync "sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	hsync "github.com/passerelle/passerelle/homeserver/sync"
)

func TestSyncLongPollWakesUp(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		first, err := bob.SyncRequest(ctx(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if first.Rooms.Join[room.RoomID] == nil {
			t.Fatalf("initial sync lacks the joined room")
		}
		// An idle long-poll returns after its timeout with the same position.
		start := time.Now()
		idle, err := bob.SyncRequest(ctx(t), 300, first.NextBatch, "", false, "")
		if err != nil || time.Since(start) < 250*time.Millisecond || len(idle.Rooms.Join) != 0 {
			t.Fatalf("idle long-poll: %v after %v, %d rooms", err, time.Since(start), len(idle.Rooms.Join))
		}
		// A message wakes a long-poll at once.
		type result struct {
			resp *mautrix.RespSync
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			s := time.Now()
			resp, err := bob.SyncRequest(ctx(t), 20000, idle.NextBatch, "", false, "")
			done <- result{resp, err, time.Since(s)}
		}()
		time.Sleep(200 * time.Millisecond)
		sent, err := alice.SendText(ctx(t), room.RoomID, "wake up")
		if err != nil {
			t.Fatal(err)
		}
		res := <-done
		if res.err != nil || res.took > 5*time.Second {
			t.Fatalf("long-poll: %v after %v", res.err, res.took)
		}
		tl := res.resp.Rooms.Join[room.RoomID]
		if tl == nil || len(tl.Timeline.Events) != 1 || tl.Timeline.Events[0].ID != sent.EventID {
			t.Fatalf("woken sync lacks exactly the new event: %+v", res.resp.Rooms.Join)
		}
		// Activity in a room bob is not in does not wake him.
		other, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		go func() {
			time.Sleep(100 * time.Millisecond)
			_, _ = alice.SendText(ctx(t), other.RoomID, "secret")
		}()
		quiet, err := bob.SyncRequest(ctx(t), 800, res.resp.NextBatch, "", false, "")
		if err != nil || len(quiet.Rooms.Join) != 0 || time.Since(start) < 700*time.Millisecond {
			t.Fatalf("bob woken by a foreign room: %v, %d rooms after %v", err, len(quiet.Rooms.Join), time.Since(start))
		}
	})
}

func TestSyncLimitedTimelineInvitesLeaves(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Limits"})
		if err != nil {
			t.Fatal(err)
		}
		_, since := syncUntil(t, bob, "", func(*mautrix.RespSync) bool { return true })
		if _, err := alice.InviteUser(ctx(t), room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		resp, since := syncUntil(t, bob, since, func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room.RoomID] != nil })
		if len(resp.Rooms.Join) != 0 {
			t.Fatalf("invited room also under join")
		}
		if _, err := bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		resp, since = syncUntil(t, bob, since, func(r *mautrix.RespSync) bool { return r.Rooms.Join[room.RoomID] != nil })
		var sawName bool
		for _, ev := range append(resp.Rooms.Join[room.RoomID].State.Events, resp.Rooms.Join[room.RoomID].Timeline.Events...) {
			sawName = sawName || ev.Type == event.StateRoomName
		}
		if !sawName {
			t.Fatalf("newly joined room lacks its state")
		}
		for i := 0; i < 15; i++ {
			if _, err := alice.SendText(ctx(t), room.RoomID, fmt.Sprintf("m%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		// A stored filter with timeline limit 5.
		f, err := bob.CreateFilter(ctx(t), &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 5}}})
		if err != nil {
			t.Fatal(err)
		}
		status, stored := e.do("GET", "/_matrix/client/v3/user/@bob:localhost/filter/"+f.FilterID, bob.AccessToken, nil)
		if status != 200 || stored["room"] == nil {
			t.Fatalf("get filter: %d %v", status, stored)
		}
		status, _ = e.do("GET", "/_matrix/client/v3/user/@bob:localhost/filter/"+f.FilterID, alice.AccessToken, nil)
		if status != 403 {
			t.Fatalf("reading another user's filter: %d", status)
		}
		lim, err := bob.SyncRequest(ctx(t), 0, since, f.FilterID, false, "")
		if err != nil {
			t.Fatal(err)
		}
		jr := lim.Rooms.Join[room.RoomID]
		if jr == nil || !jr.Timeline.Limited || len(jr.Timeline.Events) != 5 || jr.Timeline.PrevBatch == "" {
			t.Fatalf("limited timeline: %+v", jr)
		}
		if jr.Timeline.Events[4].Content.Raw["body"] != "m14" {
			t.Fatalf("timeline does not end with the newest event")
		}
		// prev_batch continues exactly where the timeline starts.
		page, err := bob.Messages(ctx(t), room.RoomID, jr.Timeline.PrevBatch, "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(page.Chunk) != 1 || page.Chunk[0].Content.Raw["body"] != "m9" {
			t.Fatalf("prev_batch pagination: %+v %v", page, err)
		}
		// An inline JSON filter that keeps only m.room.name in state and the timeline.
		inline, err := bob.FullSyncRequest(ctx(t), mautrix.ReqSync{FilterID: `{"room":{"timeline":{"types":["m.room.topic"]}}}`, Since: since})
		if err != nil {
			t.Fatal(err)
		}
		if jr := inline.Rooms.Join[room.RoomID]; jr != nil && len(jr.Timeline.Events) != 0 {
			t.Fatalf("type filter let %d events through", len(jr.Timeline.Events))
		}
		since = lim.NextBatch
		// Leaving shows up under rooms.leave with the leave event.
		if _, err := alice.KickUser(ctx(t), room.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		resp, _ = syncUntil(t, bob, since, func(r *mautrix.RespSync) bool { return r.Rooms.Leave[room.RoomID] != nil })
		lr := resp.Rooms.Leave[room.RoomID]
		last := lr.Timeline.Events[len(lr.Timeline.Events)-1]
		if last.Type != event.StateMember || last.GetStateKey() != string(bob.UserID) || last.Content.Raw["membership"] != "leave" {
			t.Fatalf("leave timeline does not end with the kick: %+v", last)
		}
		if resp.Rooms.Join[room.RoomID] != nil {
			t.Fatal("left room still under join")
		}
	})
}

func TestSyncAccountDataTypingReceipts(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		_, since := syncUntil(t, alice, "", func(*mautrix.RespSync) bool { return true })

		// Global and room account data.
		if err := alice.SetAccountData(ctx(t), "org.example.prefs", map[string]any{"theme": "dark"}); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetRoomAccountData(ctx(t), room.RoomID, "org.example.room", map[string]any{"pinned": true}); err != nil {
			t.Fatal(err)
		}
		var prefs map[string]any
		if err := alice.GetAccountData(ctx(t), "org.example.prefs", &prefs); err != nil || prefs["theme"] != "dark" {
			t.Fatalf("get account data: %v %v", prefs, err)
		}
		err = alice.GetAccountData(ctx(t), "org.example.none", &prefs)
		wantErr(t, err, "M_NOT_FOUND")
		status, _ := e.do("PUT", "/_matrix/client/v3/user/@alice:localhost/account_data/x", bob.AccessToken, "{}")
		if status != 403 {
			t.Fatalf("writing another user's account data: %d", status)
		}
		resp, since := syncUntil(t, alice, since, func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room.RoomID]
			return len(r.AccountData.Events) > 0 && jr != nil && len(jr.AccountData.Events) > 0
		})
		if resp.AccountData.Events[0].Type.Type != "org.example.prefs" {
			t.Fatalf("global account data: %+v", resp.AccountData.Events)
		}

		// Room tags are m.tag room account data.
		if err := alice.AddTag(ctx(t), room.RoomID, event.RoomTagFavourite, 0.25); err != nil {
			t.Fatal(err)
		}
		if err := alice.AddTag(ctx(t), room.RoomID, "u.work", 0.5); err != nil {
			t.Fatal(err)
		}
		if err := alice.RemoveTag(ctx(t), room.RoomID, "u.work"); err != nil {
			t.Fatal(err)
		}
		tags, err := alice.GetTags(ctx(t), room.RoomID)
		if order, _ := tags.Tags[event.RoomTagFavourite].Order.Float64(); err != nil || len(tags.Tags) != 1 || order != 0.25 {
			t.Fatalf("tags: %+v %v", tags, err)
		}
		status, _ = e.do("PUT", "/_matrix/client/v3/user/@alice:localhost/rooms/"+string(room.RoomID)+"/tags/x", alice.AccessToken, `{"order":7}`)
		if status != 400 {
			t.Fatalf("tag order out of range: %d", status)
		}
		_, since = syncUntil(t, alice, since, func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room.RoomID]
			if jr == nil {
				return false
			}
			for _, ev := range jr.AccountData.Events {
				if ev.Type.Type == "m.tag" {
					return true
				}
			}
			return false
		})

		// Typing: bob starts, alice sees him; bob stops, alice sees the empty list.
		if _, err := bob.UserTyping(ctx(t), room.RoomID, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		typingUsers := func(r *mautrix.RespSync) ([]id.UserID, bool) {
			jr := r.Rooms.Join[room.RoomID]
			if jr == nil {
				return nil, false
			}
			for _, ev := range jr.Ephemeral.Events {
				if ev.Type == event.EphemeralEventTyping {
					_ = ev.Content.ParseRaw(ev.Type)
					return ev.Content.AsTyping().UserIDs, true
				}
			}
			return nil, false
		}
		resp, since = syncUntil(t, alice, since, func(r *mautrix.RespSync) bool { u, ok := typingUsers(r); return ok && len(u) == 1 })
		if u, _ := typingUsers(resp); u[0] != bob.UserID {
			t.Fatalf("typing: %v", u)
		}
		if _, err := bob.UserTyping(ctx(t), room.RoomID, false, 0); err != nil {
			t.Fatal(err)
		}
		_, since = syncUntil(t, alice, since, func(r *mautrix.RespSync) bool { u, ok := typingUsers(r); return ok && len(u) == 0 })
		status, _ = e.do("PUT", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/typing/@bob:localhost", alice.AccessToken, `{"typing":true}`)
		if status != 403 {
			t.Fatalf("typing as someone else: %d", status)
		}

		// Receipts: public m.read reaches alice, bob's private receipt does not.
		msg, err := alice.SendText(ctx(t), room.RoomID, "read me")
		if err != nil {
			t.Fatal(err)
		}
		if err := bob.SendReceipt(ctx(t), room.RoomID, msg.EventID, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		if err := bob.SendReceipt(ctx(t), room.RoomID, msg.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		resp, _ = syncUntil(t, alice, since, func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room.RoomID]
			if jr == nil {
				return false
			}
			for _, ev := range jr.Ephemeral.Events {
				if ev.Type == event.EphemeralEventReceipt {
					return true
				}
			}
			return false
		})
		for _, ev := range resp.Rooms.Join[room.RoomID].Ephemeral.Events {
			if ev.Type != event.EphemeralEventReceipt {
				continue
			}
			_ = ev.Content.ParseRaw(ev.Type)
			rc := *ev.Content.AsReceipt()
			if _, ok := rc[msg.EventID][event.ReceiptTypeRead][bob.UserID]; !ok {
				t.Fatalf("public receipt missing: %+v", rc)
			}
			if _, ok := rc[msg.EventID][event.ReceiptTypeReadPrivate]; ok {
				t.Fatalf("bob's private receipt leaked to alice: %+v", rc)
			}
		}
		// Read markers set m.fully_read as room account data.
		if err := bob.SetReadMarkers(ctx(t), room.RoomID, &mautrix.ReqSetReadMarkers{FullyRead: msg.EventID, Read: msg.EventID}); err != nil {
			t.Fatal(err)
		}
		var fr map[string]any
		status, body := e.do("GET", "/_matrix/client/v3/user/@bob:localhost/rooms/"+string(room.RoomID)+"/account_data/m.fully_read", bob.AccessToken, nil)
		if status != 200 || body["event_id"] != string(msg.EventID) {
			t.Fatalf("fully_read: %d %v %v", status, body, fr)
		}
		// Push rules and pushers.
		rules, err := alice.GetPushRules(ctx(t))
		if err != nil || len(rules.Override) < 5 || len(rules.Underride) < 4 {
			t.Fatalf("push rules: %+v %v", rules, err)
		}
		status, body = e.do("GET", "/_matrix/client/v3/pushers", alice.AccessToken, nil)
		if status != 200 || len(body["pushers"].([]any)) != 0 {
			t.Fatalf("pushers: %d %v", status, body)
		}
		status, body = e.do("PUT", "/_matrix/client/v3/pushrules/global/override/x", alice.AccessToken, "{}")
		if status >= 500 || body["errcode"] == nil {
			t.Fatalf("push rule PUT: %d %v", status, body)
		}
	})
}

// TestSyncEventsWhileInvited is the regression test for messages sent while the user was only invited: once the
// user joins, they are in the joined room's timeline (the room is sent like in an initial sync).
func TestSyncEventsWhileInvited(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		_, since := syncUntil(t, alice, "", func(*mautrix.RespSync) bool { return true })
		room, err := bob.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		_, since = syncUntil(t, alice, since, func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room.RoomID] != nil })
		early, err := bob.SendText(ctx(t), room.RoomID, "sent while you were invited")
		if err != nil {
			t.Fatal(err)
		}
		// Alice's token moves past the message while she is still only invited.
		resp, err := alice.SyncRequest(ctx(t), 0, since, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		since = resp.NextBatch
		if _, err := alice.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		resp, _ = syncUntil(t, alice, since, func(r *mautrix.RespSync) bool { return r.Rooms.Join[room.RoomID] != nil })
		found := false
		for _, ev := range resp.Rooms.Join[room.RoomID].Timeline.Events {
			found = found || ev.ID == early.EventID
		}
		if !found {
			t.Fatalf("the message sent while alice was invited is missing from her timeline")
		}
		// A later profile change (join → join) is not treated as a new join: no history replay.
		_, since = syncUntil(t, alice, resp.NextBatch, func(*mautrix.RespSync) bool { return true })
		if err := alice.SetDisplayName(ctx(t), "Alice"); err != nil {
			t.Fatal(err)
		}
		resp, _ = syncUntil(t, alice, since, func(r *mautrix.RespSync) bool { return r.Rooms.Join[room.RoomID] != nil })
		for _, ev := range resp.Rooms.Join[room.RoomID].Timeline.Events {
			if ev.ID == early.EventID {
				t.Fatalf("old history replayed after a profile change")
			}
		}
	})
}

// TestConcurrentSendersSync: several clients send at once while another long-polls; every message reaches the
// syncing client exactly once, in stream order, with no gap (the timeline is never limited at this rate).
func TestConcurrentSendersSync(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		const senders, perSender = 4, 20
		owner := e.user("owner")
		room, err := owner.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		clients := make([]*mautrix.Client, senders)
		for i := range clients {
			clients[i] = e.user(fmt.Sprintf("sender%d", i))
			if _, err := clients[i].JoinRoomByID(ctx(t), room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		reader := e.user("reader")
		if _, err := reader.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		_, since := syncUntil(t, reader, "", func(*mautrix.RespSync) bool { return true })
		f, err := reader.CreateFilter(ctx(t), &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1000}}})
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, senders)
		for i, c := range clients {
			go func() {
				for j := 0; j < perSender; j++ {
					if _, err := c.SendText(ctx(t), room.RoomID, fmt.Sprintf("%d/%d", i, j)); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		seen := map[string]bool{}
		deadline := time.Now().Add(30 * time.Second)
		for len(seen) < senders*perSender && time.Now().Before(deadline) {
			resp, err := reader.SyncRequest(ctx(t), 5000, since, f.FilterID, false, "")
			if err != nil {
				t.Fatal(err)
			}
			since = resp.NextBatch
			jr := resp.Rooms.Join[room.RoomID]
			if jr == nil {
				continue
			}
			if jr.Timeline.Limited {
				t.Fatalf("timeline limited at limit 1000")
			}
			for _, ev := range jr.Timeline.Events {
				body, _ := ev.Content.Raw["body"].(string)
				if ev.Type != event.EventMessage {
					continue
				}
				if seen[body] {
					t.Fatalf("message %s delivered twice", body)
				}
				seen[body] = true
			}
		}
		for range clients {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if len(seen) != senders*perSender {
			t.Fatalf("reader saw %d of %d messages", len(seen), senders*perSender)
		}
		// Per sender, messages arrive in the order they were sent.
		resp, err := reader.Messages(ctx(t), room.RoomID, "", "", mautrix.DirectionForward, nil, 1000)
		if err != nil {
			t.Fatal(err)
		}
		next := make([]int, senders)
		for _, ev := range resp.Chunk {
			var i, j int
			if body, _ := ev.Content.Raw["body"].(string); ev.Type == event.EventMessage {
				if _, err := fmt.Sscanf(body, "%d/%d", &i, &j); err == nil {
					if j != next[i] {
						t.Fatalf("sender %d: got message %d, want %d", i, j, next[i])
					}
					next[i]++
				}
			}
		}
	})
}

func TestPresence(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob, carol := e.user("alice"), e.user("bob"), e.user("carol")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		_, aliceSince := syncUntil(t, alice, "", func(*mautrix.RespSync) bool { return true })
		_, carolSince := syncUntil(t, carol, "", func(*mautrix.RespSync) bool { return true })
		status, body := e.do("PUT", "/_matrix/client/v3/presence/@bob:localhost/status", bob.AccessToken,
			`{"presence":"unavailable","status_msg":"out for tea"}`)
		if status != 200 {
			t.Fatalf("put presence: %d %v", status, body)
		}
		resp, _ := syncUntil(t, alice, aliceSince, func(r *mautrix.RespSync) bool { return len(r.Presence.Events) > 0 })
		ev := resp.Presence.Events[0]
		_ = ev.Content.ParseRaw(ev.Type)
		if ev.Sender != bob.UserID || ev.Content.AsPresence().Presence != "unavailable" || ev.Content.AsPresence().StatusMessage != "out for tea" {
			t.Fatalf("presence event: %+v", ev)
		}
		// Carol shares no room with bob: her long-poll is neither woken nor told.
		quiet, err := carol.SyncRequest(ctx(t), 300, carolSince, "", false, "")
		if err != nil || len(quiet.Presence.Events) != 0 {
			t.Fatalf("carol saw bob's presence: %+v %v", quiet.Presence, err)
		}
		status, body = e.do("GET", "/_matrix/client/v3/presence/@bob:localhost/status", carol.AccessToken, nil)
		if status != 200 || body["presence"] != "unavailable" || body["status_msg"] != "out for tea" {
			t.Fatalf("get presence: %d %v", status, body)
		}
		for _, c := range []struct {
			token, path, body string
			status            int
		}{
			{bob.AccessToken, "/_matrix/client/v3/presence/@bob:localhost/status", `{"presence":"dancing"}`, 400},
			{bob.AccessToken, "/_matrix/client/v3/presence/@bob:localhost/status", `{}`, 400},
			{carol.AccessToken, "/_matrix/client/v3/presence/@bob:localhost/status", `{"presence":"online"}`, 403},
		} {
			if status, body := e.do("PUT", c.path, c.token, c.body); status != c.status {
				t.Fatalf("PUT %s %s: %d %v", c.path, c.body, status, body)
			}
		}
		status, _ = e.do("GET", "/_matrix/client/v3/sync?set_presence=online&timeout=0", bob.AccessToken, nil)
		if status != 200 || e.hs.Sync().PresenceOf(bob.UserID).Presence != "online" {
			t.Fatalf("set_presence on sync: %d %v", status, e.hs.Sync().PresenceOf(bob.UserID))
		}
	})
}

// fakeE2EE is a stand-in for homeserver/e2ee: one to-device message per Push, for one device.
type fakeE2EE struct {
	mu   stdsync.Mutex
	msgs []json.RawMessage
	cap  int64 // at most this many to-device messages per response (0 = no cap)
}

func (f *fakeE2EE) Pos() int64 { f.mu.Lock(); defer f.mu.Unlock(); return int64(len(f.msgs)) }

func (f *fakeE2EE) SyncData(_ context.Context, _ id.UserID, _ id.DeviceID, since, upTo int64, _ bool) (*hsync.E2EEData, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cap > 0 && upTo-since > f.cap {
		upTo = since + f.cap
	}
	d := &hsync.E2EEData{ToDevice: slices.Clone(f.msgs[since:upTo]), OTKCount: map[string]int{"signed_curve25519": 7}, Pos: upTo}
	if len(d.ToDevice) > 0 {
		d.Changed = []id.UserID{"@x:localhost"}
	}
	return d, nil
}

func TestSyncE2EEHook(t *testing.T) {
	e := newEnv(t, "sqlite", nil, nil)
	alice := e.user("alice")
	fake := &fakeE2EE{}
	e.hs.Sync().SetE2EE(fake)
	first, err := alice.SyncRequest(ctx(t), 0, "", "", false, "")
	if err != nil || first.DeviceOTKCount.SignedCurve25519 != 7 {
		t.Fatalf("initial: %+v %v", first.DeviceOTKCount, err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		fake.mu.Lock()
		fake.msgs = append(fake.msgs, json.RawMessage(`{"type":"m.room_key_request","sender":"@x:localhost","content":{}}`))
		fake.mu.Unlock()
		e.hs.Sync().Notifier().WakeUsers(alice.UserID)
	}()
	resp, err := alice.SyncRequest(ctx(t), 10000, first.NextBatch, "", false, "")
	if err != nil || len(resp.ToDevice.Events) != 1 || len(resp.DeviceLists.Changed) != 1 {
		t.Fatalf("to-device: %+v %v", resp.ToDevice, err)
	}
	again, err := alice.SyncRequest(ctx(t), 0, resp.NextBatch, "", false, "")
	if err != nil || len(again.ToDevice.Events) != 0 {
		t.Fatalf("to-device repeated: %+v %v", again.ToDevice, err)
	}
	// A capped source: three pending messages arrive one per response, none lost.
	fake.mu.Lock()
	fake.cap = 1
	for i := 0; i < 3; i++ {
		fake.msgs = append(fake.msgs, json.RawMessage(fmt.Sprintf(`{"type":"m.dummy","sender":"@x:localhost","content":{"n":%d}}`, i)))
	}
	fake.mu.Unlock()
	since := again.NextBatch
	for i := 0; i < 3; i++ {
		r, err := alice.SyncRequest(ctx(t), 0, since, "", false, "")
		if err != nil || len(r.ToDevice.Events) != 1 || r.ToDevice.Events[0].Content.Raw["n"] != float64(i) {
			t.Fatalf("capped to-device %d: %+v %v", i, r.ToDevice, err)
		}
		since = r.NextBatch
	}
}

func TestUnreadCounts(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		_, since := syncUntil(t, alice, "", func(*mautrix.RespSync) bool { return true })
		if _, err := alice.SendText(ctx(t), room.RoomID, "my own message does not count"); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendText(ctx(t), room.RoomID, "one"); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendNotice(ctx(t), room.RoomID, "a notice does not count"); err != nil {
			t.Fatal(err)
		}
		last, err := bob.SendMessageEvent(ctx(t), room.RoomID, event.EventMessage, map[string]any{
			"msgtype": "m.text", "body": "hey Alice", "m.mentions": map[string]any{"user_ids": []string{"@alice:localhost"}}})
		if err != nil {
			t.Fatal(err)
		}
		counts := func(r *mautrix.RespSync) (int, int, bool) {
			jr := r.Rooms.Join[room.RoomID]
			if jr == nil {
				return 0, 0, false
			}
			return jr.UnreadNotifications.NotificationCount, jr.UnreadNotifications.HighlightCount, true
		}
		resp, since := syncUntil(t, alice, since, func(r *mautrix.RespSync) bool { n, _, ok := counts(r); return ok && n == 2 })
		if _, h, _ := counts(resp); h != 1 {
			t.Fatalf("highlight count %d, want 1", h)
		}
		if err := alice.SendReceipt(ctx(t), room.RoomID, last.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		_, since = syncUntil(t, alice, since, func(r *mautrix.RespSync) bool { n, h, ok := counts(r); return ok && n == 0 && h == 0 })
		// Muting the room the way Element does (an override rule on room_id without notify) silences it.
		status, body := e.do("PUT", "/_matrix/client/v3/pushrules/global/override/"+string(room.RoomID), alice.AccessToken,
			map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_match", "key": "room_id", "pattern": room.RoomID}}})
		if status != 200 {
			t.Fatalf("mute: %d %v", status, body)
		}
		if _, err := bob.SendText(ctx(t), room.RoomID, "into the void"); err != nil {
			t.Fatal(err)
		}
		resp, _ = syncUntil(t, alice, since, func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room.RoomID]
			return jr != nil && len(jr.Timeline.Events) > 0
		})
		if n, _, _ := counts(resp); n != 0 {
			t.Fatalf("muted room counts %d notifications", n)
		}
		rules, err := alice.GetPushRules(ctx(t))
		if err != nil || rules.Override[1].RuleID != string(room.RoomID) || rules.Override[0].RuleID != ".m.rule.master" {
			t.Fatalf("stored rules: %v", err)
		}
		// Default rules cannot be deleted; the user's own rule can, and can be disabled first.
		if status, _ := e.do("DELETE", "/_matrix/client/v3/pushrules/global/override/.m.rule.master", alice.AccessToken, nil); status != 403 {
			t.Fatalf("deleting a default rule: %d", status)
		}
		if status, body := e.do("PUT", "/_matrix/client/v3/pushrules/global/override/"+string(room.RoomID)+"/enabled", alice.AccessToken, `{"enabled":false}`); status != 200 {
			t.Fatalf("disable rule: %d %v", status, body)
		}
		status, body = e.do("GET", "/_matrix/client/v3/pushrules/global/override/"+string(room.RoomID)+"/enabled", alice.AccessToken, nil)
		if status != 200 || body["enabled"] != false {
			t.Fatalf("get enabled: %d %v", status, body)
		}
		if status, body := e.do("DELETE", "/_matrix/client/v3/pushrules/global/override/"+string(room.RoomID), alice.AccessToken, nil); status != 200 {
			t.Fatalf("delete rule: %d %v", status, body)
		}
		if status, _ := e.do("GET", "/_matrix/client/v3/pushrules/global/override/"+string(room.RoomID), alice.AccessToken, nil); status != 404 {
			t.Fatalf("deleted rule still there: %d", status)
		}
	})
}
