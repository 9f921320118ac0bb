package clientapi

import (
	"context"
	"net/http"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/pushers"
)

// listPushers answers GET /pushers with the user's stored pushers (an empty list when no store is wired).
func (a *API) listPushers(w http.ResponseWriter, r *http.Request, au *Auth) {
	list := []*pushers.Pusher{}
	if a.pusherStore != nil {
		var err error
		if list, err = a.pusherStore.List(r.Context(), au.User); err != nil {
			RespondError(w, r, err)
			return
		}
	}
	RespondJSON(w, http.StatusOK, map[string]any{"pushers": list})
}

// setPusher answers POST /pushers/set: kind null deletes the pusher of app_id and pushkey, anything else adds
// or replaces it for the requesting device.
func (a *API) setPusher(w http.ResponseWriter, r *http.Request, au *Auth) {
	data, err := ReadBody(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	var p pushers.Pusher
	var req struct {
		Kind   *string `json:"kind"`
		Append bool    `json:"append"`
	}
	if err := DecodeJSON(data, &p); err != nil {
		RespondError(w, r, err)
		return
	}
	if err := DecodeJSON(data, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if a.pusherStore == nil {
		RespondError(w, r, mxerr.Unrecognized("pushers are not supported by this server"))
		return
	}
	ctx := r.Context()
	if req.Kind == nil {
		if err := a.pusherStore.Delete(ctx, au.User, p.AppID, p.PushKey); err != nil {
			RespondError(w, r, err)
			return
		}
	} else if err := a.pusherStore.Set(ctx, au.User, au.Device, &p, req.Append); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// dropPushers forgets the pushers of a deleted device (device "" = every device of the user; keep, when set,
// is spared). A failure is logged: the device is gone either way.
func (a *API) dropPushers(ctx context.Context, user id.UserID, device, keep id.DeviceID) {
	if a.pusherStore == nil {
		return
	}
	var err error
	switch {
	case keep != "":
		err = a.pusherStore.DeleteExceptDevice(ctx, user, keep)
	case device == "":
		err = a.pusherStore.DeleteExceptDevice(ctx, user, "")
	default:
		err = a.pusherStore.DeleteDevice(ctx, user, device)
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("device_id", device).Msg("cannot delete pushers")
	}
}
