package rooms

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// Relation types the service aggregates.
const (
	RelReplace    = "m.replace"
	RelAnnotation = "m.annotation"
	RelThread     = "m.thread"
	RelReference  = "m.reference"
)

// maxRelationDepth is how far Relations follows relations of relations when asked to recurse (the spec's
// recommended depth).
const maxRelationDepth = 3

// indexEvent records the relation (content["m.relates_to"] with rel_type and event_id) and, for m.room.message,
// the lower-cased body of ev. It runs inside persist's transaction, so reads never see an event without its
// index rows.
func (s *Service) indexEvent(ctx context.Context, ev *Event, content map[string]any) error {
	if rel, ok := content["m.relates_to"].(map[string]any); ok {
		relType, _ := rel["rel_type"].(string)
		target, _ := rel["event_id"].(string)
		if relType != "" && target != "" {
			_, err := s.db.Exec(ctx, `INSERT INTO rooms_relations (event_id, room_id, relates_to, rel_type, type, sender,
					stream_pos, origin_server_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
				ev.ID, ev.RoomID, target, relType, ev.Type, ev.Sender, ev.StreamPos, ev.OriginServerTS)
			if err != nil {
				return fmt.Errorf("index relation of %s: %w", ev.ID, err)
			}
		}
	}
	if ev.Type == "m.room.message" && ev.StateKey == nil {
		if body, ok := content["body"].(string); ok && body != "" {
			_, err := s.db.Exec(ctx, `INSERT INTO rooms_search (stream_pos, room_id, body) VALUES ($1, $2, $3)`,
				ev.StreamPos, ev.RoomID, strings.ToLower(body))
			if err != nil {
				return fmt.Errorf("index body of %s: %w", ev.ID, err)
			}
		}
	}
	return nil
}

// unindexEvent drops the index rows of a redacted event: redaction strips m.relates_to and body.
func (s *Service) unindexEvent(ctx context.Context, ev *Event) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM rooms_relations WHERE event_id = $1`, ev.ID); err != nil {
		return fmt.Errorf("unindex relation of %s: %w", ev.ID, err)
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM rooms_search WHERE stream_pos = $1`, ev.StreamPos); err != nil {
		return fmt.Errorf("unindex body of %s: %w", ev.ID, err)
	}
	return nil
}

// RelationsQuery selects and pages the events relating to one event.
type RelationsQuery struct {
	// RelType and EventType filter by relation type and event type ("" = any).
	RelType, EventType string
	// Dir is 'b' (newest first, the default) or 'f' (oldest first).
	Dir byte
	// From is a stream token as in Messages (position t means "just after t"); HasFrom false starts at the
	// newest (b) or oldest (f) relation.
	From    int64
	HasFrom bool
	// To bounds the other end (exclusive for 'b', inclusive for 'f'); 0 = no bound.
	To int64
	// Limit is the page size (default 5, at most 1000).
	Limit int
	// Recurse follows relations of relations up to three levels.
	Recurse bool
	// UpTo is the newest stream position the reader may see (math.MaxInt64 for a joined member).
	UpTo int64
}

// Relations returns one page of the events relating to eventID in roomID, and the token of the next page (0
// when there is none). With Recurse, the filters apply to the events at every depth.
func (s *Service) Relations(ctx context.Context, roomID id.RoomID, eventID id.EventID, q RelationsQuery) ([]*Event, int64, error) {
	if q.Limit <= 0 {
		q.Limit = 5
	}
	q.Limit = min(q.Limit, 1000)
	if q.UpTo == 0 {
		q.UpTo = math.MaxInt64
	}
	args := []any{roomID, eventID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var query strings.Builder
	if q.Recurse {
		query.WriteString(`WITH RECURSIVE tree (event_id, depth) AS (
				SELECT event_id, 1 FROM rooms_relations WHERE room_id = $1 AND relates_to = $2
				UNION
				SELECT r.event_id, t.depth + 1 FROM rooms_relations r JOIN tree t ON r.relates_to = t.event_id
				WHERE r.room_id = $1 AND t.depth < ` + strconv.Itoa(maxRelationDepth) + `)
			SELECT ` + eventColumns + ` FROM rooms_relations r
			JOIN rooms_events e ON e.event_id = r.event_id
			WHERE r.event_id IN (SELECT event_id FROM tree)`)
	} else {
		query.WriteString(`SELECT ` + eventColumns + ` FROM rooms_relations r
			JOIN rooms_events e ON e.event_id = r.event_id
			WHERE r.room_id = $1 AND r.relates_to = $2`)
	}
	if q.RelType != "" {
		query.WriteString(` AND r.rel_type = ` + arg(q.RelType))
	}
	if q.EventType != "" {
		query.WriteString(` AND r.type = ` + arg(q.EventType))
	}
	query.WriteString(` AND r.stream_pos <= ` + arg(q.UpTo))
	switch q.Dir {
	case 'b', 0:
		if q.HasFrom {
			query.WriteString(` AND r.stream_pos <= ` + arg(q.From))
		}
		if q.To > 0 {
			query.WriteString(` AND r.stream_pos > ` + arg(q.To))
		}
		query.WriteString(` ORDER BY r.stream_pos DESC`)
	case 'f':
		if q.HasFrom {
			query.WriteString(` AND r.stream_pos > ` + arg(q.From))
		}
		if q.To > 0 {
			query.WriteString(` AND r.stream_pos <= ` + arg(q.To))
		}
		query.WriteString(` ORDER BY r.stream_pos`)
	default:
		return nil, 0, mxerr.InvalidParam("dir must be b or f")
	}
	query.WriteString(` LIMIT ` + arg(q.Limit+1))
	evs, err := s.queryEvents(ctx, query.String(), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("load relations of %s: %w", eventID, err)
	}
	if len(evs) <= q.Limit {
		return evs, 0, nil
	}
	evs = evs[:q.Limit]
	last := evs[len(evs)-1].StreamPos
	if q.Dir == 'f' {
		return evs, last, nil
	}
	return evs, last - 1, nil
}

// ThreadsQuery selects and pages the thread roots of a room.
type ThreadsQuery struct {
	// User is the reader; with Participated only threads they started or replied in are listed.
	User         id.UserID
	Participated bool
	// From is the token of a previous page (0 = start with the most recently active thread).
	From int64
	// Limit is the page size (default 10, at most 100).
	Limit int
	// UpTo is the newest stream position the reader may see (math.MaxInt64 for a joined member).
	UpTo int64
}

// Threads returns the root events of a room's threads, most recently active first, and the token of the next
// page (0 when there is none). A thread is active at the position of its latest m.thread event the reader may
// see.
func (s *Service) Threads(ctx context.Context, roomID id.RoomID, q ThreadsQuery) ([]*Event, int64, error) {
	if q.Limit <= 0 {
		q.Limit = 10
	}
	q.Limit = min(q.Limit, 100)
	if q.UpTo == 0 {
		q.UpTo = math.MaxInt64
	}
	if q.From <= 0 {
		q.From = math.MaxInt64
	}
	participated := ""
	if q.Participated {
		participated = ` AND (t.mine > 0 OR e.sender = $2)`
	}
	rows, err := s.db.Query(ctx, `SELECT t.root, t.latest FROM (
			SELECT relates_to AS root, MAX(stream_pos) AS latest, SUM(CASE WHEN sender = $2 THEN 1 ELSE 0 END) AS mine
			FROM rooms_relations WHERE room_id = $1 AND rel_type = 'm.thread' AND stream_pos <= $3
			GROUP BY relates_to) t
		JOIN rooms_events e ON e.event_id = t.root AND e.room_id = $1
		WHERE t.latest <= $4 AND e.stream_pos <= $3`+participated+`
		ORDER BY t.latest DESC LIMIT $5`, roomID, q.User, q.UpTo, q.From, q.Limit+1)
	if err != nil {
		return nil, 0, fmt.Errorf("load threads of %s: %w", roomID, err)
	}
	type root struct {
		id     id.EventID
		latest int64
	}
	var roots []root
	for rows.Next() {
		var r root
		if err = rows.Scan(&r.id, &r.latest); err != nil {
			rows.Close()
			return nil, 0, fmt.Errorf("load threads of %s: %w", roomID, err)
		}
		roots = append(roots, r)
	}
	rows.Close()
	if err = rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("load threads of %s: %w", roomID, err)
	}
	var next int64
	if len(roots) > q.Limit {
		roots = roots[:q.Limit]
		next = roots[len(roots)-1].latest - 1
	}
	out := make([]*Event, 0, len(roots))
	for _, r := range roots {
		ev, err := s.Event(ctx, r.id)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, ev)
	}
	return out, next, nil
}

// Bundle returns evs with the spec's bundled aggregations in unsigned["m.relations"], as user sees them when
// they may read up to stream position upTo (math.MaxInt64 for a joined member):
//   - "m.replace": the latest edit (by origin_server_ts, then event ID) sent by the original's sender;
//   - "m.thread": {latest_event, count, current_user_participated} for a thread root;
//   - "m.reference": {chunk: [{event_id}]} of the events referencing it.
//
// Events that gain an aggregation are copied; evs and the events in it are not modified. Redacted and state
// events get none.
func (s *Service) Bundle(ctx context.Context, evs []*Event, user id.UserID, upTo int64) ([]*Event, error) {
	if upTo == 0 {
		upTo = math.MaxInt64
	}
	byRoom := map[id.RoomID][]*Event{}
	for _, ev := range evs {
		if ev != nil && !ev.Redacted && ev.StateKey == nil {
			byRoom[ev.RoomID] = append(byRoom[ev.RoomID], ev)
		}
	}
	if len(byRoom) == 0 {
		return evs, nil
	}
	bundles := map[id.EventID]map[string]any{}
	for roomID, targets := range byRoom {
		for chunk := range slices.Chunk(targets, 200) {
			if err := s.bundleChunk(ctx, roomID, chunk, user, upTo, bundles); err != nil {
				return nil, err
			}
		}
	}
	if len(bundles) == 0 {
		return evs, nil
	}
	out := make([]*Event, len(evs))
	for i, ev := range evs {
		out[i] = ev
		if ev == nil {
			continue
		}
		if b := bundles[ev.ID]; b != nil {
			cp := *ev
			cp.Unsigned = maps.Clone(ev.Unsigned)
			if cp.Unsigned == nil {
				cp.Unsigned = map[string]any{}
			}
			cp.Unsigned["m.relations"] = b
			out[i] = &cp
		}
	}
	return out, nil
}

func (s *Service) bundleChunk(ctx context.Context, roomID id.RoomID, targets []*Event, user id.UserID, upTo int64,
	bundles map[id.EventID]map[string]any) error {
	args := []any{roomID, upTo}
	marks := make([]string, 0, len(targets))
	byID := make(map[id.EventID]*Event, len(targets))
	for _, ev := range targets {
		args = append(args, ev.ID)
		marks = append(marks, "$"+strconv.Itoa(len(args)))
		byID[ev.ID] = ev
	}
	in := strings.Join(marks, ", ")
	add := func(target id.EventID, key string, v any) {
		b := bundles[target]
		if b == nil {
			b = map[string]any{}
			bundles[target] = b
		}
		b[key] = v
	}

	// Threads: count, latest reply and whether user took part, aggregated by the database.
	type thread struct {
		root          id.EventID
		count, latest int64
		mine          int64
	}
	var threads []thread
	userMark := "$" + strconv.Itoa(len(args)+1)
	rows, err := s.db.Query(ctx, `SELECT relates_to, COUNT(*), MAX(stream_pos),
			SUM(CASE WHEN sender = `+userMark+` THEN 1 ELSE 0 END)
		FROM rooms_relations WHERE room_id = $1 AND rel_type = 'm.thread' AND stream_pos <= $2 AND relates_to IN (`+in+`)
		GROUP BY relates_to`, append(slices.Clip(args), user)...)
	if err != nil {
		return fmt.Errorf("aggregate threads in %s: %w", roomID, err)
	}
	for rows.Next() {
		var t thread
		if err = rows.Scan(&t.root, &t.count, &t.latest, &t.mine); err != nil {
			rows.Close()
			return fmt.Errorf("aggregate threads in %s: %w", roomID, err)
		}
		threads = append(threads, t)
	}
	rows.Close()
	if err = rows.Err(); err != nil {
		return fmt.Errorf("aggregate threads in %s: %w", roomID, err)
	}
	for _, t := range threads {
		latest, err := s.queryEvent(ctx, `SELECT `+eventColumns+` FROM rooms_events e WHERE e.stream_pos = $1`, t.latest)
		if err != nil || latest == nil {
			return fmt.Errorf("load latest event of thread %s: %w", t.root, err)
		}
		add(t.root, RelThread, map[string]any{
			"latest_event":              latest.client(time.Now()),
			"count":                     t.count,
			"current_user_participated": t.mine > 0 || byID[t.root].Sender == user,
		})
	}

	// Edits: the latest m.replace by the original's sender.
	type edit struct {
		target, id id.EventID
		sender     id.UserID
		evType     string
		ts         int64
	}
	latest := map[id.EventID]edit{}
	rows, err = s.db.Query(ctx, `SELECT relates_to, event_id, sender, type, origin_server_ts FROM rooms_relations
		WHERE room_id = $1 AND rel_type = 'm.replace' AND stream_pos <= $2 AND relates_to IN (`+in+`)`, args...)
	if err != nil {
		return fmt.Errorf("aggregate edits in %s: %w", roomID, err)
	}
	for rows.Next() {
		var e edit
		if err = rows.Scan(&e.target, &e.id, &e.sender, &e.evType, &e.ts); err != nil {
			rows.Close()
			return fmt.Errorf("aggregate edits in %s: %w", roomID, err)
		}
		// The spec's validity rules: same sender and same event type as the original.
		orig := byID[e.target]
		if orig == nil || e.sender != orig.Sender || e.evType != orig.Type {
			continue
		}
		if cur, ok := latest[e.target]; !ok || cmp.Or(cmp.Compare(e.ts, cur.ts), strings.Compare(string(e.id), string(cur.id))) > 0 {
			latest[e.target] = e
		}
	}
	rows.Close()
	if err = rows.Err(); err != nil {
		return fmt.Errorf("aggregate edits in %s: %w", roomID, err)
	}
	for target, e := range latest {
		ev, err := s.Event(ctx, e.id)
		if err != nil {
			return err
		}
		add(target, RelReplace, ev.client(time.Now()))
	}

	// References: the IDs of the referencing events, oldest first.
	rows, err = s.db.Query(ctx, `SELECT relates_to, event_id FROM rooms_relations
		WHERE room_id = $1 AND rel_type = 'm.reference' AND stream_pos <= $2 AND relates_to IN (`+in+`)
		ORDER BY stream_pos`, args...)
	if err != nil {
		return fmt.Errorf("aggregate references in %s: %w", roomID, err)
	}
	refs := map[id.EventID][]map[string]id.EventID{}
	for rows.Next() {
		var target, ref id.EventID
		if err = rows.Scan(&target, &ref); err != nil {
			rows.Close()
			return fmt.Errorf("aggregate references in %s: %w", roomID, err)
		}
		refs[target] = append(refs[target], map[string]id.EventID{"event_id": ref})
	}
	rows.Close()
	if err = rows.Err(); err != nil {
		return fmt.Errorf("aggregate references in %s: %w", roomID, err)
	}
	for target, chunk := range refs {
		add(target, RelReference, map[string]any{"chunk": chunk})
	}
	return nil
}
