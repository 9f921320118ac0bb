package homeserver_test

import (
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func evIDs(evs []*event.Event) []id.EventID {
	out := make([]id.EventID, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.ID)
	}
	return out
}

// TestRelationsEditsReactionsThreads drives /relations, /threads and bundled aggregations through the mautrix
// client.
func TestRelationsEditsReactionsThreads(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob, eve := e.user("alice"), e.user("bob"), e.user("eve")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		rootResp, err := alice.SendText(ctx(t), room.RoomID, "original text")
		if err != nil {
			t.Fatal(err)
		}
		root := rootResp.EventID
		var reactions []id.EventID
		for _, key := range []string{"👍", "🎉", "❤️"} {
			r, err := bob.SendReaction(ctx(t), room.RoomID, root, key)
			if err != nil {
				t.Fatal(err)
			}
			reactions = append(reactions, r.EventID)
		}
		edit := &event.MessageEventContent{MsgType: event.MsgText, Body: "* edited text",
			NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: "edited text"}}
		edit.SetEdit(root)
		editResp, err := alice.SendMessageEvent(ctx(t), room.RoomID, event.EventMessage, edit)
		if err != nil {
			t.Fatal(err)
		}
		rootEv, err := bob.GetEvent(ctx(t), room.RoomID, root)
		if err != nil {
			t.Fatal(err)
		}
		var threadReplies []id.EventID
		for i := range 3 {
			c := &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("thread reply %d", i)}
			c.SetThread(rootEv)
			r, err := bob.SendMessageEvent(ctx(t), room.RoomID, event.EventMessage, c)
			if err != nil {
				t.Fatal(err)
			}
			threadReplies = append(threadReplies, r.EventID)
		}

		// The edit is bundled in the original wherever it is served: /event, /messages, initial /sync.
		got, err := bob.GetEvent(ctx(t), room.RoomID, root)
		if err != nil {
			t.Fatal(err)
		}
		rel := got.Unsigned.Relations
		if rel.GetLatestEdit() == nil || rel.GetLatestEdit().ID != editResp.EventID {
			t.Fatalf("/event: bundled edit %+v, want %s", rel, editResp.EventID)
		}
		th := rel.GetThread()
		if th == nil || th.Count != 3 || th.LatestEvent == nil || th.LatestEvent.ID != threadReplies[2] || !th.CurrentUserParticipated {
			t.Fatalf("/event: thread summary %+v", th)
		}
		if aliceView, _ := alice.GetEvent(ctx(t), room.RoomID, root); aliceView.Unsigned.Relations.GetThread() == nil ||
			!aliceView.Unsigned.Relations.GetThread().CurrentUserParticipated {
			t.Fatalf("/event: root sender alice is not a thread participant")
		}
		msgs, err := bob.Messages(ctx(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ev := range msgs.Chunk {
			if ev.ID == root {
				found = ev.Unsigned.Relations.GetLatestEdit() != nil && ev.Unsigned.Relations.GetLatestEdit().ID == editResp.EventID
			}
		}
		if !found {
			t.Fatalf("/messages: root without its bundled edit")
		}
		syncResp, _ := syncUntil(t, bob, "", func(r *mautrix.RespSync) bool { return r.Rooms.Join[room.RoomID] != nil })
		found = false
		for _, ev := range syncResp.Rooms.Join[room.RoomID].Timeline.Events {
			if ev.ID == root {
				found = ev.Unsigned.Relations.GetThread() != nil && ev.Unsigned.Relations.GetThread().Count == 3
			}
		}
		if !found {
			t.Fatalf("/sync: root without its thread summary")
		}

		// Relations: all of them newest first, paged two at a time.
		var paged []id.EventID
		req := &mautrix.ReqGetRelations{Limit: 2}
		for range 10 {
			page, err := bob.GetRelations(ctx(t), room.RoomID, root, req)
			if err != nil {
				t.Fatal(err)
			}
			paged = append(paged, evIDs(page.Chunk)...)
			if page.NextBatch == "" {
				break
			}
			req.From = page.NextBatch
		}
		want := append(append([]id.EventID{}, reactions...), editResp.EventID)
		want = append(want, threadReplies...)
		if len(paged) != len(want) {
			t.Fatalf("paged relations %v, want %d", paged, len(want))
		}
		for i := range want {
			if paged[len(paged)-1-i] != want[i] {
				t.Fatalf("paged relations %v, want reverse of %v", paged, want)
			}
		}
		// Filtered by relation type, and by relation and event type; forward direction.
		ann, err := bob.GetRelations(ctx(t), room.RoomID, root, &mautrix.ReqGetRelations{
			RelationType: event.RelAnnotation, EventType: event.EventReaction, Dir: mautrix.DirectionForward})
		if err != nil || len(ann.Chunk) != 3 || ann.Chunk[0].ID != reactions[0] || ann.Chunk[0].Content.Raw["m.relates_to"].(map[string]any)["key"] != "👍" {
			t.Fatalf("reactions: %+v %v", ann, err)
		}
		threadRel, err := bob.GetRelations(ctx(t), room.RoomID, root, &mautrix.ReqGetRelations{RelationType: event.RelThread})
		if err != nil || len(threadRel.Chunk) != 3 || threadRel.Chunk[0].ID != threadReplies[2] {
			t.Fatalf("thread relations: %+v %v", threadRel, err)
		}
		if none, err := bob.GetRelations(ctx(t), room.RoomID, root, &mautrix.ReqGetRelations{
			RelationType: event.RelAnnotation, EventType: event.EventMessage}); err != nil || len(none.Chunk) != 0 {
			t.Fatalf("annotations of type m.room.message: %+v %v", none, err)
		}
		// A reaction to a thread reply shows up only with recurse.
		deep, err := alice.SendReaction(ctx(t), room.RoomID, threadReplies[0], "👀")
		if err != nil {
			t.Fatal(err)
		}
		rec, err := bob.GetRelations(ctx(t), room.RoomID, root, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation, Recurse: true})
		if err != nil || len(rec.Chunk) != 4 || rec.Chunk[0].ID != deep.EventID || rec.RecursionDepth == 0 {
			t.Fatalf("recursive annotations: %+v %v", rec, err)
		}
		// Someone outside the room sees nothing.
		_, err = eve.GetRelations(ctx(t), room.RoomID, root, &mautrix.ReqGetRelations{})
		wantErr(t, err, "M_FORBIDDEN")

		// Threads: two roots, most recently active first; include=participated.
		other, err := alice.SendText(ctx(t), room.RoomID, "alice's second root")
		if err != nil {
			t.Fatal(err)
		}
		otherEv, _ := alice.GetEvent(ctx(t), room.RoomID, other.EventID)
		c := &event.MessageEventContent{MsgType: event.MsgText, Body: "alice replies to herself"}
		c.SetThread(otherEv)
		if _, err := alice.SendMessageEvent(ctx(t), room.RoomID, event.EventMessage, c); err != nil {
			t.Fatal(err)
		}
		threads, err := bob.GetThreads(ctx(t), room.RoomID, &mautrix.ReqGetThreads{})
		if err != nil || len(threads.Chunk) != 2 || threads.Chunk[0].ID != other.EventID || threads.Chunk[1].ID != root {
			t.Fatalf("threads: %v %v", threads, err)
		}
		if s := threads.Chunk[1].Unsigned.Relations.GetThread(); s == nil || s.Count != 3 {
			t.Fatalf("thread root in /threads lacks its summary: %+v", s)
		}
		page, err := bob.GetThreads(ctx(t), room.RoomID, &mautrix.ReqGetThreads{Limit: 1})
		if err != nil || len(page.Chunk) != 1 || page.NextBatch == "" {
			t.Fatalf("threads page 1: %+v %v", page, err)
		}
		page, err = bob.GetThreads(ctx(t), room.RoomID, &mautrix.ReqGetThreads{Limit: 1, From: page.NextBatch})
		if err != nil || len(page.Chunk) != 1 || page.Chunk[0].ID != root || page.NextBatch != "" {
			t.Fatalf("threads page 2: %+v %v", page, err)
		}
		mine, err := bob.GetThreads(ctx(t), room.RoomID, &mautrix.ReqGetThreads{Include: mautrix.ThreadIncludeParticipated})
		if err != nil || len(mine.Chunk) != 1 || mine.Chunk[0].ID != root {
			t.Fatalf("bob's threads: %+v %v", mine, err)
		}
		_, err = eve.GetThreads(ctx(t), room.RoomID, &mautrix.ReqGetThreads{})
		wantErr(t, err, "M_FORBIDDEN")
	})
}

// TestSearchOnlyVisibleRooms checks POST /search: matches in joined rooms, never in rooms the searcher is not
// in, pagination with next_batch, and both orderings.
func TestSearchOnlyVisibleRooms(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		shared, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), shared.RoomID); err != nil {
			t.Fatal(err)
		}
		private, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		left, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx(t), left.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx(t), private.RoomID, "Budget secret for the pond"); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx(t), left.RoomID, "budget after bob left"); err != nil {
			t.Fatal(err)
		}
		var sent []id.EventID
		for i := range 5 {
			r, err := alice.SendText(ctx(t), shared.RoomID, fmt.Sprintf("BUDGET item %d", i))
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, r.EventID)
		}
		r, err := bob.SendText(ctx(t), shared.RoomID, "budget budget budget")
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, r.EventID)
		if _, err := bob.LeaveRoom(ctx(t), left.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx(t), shared.RoomID, "nothing to see"); err != nil {
			t.Fatal(err)
		}

		var got []id.EventID
		req := &mautrix.ReqSearch{SearchTerm: "budget", Filter: &mautrix.FilterPart{Limit: 4}}
		for range 5 {
			resp, err := bob.Search(ctx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Count != 6 {
				t.Fatalf("search count %d, want 6 on every page", resp.Count)
			}
			for _, res := range resp.Results {
				if res.Event.RoomID != shared.RoomID {
					t.Fatalf("bob found an event of room %s he is not in: %s", res.Event.RoomID, res.Event.Content.Raw["body"])
				}
				got = append(got, res.Event.ID)
			}
			if resp.NextBatch == "" {
				break
			}
			req.NextBatch = resp.NextBatch
		}
		if len(got) != len(sent) {
			t.Fatalf("search found %v, want %d events", got, len(sent))
		}
		for i := range sent {
			if got[len(got)-1-i] != sent[i] {
				t.Fatalf("search order %v, want newest first of %v", got, sent)
			}
		}
		// Alice, in all three rooms, finds all of them; rank puts bob's triple match first.
		resp, err := alice.Search(ctx(t), &mautrix.ReqSearch{SearchTerm: "budget", OrderBy: "rank", Filter: &mautrix.FilterPart{Limit: 20}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Results) != 8 || resp.Results[0].Event.ID != r.EventID || resp.Results[0].Rank <= resp.Results[1].Rank {
			t.Fatalf("alice's ranked search: %d results, first %v", len(resp.Results), resp.Results[0])
		}
		// event_context gives the neighbours of a result.
		resp, err = bob.Search(ctx(t), &mautrix.ReqSearch{SearchTerm: "item 2", Filter: &mautrix.FilterPart{Limit: 1},
			EventContext: mautrix.SearchEventContext{BeforeLimit: 1, AfterLimit: 1}})
		if err != nil || len(resp.Results) != 1 || resp.Results[0].Event.ID != sent[2] {
			t.Fatalf("search with context: %+v %v", resp, err)
		}
		if c := resp.Results[0].Context; c == nil || len(c.EventsBefore) != 1 || c.EventsBefore[0].ID != sent[1] ||
			len(c.EventsAfter) != 1 || c.EventsAfter[0].ID != sent[3] || c.Start == "" || c.End == "" {
			t.Fatalf("search context: %+v", resp.Results[0].Context)
		}
		// A room filter narrows the search, and a room the user is not in stays invisible even when named.
		resp, err = bob.Search(ctx(t), &mautrix.ReqSearch{SearchTerm: "secret", Filter: &mautrix.FilterPart{Rooms: []id.RoomID{private.RoomID}}})
		if err != nil || len(resp.Results) != 0 {
			t.Fatalf("bob searched alice's private room: %+v %v", resp, err)
		}
		resp, err = alice.Search(ctx(t), &mautrix.ReqSearch{SearchTerm: "budget", Filter: &mautrix.FilterPart{Rooms: []id.RoomID{private.RoomID}}})
		if err != nil || len(resp.Results) != 1 || resp.Results[0].Event.RoomID != private.RoomID {
			t.Fatalf("alice's room-filtered search: %+v %v", resp, err)
		}
		status, body := e.do("POST", "/_matrix/client/v3/search", bob.AccessToken, map[string]any{
			"search_categories": map[string]any{"room_events": map[string]any{"search_term": ""}}})
		if status != 400 || body["errcode"] != "M_MISSING_PARAM" {
			t.Fatalf("empty search term: %d %v", status, body)
		}
	})
}
