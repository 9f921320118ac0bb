package clientapi

import (
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

func (a *API) device(w http.ResponseWriter, r *http.Request, au *Auth) {
	d, err := a.users.Device(r.Context(), au.User, id.DeviceID(r.PathValue("deviceID")))
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"device_id": d.DeviceID, "display_name": d.DisplayName})
}

func (a *API) putDevice(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	dev := id.DeviceID(r.PathValue("deviceID"))
	if _, err := a.users.Device(r.Context(), au.User, dev); err != nil {
		RespondError(w, r, err)
		return
	}
	if req.DisplayName != nil {
		if len(*req.DisplayName) > 256 {
			RespondError(w, r, mxerr.TooLarge("display_name is too long"))
			return
		}
		if err := a.users.SetDeviceDisplayName(r.Context(), au.User, dev, *req.DisplayName); err != nil {
			RespondError(w, r, err)
			return
		}
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// deleteDevice removes a device and its token. As the spec asks, it needs User-Interactive Authentication: the
// account password (m.login.password) proves that a stolen access token alone cannot log out other sessions.
func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		Auth *uiaPassword `json:"auth"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	dev := id.DeviceID(r.PathValue("deviceID"))
	ctx := r.Context()
	if _, err := a.users.Device(ctx, au.User, dev); err != nil {
		RespondError(w, r, err)
		return
	}
	if au.AS == nil && !a.checkUIAPassword(w, r, au.User, req.Auth) {
		return
	}
	if err := a.users.DeleteDevice(ctx, au.User, dev); err != nil {
		RespondError(w, r, err)
		return
	}
	a.dropDeviceKeys(ctx, au.User, dev)
	RespondJSON(w, http.StatusOK, struct{}{})
}

// deleteDevices removes several devices at once (Element's "sign out of other sessions"), behind the same
// password check as deleteDevice. Unknown device IDs are skipped, as the spec allows.
func (a *API) deleteDevices(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		Devices []id.DeviceID `json:"devices"`
		Auth    *uiaPassword  `json:"auth"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if req.Devices == nil {
		RespondError(w, r, mxerr.MissingParam("devices is required"))
		return
	}
	if au.AS == nil && !a.checkUIAPassword(w, r, au.User, req.Auth) {
		return
	}
	ctx := r.Context()
	for _, dev := range req.Devices {
		if err := a.users.DeleteDevice(ctx, au.User, dev); err != nil {
			if e := mxerr.As(err); e != nil && e.Code == "M_NOT_FOUND" {
				continue
			}
			RespondError(w, r, err)
			return
		}
		a.dropDeviceKeys(ctx, au.User, dev)
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}
