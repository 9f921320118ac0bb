package clientapi

import (
	"net/http"
	"time"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	hsync "github.com/passerelle/passerelle/homeserver/sync"
)

func (a *API) getPresence(w http.ResponseWriter, r *http.Request, _ *Auth) {
	uid, err := pathUser(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ok, err := a.users.Exists(r.Context(), uid)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if !ok {
		RespondError(w, r, mxerr.NotFound("unknown user"))
		return
	}
	st := a.sync.PresenceOf(uid)
	resp := map[string]any{"presence": st.Presence}
	if !st.LastActive.IsZero() {
		ago := time.Since(st.LastActive)
		resp["last_active_ago"] = ago.Milliseconds()
		resp["currently_active"] = st.Presence == "online" && ago < 5*time.Minute
	}
	if st.StatusMsg != "" {
		resp["status_msg"] = st.StatusMsg
	}
	RespondJSON(w, http.StatusOK, resp)
}

func (a *API) putPresence(w http.ResponseWriter, r *http.Request, au *Auth) {
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
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if req.Presence == "" {
		RespondError(w, r, mxerr.MissingParam("presence is required"))
		return
	}
	if !hsync.ValidPresence(req.Presence) {
		RespondError(w, r, mxerr.InvalidParam("presence must be online, unavailable or offline"))
		return
	}
	msg := ""
	if req.StatusMsg != nil {
		if len(*req.StatusMsg) > 1024 {
			RespondError(w, r, mxerr.TooLarge("status_msg is too long"))
			return
		}
		msg = *req.StatusMsg
	}
	if err := a.sync.SetPresence(r.Context(), uid, req.Presence, msg, req.StatusMsg != nil); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}
