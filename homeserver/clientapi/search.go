package clientapi

import (
	"cmp"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"maunium.net/go/mautrix"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
	hsync "github.com/passerelle/passerelle/homeserver/sync"
)

// searchRequest is the body of POST /search (only the room_events category exists).
type searchRequest struct {
	SearchCategories struct {
		RoomEvents *struct {
			SearchTerm string              `json:"search_term"`
			Keys       []string            `json:"keys"`
			Filter     *mautrix.FilterPart `json:"filter"`
			OrderBy    string              `json:"order_by"`
			Context    *struct {
				BeforeLimit *int `json:"before_limit"`
				AfterLimit  *int `json:"after_limit"`
			} `json:"event_context"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

// search answers POST /search: room_events over content.body in the rooms the user is joined to, newest first
// ("recent") or, within each page, by how often the words occur ("rank"), paged with next_batch.
func (a *API) search(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req searchRequest
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	re := req.SearchCategories.RoomEvents
	if re == nil {
		RespondJSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{}})
		return
	}
	if strings.TrimSpace(re.SearchTerm) == "" {
		RespondError(w, r, mxerr.MissingParam("search_term is empty"))
		return
	}
	if re.OrderBy != "" && re.OrderBy != "recent" && re.OrderBy != "rank" {
		RespondError(w, r, mxerr.InvalidParam("order_by must be recent or rank"))
		return
	}
	q := rooms.SearchQuery{Term: re.SearchTerm, Limit: 10}
	if s := r.URL.Query().Get("next_batch"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			RespondError(w, r, mxerr.InvalidParam("bad next_batch"))
			return
		}
		q.Before = n
	}
	ctx := r.Context()
	joined, err := a.rooms.RoomsForUser(ctx, au.User, "join")
	if err != nil {
		RespondError(w, r, err)
		return
	}
	f := re.Filter
	if f != nil && f.Limit > 0 {
		q.Limit = f.Limit
	}
	for _, room := range joined {
		if f != nil && (len(f.Rooms) > 0 && !slices.Contains(f.Rooms, room) || slices.Contains(f.NotRooms, room)) {
			continue
		}
		q.Rooms = append(q.Rooms, room)
	}
	if len(re.Keys) > 0 && !slices.Contains(re.Keys, "content.body") {
		// Only message bodies are indexed; a search of names or topics alone finds nothing here.
		q.Rooms = nil
	}
	evs, next, err := a.rooms.Search(ctx, q)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	count, err := a.rooms.SearchCount(ctx, q)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	evs = slices.DeleteFunc(evs, func(ev *rooms.Event) bool { return !hsync.PartAllows(f, ev.RoomID, ev.Sender, ev.Type) })
	words := strings.Fields(strings.ToLower(re.SearchTerm))
	type hit struct {
		ev   *rooms.Event
		rank float64
	}
	hits := make([]hit, 0, len(evs))
	for _, ev := range evs {
		hits = append(hits, hit{ev, searchRank(ev, words)})
	}
	if re.OrderBy == "rank" {
		slices.SortStableFunc(hits, func(x, y hit) int { return cmp.Compare(y.rank, x.rank) })
		evs = evs[:0]
		for _, h := range hits {
			evs = append(evs, h.ev)
		}
	}
	encoded, err := a.clientEvents(r, au, evs, math.MaxInt64)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	results := make([]map[string]any, 0, len(hits))
	for i, h := range hits {
		res := map[string]any{"rank": h.rank, "result": encoded[i]}
		if re.Context != nil {
			before, after := 5, 5
			if re.Context.BeforeLimit != nil {
				before = min(max(*re.Context.BeforeLimit, 0), 20)
			}
			if re.Context.AfterLimit != nil {
				after = min(max(*re.Context.AfterLimit, 0), 20)
			}
			c, err := a.searchContext(r, au, h.ev, before, after)
			if err != nil {
				RespondError(w, r, err)
				return
			}
			res["context"] = c
		}
		results = append(results, res)
	}
	out := map[string]any{"results": results, "highlights": words, "count": count}
	if next > 0 {
		out["next_batch"] = strconv.FormatInt(next, 10)
	}
	RespondJSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{"room_events": out}})
}

// searchRank counts how often the search words occur in the event's lower-cased body.
func searchRank(ev *rooms.Event, words []string) float64 {
	var c struct {
		Body string `json:"body"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	body := strings.ToLower(c.Body)
	n := 0
	for _, w := range words {
		n += strings.Count(body, w)
	}
	return float64(n)
}

// searchContext returns the events around a search result (events_before newest first, events_after oldest
// first) and /messages tokens for its start and end. Results come only from joined rooms, so every event of
// the room up to now is readable.
func (a *API) searchContext(r *http.Request, au *Auth, ev *rooms.Event, before, after int) (map[string]any, error) {
	ctx := r.Context()
	var evsBefore, evsAfter []*rooms.Event
	var err error
	if before > 0 && ev.StreamPos > 1 {
		if evsBefore, _, err = a.rooms.RoomEventsBetween(ctx, ev.RoomID, 0, ev.StreamPos-1, before); err != nil {
			return nil, err
		}
		slices.Reverse(evsBefore)
	}
	if after > 0 {
		if evsAfter, _, err = a.rooms.Messages(ctx, ev.RoomID, ev.StreamPos, 'f', after); err != nil {
			return nil, err
		}
	}
	start, end := ev.StreamPos-1, ev.StreamPos
	if len(evsBefore) > 0 {
		start = evsBefore[len(evsBefore)-1].StreamPos - 1
	}
	if len(evsAfter) > 0 {
		end = evsAfter[len(evsAfter)-1].StreamPos
	}
	beforeOut, err := a.clientEvents(r, au, evsBefore, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	afterOut, err := a.clientEvents(r, au, evsAfter, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"events_before": beforeOut, "events_after": afterOut,
		"start": hsync.Token{Events: max(start, 0)}.String(), "end": hsync.Token{Events: end}.String(),
	}, nil
}
