package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// Room tags are the m.tag room account data ({"tags": {tag: {order}}}), as the spec defines them, so they reach
// clients through /sync like any other room account data.

// tagsTarget reads {userID} and {roomID} and checks that the requester acts for themself.
func (a *API) tagsTarget(r *http.Request, au *Auth) (id.UserID, id.RoomID, error) {
	uid, err := pathUser(r)
	if err != nil {
		return "", "", err
	}
	if err := requireSelf(au, uid); err != nil {
		return "", "", err
	}
	roomID, err := pathRoom(r)
	if err != nil {
		return "", "", err
	}
	return uid, roomID, nil
}

// loadTags returns the user's tags of room (empty when none).
func (a *API) loadTags(ctx context.Context, uid id.UserID, roomID id.RoomID) (map[string]json.RawMessage, error) {
	tags := map[string]json.RawMessage{}
	raw, err := a.users.AccountData(ctx, uid, roomID, "m.tag")
	if err != nil {
		if e := mxerr.As(err); e != nil && e.Code == "M_NOT_FOUND" {
			return tags, nil
		}
		return nil, err
	}
	var c struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if json.Unmarshal(raw, &c) == nil && c.Tags != nil {
		tags = c.Tags
	}
	return tags, nil
}

func (a *API) getTags(w http.ResponseWriter, r *http.Request, au *Auth) {
	uid, roomID, err := a.tagsTarget(r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	tags, err := a.loadTags(r.Context(), uid, roomID)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"tags": tags})
}

func (a *API) putTag(w http.ResponseWriter, r *http.Request, au *Auth) {
	a.changeTag(w, r, au, true)
}

func (a *API) deleteTag(w http.ResponseWriter, r *http.Request, au *Auth) {
	a.changeTag(w, r, au, false)
}

func (a *API) changeTag(w http.ResponseWriter, r *http.Request, au *Auth, set bool) {
	uid, roomID, err := a.tagsTarget(r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	tag := r.PathValue("tag")
	if tag == "" || len(tag) > 255 {
		RespondError(w, r, mxerr.InvalidParam("invalid tag"))
		return
	}
	var body json.RawMessage
	if set {
		if body, err = readEventContent(r); err != nil {
			RespondError(w, r, err)
			return
		}
		var c struct {
			Order *float64 `json:"order"`
		}
		if json.Unmarshal(body, &c) != nil || (c.Order != nil && (*c.Order < 0 || *c.Order > 1)) {
			RespondError(w, r, mxerr.BadJSON("order must be a number between 0 and 1"))
			return
		}
	}
	ctx := r.Context()
	tags, err := a.loadTags(ctx, uid, roomID)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if set {
		tags[tag] = body
	} else {
		delete(tags, tag)
	}
	raw, _ := json.Marshal(map[string]any{"tags": tags})
	if _, err := a.users.SetAccountData(ctx, uid, roomID, "m.tag", raw); err != nil {
		RespondError(w, r, err)
		return
	}
	a.sync.NotifyAccountData(uid)
	RespondJSON(w, http.StatusOK, struct{}{})
}
