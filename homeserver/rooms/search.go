package rooms

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"
)

// searchScanRows bounds how many indexed messages one Search call examines, newest first; the caller pages
// on with the returned token.
const searchScanRows = 5000

// SearchQuery is a server-side message search over the lower-cased content.body of m.room.message events.
type SearchQuery struct {
	// Rooms are the rooms to search; the caller must pass only rooms the searcher may read.
	Rooms []id.RoomID
	// Term is matched case-insensitively: every whitespace-separated word must occur in the body.
	Term string
	// Before continues a previous search: only events with stream position <= Before (0 = from the newest).
	Before int64
	// Limit is the number of results wanted (default 10, at most 100).
	Limit int
}

// Search returns up to Limit matching events, newest first, and the token to continue from (0 when the
// search is complete). It examines at most searchScanRows indexed messages per call, so a page may come
// back short with a non-zero token. Matching is a SQL LIKE over the stored lower-cased body.
func (s *Service) Search(ctx context.Context, q SearchQuery) ([]*Event, int64, error) {
	words := strings.Fields(strings.ToLower(q.Term))
	if len(words) == 0 || len(q.Rooms) == 0 {
		return nil, 0, nil
	}
	if q.Limit <= 0 {
		q.Limit = 10
	}
	q.Limit = min(q.Limit, 100)
	if q.Before <= 0 {
		q.Before = math.MaxInt64
	}
	args := []any{q.Before}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	marks := make([]string, 0, len(q.Rooms))
	for _, r := range slices.Compact(slices.Sorted(slices.Values(q.Rooms))) {
		marks = append(marks, arg(r))
	}
	window := `SELECT stream_pos, body FROM rooms_search WHERE stream_pos <= $1 AND room_id IN (` +
		strings.Join(marks, ", ") + `) ORDER BY stream_pos DESC LIMIT ` + arg(searchScanRows)
	var cond strings.Builder
	for _, w := range words {
		cond.WriteString(` AND w.body LIKE ` + arg("%"+escapeLike(w)+"%") + ` ESCAPE '\'`)
	}
	limitMark := arg(q.Limit + 1)
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM (`+window+`) w
		JOIN rooms_events e ON e.stream_pos = w.stream_pos
		WHERE 1 = 1`+cond.String()+` ORDER BY w.stream_pos DESC LIMIT `+limitMark, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("search messages: %w", err)
	}
	if len(evs) > q.Limit {
		evs = evs[:q.Limit]
		return evs, evs[len(evs)-1].StreamPos - 1, nil
	}
	// Fewer hits than asked: the search is complete unless the scan window was full.
	var scanned, lowest int64
	err = s.db.QueryRow(ctx, `SELECT COUNT(*), COALESCE(MIN(stream_pos), 0) FROM (`+window+`) w`,
		args[:len(marks)+2]...).Scan(&scanned, &lowest)
	if err != nil {
		return nil, 0, fmt.Errorf("search messages: %w", err)
	}
	if scanned < searchScanRows || lowest <= 1 {
		return evs, 0, nil
	}
	return evs, lowest - 1, nil
}

// escapeLike escapes the LIKE wildcards of s for use with ESCAPE '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
