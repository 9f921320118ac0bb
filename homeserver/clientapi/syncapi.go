package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	hsync "github.com/passerelle/passerelle/homeserver/sync"
)

func (a *API) doSync(w http.ResponseWriter, r *http.Request, au *Auth) {
	q := r.URL.Query()
	req := hsync.Request{User: au.User, Device: au.Device, Since: q.Get("since")}
	if s := q.Get("timeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			RespondError(w, r, mxerr.InvalidParam("timeout must be a non-negative integer"))
			return
		}
		req.Timeout = time.Duration(min(ms, int64(hsync.MaxTimeout/time.Millisecond))) * time.Millisecond
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		RespondError(w, r, mxerr.InvalidParam("full_state must be true or false"))
		return
	}
	if f := q.Get("filter"); f != "" {
		var err error
		if strings.HasPrefix(strings.TrimSpace(f), "{") {
			req.Filter, err = hsync.ParseFilter([]byte(f))
			if err != nil {
				RespondError(w, r, mxerr.BadJSON("invalid filter: %v", err))
				return
			}
		} else if req.Filter, err = a.sync.Filter(r.Context(), au.User, f); err != nil {
			if e := mxerr.As(err); e != nil && e.Code == "M_NOT_FOUND" {
				err = mxerr.InvalidParam("unknown filter ID")
			}
			RespondError(w, r, err)
			return
		}
	}
	if p := q.Get("set_presence"); p != "" {
		if !hsync.ValidPresence(p) {
			RespondError(w, r, mxerr.InvalidParam("set_presence must be online, unavailable or offline"))
			return
		}
		if err := a.sync.SetPresence(r.Context(), au.User, p, "", false); err != nil {
			RespondError(w, r, err)
			return
		}
	} else if a.sync.PresenceOf(au.User).Presence == "offline" {
		// Without set_presence, syncing marks the user online (spec); a presence the user chose (unavailable)
		// is left alone.
		if err := a.sync.SetPresence(r.Context(), au.User, "online", "", false); err != nil {
			RespondError(w, r, err)
			return
		}
	}
	if req.Since == "" {
		// An initial sync carries the push rules even before the user changed one (then they are the defaults).
		rs, err := a.loadRules(r.Context(), au.User)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		raw, err := json.Marshal(map[string]any{"global": rs})
		if err != nil {
			RespondError(w, r, err)
			return
		}
		req.DefaultAccountData = map[string]json.RawMessage{"m.push_rules": raw}
	}
	resp, err := a.sync.Sync(r.Context(), req)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away; nothing to answer
		}
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, resp)
}

func (a *API) postFilter(w http.ResponseWriter, r *http.Request, au *Auth) {
	uid, err := pathUser(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if err := requireSelf(au, uid); err != nil {
		RespondError(w, r, err)
		return
	}
	data, err := ReadBody(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	var probe map[string]json.RawMessage
	if err := DecodeJSON(data, &probe); err != nil {
		RespondError(w, r, err)
		return
	}
	if len(data) == 0 {
		data = []byte("{}")
	}
	f, err := hsync.ParseFilter(data)
	if err != nil {
		RespondError(w, r, mxerr.BadJSON("invalid filter: %v", err))
		return
	}
	fid, err := a.sync.SaveFilter(r.Context(), uid, f)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, mautrix.RespCreateFilter{FilterID: fid})
}

func (a *API) getFilter(w http.ResponseWriter, r *http.Request, au *Auth) {
	uid, err := pathUser(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if err := requireSelf(au, uid); err != nil {
		RespondError(w, r, err)
		return
	}
	f, err := a.sync.Filter(r.Context(), uid, r.PathValue("filterID"))
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, hsync.ForClient(f))
}

func (a *API) typing(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	uid, err := pathUser(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if err := requireSelf(au, uid); err != nil {
		RespondError(w, r, err)
		return
	}
	var req struct {
		Typing  *bool `json:"typing"`
		Timeout int64 `json:"timeout"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if req.Typing == nil {
		RespondError(w, r, mxerr.MissingParam("typing is required"))
		return
	}
	if m, _, err := a.rooms.MembershipOf(r.Context(), roomID, uid); err != nil || m != "join" {
		RespondError(w, r, mxerr.Forbidden("you are not in this room"))
		return
	}
	a.sync.SetTyping(roomID, uid, *req.Typing, time.Duration(req.Timeout)*time.Millisecond)
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) receipt(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	rtype := r.PathValue("receiptType")
	evID := id.EventID(r.PathValue("eventID"))
	var req struct {
		ThreadID string `json:"thread_id"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	switch rtype {
	case string(event.ReceiptTypeRead), string(event.ReceiptTypeReadPrivate), "m.fully_read":
	default:
		RespondError(w, r, mxerr.InvalidParam("unknown receipt type %q", rtype))
		return
	}
	if err := a.markRead(r, au, roomID, rtype, evID, req.ThreadID); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// markRead stores one receipt (or the m.fully_read marker, which is room account data).
func (a *API) markRead(r *http.Request, au *Auth, roomID id.RoomID, rtype string, evID id.EventID, threadID string) error {
	ctx := r.Context()
	if m, _, err := a.rooms.MembershipOf(ctx, roomID, au.User); err != nil || m != "join" {
		return mxerr.Forbidden("you are not in this room")
	}
	ev, err := a.rooms.Event(ctx, evID)
	if err != nil {
		return err
	}
	if ev.RoomID != roomID {
		return mxerr.NotFound("event not found in this room")
	}
	if rtype == "m.fully_read" {
		raw, _ := json.Marshal(map[string]any{"event_id": evID})
		if _, err := a.users.SetAccountData(ctx, au.User, roomID, "m.fully_read", raw); err != nil {
			return err
		}
		a.sync.NotifyAccountData(au.User)
		return nil
	}
	return a.sync.SetReceipt(ctx, hsync.Receipt{
		RoomID: roomID, UserID: au.User, Type: rtype, ThreadID: threadID, EventID: evID, TS: time.Now().UnixMilli(),
	})
}

func (a *API) readMarkers(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	var req struct {
		FullyRead   id.EventID `json:"m.fully_read"`
		Read        id.EventID `json:"m.read"`
		ReadPrivate id.EventID `json:"m.read.private"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	for _, m := range []struct {
		typ string
		ev  id.EventID
	}{{"m.fully_read", req.FullyRead}, {string(event.ReceiptTypeRead), req.Read}, {string(event.ReceiptTypeReadPrivate), req.ReadPrivate}} {
		if m.ev == "" {
			continue
		}
		if err := a.markRead(r, au, roomID, m.typ, m.ev, ""); err != nil {
			RespondError(w, r, err)
			return
		}
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// accountDataTarget reads {userID}, optional {roomID} and {type} of an account data path.
func (a *API) accountDataTarget(r *http.Request, au *Auth) (id.UserID, id.RoomID, string, error) {
	uid, err := pathUser(r)
	if err != nil {
		return "", "", "", err
	}
	if err := requireSelf(au, uid); err != nil {
		return "", "", "", err
	}
	var roomID id.RoomID
	if r.PathValue("roomID") != "" {
		if roomID, err = pathRoom(r); err != nil {
			return "", "", "", err
		}
	}
	typ := r.PathValue("type")
	if typ == "" || len(typ) > 255 {
		return "", "", "", mxerr.InvalidParam("invalid account data type")
	}
	return uid, roomID, typ, nil
}

func (a *API) getAccountData(w http.ResponseWriter, r *http.Request, au *Auth) {
	uid, roomID, typ, err := a.accountDataTarget(r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	content, err := a.users.AccountData(r.Context(), uid, roomID, typ)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	writeRaw(w, content)
}

func (a *API) putAccountData(w http.ResponseWriter, r *http.Request, au *Auth) {
	uid, roomID, typ, err := a.accountDataTarget(r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if typ == "m.fully_read" || typ == "m.push_rules" {
		RespondError(w, r, mxerr.BadJSON("%s cannot be set through this endpoint", typ))
		return
	}
	content, err := readEventContent(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if _, err := a.users.SetAccountData(r.Context(), uid, roomID, typ, content); err != nil {
		RespondError(w, r, err)
		return
	}
	a.sync.NotifyAccountData(uid)
	RespondJSON(w, http.StatusOK, struct{}{})
}
