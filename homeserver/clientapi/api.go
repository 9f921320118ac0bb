// Package clientapi serves the Matrix Client-Server API (/_matrix/client, /_matrix/media, /.well-known/matrix):
// it decodes requests, authenticates them (access tokens and appservice tokens with ?user_id= assertion), calls
// the homeserver's services and encodes their answers. It holds no SQL and no room logic.
//
// It imports the homeserver services (rooms, users, sync, media, e2ee), mxerr and registration; it must not import the
// root homeserver package, appservice, hub or any bridge.
package clientapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/e2ee"
	"github.com/passerelle/passerelle/homeserver/media"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/pushers"
	"github.com/passerelle/passerelle/homeserver/rooms"
	hsync "github.com/passerelle/passerelle/homeserver/sync"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/registration"
)

// Config is what the handlers need to know about the server.
type Config struct {
	// ServerName is the homeserver's name (the part after the colon in IDs).
	ServerName string
	// PublicBaseURL is advertised in /.well-known/matrix/client and login responses.
	PublicBaseURL string
	// RegistrationEnabled opens POST /register with m.login.dummy to anyone.
	RegistrationEnabled bool
}

// Deps are the services the handlers call.
type Deps struct {
	Rooms       *rooms.Service
	Users       *users.Service
	Sync        *hsync.Service
	Media       *media.Service
	Appservices *registration.Set
	// ASClient reaches appservices for the ping endpoint.
	ASClient *http.Client
	// E2EE serves the key and to-device endpoints (keys.go); nil leaves them unmounted.
	E2EE *e2ee.Service
	// Pushers stores the pushers of POST /pushers/set; nil answers GET /pushers with an empty list.
	Pushers *pushers.Service
}

// API is the Client-Server API handler set.
type API struct {
	cfg         Config
	rooms       *rooms.Service
	users       *users.Service
	sync        *hsync.Service
	media       *media.Service
	as          *registration.Set
	asClient    *http.Client
	e2ee        *e2ee.Service
	pusherStore *pushers.Service
}

// New returns the handlers; call Register to mount them.
func New(cfg Config, d Deps) *API {
	c := d.ASClient
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	return &API{cfg: cfg, rooms: d.Rooms, users: d.Users, sync: d.Sync, media: d.Media, as: d.Appservices, asClient: c, e2ee: d.E2EE, pusherStore: d.Pushers}
}

// clientPrefixes are the Client-Server API versions accepted in paths: v3 and, for old clients, r0.
var clientPrefixes = []string{"/_matrix/client/v3", "/_matrix/client/r0"}

// Register mounts every route on mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /_matrix/client/versions", a.versions)
	mux.HandleFunc("GET /.well-known/matrix/client", a.wellKnown)
	for _, p := range clientPrefixes {
		c := func(method, path string, h http.HandlerFunc) { mux.HandleFunc(method+" "+p+path, h) }
		c("GET", "/capabilities", a.authed(a.capabilities))
		c("GET", "/register", a.registerFlows)
		c("POST", "/register", a.register)
		c("GET", "/register/available", a.registerAvailable)
		c("GET", "/login", a.loginFlows)
		c("POST", "/login", a.login)
		c("POST", "/logout", a.authed(a.logout))
		c("POST", "/logout/all", a.authed(a.logoutAll))
		c("GET", "/account/whoami", a.authed(a.whoami))
		c("GET", "/devices", a.authed(a.devices))
		c("POST", "/delete_devices", a.authed(a.deleteDevices))
		c("POST", "/account/password", a.authed(a.changePassword))
		c("POST", "/account/deactivate", a.authed(a.deactivate))
		// No third-party identifiers or protocols exist here; clients ask at start-up and get the empty truth.
		c("GET", "/account/3pid", a.authed(func(w http.ResponseWriter, r *http.Request, _ *Auth) {
			RespondJSON(w, http.StatusOK, map[string]any{"threepids": []any{}})
		}))
		c("GET", "/thirdparty/protocols", a.authed(func(w http.ResponseWriter, r *http.Request, _ *Auth) {
			RespondJSON(w, http.StatusOK, map[string]any{})
		}))
		c("GET", "/devices/{deviceID}", a.authed(a.device))
		c("PUT", "/devices/{deviceID}", a.authed(a.putDevice))
		c("DELETE", "/devices/{deviceID}", a.authed(a.deleteDevice))
		c("GET", "/profile/{userID}", a.profile)
		c("GET", "/profile/{userID}/{field}", a.profileField)
		c("PUT", "/profile/{userID}/{field}", a.authed(a.setProfileField))

		c("POST", "/createRoom", a.authed(a.createRoom))
		c("POST", "/join/{roomIDOrAlias}", a.authed(a.join))
		c("POST", "/rooms/{roomID}/join", a.authed(a.join))
		c("POST", "/rooms/{roomID}/invite", a.authed(a.membershipOf("invite")))
		c("POST", "/rooms/{roomID}/kick", a.authed(a.membershipOf("leave")))
		c("POST", "/rooms/{roomID}/ban", a.authed(a.membershipOf("ban")))
		c("POST", "/rooms/{roomID}/unban", a.authed(a.membershipOf("unban")))
		c("POST", "/rooms/{roomID}/leave", a.authed(a.leave))
		c("POST", "/rooms/{roomID}/forget", a.authed(a.forget))
		c("PUT", "/rooms/{roomID}/send/{eventType}/{txnID}", a.authed(a.send))
		c("GET", "/rooms/{roomID}/state", a.authed(a.allState))
		c("GET", "/rooms/{roomID}/state/{eventType}", a.authed(a.getState))
		c("GET", "/rooms/{roomID}/state/{eventType}/{stateKey...}", a.authed(a.getState))
		c("PUT", "/rooms/{roomID}/state/{eventType}", a.authed(a.putState))
		c("PUT", "/rooms/{roomID}/state/{eventType}/{stateKey...}", a.authed(a.putState))
		c("PUT", "/rooms/{roomID}/redact/{eventID}/{txnID}", a.authed(a.redact))
		c("GET", "/rooms/{roomID}/event/{eventID}", a.authed(a.getEvent))
		c("GET", "/rooms/{roomID}/messages", a.authed(a.messages))
		c("GET", "/rooms/{roomID}/context/{eventID}", a.authed(a.eventContext))
		c("GET", "/rooms/{roomID}/members", a.authed(a.members))
		c("GET", "/rooms/{roomID}/joined_members", a.authed(a.joinedMembers))
		c("GET", "/joined_rooms", a.authed(a.joinedRooms))
		c("GET", "/directory/room/{alias}", a.authed(a.getAlias))
		c("GET", "/directory/list/room/{roomID}", a.getVisibility)
		c("PUT", "/directory/list/room/{roomID}", a.authed(a.putVisibility))
		c("GET", "/publicRooms", a.publicRooms)
		c("POST", "/publicRooms", a.authed(func(w http.ResponseWriter, r *http.Request, _ *Auth) { a.publicRooms(w, r) }))
		c("GET", "/rooms/{roomID}/aliases", a.authed(a.roomAliases))
		c("PUT", "/directory/room/{alias}", a.authed(a.putAlias))
		c("DELETE", "/directory/room/{alias}", a.authed(a.deleteAlias))

		c("POST", "/user_directory/search", a.authed(a.userDirectorySearch))
		c("GET", "/sync", a.authed(a.doSync))
		c("GET", "/presence/{userID}/status", a.authed(a.getPresence))
		c("PUT", "/presence/{userID}/status", a.authed(a.putPresence))
		c("POST", "/user/{userID}/filter", a.authed(a.postFilter))
		c("GET", "/user/{userID}/filter/{filterID}", a.authed(a.getFilter))
		c("PUT", "/rooms/{roomID}/typing/{userID}", a.authed(a.typing))
		c("POST", "/rooms/{roomID}/receipt/{receiptType}/{eventID}", a.authed(a.receipt))
		c("POST", "/rooms/{roomID}/read_markers", a.authed(a.readMarkers))
		c("GET", "/user/{userID}/account_data/{type}", a.authed(a.getAccountData))
		c("PUT", "/user/{userID}/account_data/{type}", a.authed(a.putAccountData))
		c("GET", "/user/{userID}/rooms/{roomID}/account_data/{type}", a.authed(a.getAccountData))
		c("PUT", "/user/{userID}/rooms/{roomID}/account_data/{type}", a.authed(a.putAccountData))
		c("GET", "/user/{userID}/rooms/{roomID}/tags", a.authed(a.getTags))
		c("PUT", "/user/{userID}/rooms/{roomID}/tags/{tag}", a.authed(a.putTag))
		c("DELETE", "/user/{userID}/rooms/{roomID}/tags/{tag}", a.authed(a.deleteTag))
		c("GET", "/pushrules", a.authed(a.pushRules))
		c("GET", "/pushrules/{rest...}", a.authed(a.pushRules))
		c("PUT", "/pushrules/{scope}/{kind}/{ruleID}", a.authed(a.putPushRule))
		c("DELETE", "/pushrules/{scope}/{kind}/{ruleID}", a.authed(a.deletePushRule))
		c("PUT", "/pushrules/{scope}/{kind}/{ruleID}/{attr}", a.authed(a.putPushRuleAttr))
		c("GET", "/pushers", a.authed(a.listPushers))
		c("POST", "/pushers/set", a.authed(a.setPusher))
		c("POST", "/search", a.authed(a.search))
		if a.e2ee != nil {
			a.registerKeys(c)
		}
	}
	a.registerRelations(mux)
	mux.HandleFunc("POST /_matrix/media/v3/upload", a.authed(a.upload))
	mux.HandleFunc("POST /_matrix/media/v1/create", a.authed(a.createMedia))
	mux.HandleFunc("PUT /_matrix/media/v3/upload/{serverName}/{mediaID}", a.authed(a.uploadTo))
	mux.HandleFunc("GET /_matrix/media/v3/config", a.authed(a.mediaConfig))
	mux.HandleFunc("GET /_matrix/client/v1/media/config", a.authed(a.mediaConfig))
	mux.HandleFunc("GET /_matrix/media/v3/download/{serverName}/{mediaID}", a.download)
	mux.HandleFunc("GET /_matrix/media/v3/download/{serverName}/{mediaID}/{fileName}", a.download)
	mux.HandleFunc("GET /_matrix/client/v1/media/download/{serverName}/{mediaID}", a.authed(a.downloadAuthed))
	mux.HandleFunc("GET /_matrix/client/v1/media/download/{serverName}/{mediaID}/{fileName}", a.authed(a.downloadAuthed))
	mux.HandleFunc("GET /_matrix/media/v3/thumbnail/{serverName}/{mediaID}", a.thumbnail)
	mux.HandleFunc("GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaID}", a.authed(a.thumbnailAuthed))
	mux.HandleFunc("POST /_matrix/client/v1/appservice/{appserviceID}/ping", a.authed(a.appservicePing))
}

// Auth is who made a request.
type Auth struct {
	// User is the authenticated user: the token's owner, or for an appservice its asserted ?user_id= (default
	// its sender user).
	User id.UserID
	// Device is the token's device ("" for appservices).
	Device id.DeviceID
	// Token is the access token as sent.
	Token string
	// AS is the appservice whose as_token was used, nil for normal users.
	AS *registration.Registration
}

// authHandler is a handler that needs an authenticated user.
type authHandler func(w http.ResponseWriter, r *http.Request, au *Auth)

// authed wraps h with access-token authentication.
func (a *API) authed(h authHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		au, err := a.authenticate(r)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		log := zerolog.Ctx(r.Context()).With().Stringer("user_id", au.User).Logger()
		h(w, r.WithContext(log.WithContext(r.Context())), au)
	}
}

// accessToken returns the token from the Authorization header or the access_token query parameter.
func accessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

func (a *API) authenticate(r *http.Request) (*Auth, error) {
	tok := accessToken(r)
	if tok == "" {
		return nil, mxerr.MissingToken("missing access token")
	}
	if a.as != nil {
		if reg := a.as.ByASToken(tok); reg != nil {
			return a.appserviceAuth(r, tok, reg)
		}
	}
	user, dev, err := a.users.Authenticate(r.Context(), tok)
	if err != nil {
		return nil, err
	}
	return &Auth{User: user, Device: dev, Token: tok}, nil
}

// appserviceAuth resolves the identity an appservice acts as: its sender user, or the ?user_id= it asserts,
// which must be in its user namespace and registered (bridgev2 registers ghosts before using them).
func (a *API) appserviceAuth(r *http.Request, tok string, reg *registration.Registration) (*Auth, error) {
	bot := reg.BotUserID()
	au := &Auth{User: bot, Token: tok, AS: reg}
	q := r.URL.Query().Get("user_id")
	if q == "" || id.UserID(q) == bot {
		return au, nil
	}
	uid := id.UserID(q)
	if _, _, err := uid.ParseAndValidateRelaxed(); err != nil {
		return nil, mxerr.InvalidParam("user_id is not a valid user ID")
	}
	if !reg.IsInterestedUser(uid) {
		return nil, mxerr.Forbidden("%s is not in the appservice's user namespace", uid)
	}
	ok, err := a.users.Exists(r.Context(), uid)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.Forbidden("%s is not registered", uid)
	}
	au.User = uid
	return au, nil
}

// eventTS returns the ?ts= an appservice may set on events it sends (0 = now). Normal users cannot set it.
func eventTS(r *http.Request, au *Auth) (int64, error) {
	if au.AS == nil {
		return 0, nil
	}
	q := r.URL.Query().Get("ts")
	if q == "" {
		return 0, nil
	}
	ts, err := strconv.ParseInt(q, 10, 64)
	if err != nil || ts <= 0 {
		return 0, mxerr.InvalidParam("ts must be a positive integer")
	}
	return ts, nil
}

func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	RespondJSON(w, http.StatusOK, map[string]any{
		"versions": []string{"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
			"v1.10", "v1.11", "v1.12"},
		"unstable_features": map[string]bool{
			"org.matrix.msc2659": true, // appservice ping (stable since v1.7; old bridges look for this)
		},
	})
}

func (a *API) wellKnown(w http.ResponseWriter, r *http.Request) {
	RespondJSON(w, http.StatusOK, map[string]any{"m.homeserver": map[string]string{"base_url": a.cfg.PublicBaseURL}})
}

// supportedRoomVersions are the room versions rooms.Service implements.
var supportedRoomVersions = map[string]string{"10": "stable", "11": "stable"}

func (a *API) capabilities(w http.ResponseWriter, r *http.Request, _ *Auth) {
	RespondJSON(w, http.StatusOK, map[string]any{"capabilities": map[string]any{
		"m.room_versions":   map[string]any{"default": "10", "available": supportedRoomVersions},
		"m.change_password": map[string]bool{"enabled": true},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": false},
	}})
}

// pathUser parses a {userID} path value.
func pathUser(r *http.Request) (id.UserID, error) {
	uid := id.UserID(r.PathValue("userID"))
	if _, _, err := uid.ParseAndValidateRelaxed(); err != nil {
		return "", mxerr.InvalidParam("invalid user ID")
	}
	return uid, nil
}

// pathRoom parses a {roomID} path value.
func pathRoom(r *http.Request) (id.RoomID, error) {
	return parseRoomID(r.PathValue("roomID"))
}

func parseRoomID(s string) (id.RoomID, error) {
	if len(s) < 3 || s[0] != '!' || !strings.Contains(s, ":") || len(s) > 255 {
		return "", mxerr.InvalidParam("invalid room ID")
	}
	return id.RoomID(s), nil
}

// requireSelf refuses to act on another user's resources.
func requireSelf(au *Auth, target id.UserID) error {
	if au.User != target {
		return mxerr.Forbidden("cannot act on behalf of another user")
	}
	return nil
}
