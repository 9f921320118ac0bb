package clientapi

import (
	"context"
	"net/http"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
)

// uiaPassword is the auth object of a request protected by User-Interactive Authentication with the account
// password.
type uiaPassword struct {
	Type       string `json:"type"`
	Password   string `json:"password"`
	User       string `json:"user"` // deprecated form of identifier.user
	Identifier struct {
		User string `json:"user"`
	} `json:"identifier"`
}

// checkUIAPassword answers false (and writes the 401 challenge) unless auth proves the password. A wrong
// password is also a 401 carrying the flows plus errcode/error, as the spec's user-interactive auth says for a
// failed stage (not a bare 403), so clients can prompt again.
func (a *API) checkUIAPassword(w http.ResponseWriter, r *http.Request, user id.UserID, auth *uiaPassword) bool {
	flows := uiaFlows()
	flows["flows"] = []map[string]any{{"stages": []string{string(mautrix.AuthTypePassword)}}}
	if auth == nil || auth.Type != string(mautrix.AuthTypePassword) {
		RespondJSON(w, http.StatusUnauthorized, flows)
		return false
	}
	// Authenticating as someone else (even with their right password) is refused outright.
	for _, named := range []string{auth.Identifier.User, auth.User} {
		if named == "" {
			continue
		}
		if !strings.HasPrefix(named, "@") {
			named = "@" + strings.ToLower(named) + ":" + a.cfg.ServerName
		}
		if id.UserID(named) != user {
			RespondError(w, r, mxerr.Forbidden("the authenticated user does not own this session"))
			return false
		}
	}
	if err := a.users.CheckPassword(r.Context(), user, auth.Password); err != nil {
		e := mxerr.As(err)
		if e == nil || e.Code != "M_FORBIDDEN" {
			RespondError(w, r, err)
			return false
		}
		flows["errcode"], flows["error"] = e.Code, e.Message
		RespondJSON(w, http.StatusUnauthorized, flows)
		return false
	}
	return true
}

func (a *API) changePassword(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		NewPassword   string       `json:"new_password"`
		LogoutDevices *bool        `json:"logout_devices"`
		Auth          *uiaPassword `json:"auth"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if au.AS != nil {
		RespondError(w, r, mxerr.Forbidden("appservice users have no password"))
		return
	}
	if !a.checkUIAPassword(w, r, au.User, req.Auth) {
		return
	}
	if req.NewPassword == "" {
		RespondError(w, r, mxerr.MissingParam("new_password is required"))
		return
	}
	ctx := r.Context()
	if err := a.users.SetPassword(ctx, au.User, req.NewPassword); err != nil {
		RespondError(w, r, err)
		return
	}
	// Pushers of other sessions go in any case (as in Synapse): they could keep leaking notifications to
	// whoever held the old password.
	a.dropPushers(ctx, au.User, "", au.Device)
	// The spec's default is to log out every other device: a password change usually means a suspected leak.
	if req.LogoutDevices == nil || *req.LogoutDevices {
		if err := a.logoutOtherDevices(ctx, au.User, au.Device); err != nil {
			RespondError(w, r, err)
			return
		}
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) logoutOtherDevices(ctx context.Context, user id.UserID, keep id.DeviceID) error {
	devs, err := a.users.Devices(ctx, user)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if d.DeviceID == keep {
			continue
		}
		if err := a.users.DeleteDevice(ctx, user, d.DeviceID); err != nil {
			if e := mxerr.As(err); e != nil && e.Code == "M_NOT_FOUND" {
				continue
			}
			return err
		}
		a.dropDeviceKeys(ctx, user, d.DeviceID)
	}
	return nil
}

// deactivate closes the account: it leaves every room (so others see the departure), then the users service
// removes the password and every device.
func (a *API) deactivate(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		Auth *uiaPassword `json:"auth"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if au.AS != nil {
		RespondError(w, r, mxerr.Forbidden("appservice users cannot be deactivated here"))
		return
	}
	if !a.checkUIAPassword(w, r, au.User, req.Auth) {
		return
	}
	ctx := r.Context()
	joined, err := a.rooms.RoomsForUser(ctx, au.User, "join", "invite")
	if err != nil {
		RespondError(w, r, err)
		return
	}
	for _, room := range joined {
		_, err := a.rooms.SetMembership(ctx, rooms.MembershipRequest{RoomID: room, Sender: au.User, Target: au.User, Membership: "leave"})
		if err != nil && mxerr.As(err) == nil {
			RespondError(w, r, err)
			return
		}
	}
	if err := a.users.Deactivate(ctx, au.User); err != nil {
		RespondError(w, r, err)
		return
	}
	a.dropDeviceKeys(ctx, au.User, "")
	RespondJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}
