package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/e2ee"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	hsync "github.com/passerelle/passerelle/homeserver/sync"
)

// maxKeysBodyBytes bounds the body of the key and to-device endpoints. They are not events: a client sharing a
// room key sends one Olm message of about 1.5 KiB per recipient device in one /sendToDevice, so a room with a few
// hundred devices needs far more than the 64 KiB event limit.
const maxKeysBodyBytes = 1 << 20

// registerKeys mounts the end-to-end encryption routes under one client API prefix.
func (a *API) registerKeys(c func(method, path string, h http.HandlerFunc)) {
	c("POST", "/keys/upload", a.authed(a.keysUpload))
	c("POST", "/keys/query", a.authed(a.keysQuery))
	c("POST", "/keys/claim", a.authed(a.keysClaim))
	c("GET", "/keys/changes", a.authed(a.keysChanges))
	c("POST", "/keys/changes", a.authed(a.keysChanges)) // mautrix-go's GetKeyChanges sends POST
	c("POST", "/keys/device_signing/upload", a.authed(a.deviceSigningUpload))
	c("POST", "/keys/signatures/upload", a.authed(a.signaturesUpload))
	c("PUT", "/sendToDevice/{eventType}/{txnID}", a.authed(a.sendToDevice))

	c("GET", "/room_keys/version", a.authed(a.getBackupVersion))
	c("GET", "/room_keys/version/{version}", a.authed(a.getBackupVersion))
	c("POST", "/room_keys/version", a.authed(a.createBackupVersion))
	c("PUT", "/room_keys/version/{version}", a.authed(a.putBackupVersion))
	c("DELETE", "/room_keys/version/{version}", a.authed(a.deleteBackupVersion))
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomID}", "/room_keys/keys/{roomID}/{sessionID}"} {
		c("GET", p, a.authed(a.getBackupKeys))
		c("PUT", p, a.authed(a.putBackupKeys))
		c("DELETE", p, a.authed(a.deleteBackupKeys))
	}
}

// readKeysJSON decodes a key endpoint body of at most maxKeysBodyBytes.
func readKeysJSON(r *http.Request, v any) error {
	var data []byte
	if r.Body != nil {
		var err error
		if data, err = io.ReadAll(io.LimitReader(r.Body, maxKeysBodyBytes+1)); err != nil {
			return mxerr.Unknown("could not read request body")
		}
	}
	if len(data) > maxKeysBodyBytes {
		return mxerr.TooLarge("request body is larger than %d bytes", maxKeysBodyBytes)
	}
	return DecodeJSON(data, v)
}

// keyDevice is the device a key request acts for: the access token's device, or for an appservice the device it
// names with ?device_id= (MSC3202/MSC4190 device masquerading), which must exist.
func (a *API) keyDevice(ctx context.Context, r *http.Request, au *Auth) (id.DeviceID, error) {
	if au.AS == nil {
		return au.Device, nil
	}
	q := r.URL.Query()
	dev := id.DeviceID(q.Get("device_id"))
	if dev == "" {
		dev = id.DeviceID(q.Get("org.matrix.msc3202.device_id"))
	}
	if dev == "" {
		return "", nil
	}
	if _, err := a.users.Device(ctx, au.User, dev); err != nil {
		return "", err
	}
	return dev, nil
}

func (a *API) keysUpload(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req e2ee.Upload
	if err := readKeysJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	dev, err := a.keyDevice(r.Context(), r, au)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	counts, err := a.e2ee.Upload(r.Context(), au.User, dev, &req)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
}

func (a *API) keysQuery(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		DeviceKeys map[id.UserID][]id.DeviceID `json:"device_keys"`
	}
	if err := readKeysJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	res, err := a.e2ee.Query(r.Context(), au.User, req.DeviceKeys)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, res)
}

func (a *API) keysClaim(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		OneTimeKeys map[id.UserID]map[id.DeviceID]string `json:"one_time_keys"`
	}
	if err := readKeysJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	keys, failures, err := a.e2ee.Claim(r.Context(), req.OneTimeKeys)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"one_time_keys": keys, "failures": failures})
}

func (a *API) keysChanges(w http.ResponseWriter, r *http.Request, au *Auth) {
	q := r.URL.Query()
	from, err := hsync.ParseToken(q.Get("from"))
	if err != nil {
		RespondError(w, r, mxerr.InvalidParam("bad from token"))
		return
	}
	to := a.e2ee.Pos()
	if s := q.Get("to"); s != "" {
		t, err := hsync.ParseToken(s)
		if err != nil {
			RespondError(w, r, mxerr.InvalidParam("bad to token"))
			return
		}
		to = min(t.E2EE, to)
	}
	changed, left, err := a.e2ee.Changes(r.Context(), au.User, from.E2EE, to)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"changed": changed, "left": left})
}

func (a *API) sendToDevice(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		Messages map[id.UserID]map[id.DeviceID]json.RawMessage `json:"messages"`
	}
	if err := readKeysJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	err := a.e2ee.SendToDevice(r.Context(), e2ee.ToDeviceRequest{
		Sender: au.User, SenderDevice: au.Device, TxnID: r.PathValue("txnID"), Type: r.PathValue("eventType"),
		Messages: req.Messages,
	})
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// uiaPasswordAuth is the auth member of a request protected by User-Interactive Authentication.
type uiaPasswordAuth struct {
	Type       string `json:"type"`
	Session    string `json:"session"`
	Password   string `json:"password"`
	User       string `json:"user"` // deprecated form of identifier.user
	Identifier struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
}

// uiaSessionTTL is how long a User-Interactive Authentication session handed out in a 401 stays valid: long
// enough for a person to type their password, short enough that the table of sessions stays small.
const uiaSessionTTL = 10 * time.Minute

// uiaSessions remembers the sessions handed out for password UIA, so that a session from another user or an
// unknown session is refused. Session IDs are random, so one table serves every server in the process.
var uiaSessions = struct {
	sync.Mutex
	m map[string]uiaSession
}{m: map[string]uiaSession{}}

type uiaSession struct {
	user    id.UserID
	expires time.Time
}

func newUIASession(user id.UserID) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	sess := hex.EncodeToString(b)
	now := time.Now()
	uiaSessions.Lock()
	defer uiaSessions.Unlock()
	for k, v := range uiaSessions.m {
		if now.After(v.expires) {
			delete(uiaSessions.m, k)
		}
	}
	uiaSessions.m[sess] = uiaSession{user: user, expires: now.Add(uiaSessionTTL)}
	return sess
}

// checkPasswordUIA performs User-Interactive Authentication with one m.login.password stage. It returns true when
// the request may go on; otherwise it has written the answer: a 401 with the flows and a session when no
// (password) auth was given, or the refusal.
func (a *API) checkPasswordUIA(w http.ResponseWriter, r *http.Request, au *Auth, auth *uiaPasswordAuth) bool {
	if auth == nil || auth.Type != string(mautrix.AuthTypePassword) {
		RespondJSON(w, http.StatusUnauthorized, map[string]any{
			"flows":   []map[string]any{{"stages": []string{string(mautrix.AuthTypePassword)}}},
			"params":  map[string]any{},
			"session": newUIASession(au.User),
		})
		return false
	}
	if auth.Session != "" {
		uiaSessions.Lock()
		sess, ok := uiaSessions.m[auth.Session]
		uiaSessions.Unlock()
		if !ok || sess.user != au.User || time.Now().After(sess.expires) {
			RespondError(w, r, mxerr.New(http.StatusUnauthorized, "M_UNKNOWN", "unknown or expired UIA session"))
			return false
		}
	}
	name := auth.Identifier.User
	if name == "" {
		name = auth.User
	}
	if name != "" && name != string(au.User) && !(strings.HasPrefix(string(au.User), "@"+name+":")) {
		RespondError(w, r, mxerr.Forbidden("authenticate as yourself"))
		return false
	}
	if err := a.users.CheckPassword(r.Context(), au.User, auth.Password); err != nil {
		RespondError(w, r, err)
		return false
	}
	if auth.Session != "" {
		uiaSessions.Lock()
		delete(uiaSessions.m, auth.Session)
		uiaSessions.Unlock()
	}
	return true
}

func (a *API) deviceSigningUpload(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		e2ee.CrossSigningUpload
		Auth *uiaPasswordAuth `json:"auth"`
	}
	if err := readKeysJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	// Appservices act for their users without passwords (as Synapse does for MSC4190 bridges).
	if au.AS == nil && !a.checkPasswordUIA(w, r, au, req.Auth) {
		return
	}
	if err := a.e2ee.UploadCrossSigning(r.Context(), au.User, &req.CrossSigningUpload); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) signaturesUpload(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req map[id.UserID]map[string]json.RawMessage
	if err := readKeysJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	failures, err := a.e2ee.UploadSignatures(r.Context(), au.User, req)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"failures": failures})
}

// dropDeviceKeys forgets the keys, queued to-device messages and pushers of a device that was just deleted
// (device "" means every device the user no longer has, after a logout from all devices). A failure is logged,
// not returned: the device is gone either way, and key queries skip devices that no longer exist.
func (a *API) dropDeviceKeys(ctx context.Context, user id.UserID, device id.DeviceID) {
	a.dropPushers(ctx, user, device, "")
	if a.e2ee == nil {
		return
	}
	var err error
	if device == "" {
		err = a.e2ee.DeleteAllDevices(ctx, user)
	} else {
		err = a.e2ee.DeleteDevice(ctx, user, device)
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("device_id", device).Msg("cannot delete the keys of a deleted device")
	}
}

func (a *API) getBackupVersion(w http.ResponseWriter, r *http.Request, au *Auth) {
	v, err := a.e2ee.BackupVersion(r.Context(), au.User, r.PathValue("version"))
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, v)
}

type backupVersionReq struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version"`
}

func (a *API) createBackupVersion(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req backupVersionReq
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	v, err := a.e2ee.CreateBackupVersion(r.Context(), au.User, req.Algorithm, req.AuthData)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]string{"version": v})
}

func (a *API) putBackupVersion(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req backupVersionReq
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	version := r.PathValue("version")
	if req.Version != "" && req.Version != version {
		RespondError(w, r, mxerr.InvalidParam("version in the body does not match the path"))
		return
	}
	if err := a.e2ee.UpdateBackupVersion(r.Context(), au.User, version, req.Algorithm, req.AuthData); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) deleteBackupVersion(w http.ResponseWriter, r *http.Request, au *Auth) {
	if err := a.e2ee.DeleteBackupVersion(r.Context(), au.User, r.PathValue("version")); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// backupTarget reads the ?version= and the optional {roomID}/{sessionID} of a /room_keys/keys request.
func backupTarget(r *http.Request) (version string, room id.RoomID, session id.SessionID, err error) {
	version = r.URL.Query().Get("version")
	if version == "" {
		return "", "", "", mxerr.MissingParam("version is required")
	}
	if rs := r.PathValue("roomID"); rs != "" {
		if room, err = parseRoomID(rs); err != nil {
			return "", "", "", err
		}
	}
	return version, room, id.SessionID(r.PathValue("sessionID")), nil
}

func (a *API) getBackupKeys(w http.ResponseWriter, r *http.Request, au *Auth) {
	version, room, session, err := backupTarget(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	keys, err := a.e2ee.BackupKeys(r.Context(), au.User, version, room, session)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	switch {
	case session != "":
		k := keys[room][session]
		if k == nil {
			RespondError(w, r, mxerr.NotFound("no such session in the backup"))
			return
		}
		RespondJSON(w, http.StatusOK, k)
	case room != "":
		sessions := keys[room]
		if sessions == nil {
			sessions = map[id.SessionID]*e2ee.BackupKey{}
		}
		RespondJSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	default:
		rooms := map[id.RoomID]any{}
		for rid, sessions := range keys {
			rooms[rid] = map[string]any{"sessions": sessions}
		}
		RespondJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	}
}

func (a *API) putBackupKeys(w http.ResponseWriter, r *http.Request, au *Auth) {
	version, room, session, err := backupTarget(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	keys := e2ee.BackupRooms{}
	switch {
	case session != "":
		var k e2ee.BackupKey
		err = readKeysJSON(r, &k)
		keys[room] = map[id.SessionID]*e2ee.BackupKey{session: &k}
	case room != "":
		var body struct {
			Sessions map[id.SessionID]*e2ee.BackupKey `json:"sessions"`
		}
		err = readKeysJSON(r, &body)
		keys[room] = body.Sessions
	default:
		var body struct {
			Rooms map[id.RoomID]struct {
				Sessions map[id.SessionID]*e2ee.BackupKey `json:"sessions"`
			} `json:"rooms"`
		}
		err = readKeysJSON(r, &body)
		for rid, rk := range body.Rooms {
			keys[rid] = rk.Sessions
		}
	}
	if err != nil {
		RespondError(w, r, err)
		return
	}
	count, etag, err := a.e2ee.PutBackupKeys(r.Context(), au.User, version, keys)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"count": count, "etag": etag})
}

func (a *API) deleteBackupKeys(w http.ResponseWriter, r *http.Request, au *Auth) {
	version, room, session, err := backupTarget(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	count, etag, err := a.e2ee.DeleteBackupKeys(r.Context(), au.User, version, room, session)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"count": count, "etag": etag})
}
