package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
	hsync "github.com/passerelle/passerelle/homeserver/sync"
)

// registerRelations mounts the v1 relations and threads endpoints.
func (a *API) registerRelations(mux *http.ServeMux) {
	const p = "/_matrix/client/v1"
	mux.HandleFunc("GET "+p+"/rooms/{roomID}/relations/{eventID}", a.authed(a.relations))
	mux.HandleFunc("GET "+p+"/rooms/{roomID}/relations/{eventID}/{relType}", a.authed(a.relations))
	mux.HandleFunc("GET "+p+"/rooms/{roomID}/relations/{eventID}/{relType}/{eventType}", a.authed(a.relations))
	mux.HandleFunc("GET "+p+"/rooms/{roomID}/threads", a.authed(a.threads))
}

// clientEvents bundles aggregations into evs for the reader and encodes them in the client format.
func (a *API) clientEvents(r *http.Request, au *Auth, evs []*rooms.Event, upTo int64) ([]json.RawMessage, error) {
	evs, err := a.rooms.Bundle(r.Context(), evs, au.User, upTo)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, hsync.ClientEvent(ev, au.User, au.Device))
	}
	return out, nil
}

// pageLimit parses ?limit= (def when absent), capped at most.
func pageLimit(r *http.Request, def, most int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, mxerr.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, most), nil
}

// relations answers GET /rooms/{roomID}/relations/{eventID}[/{relType}[/{eventType}]].
func (a *API) relations(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ctx := r.Context()
	upTo, err := a.readableUpTo(ctx, roomID, au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	parent, err := a.visibleEvent(ctx, roomID, au.User, id.EventID(r.PathValue("eventID")), upTo, false)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	q := r.URL.Query()
	rq := rooms.RelationsQuery{RelType: r.PathValue("relType"), EventType: r.PathValue("eventType"), UpTo: upTo, Dir: 'b'}
	switch q.Get("dir") {
	case "", "b":
	case "f":
		rq.Dir = 'f'
	default:
		RespondError(w, r, mxerr.InvalidParam("dir must be b or f"))
		return
	}
	if rq.Limit, err = pageLimit(r, 5, 1000); err != nil {
		RespondError(w, r, err)
		return
	}
	if s := q.Get("from"); s != "" {
		if rq.From, err = hsync.ParseStreamToken(s); err != nil {
			RespondError(w, r, mxerr.InvalidParam("bad from token"))
			return
		}
		rq.HasFrom = true
	}
	if s := q.Get("to"); s != "" {
		if rq.To, err = hsync.ParseStreamToken(s); err != nil {
			RespondError(w, r, mxerr.InvalidParam("bad to token"))
			return
		}
	}
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		rq.Recurse = true
	default:
		RespondError(w, r, mxerr.InvalidParam("recurse must be true or false"))
		return
	}
	resp := map[string]any{"chunk": []json.RawMessage{}}
	if rq.Limit > 0 {
		evs, next, err := a.rooms.Relations(ctx, roomID, parent.ID, rq)
		if err == nil {
			// Relations sent while the user could not see the room stay hidden, like the events themselves.
			evs, err = a.rooms.FilterVisible(ctx, roomID, au.User, evs, false)
		}
		if err != nil {
			RespondError(w, r, err)
			return
		}
		chunk, err := a.clientEvents(r, au, evs, upTo)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		resp["chunk"] = chunk
		if next > 0 {
			resp["next_batch"] = hsync.Token{Events: next}.String()
		}
	}
	if rq.HasFrom {
		resp["prev_batch"] = q.Get("from")
	}
	if rq.Recurse {
		resp["recursion_depth"] = 3
	}
	RespondJSON(w, http.StatusOK, resp)
}

// threads answers GET /rooms/{roomID}/threads?include=all|participated&from=&limit=.
func (a *API) threads(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ctx := r.Context()
	upTo, err := a.readableUpTo(ctx, roomID, au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	q := r.URL.Query()
	tq := rooms.ThreadsQuery{User: au.User, UpTo: upTo}
	switch q.Get("include") {
	case "", "all":
	case "participated":
		tq.Participated = true
	default:
		RespondError(w, r, mxerr.InvalidParam("include must be all or participated"))
		return
	}
	if tq.Limit, err = pageLimit(r, 10, 100); err != nil {
		RespondError(w, r, err)
		return
	}
	if s := q.Get("from"); s != "" {
		if tq.From, err = hsync.ParseStreamToken(s); err != nil || tq.From <= 0 {
			RespondError(w, r, mxerr.InvalidParam("bad from token"))
			return
		}
	}
	resp := map[string]any{"chunk": []json.RawMessage{}}
	if tq.Limit > 0 {
		roots, next, err := a.rooms.Threads(ctx, roomID, tq)
		if err == nil {
			roots, err = a.rooms.FilterVisible(ctx, roomID, au.User, roots, false)
		}
		if err != nil {
			RespondError(w, r, err)
			return
		}
		chunk, err := a.clientEvents(r, au, roots, upTo)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		resp["chunk"] = chunk
		if next > 0 {
			resp["next_batch"] = hsync.Token{Events: next}.String()
		}
	}
	RespondJSON(w, http.StatusOK, resp)
}
