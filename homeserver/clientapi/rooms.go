package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
	hsync "github.com/passerelle/passerelle/homeserver/sync"
)

const (
	// defaultMessagesLimit is the /messages page size when the client gives none (the spec's suggestion).
	defaultMessagesLimit = 10
	// maxMessagesLimit caps one /messages page.
	maxMessagesLimit = 1000
)

func (a *API) createRoom(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req mautrix.ReqCreateRoom
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if req.RoomVersion != "" {
		if _, ok := supportedRoomVersions[string(req.RoomVersion)]; !ok {
			RespondError(w, r, mxerr.UnsupportedRoomVersion("room version %q is not supported", req.RoomVersion))
			return
		}
	}
	if req.Preset != "" && req.Preset != "private_chat" && req.Preset != "public_chat" && req.Preset != "trusted_private_chat" {
		RespondError(w, r, mxerr.InvalidParam("unknown preset %q", req.Preset))
		return
	}
	if req.Visibility != "" && req.Visibility != "public" && req.Visibility != "private" {
		RespondError(w, r, mxerr.InvalidParam("unknown visibility %q", req.Visibility))
		return
	}
	for _, u := range req.Invite {
		if _, _, err := u.ParseAndValidateRelaxed(); err != nil {
			RespondError(w, r, mxerr.InvalidParam("invalid user ID %q in invite", u))
			return
		}
	}
	if req.RoomAliasName != "" {
		alias := id.RoomAlias("#" + req.RoomAliasName + ":" + a.cfg.ServerName)
		if err := a.checkAliasNamespace(au, alias); err != nil {
			RespondError(w, r, err)
			return
		}
	}
	roomID, err := a.rooms.CreateRoom(r.Context(), au.User, &req)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, mautrix.RespCreateRoom{RoomID: roomID})
}

// resolveRoom turns a room ID or an alias of this server into a room ID.
func (a *API) resolveRoom(ctx context.Context, s string) (id.RoomID, error) {
	if strings.HasPrefix(s, "#") {
		alias, err := a.parseAlias(s)
		if err != nil {
			return "", err
		}
		return a.rooms.ResolveAlias(ctx, alias)
	}
	return parseRoomID(s)
}

func (a *API) parseAlias(s string) (id.RoomAlias, error) {
	if len(s) < 4 || s[0] != '#' || len(s) > 255 {
		return "", mxerr.InvalidParam("invalid room alias")
	}
	_, server, ok := strings.Cut(s[1:], ":")
	if !ok || server == "" {
		return "", mxerr.InvalidParam("invalid room alias")
	}
	if server != a.cfg.ServerName {
		return "", mxerr.NotFound("room alias is on another server (federation is not supported)")
	}
	return id.RoomAlias(s), nil
}

type reasonReq struct {
	Reason string    `json:"reason"`
	UserID id.UserID `json:"user_id"`
}

// profileContent returns the displayname/avatar_url to put in a member event of user.
func (a *API) profileContent(ctx context.Context, user id.UserID) map[string]any {
	content := map[string]any{}
	name, avatar, err := a.users.Profile(ctx, user)
	if err == nil {
		if name != "" {
			content["displayname"] = name
		}
		if avatar != "" {
			content["avatar_url"] = avatar
		}
	}
	return content
}

func (a *API) join(w http.ResponseWriter, r *http.Request, au *Auth) {
	target := r.PathValue("roomIDOrAlias")
	if target == "" {
		target = r.PathValue("roomID")
	}
	body, err := ReadBody(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	var req reasonReq
	var extra map[string]any
	if err := DecodeJSON(body, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	_ = DecodeJSON(body, &extra)
	ts, err := eventTS(r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ctx := r.Context()
	// Custom fields of the request body go into the member event, as Synapse does; the profile fills in
	// what the client did not set, and the fields the join API itself defines are not content.
	content := a.profileContent(ctx, au.User)
	for k, v := range extra {
		switch k {
		case "membership", "reason", "third_party_signed", "join_authorised_via_users_server":
		default:
			content[k] = v
		}
	}
	roomID, err := a.resolveRoom(ctx, target)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	// Joining a room one is already in changes nothing: answer with the room and store no new event.
	if m, _, err := a.rooms.MembershipOf(ctx, roomID, au.User); err != nil {
		RespondError(w, r, err)
		return
	} else if m == "join" {
		RespondJSON(w, http.StatusOK, mautrix.RespJoinRoom{RoomID: roomID})
		return
	}
	_, err = a.rooms.SetMembership(ctx, rooms.MembershipRequest{
		RoomID: roomID, Sender: au.User, Target: au.User, Membership: "join", Reason: req.Reason,
		Content: content, TS: ts, DeviceID: au.Device,
	})
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, mautrix.RespJoinRoom{RoomID: roomID})
}

// membershipOf handles invite, kick (membership leave), ban and unban (leave for a banned user).
func (a *API) membershipOf(action string) authHandler {
	return func(w http.ResponseWriter, r *http.Request, au *Auth) {
		roomID, err := pathRoom(r)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		var req reasonReq
		if err := ReadJSON(r, &req); err != nil {
			RespondError(w, r, err)
			return
		}
		if req.UserID == "" {
			RespondError(w, r, mxerr.MissingParam("user_id is required"))
			return
		}
		if _, _, err := req.UserID.ParseAndValidateRelaxed(); err != nil {
			RespondError(w, r, mxerr.InvalidParam("invalid user_id"))
			return
		}
		ts, err := eventTS(r, au)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		membership := action
		var content map[string]any
		switch action {
		case "unban":
			membership = "leave"
			m, _, err := a.rooms.MembershipOf(r.Context(), roomID, req.UserID)
			if err != nil {
				RespondError(w, r, err)
				return
			}
			if m != "ban" {
				RespondError(w, r, mxerr.Forbidden("%s is not banned", req.UserID))
				return
			}
		case "invite":
			// We have no federation: a remote invitee could never receive the invite. A local one must exist.
			if _, server, _ := req.UserID.ParseAndValidateRelaxed(); server != a.cfg.ServerName {
				RespondError(w, r, mxerr.Forbidden("cannot invite %s: this server does not federate with %s", req.UserID, server))
				return
			}
			if ok, err := a.users.Exists(r.Context(), req.UserID); err != nil {
				RespondError(w, r, err)
				return
			} else if !ok {
				RespondError(w, r, mxerr.NotFound("unknown user %s", req.UserID))
				return
			}
			content = a.profileContent(r.Context(), req.UserID)
		case "leave":
			// A kick removes someone who is in the room (or invited or knocking); kicking a user who never
			// joined or already left is refused, as Synapse and Complement expect.
			m, _, err := a.rooms.MembershipOf(r.Context(), roomID, req.UserID)
			if err != nil {
				RespondError(w, r, err)
				return
			}
			if m != "join" && m != "invite" && m != "knock" {
				RespondError(w, r, mxerr.Forbidden("%s is not in the room", req.UserID))
				return
			}
		}
		_, err = a.rooms.SetMembership(r.Context(), rooms.MembershipRequest{
			RoomID: roomID, Sender: au.User, Target: req.UserID, Membership: membership, Reason: req.Reason,
			Content: content, TS: ts, DeviceID: au.Device,
		})
		if err != nil {
			RespondError(w, r, err)
			return
		}
		RespondJSON(w, http.StatusOK, struct{}{})
	}
}

func (a *API) leave(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	var req reasonReq
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	ts, err := eventTS(r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	_, err = a.rooms.SetMembership(r.Context(), rooms.MembershipRequest{
		RoomID: roomID, Sender: au.User, Target: au.User, Membership: "leave", Reason: req.Reason, TS: ts, DeviceID: au.Device,
	})
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) forget(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	m, memberEv, err := a.rooms.MembershipOf(r.Context(), roomID, au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if m == "join" || m == "invite" {
		RespondError(w, r, mxerr.Unknown("leave the room before forgetting it"))
		return
	}
	if memberEv != nil {
		// Remembered against this leave (or ban): a later invite or join makes the room current again.
		if err := a.sync.Forget(r.Context(), au.User, roomID, memberEv.ID); err != nil {
			RespondError(w, r, err)
			return
		}
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// readEventContent reads a request body that is an event's content: a JSON object of at most MaxBodyBytes.
func readEventContent(r *http.Request) (json.RawMessage, error) {
	data, err := ReadBody(r)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := DecodeJSON(data, &obj); err != nil {
		return nil, err
	}
	if len(data) == 0 {
		data = []byte("{}")
	}
	return json.RawMessage(data), nil
}

func (a *API) send(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	evType, txnID := r.PathValue("eventType"), r.PathValue("txnID")
	if evType == "" || len(evType) > 255 {
		RespondError(w, r, mxerr.InvalidParam("invalid event type"))
		return
	}
	content, err := readEventContent(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ts, err := eventTS(r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	req := rooms.SendRequest{RoomID: roomID, Sender: au.User, Type: evType, Content: content, TS: ts, TxnID: txnID, DeviceID: au.Device}
	if evType == event.EventRedaction.Type {
		var c struct {
			Redacts id.EventID `json:"redacts"`
		}
		_ = json.Unmarshal(content, &c)
		req.Redacts = c.Redacts
	}
	ev, err := a.rooms.Send(r.Context(), req)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, mautrix.RespSendEvent{EventID: ev.ID})
}

func (a *API) putState(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	evType, stateKey := r.PathValue("eventType"), r.PathValue("stateKey")
	content, err := readEventContent(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ts, err := eventTS(r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if prev := a.sameState(r.Context(), roomID, au.User, evType, stateKey, content); prev != "" {
		RespondJSON(w, http.StatusOK, mautrix.RespSendEvent{EventID: prev})
		return
	}
	ev, err := a.rooms.Send(r.Context(), rooms.SendRequest{
		RoomID: roomID, Sender: au.User, Type: evType, StateKey: &stateKey, Content: content, TS: ts, DeviceID: au.Device,
	})
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, mautrix.RespSendEvent{EventID: ev.ID})
}

// sameState returns the ID of the current state event (evType, stateKey) when sender, still joined, sent it
// with the same content: setting it again would change nothing, so no new event is stored (as Synapse does,
// and Complement's TestRoomCreationReportsEventsToMyself expects). Otherwise, or on any error, "".
func (a *API) sameState(ctx context.Context, room id.RoomID, sender id.UserID, evType, stateKey string, content json.RawMessage) id.EventID {
	cur, err := a.rooms.StateEvent(ctx, room, evType, stateKey)
	if err != nil || cur == nil || cur.Sender != sender || cur.Redacted {
		return ""
	}
	if m, _, err := a.rooms.MembershipOf(ctx, room, sender); err != nil || m != "join" {
		return ""
	}
	newC, err1 := canonicaljson.Canonicalize(content)
	oldC, err2 := canonicaljson.Canonicalize(cur.Content)
	if err1 != nil || err2 != nil || !bytes.Equal(newC, oldC) {
		return ""
	}
	return cur.ID
}

// readableUpTo returns the newest stream position of room that user may read: everything while joined, up to
// the leave or ban after having been a member, unless they forgot the room; M_FORBIDDEN otherwise.
func (a *API) readableUpTo(ctx context.Context, room id.RoomID, user id.UserID) (int64, error) {
	m, ev, err := a.rooms.MembershipOf(ctx, room, user)
	if err != nil {
		if e := mxerr.As(err); e != nil && e.Code == "M_NOT_FOUND" {
			return 0, mxerr.Forbidden("you are not in this room")
		}
		return 0, err
	}
	switch m {
	case "join":
		return math.MaxInt64, nil
	case "leave", "ban":
		// Only someone who was joined keeps read access (up to when they left): rejecting an invite or
		// being banned without ever joining does not open the room's history.
		if ev != nil && ev.PrevMembership() == "join" {
			// Forgetting the room gives up that access.
			forgotten, err := a.sync.Forgotten(ctx, user, room, ev.ID)
			if err != nil {
				return 0, err
			}
			if !forgotten {
				return ev.StreamPos, nil
			}
		}
	}
	return 0, mxerr.Forbidden("you are not in this room")
}

// readAccess returns how far user may read room and whether they read it from outside (peeking): members and
// former members read up to readableUpTo; anyone else may read a world_readable room, subject to the per-event
// history visibility check (rooms.FilterVisible), and gets M_FORBIDDEN otherwise.
func (a *API) readAccess(ctx context.Context, room id.RoomID, user id.UserID) (int64, bool, error) {
	upTo, err := a.readableUpTo(ctx, room, user)
	if err == nil {
		return upTo, false, nil
	}
	if e := mxerr.As(err); e == nil || e.Code != "M_FORBIDDEN" {
		return 0, false, err
	}
	vis, verr := a.rooms.CurrentHistoryVisibility(ctx, room)
	if verr != nil {
		return 0, false, verr
	}
	if vis != rooms.VisibilityWorldReadable {
		return 0, false, err
	}
	return math.MaxInt64, true, nil
}

// visibleEvent loads eventID of roomID for user: it must be in that room, at or before upTo, and visible under
// the room's history visibility rules (peeking: see rooms.EventVisible). Anything else is M_NOT_FOUND, so a
// hidden event looks like a missing one, as the spec asks. The event returned carries unsigned.membership.
func (a *API) visibleEvent(ctx context.Context, roomID id.RoomID, user id.UserID, eventID id.EventID, upTo int64, peeking bool) (*rooms.Event, error) {
	ev, err := a.rooms.Event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev.RoomID != roomID || ev.StreamPos > upTo {
		return nil, mxerr.NotFound("event not found")
	}
	visible, err := a.rooms.FilterVisible(ctx, roomID, user, []*rooms.Event{ev}, peeking)
	if err != nil {
		return nil, err
	}
	if len(visible) == 0 {
		return nil, mxerr.NotFound("event not found")
	}
	return visible[0], nil
}

func (a *API) getState(w http.ResponseWriter, r *http.Request, au *Auth) {
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
	evType, stateKey := r.PathValue("eventType"), r.PathValue("stateKey")
	var ev *rooms.Event
	if upTo == math.MaxInt64 {
		ev, err = a.rooms.StateEvent(ctx, roomID, evType, stateKey)
	} else {
		ev, err = a.stateEventAt(ctx, roomID, upTo, evType, stateKey)
	}
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if r.URL.Query().Get("format") == "event" {
		writeRaw(w, ev.MarshalClient())
		return
	}
	content := ev.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	writeRaw(w, content)
}

func (a *API) stateEventAt(ctx context.Context, room id.RoomID, pos int64, evType, stateKey string) (*rooms.Event, error) {
	state, err := a.rooms.StateAt(ctx, room, pos)
	if err != nil {
		return nil, err
	}
	for _, ev := range state {
		if ev.Type == evType && ev.StateKeyString() == stateKey {
			return ev, nil
		}
	}
	return nil, mxerr.NotFound("state event not found")
}

func writeRaw(w http.ResponseWriter, raw json.RawMessage) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(raw)
}

func writeEvents(w http.ResponseWriter, evs []*rooms.Event) {
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.MarshalClient())
	}
	RespondJSON(w, http.StatusOK, out)
}

func (a *API) allState(w http.ResponseWriter, r *http.Request, au *Auth) {
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
	var state []*rooms.Event
	if upTo == math.MaxInt64 {
		state, err = a.rooms.CurrentState(ctx, roomID)
	} else {
		state, err = a.rooms.StateAt(ctx, roomID, upTo)
	}
	if err != nil {
		RespondError(w, r, err)
		return
	}
	writeEvents(w, state)
}

func (a *API) redact(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	target := id.EventID(r.PathValue("eventID"))
	if !strings.HasPrefix(string(target), "$") {
		RespondError(w, r, mxerr.InvalidParam("invalid event ID"))
		return
	}
	var req struct {
		Reason string `json:"reason"`
	}
	data, err := ReadBody(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if err := DecodeJSON(data, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	content := map[string]any{"redacts": target}
	if len(data) > 0 {
		_ = json.Unmarshal(data, &content)
		content["redacts"] = target
	}
	raw, _ := json.Marshal(content)
	ts, err := eventTS(r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ev, err := a.rooms.Send(r.Context(), rooms.SendRequest{
		RoomID: roomID, Sender: au.User, Type: event.EventRedaction.Type, Content: raw, TS: ts,
		TxnID: r.PathValue("txnID"), DeviceID: au.Device, Redacts: target,
	})
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, mautrix.RespSendEvent{EventID: ev.ID})
}

func (a *API) getEvent(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ctx := r.Context()
	upTo, err := a.readableUpTo(ctx, roomID, au.User)
	peeking := false
	if e := mxerr.As(err); e != nil && e.Code == "M_FORBIDDEN" {
		// Someone outside the room may still read the events that were world_readable when sent; the
		// per-event check below decides, and a refusal looks like a missing event (spec: 404).
		upTo, peeking, err = math.MaxInt64, true, nil
	}
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ev, err := a.visibleEvent(ctx, roomID, au.User, id.EventID(r.PathValue("eventID")), upTo, peeking)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	out, err := a.clientEvents(r, au, []*rooms.Event{ev}, upTo)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	writeRaw(w, out[0])
}

func (a *API) messages(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ctx := r.Context()
	upTo, peeking, err := a.readAccess(ctx, roomID, au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		RespondError(w, r, mxerr.InvalidParam("dir must be b or f"))
		return
	}
	limit := defaultMessagesLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			RespondError(w, r, mxerr.InvalidParam("limit must be a non-negative integer"))
			return
		}
		limit = min(n, maxMessagesLimit)
	}
	var filter *mautrix.FilterPart
	if s := q.Get("filter"); s != "" {
		filter = new(mautrix.FilterPart)
		if err := DecodeJSON([]byte(s), filter); err != nil {
			RespondError(w, r, mxerr.BadJSON("filter is not a valid room event filter"))
			return
		}
	}
	maxPos, err := a.rooms.MaxStreamPos(ctx)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	upTo = min(upTo, maxPos)
	parse := func(name string) (int64, bool, error) {
		s := q.Get(name)
		if s == "" {
			return 0, false, nil
		}
		v, err := hsync.ParseStreamToken(s)
		if err != nil {
			return 0, false, mxerr.InvalidParam("bad %s token", name)
		}
		return v, true, nil
	}
	from, hasFrom, err := parse("from")
	if err != nil {
		RespondError(w, r, err)
		return
	}
	to, hasTo, err := parse("to")
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if !hasFrom {
		if dir == "b" {
			from = upTo
		} else {
			from = 0
		}
	}
	resp := map[string]any{"start": hsync.Token{Events: from}.String(), "chunk": []json.RawMessage{}, "state": []json.RawMessage{}}
	var evs []*rooms.Event
	if limit > 0 {
		if dir == "b" {
			high := min(from, upTo)
			low := int64(0)
			if hasTo {
				low = to
			}
			if high > low {
				evs, _, err = a.rooms.RoomEventsBetween(ctx, roomID, low, high, limit)
				if err != nil {
					RespondError(w, r, err)
					return
				}
				slices.Reverse(evs)
			}
		} else {
			high := upTo
			if hasTo {
				high = min(high, to)
			}
			if high > from {
				got, _, err := a.rooms.Messages(ctx, roomID, from, 'f', limit+1)
				if err != nil {
					RespondError(w, r, err)
					return
				}
				for _, ev := range got {
					if ev.StreamPos > from && ev.StreamPos <= high {
						evs = append(evs, ev)
					}
				}
				slices.SortFunc(evs, func(x, y *rooms.Event) int { return cmpInt(x.StreamPos, y.StreamPos) })
				if len(evs) > limit {
					evs = evs[:limit]
				}
			}
		}
	}
	visible, err := a.rooms.FilterVisible(ctx, roomID, au.User, evs, peeking)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	shown := make([]*rooms.Event, 0, len(visible))
	for _, ev := range visible {
		if hsync.PartAllows(filter, roomID, ev.Sender, ev.Type) && containsURLAllows(filter, ev) {
			shown = append(shown, ev)
		}
	}
	chunk, err := a.clientEvents(r, au, shown, upTo)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	resp["chunk"] = chunk
	if filter != nil && filter.LazyLoadMembers && len(shown) > 0 {
		state, err := a.lazyMembers(ctx, roomID, shown)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		resp["state"] = state
	}
	// Like Synapse, every page that held events gets an end token; the page after the last one is empty and
	// has none, which is what tells the client it reached the end.
	if len(evs) > 0 {
		last := evs[len(evs)-1]
		end := last.StreamPos
		if dir == "b" {
			end = last.StreamPos - 1
		}
		resp["end"] = hsync.Token{Events: end}.String()
	}
	RespondJSON(w, http.StatusOK, resp)
}

// containsURLAllows applies a filter's contains_url: true keeps only events whose content has a url, false
// only those without.
func containsURLAllows(f *mautrix.FilterPart, ev *rooms.Event) bool {
	if f == nil || f.ContainsURL == nil {
		return true
	}
	var c struct {
		URL json.RawMessage `json:"url"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	return (len(c.URL) > 0) == *f.ContainsURL
}

// lazyMembers returns, for a lazy_load_members filter, the m.room.member events of the senders of evs as the
// room state had them at the newest of evs.
func (a *API) lazyMembers(ctx context.Context, room id.RoomID, evs []*rooms.Event) ([]json.RawMessage, error) {
	senders := make(map[string]bool, len(evs))
	newest := int64(0)
	for _, ev := range evs {
		senders[string(ev.Sender)] = true
		newest = max(newest, ev.StreamPos)
	}
	state, err := a.rooms.StateAt(ctx, room, newest)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(senders))
	for _, ev := range state {
		if ev.Type == event.StateMember.Type && senders[ev.StateKeyString()] {
			out = append(out, ev.MarshalClient())
		}
	}
	return out, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (a *API) members(w http.ResponseWriter, r *http.Request, au *Auth) {
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
	if at := r.URL.Query().Get("at"); at != "" {
		// The members as of a pagination token (a sync next_batch or a prev_batch), never past what the user may read.
		pos, err := hsync.ParseStreamToken(at)
		if err != nil {
			RespondError(w, r, mxerr.InvalidParam("bad at token"))
			return
		}
		upTo = min(upTo, pos)
	}
	var evs []*rooms.Event
	if upTo == math.MaxInt64 {
		evs, err = a.rooms.Members(ctx, roomID)
	} else {
		var state []*rooms.Event
		state, err = a.rooms.StateAt(ctx, roomID, upTo)
		for _, ev := range state {
			if ev.Type == event.StateMember.Type {
				evs = append(evs, ev)
			}
		}
	}
	if err != nil {
		RespondError(w, r, err)
		return
	}
	q := r.URL.Query()
	want, notWant := q.Get("membership"), q.Get("not_membership")
	chunk := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		m := ev.Membership()
		if (want != "" && m != want) || (notWant != "" && m == notWant) {
			continue
		}
		chunk = append(chunk, ev.MarshalClient())
	}
	RespondJSON(w, http.StatusOK, map[string]any{"chunk": chunk})
}

func (a *API) joinedMembers(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ctx := r.Context()
	// The list is the current one, so only current members may read it (a former member is refused).
	if upTo, err := a.readableUpTo(ctx, roomID, au.User); err != nil {
		RespondError(w, r, err)
		return
	} else if upTo != math.MaxInt64 {
		RespondError(w, r, mxerr.Forbidden("you are no longer in this room"))
		return
	}
	evs, err := a.rooms.Members(ctx, roomID)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	// Both keys are always present (null when unset), as the spec's schema lists them and Complement checks.
	type member struct {
		DisplayName *string `json:"display_name"`
		AvatarURL   *string `json:"avatar_url"`
	}
	joined := map[id.UserID]member{}
	for _, ev := range evs {
		if ev.Membership() != "join" {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.Content, &c)
		joined[id.UserID(ev.StateKeyString())] = member{DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
	}
	RespondJSON(w, http.StatusOK, map[string]any{"joined": joined})
}

func (a *API) joinedRooms(w http.ResponseWriter, r *http.Request, au *Auth) {
	list, err := a.rooms.RoomsForUser(r.Context(), au.User, "join")
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if list == nil {
		list = []id.RoomID{}
	}
	RespondJSON(w, http.StatusOK, mautrix.RespJoinedRooms{JoinedRooms: list})
}

func (a *API) getAlias(w http.ResponseWriter, r *http.Request, au *Auth) {
	alias, err := a.parseAlias(r.PathValue("alias"))
	if err != nil {
		RespondError(w, r, err)
		return
	}
	roomID, err := a.rooms.ResolveAlias(r.Context(), alias)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": []string{a.cfg.ServerName}})
}

// checkAliasNamespace refuses to touch an alias that an appservice other than the caller owns exclusively.
func (a *API) checkAliasNamespace(au *Auth, alias id.RoomAlias) error {
	if a.as == nil {
		return nil
	}
	if owner := a.as.ExclusiveAliasOwner(alias); owner != nil && owner != au.AS {
		return mxerr.Exclusive("this alias is reserved by an appservice")
	}
	return nil
}

func (a *API) putAlias(w http.ResponseWriter, r *http.Request, au *Auth) {
	alias, err := a.parseAlias(r.PathValue("alias"))
	if err != nil {
		RespondError(w, r, err)
		return
	}
	var req mautrix.ReqAliasCreate
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if req.RoomID == "" {
		RespondError(w, r, mxerr.MissingParam("room_id is required"))
		return
	}
	if _, err := parseRoomID(string(req.RoomID)); err != nil {
		RespondError(w, r, err)
		return
	}
	if err := a.checkAliasNamespace(au, alias); err != nil {
		RespondError(w, r, err)
		return
	}
	if m, _, err := a.rooms.MembershipOf(r.Context(), req.RoomID, au.User); err != nil || m != "join" {
		if err != nil && mxerr.As(err) == nil {
			RespondError(w, r, err)
			return
		}
		RespondError(w, r, mxerr.Forbidden("you are not in this room"))
		return
	}
	if err := a.rooms.SetAlias(r.Context(), alias, req.RoomID, au.User); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) deleteAlias(w http.ResponseWriter, r *http.Request, au *Auth) {
	alias, err := a.parseAlias(r.PathValue("alias"))
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if err := a.checkAliasNamespace(au, alias); err != nil {
		RespondError(w, r, err)
		return
	}
	if err := a.mayDeleteAlias(r.Context(), au, alias); err != nil {
		RespondError(w, r, err)
		return
	}
	roomID, err := a.rooms.ResolveAlias(r.Context(), alias)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if err := a.rooms.DeleteAlias(r.Context(), alias); err != nil {
		RespondError(w, r, err)
		return
	}
	a.dropCanonicalAlias(r.Context(), roomID, alias, au)
	RespondJSON(w, http.StatusOK, struct{}{})
}

// dropCanonicalAlias removes a deleted alias from the room's m.room.canonical_alias (alias and alt_aliases),
// as the deleting user, so that the room no longer advertises an alias that does not resolve. The deletion
// itself stands even when the user may not change that state event (then the stale entry stays; logged).
func (a *API) dropCanonicalAlias(ctx context.Context, roomID id.RoomID, alias id.RoomAlias, au *Auth) {
	ev, err := a.rooms.StateEvent(ctx, roomID, event.StateCanonicalAlias.Type, "")
	if err != nil || ev == nil {
		return
	}
	var content map[string]any
	if json.Unmarshal(ev.Content, &content) != nil || content == nil {
		return
	}
	changed := false
	if content["alias"] == string(alias) {
		delete(content, "alias")
		changed = true
	}
	if alts, ok := content["alt_aliases"].([]any); ok {
		kept := make([]any, 0, len(alts))
		for _, v := range alts {
			if v != string(alias) {
				kept = append(kept, v)
			}
		}
		if len(kept) != len(alts) {
			changed = true
			if len(kept) == 0 {
				delete(content, "alt_aliases")
			} else {
				content["alt_aliases"] = kept
			}
		}
	}
	if !changed {
		return
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return
	}
	stateKey := ""
	if _, err := a.rooms.Send(ctx, rooms.SendRequest{RoomID: roomID, Sender: au.User, Type: event.StateCanonicalAlias.Type,
		StateKey: &stateKey, Content: raw, DeviceID: au.Device}); err != nil {
		zerolog.Ctx(ctx).Info().Err(err).Stringer("room_id", roomID).Msg("deleted alias stays in m.room.canonical_alias")
	}
}

// mayDeleteAlias allows the alias's creator, a joined user with the power to change m.room.canonical_alias,
// a server admin, or the appservice that owns the alias namespace.
func (a *API) mayDeleteAlias(ctx context.Context, au *Auth, alias id.RoomAlias) error {
	if au.AS != nil && a.as.ExclusiveAliasOwner(alias) == au.AS {
		return nil
	}
	creator, err := a.rooms.AliasCreator(ctx, alias)
	if err != nil {
		return err
	}
	if creator == au.User {
		return nil
	}
	// Whoever may change the room's canonical alias may also delete its aliases (as Synapse allows).
	if roomID, err := a.rooms.ResolveAlias(ctx, alias); err == nil {
		ok, err := a.rooms.MaySendState(ctx, roomID, au.User, event.StateCanonicalAlias.Type)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	admin, err := a.users.IsAdmin(ctx, au.User)
	if err != nil {
		return err
	}
	if !admin {
		return mxerr.Forbidden("only the alias's creator or an admin may delete it")
	}
	return nil
}
