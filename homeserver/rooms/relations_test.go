package rooms

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/dbtest"
)

func relReq(room id.RoomID, sender id.UserID, evType, relType string, target id.EventID, extra string) SendRequest {
	return SendRequest{RoomID: room, Sender: sender, Type: evType, Content: json.RawMessage(fmt.Sprintf(
		`{%s"m.relates_to":{"rel_type":%q,"event_id":%q}}`, extra, relType, target))}
}

func TestRelationsThreadsBundleSearch(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		s := newService(t, db)
		room := must[id.RoomID](t)(s.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{Preset: "public_chat"}))
		must[*Event](t)(s.SetMembership(ctx, MembershipRequest{RoomID: room, Sender: uBob, Target: uBob, Membership: "join"}))
		root := must[*Event](t)(s.Send(ctx, msg(room, uAlice, "Root Message")))
		react1 := must[*Event](t)(s.Send(ctx, relReq(room, uBob, "m.reaction", RelAnnotation, root.ID, "")))
		// Edits are ordered by origin_server_ts (then event ID): give them distinct timestamps.
		req := relReq(room, uAlice, "m.room.message", RelReplace, root.ID, `"body":"* first edit","m.new_content":{"body":"first edit"},`)
		req.TS = root.OriginServerTS + 1
		edit1 := must[*Event](t)(s.Send(ctx, req))
		req = relReq(room, uAlice, "m.room.message", RelReplace, root.ID, `"body":"* second edit","m.new_content":{"body":"second edit"},`)
		req.TS = root.OriginServerTS + 2
		edit2 := must[*Event](t)(s.Send(ctx, req))
		// An edit by someone else is not a valid edit and must not be bundled.
		must[*Event](t)(s.Send(ctx, relReq(room, uBob, "m.room.message", RelReplace, root.ID, `"body":"* hijack",`)))
		thread1 := must[*Event](t)(s.Send(ctx, relReq(room, uBob, "m.room.message", RelThread, root.ID, `"body":"in thread",`)))
		react2 := must[*Event](t)(s.Send(ctx, relReq(room, uAlice, "m.reaction", RelAnnotation, root.ID, "")))
		thread2 := must[*Event](t)(s.Send(ctx, relReq(room, uBob, "m.room.message", RelThread, root.ID, `"body":"second reply",`)))
		// An edit of another type is not a valid edit either.
		must[*Event](t)(s.Send(ctx, relReq(room, uAlice, "m.sticker", RelReplace, root.ID, `"body":"* sticker",`)))
		ref := must[*Event](t)(s.Send(ctx, relReq(room, uBob, "m.key.verification.done", RelReference, root.ID, "")))
		// A reaction to a thread reply: depth 2 from the root.
		deep := must[*Event](t)(s.Send(ctx, relReq(room, uAlice, "m.reaction", RelAnnotation, thread1.ID, "")))

		all, next, err := s.Relations(ctx, room, root.ID, RelationsQuery{Limit: 100, UpTo: math.MaxInt64})
		if err != nil || next != 0 || len(all) != 9 || all[0].ID != ref.ID {
			t.Fatalf("all relations: %v next %d err %v", ids(all), next, err)
		}
		reactions := must[[]*Event](t)(func() ([]*Event, error) {
			evs, _, err := s.Relations(ctx, room, root.ID, RelationsQuery{RelType: RelAnnotation, EventType: "m.reaction"})
			return evs, err
		}())
		if got := ids(reactions); len(got) != 2 || got[0] != react2.ID || got[1] != react1.ID {
			t.Fatalf("reactions %v", got)
		}
		// Pagination backwards, two at a time, then forwards.
		var seen []id.EventID
		q := RelationsQuery{Limit: 2}
		for {
			page, next, err := s.Relations(ctx, room, root.ID, q)
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, ids(page)...)
			if next == 0 {
				break
			}
			q.From, q.HasFrom = next, true
		}
		if len(seen) != 9 || seen[8] != react1.ID {
			t.Fatalf("paged relations %v", seen)
		}
		fwd, next, err := s.Relations(ctx, room, root.ID, RelationsQuery{Dir: 'f', Limit: 3})
		if err != nil || len(fwd) != 3 || fwd[0].ID != react1.ID || fwd[1].ID != edit1.ID || next == 0 {
			t.Fatalf("forward page %v next %d err %v", ids(fwd), next, err)
		}
		// Visibility bound: nothing after upTo.
		if evs, _, _ := s.Relations(ctx, room, root.ID, RelationsQuery{Limit: 100, UpTo: edit1.StreamPos}); len(evs) != 2 {
			t.Fatalf("relations up to edit1: %v", ids(evs))
		}
		rec, _, err := s.Relations(ctx, room, root.ID, RelationsQuery{Limit: 100, Recurse: true, RelType: RelAnnotation})
		if err != nil || len(rec) != 3 || rec[0].ID != deep.ID {
			t.Fatalf("recursive annotations %v %v", ids(rec), err)
		}

		bundled, err := s.Bundle(ctx, []*Event{root, thread1}, uBob, math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		if root.Unsigned["m.relations"] != nil {
			t.Fatalf("Bundle modified its input")
		}
		var got struct {
			Unsigned struct {
				Relations struct {
					Replace *struct {
						EventID id.EventID `json:"event_id"`
					} `json:"m.replace"`
					Thread *struct {
						Latest struct {
							EventID id.EventID `json:"event_id"`
						} `json:"latest_event"`
						Count        int  `json:"count"`
						Participated bool `json:"current_user_participated"`
					} `json:"m.thread"`
				} `json:"m.relations"`
			} `json:"unsigned"`
		}
		if err := json.Unmarshal(bundled[0].MarshalClient(), &got); err != nil {
			t.Fatal(err)
		}
		rel := got.Unsigned.Relations
		if rel.Replace == nil || rel.Replace.EventID != edit2.ID {
			t.Fatalf("bundled edit %+v, want %s", rel.Replace, edit2.ID)
		}
		if rel.Thread == nil || rel.Thread.Count != 2 || rel.Thread.Latest.EventID != thread2.ID || !rel.Thread.Participated {
			t.Fatalf("thread summary %+v", rel.Thread)
		}
		if refs, _ := bundled[0].Unsigned["m.relations"].(map[string]any)["m.reference"].(map[string]any); refs == nil ||
			fmt.Sprint(refs["chunk"]) != fmt.Sprint([]map[string]id.EventID{{"event_id": ref.ID}}) {
			t.Fatalf("bundled references %v", refs)
		}
		if bundled[1] != thread1 {
			t.Fatalf("an event without aggregations was copied")
		}
		carol, _ := s.Bundle(ctx, []*Event{root}, uCarol, math.MaxInt64)
		if th := carol[0].Unsigned["m.relations"].(map[string]any)["m.thread"].(map[string]any); th["current_user_participated"] != false {
			t.Fatalf("carol participated: %v", th)
		}

		// Threads: one in this room; participated for bob (replier) and alice (root sender), not carol.
		other := must[*Event](t)(s.Send(ctx, msg(room, uBob, "other root")))
		reply := must[*Event](t)(s.Send(ctx, relReq(room, uBob, "m.room.message", RelThread, other.ID, `"body":"own thread",`)))
		threads, next, err := s.Threads(ctx, room, ThreadsQuery{User: uAlice})
		if err != nil || next != 0 || len(threads) != 2 || threads[0].ID != other.ID || threads[1].ID != root.ID {
			t.Fatalf("threads %v next %d err %v", ids(threads), next, err)
		}
		page, next, err := s.Threads(ctx, room, ThreadsQuery{User: uAlice, Limit: 1})
		if err != nil || len(page) != 1 || next == 0 {
			t.Fatalf("threads page 1: %v %d %v", ids(page), next, err)
		}
		page, next, err = s.Threads(ctx, room, ThreadsQuery{User: uAlice, Limit: 1, From: next})
		if err != nil || len(page) != 1 || page[0].ID != root.ID || next != 0 {
			t.Fatalf("threads page 2: %v %d %v", ids(page), next, err)
		}
		mine, _, _ := s.Threads(ctx, room, ThreadsQuery{User: uAlice, Participated: true})
		if len(mine) != 1 || mine[0].ID != root.ID {
			t.Fatalf("alice participated in %v", ids(mine))
		}
		if none, _, _ := s.Threads(ctx, room, ThreadsQuery{User: uCarol, Participated: true}); len(none) != 0 {
			t.Fatalf("carol participated in %v", ids(none))
		}
		if early, _, _ := s.Threads(ctx, room, ThreadsQuery{User: uAlice, UpTo: reply.StreamPos - 1}); len(early) != 1 {
			t.Fatalf("threads before the reply: %v", ids(early))
		}

		// Redacting an edit removes it from the index and from the bundle.
		must[*Event](t)(s.Send(ctx, SendRequest{RoomID: room, Sender: uAlice, Type: "m.room.redaction", Redacts: edit2.ID,
			Content: json.RawMessage(`{}`)}))
		bundled, _ = s.Bundle(ctx, []*Event{root}, uAlice, math.MaxInt64)
		if r := bundled[0].Unsigned["m.relations"].(map[string]any)["m.replace"].(clientEvent); r.EventID != edit1.ID {
			t.Fatalf("after redaction the bundled edit is %s, want %s", r.EventID, edit1.ID)
		}

		// Search: case-insensitive, all words, only the rooms given, newest first, paged.
		other2 := must[id.RoomID](t)(s.CreateRoom(ctx, uCarol, &mautrix.ReqCreateRoom{}))
		must[*Event](t)(s.Send(ctx, msg(other2, uCarol, "secret root message")))
		hits, next, err := s.Search(ctx, SearchQuery{Rooms: []id.RoomID{room}, Term: "ROOT message"})
		if err != nil || next != 0 || len(hits) != 1 || hits[0].ID != root.ID {
			t.Fatalf("search: %v %d %v", ids(hits), next, err)
		}
		for i := range 5 {
			must[*Event](t)(s.Send(ctx, msg(room, uAlice, fmt.Sprintf("needle %d 100%%_done", i))))
		}
		hits, next, _ = s.Search(ctx, SearchQuery{Rooms: []id.RoomID{room, other2}, Term: "needle", Limit: 3})
		if len(hits) != 3 || next == 0 {
			t.Fatalf("search page 1: %v %d", ids(hits), next)
		}
		more, next, _ := s.Search(ctx, SearchQuery{Rooms: []id.RoomID{room}, Term: "needle", Limit: 3, Before: next})
		if len(more) != 2 || next != 0 || more[0].StreamPos >= hits[2].StreamPos {
			t.Fatalf("search page 2: %v %d", ids(more), next)
		}
		if n, err := s.SearchCount(ctx, SearchQuery{Rooms: []id.RoomID{room}, Term: "needle", Before: 1}); err != nil || n != 5 {
			t.Fatalf("search count %d %v, want 5", n, err)
		}
		// LIKE wildcards in the term are literal.
		if w, _, _ := s.Search(ctx, SearchQuery{Rooms: []id.RoomID{room}, Term: "0%_d"}); len(w) != 5 {
			t.Fatalf("literal %%_ matched %d", len(w))
		}
		if w, _, _ := s.Search(ctx, SearchQuery{Rooms: []id.RoomID{room}, Term: "n%e"}); len(w) != 0 {
			t.Fatalf("%% acted as a wildcard: %v", ids(w))
		}
	})
}

// TestUpgradeFromV1 creates a database with the version 1 schema (the first migration only), fills it with
// events written by the current code, and checks that opening it runs the upgrade and indexes the old events.
func TestUpgradeFromV1(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			ctx := t.Context()
			src := newService(t, dbtest.Open(t, kind))
			room := must[id.RoomID](t)(src.CreateRoom(ctx, uAlice, &mautrix.ReqCreateRoom{}))
			root := must[*Event](t)(src.Send(ctx, msg(room, uAlice, "Hello World")))
			edit := must[*Event](t)(src.Send(ctx, relReq(room, uAlice, "m.room.message", RelReplace, root.ID,
				`"body":"* hello again","m.new_content":{"body":"hello again"},`)))
			reply := must[*Event](t)(src.Send(ctx, relReq(room, uAlice, "m.room.message", RelThread, root.ID, `"body":"reply",`)))

			db := dbtest.Open(t, kind)
			old := db.Child("rooms_version", upgradeTable[:1], dbutil.ZeroLogger(nopLog))
			if err := old.Upgrade(ctx); err != nil {
				t.Fatalf("create v1 schema: %v", err)
			}
			for _, table := range []string{"rooms_rooms", "rooms_events", "rooms_current_state"} {
				copyTable(t, src.db, old, table)
			}
			maxPos := must[int64](t)(src.MaxStreamPos(ctx))
			if _, err := old.Exec(ctx, `UPDATE rooms_stream SET pos = $1 WHERE id = 0`, maxPos); err != nil {
				t.Fatal(err)
			}
			var v int
			if err := db.QueryRow(ctx, `SELECT version FROM rooms_version`).Scan(&v); err != nil || v != 1 {
				t.Fatalf("version before upgrade %d %v", v, err)
			}

			s := newService(t, db)
			if err := db.QueryRow(ctx, `SELECT version FROM rooms_version`).Scan(&v); err != nil || v != len(upgradeTable) {
				t.Fatalf("version after upgrade %d %v", v, err)
			}
			rels, _, err := s.Relations(ctx, room, root.ID, RelationsQuery{Limit: 10})
			if err != nil || len(rels) != 2 || rels[0].ID != reply.ID || rels[1].ID != edit.ID {
				t.Fatalf("relations after upgrade %v %v", ids(rels), err)
			}
			hits, _, err := s.Search(ctx, SearchQuery{Rooms: []id.RoomID{room}, Term: "hello"})
			if err != nil || len(hits) != 2 || hits[0].ID != edit.ID || hits[1].ID != root.ID {
				t.Fatalf("search after upgrade %v %v", ids(hits), err)
			}
			// The upgraded database keeps working for new events.
			next := must[*Event](t)(s.Send(ctx, relReq(room, uAlice, "m.reaction", RelAnnotation, root.ID, "")))
			if rels, _, _ = s.Relations(ctx, room, root.ID, RelationsQuery{Limit: 10}); len(rels) != 3 || rels[0].ID != next.ID {
				t.Fatalf("relations after new event %v", ids(rels))
			}
		})
	}
}

// copyTable copies every row of table from src to dst (same columns in both).
func copyTable(t *testing.T, src, dst *dbutil.Database, table string) {
	t.Helper()
	ctx := t.Context()
	rows, err := src.Query(ctx, `SELECT * FROM `+table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	marks := ""
	for i := range cols {
		if i > 0 {
			marks += ", "
		}
		marks += fmt.Sprintf("$%d", i+1)
	}
	var all [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		all = append(all, vals)
	}
	for _, vals := range all {
		colList := ""
		for i, c := range cols {
			if i > 0 {
				colList += ", "
			}
			colList += c
		}
		if _, err := dst.Exec(ctx, `INSERT INTO `+table+` (`+colList+`) VALUES (`+marks+`)`, vals...); err != nil {
			t.Fatalf("copy %s: %v", table, err)
		}
	}
}
