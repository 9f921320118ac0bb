package clientapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/registration"
)

type registerReq struct {
	Username                 string      `json:"username"`
	Password                 string      `json:"password"`
	DeviceID                 id.DeviceID `json:"device_id"`
	InitialDeviceDisplayName string      `json:"initial_device_display_name"`
	InhibitLogin             bool        `json:"inhibit_login"`
	Type                     string      `json:"type"`
	Auth                     *struct {
		Type    string `json:"type"`
		Session string `json:"session"`
	} `json:"auth"`
}

// uiaFlows is the User-Interactive Authentication answer for registration: one dummy stage, since accounts are
// either open (registration.enabled) or made by admins.
func uiaFlows() map[string]any {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return map[string]any{
		"flows":   []map[string]any{{"stages": []string{"m.login.dummy"}}},
		"params":  map[string]any{},
		"session": hex.EncodeToString(b),
	}
}

func (a *API) registerFlows(w http.ResponseWriter, r *http.Request) {
	if !a.cfg.RegistrationEnabled {
		RespondError(w, r, mxerr.Forbidden("registration is disabled"))
		return
	}
	RespondJSON(w, http.StatusOK, uiaFlows())
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	var req registerReq
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if kind := r.URL.Query().Get("kind"); kind == "guest" {
		RespondError(w, r, mxerr.GuestAccessForbidden("guest access is disabled"))
		return
	}
	if req.Type == string(mautrix.AuthTypeAppservice) {
		a.registerAppservice(w, r, &req)
		return
	}
	if !a.cfg.RegistrationEnabled {
		RespondError(w, r, mxerr.Forbidden("registration is disabled"))
		return
	}
	if req.Auth == nil || req.Auth.Type != string(mautrix.AuthTypeDummy) {
		RespondJSON(w, http.StatusUnauthorized, uiaFlows())
		return
	}
	if req.Username == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		req.Username = "user_" + hex.EncodeToString(b)
	}
	req.Username = strings.ToLower(req.Username)
	if err := a.users.ValidLocalpart(req.Username); err != nil {
		RespondError(w, r, err)
		return
	}
	userID := a.users.UserID(req.Username)
	if a.as != nil && a.as.ExclusiveOwner(userID) != nil {
		RespondError(w, r, mxerr.Exclusive("this user ID is reserved by an appservice"))
		return
	}
	if req.Password == "" {
		RespondError(w, r, mxerr.MissingParam("password is required"))
		return
	}
	a.finishRegister(w, r, &req, users.RegisterOpts{})
}

// registerAppservice registers a user in an appservice's namespace (type m.login.application_service), the way
// bridges create their bot and ghosts.
func (a *API) registerAppservice(w http.ResponseWriter, r *http.Request, req *registerReq) {
	tok := accessToken(r)
	if tok == "" {
		RespondError(w, r, mxerr.MissingToken("appservice registration needs the as_token"))
		return
	}
	if a.as == nil || a.as.ByASToken(tok) == nil {
		RespondError(w, r, mxerr.UnknownToken("unknown appservice token"))
		return
	}
	reg := a.as.ByASToken(tok)
	if req.Username == "" {
		RespondError(w, r, mxerr.MissingParam("username is required"))
		return
	}
	localpart := req.Username
	if strings.HasPrefix(localpart, "@") {
		lp, server, err := id.UserID(localpart).ParseAndValidateRelaxed()
		if err != nil || server != a.cfg.ServerName {
			RespondError(w, r, mxerr.InvalidUsername("invalid user ID"))
			return
		}
		localpart = lp
	}
	if err := a.users.ValidLocalpart(localpart); err != nil {
		RespondError(w, r, err)
		return
	}
	userID := a.users.UserID(localpart)
	if userID != reg.BotUserID() && !reg.IsInterestedUser(userID) {
		RespondError(w, r, mxerr.Exclusive("user ID is not in the appservice's namespace"))
		return
	}
	req.Username = localpart
	req.Password = ""
	a.finishRegister(w, r, req, users.RegisterOpts{AppserviceID: reg.ID})
}

func (a *API) finishRegister(w http.ResponseWriter, r *http.Request, req *registerReq, opts users.RegisterOpts) {
	ctx := r.Context()
	userID, err := a.users.Register(ctx, req.Username, req.Password, opts)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	resp := mautrix.RespRegister{UserID: userID}
	if !req.InhibitLogin {
		dev, tok, err := a.users.NewDevice(ctx, userID, req.DeviceID, req.InitialDeviceDisplayName)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		resp.DeviceID, resp.AccessToken = dev, tok
	}
	RespondJSON(w, http.StatusOK, resp)
}

func (a *API) registerAvailable(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("username")
	if name == "" {
		RespondError(w, r, mxerr.MissingParam("username is required"))
		return
	}
	if err := a.users.ValidLocalpart(name); err != nil {
		RespondError(w, r, err)
		return
	}
	userID := a.users.UserID(name)
	if a.as != nil && a.as.ExclusiveOwner(userID) != nil {
		RespondError(w, r, mxerr.Exclusive("this user ID is reserved by an appservice"))
		return
	}
	ok, err := a.users.Exists(r.Context(), userID)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if ok {
		RespondError(w, r, mxerr.UserInUse("user ID already taken"))
		return
	}
	RespondJSON(w, http.StatusOK, map[string]bool{"available": true})
}

func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) {
	RespondJSON(w, http.StatusOK, map[string]any{"flows": []map[string]string{
		{"type": string(mautrix.AuthTypePassword)}, {"type": string(mautrix.AuthTypeAppservice)},
	}})
}

type loginReq struct {
	Type       string `json:"type"`
	Identifier struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
	User                     string      `json:"user"` // deprecated top-level form
	Password                 string      `json:"password"`
	DeviceID                 id.DeviceID `json:"device_id"`
	InitialDeviceDisplayName string      `json:"initial_device_display_name"`
}

// loginUser turns the identifier of a login request into a local user ID.
func (a *API) loginUser(req *loginReq) (id.UserID, error) {
	name := req.Identifier.User
	if req.Identifier.Type != "" && req.Identifier.Type != string(mautrix.IdentifierTypeUser) {
		return "", mxerr.Unknown("unsupported identifier type %q", req.Identifier.Type)
	}
	if name == "" {
		name = req.User
	}
	if name == "" {
		return "", mxerr.MissingParam("identifier.user is required")
	}
	if strings.HasPrefix(name, "@") {
		lp, server, err := id.UserID(name).ParseAndValidateRelaxed()
		if err != nil || server != a.cfg.ServerName {
			return "", mxerr.Forbidden("invalid user name or password")
		}
		name = lp
	}
	return a.users.UserID(strings.ToLower(name)), nil
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	var req loginReq
	body, err := ReadBody(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	// A login needs at least a type: an empty body is not the JSON object the spec asks for (M_NOT_JSON).
	if len(bytes.TrimSpace(body)) == 0 {
		RespondError(w, r, mxerr.NotJSON("request body must be a JSON object"))
		return
	}
	if err := DecodeJSON(body, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	// Unknown login types are refused before the identifier is looked at (400 M_UNKNOWN, as the spec says).
	switch req.Type {
	case string(mautrix.AuthTypePassword), string(mautrix.AuthTypeAppservice):
	case "":
		RespondError(w, r, mxerr.MissingParam("type is required"))
		return
	default:
		RespondError(w, r, mxerr.Unknown("unsupported login type %q", req.Type))
		return
	}
	ctx := r.Context()
	userID, err := a.loginUser(&req)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	switch req.Type {
	case string(mautrix.AuthTypePassword):
		if err := a.users.CheckPassword(ctx, userID, req.Password); err != nil {
			RespondError(w, r, err)
			return
		}
	case string(mautrix.AuthTypeAppservice):
		tok := accessToken(r)
		var reg *registration.Registration
		if tok != "" && a.as != nil {
			reg = a.as.ByASToken(tok)
		}
		if reg == nil {
			RespondError(w, r, mxerr.UnknownToken("appservice login needs a valid as_token"))
			return
		}
		if userID != reg.BotUserID() && !reg.IsInterestedUser(userID) {
			RespondError(w, r, mxerr.Forbidden("user is not in the appservice's namespace"))
			return
		}
		ok, err := a.users.Exists(ctx, userID)
		if err != nil {
			RespondError(w, r, err)
			return
		} else if !ok {
			RespondError(w, r, mxerr.Forbidden("user is not registered"))
			return
		}
	case "":
		RespondError(w, r, mxerr.MissingParam("type is required"))
		return
	default:
		RespondError(w, r, mxerr.Unknown("unsupported login type %q", req.Type))
		return
	}
	dev, tok, err := a.users.NewDevice(ctx, userID, req.DeviceID, req.InitialDeviceDisplayName)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{
		"user_id": userID, "access_token": tok, "device_id": dev, "home_server": a.cfg.ServerName,
		"well_known": map[string]any{"m.homeserver": map[string]string{"base_url": a.cfg.PublicBaseURL}},
	})
}

func (a *API) logout(w http.ResponseWriter, r *http.Request, au *Auth) {
	if au.AS == nil {
		if err := a.users.Logout(r.Context(), au.Token); err != nil {
			RespondError(w, r, err)
			return
		}
		a.dropDeviceKeys(r.Context(), au.User, au.Device)
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) logoutAll(w http.ResponseWriter, r *http.Request, au *Auth) {
	if err := a.users.LogoutAll(r.Context(), au.User); err != nil {
		RespondError(w, r, err)
		return
	}
	a.dropDeviceKeys(r.Context(), au.User, "")
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request, au *Auth) {
	resp := map[string]any{"user_id": au.User, "is_guest": false}
	if au.Device != "" {
		resp["device_id"] = au.Device
	}
	RespondJSON(w, http.StatusOK, resp)
}

func (a *API) devices(w http.ResponseWriter, r *http.Request, au *Auth) {
	devs, err := a.users.Devices(r.Context(), au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	out := make([]map[string]any, 0, len(devs))
	for _, d := range devs {
		out = append(out, map[string]any{"device_id": d.DeviceID, "display_name": d.DisplayName})
	}
	RespondJSON(w, http.StatusOK, map[string]any{"devices": out})
}

func (a *API) profile(w http.ResponseWriter, r *http.Request) {
	uid, err := pathUser(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	name, avatar, err := a.users.Profile(r.Context(), uid)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	resp := map[string]string{}
	if name != "" {
		resp["displayname"] = name
	}
	if avatar != "" {
		resp["avatar_url"] = avatar
	}
	RespondJSON(w, http.StatusOK, resp)
}

func (a *API) profileField(w http.ResponseWriter, r *http.Request) {
	uid, err := pathUser(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	field := r.PathValue("field")
	if field != "displayname" && field != "avatar_url" {
		RespondError(w, r, mxerr.NotFound("unknown profile field"))
		return
	}
	name, avatar, err := a.users.Profile(r.Context(), uid)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	val := name
	if field == "avatar_url" {
		val = avatar
	}
	if val == "" {
		RespondError(w, r, mxerr.NotFound("profile field not set"))
		return
	}
	RespondJSON(w, http.StatusOK, map[string]string{field: val})
}

func (a *API) setProfileField(w http.ResponseWriter, r *http.Request, au *Auth) {
	uid, err := pathUser(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if err := requireSelf(au, uid); err != nil {
		RespondError(w, r, err)
		return
	}
	field := r.PathValue("field")
	if field != "displayname" && field != "avatar_url" {
		RespondError(w, r, mxerr.Unrecognized("unknown profile field"))
		return
	}
	var body map[string]json.RawMessage
	if err := ReadJSON(r, &body); err != nil {
		RespondError(w, r, err)
		return
	}
	var val string
	if raw, ok := body[field]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &val); err != nil {
			RespondError(w, r, mxerr.BadJSON("%s must be a string", field))
			return
		}
	}
	if len(val) > 1024 {
		RespondError(w, r, mxerr.TooLarge("%s is too long", field))
		return
	}
	ctx := r.Context()
	if field == "displayname" {
		err = a.users.SetDisplayName(ctx, uid, val)
	} else {
		// Any string is stored: the spec types avatar_url as a URI without requiring mxc://, and
		// clients (and Complement) set other values.
		err = a.users.SetAvatarURL(ctx, uid, val)
	}
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ts, _ := eventTS(r, au)
	if err := a.updateMemberProfiles(ctx, uid, ts); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// updateMemberProfiles re-sends the user's m.room.member join event in every joined room with the new profile,
// keeping the rest of the membership content.
func (a *API) updateMemberProfiles(ctx context.Context, uid id.UserID, ts int64) error {
	name, avatar, err := a.users.Profile(ctx, uid)
	if err != nil {
		return err
	}
	joined, err := a.rooms.RoomsForUser(ctx, uid, "join")
	if err != nil {
		return err
	}
	for _, room := range joined {
		_, ev, err := a.rooms.MembershipOf(ctx, room, uid)
		if err != nil {
			return err
		}
		content := map[string]any{}
		if ev != nil {
			_ = json.Unmarshal(ev.Content, &content)
		}
		content["membership"] = "join"
		setOrDelete(content, "displayname", name)
		setOrDelete(content, "avatar_url", avatar)
		raw, _ := json.Marshal(content)
		sk := uid.String()
		_, err = a.rooms.Send(ctx, rooms.SendRequest{RoomID: room, Sender: uid, Type: event.StateMember.Type, StateKey: &sk, Content: raw, TS: ts})
		if err != nil && !errors.Is(err, mxerr.Forbidden("")) {
			return err
		}
	}
	return nil
}

func setOrDelete(m map[string]any, k, v string) {
	if v == "" {
		delete(m, k)
	} else {
		m[k] = v
	}
}
