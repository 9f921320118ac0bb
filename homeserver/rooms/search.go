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

// searchScanRows bounds how many indexed messages one Search or SearchCount call examines, newest first; Search
// callers page on with the returned token, and SearchCount's answer is a lower bound beyond it.
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

// searchSQL builds the bounded scan window (the newest searchScanRows indexed messages of the rooms at or
// before position before) and the LIKE conditions on it, with their arguments. It returns "" when nothing
// can match.
func searchSQL(q SearchQuery, before int64) (window, cond string, args []any) {
	words := strings.Fields(strings.ToLower(q.Term))
	if len(words) == 0 || len(q.Rooms) == 0 {
		return "", "", nil
	}
	args = []any{before}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	marks := make([]string, 0, len(q.Rooms))
	for _, r := range slices.Compact(slices.Sorted(slices.Values(q.Rooms))) {
		marks = append(marks, arg(r))
	}
	window = `SELECT stream_pos, body FROM rooms_search WHERE stream_pos <= $1 AND room_id IN (` +
		strings.Join(marks, ", ") + `) ORDER BY stream_pos DESC LIMIT ` + arg(searchScanRows)
	var b strings.Builder
	for _, w := range words {
		b.WriteString(` AND w.body LIKE ` + arg("%"+escapeLike(w)+"%") + ` ESCAPE '\'`)
	}
	return window, b.String(), args
}

// Search returns up to Limit matching events, newest first, and the token to continue from: set when the page
// is full (there may be more) or when the scan window was exhausted before the page filled; 0 when the search
// is complete. It examines at most searchScanRows indexed messages per call. Matching is a SQL LIKE over the
// stored lower-cased body, so it works the same on SQLite and PostgreSQL.
func (s *Service) Search(ctx context.Context, q SearchQuery) ([]*Event, int64, error) {
	if q.Limit <= 0 {
		q.Limit = 10
	}
	q.Limit = min(q.Limit, 100)
	if q.Before <= 0 {
		q.Before = math.MaxInt64
	}
	window, cond, args := searchSQL(q, q.Before)
	if window == "" {
		return nil, 0, nil
	}
	// The window uses before, the rooms and the row bound; the LIKE patterns follow.
	nWindowArgs := len(slices.Compact(slices.Sorted(slices.Values(q.Rooms)))) + 2
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM (`+window+`) w
		JOIN rooms_events e ON e.stream_pos = w.stream_pos
		WHERE 1 = 1`+cond+` ORDER BY w.stream_pos DESC LIMIT $`+strconv.Itoa(len(args)+1), append(args, q.Limit)...)
	if err != nil {
		return nil, 0, fmt.Errorf("search messages: %w", err)
	}
	if len(evs) >= q.Limit {
		return evs, evs[len(evs)-1].StreamPos - 1, nil
	}
	// A short page: the search is complete unless the scan window was full.
	var scanned, lowest int64
	err = s.db.QueryRow(ctx, `SELECT COUNT(*), COALESCE(MIN(stream_pos), 0) FROM (`+window+`) w`,
		args[:nWindowArgs]...).Scan(&scanned, &lowest)
	if err != nil {
		return nil, 0, fmt.Errorf("search messages: %w", err)
	}
	if scanned < searchScanRows || lowest <= 1 {
		return evs, 0, nil
	}
	return evs, lowest - 1, nil
}

// SearchCount counts the matches of q (ignoring Before and Limit) among the newest searchScanRows indexed
// messages of its rooms: exact for rooms with fewer messages, a lower bound otherwise.
func (s *Service) SearchCount(ctx context.Context, q SearchQuery) (int, error) {
	window, cond, args := searchSQL(q, math.MaxInt64)
	if window == "" {
		return 0, nil
	}
	var n int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM (`+window+`) w WHERE 1 = 1`+cond, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count search matches: %w", err)
	}
	return n, nil
}

// escapeLike escapes the LIKE wildcards of s for use with ESCAPE '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
