package clientapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
	hsync "github.com/passerelle/passerelle/homeserver/sync"
)

// eventContext answers GET /rooms/{roomID}/context/{eventID}: the event, up to limit/2 events either side, the
// room state at the event, and pagination tokens for /messages in both directions.
func (a *API) eventContext(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	limit := defaultMessagesLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 0 {
			RespondError(w, r, mxerr.InvalidParam("limit must be a non-negative integer"))
			return
		}
		limit = min(limit, maxMessagesLimit)
	}
	var filter *mautrix.FilterPart
	if s := r.URL.Query().Get("filter"); s != "" {
		filter = new(mautrix.FilterPart)
		if err := DecodeJSON([]byte(s), filter); err != nil {
			RespondError(w, r, mxerr.BadJSON("filter is not a valid room event filter"))
			return
		}
	}
	ctx := r.Context()
	upTo, peeking, err := a.readAccess(ctx, roomID, au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ev, err := a.visibleEvent(ctx, roomID, au.User, id.EventID(r.PathValue("eventID")), upTo, peeking)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	seen := []*rooms.Event{ev}
	before, after := limit/2, limit-limit/2
	var evsBefore, evsAfter []*rooms.Event
	if before > 0 && ev.StreamPos > 1 {
		evsBefore, _, err = a.rooms.RoomEventsBetween(ctx, roomID, 0, ev.StreamPos-1, before)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		slices.Reverse(evsBefore)
	}
	if after > 0 {
		got, _, err := a.rooms.Messages(ctx, roomID, ev.StreamPos, 'f', after)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		for _, e := range got {
			if e.StreamPos > ev.StreamPos && e.StreamPos <= upTo && len(evsAfter) < after {
				evsAfter = append(evsAfter, e)
			}
		}
		slices.SortFunc(evsAfter, func(x, y *rooms.Event) int { return cmpInt(x.StreamPos, y.StreamPos) })
	}
	state, err := a.rooms.StateAt(ctx, roomID, ev.StreamPos)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	start, end := ev.StreamPos-1, ev.StreamPos
	if len(evsBefore) > 0 {
		start = evsBefore[len(evsBefore)-1].StreamPos - 1
	}
	if len(evsAfter) > 0 {
		end = evsAfter[len(evsAfter)-1].StreamPos
	}
	list := func(evs []*rooms.Event) ([]json.RawMessage, error) {
		evs, err := a.rooms.FilterVisible(ctx, roomID, au.User, evs, peeking)
		if err != nil {
			return nil, err
		}
		shown := make([]*rooms.Event, 0, len(evs))
		for _, e := range evs {
			if hsync.PartAllows(filter, roomID, e.Sender, e.Type) {
				shown = append(shown, e)
			}
		}
		return a.clientEvents(r, au, shown, upTo)
	}
	evOut, err := a.clientEvents(r, au, seen, upTo)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	beforeOut, err := list(evsBefore)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	afterOut, err := list(evsAfter)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	stateOut := make([]json.RawMessage, 0, len(state))
	for _, e := range state {
		stateOut = append(stateOut, e.MarshalClient())
	}
	RespondJSON(w, http.StatusOK, map[string]any{
		"event": evOut[0], "events_before": beforeOut, "events_after": afterOut, "state": stateOut,
		"start": hsync.Token{Events: max(start, 0)}.String(), "end": hsync.Token{Events: end}.String(),
	})
}
