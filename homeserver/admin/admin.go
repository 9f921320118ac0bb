// Package admin serves the Synapse-compatible admin API that existing tooling uses: shared-secret user
// registration (/_synapse/admin/v1/register) and the server version.
//
// It imports users, mxerr and clientapi's response helpers; it must not import rooms or any bridge.
package admin

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"strings"
	stdsync "sync"
	"time"

	"github.com/passerelle/passerelle/homeserver/clientapi"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/users"
)

// nonceTTL is how long a registration nonce stays valid. Synapse uses 60 s; tooling fetches the nonce and posts
// at once, so a short life limits replay of a leaked MAC.
const nonceTTL = 60 * time.Second

// maxNonces bounds the nonce table so that unauthenticated GETs cannot grow memory without limit.
const maxNonces = 10000

// Version is what GET /_synapse/admin/v1/server_version reports.
const Version = "passerelle 0.1.0"

// Admin holds the shared secret and the outstanding nonces.
type Admin struct {
	users      *users.Service
	secret     []byte
	serverName string

	mu     stdsync.Mutex
	nonces map[string]time.Time
	now    func() time.Time
}

// New returns the admin API. With an empty sharedSecret the register endpoint answers 404 M_UNRECOGNIZED.
func New(u *users.Service, serverName, sharedSecret string) *Admin {
	return &Admin{users: u, secret: []byte(sharedSecret), serverName: serverName, nonces: make(map[string]time.Time), now: time.Now}
}

// Register mounts the admin routes on mux.
func (a *Admin) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /_synapse/admin/v1/register", a.getNonce)
	mux.HandleFunc("POST /_synapse/admin/v1/register", a.postRegister)
	mux.HandleFunc("GET /_synapse/admin/v1/server_version", func(w http.ResponseWriter, r *http.Request) {
		clientapi.RespondJSON(w, http.StatusOK, map[string]string{"server_version": Version})
	})
}

func (a *Admin) getNonce(w http.ResponseWriter, r *http.Request) {
	if len(a.secret) == 0 {
		clientapi.RespondError(w, r, mxerr.Unrecognized("shared-secret registration is not enabled"))
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	nonce := hex.EncodeToString(b)
	now := a.now()
	a.mu.Lock()
	for n, exp := range a.nonces {
		if now.After(exp) {
			delete(a.nonces, n)
		}
	}
	if len(a.nonces) >= maxNonces {
		a.mu.Unlock()
		clientapi.RespondError(w, r, mxerr.LimitExceeded("too many outstanding nonces"))
		return
	}
	a.nonces[nonce] = now.Add(nonceTTL)
	a.mu.Unlock()
	clientapi.RespondJSON(w, http.StatusOK, map[string]string{"nonce": nonce})
}

type registerReq struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	DisplayName string `json:"displayname"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	UserType    string `json:"user_type"`
	MAC         string `json:"mac"`
}

// takeNonce consumes nonce: true if it was issued and has not expired. Single use either way.
func (a *Admin) takeNonce(nonce string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	exp, ok := a.nonces[nonce]
	delete(a.nonces, nonce)
	return ok && !a.now().After(exp)
}

// MAC computes the hex HMAC-SHA1 that Synapse's register_new_matrix_user sends.
func MAC(secret, nonce, user, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte{0})
		m.Write([]byte(userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

func (a *Admin) postRegister(w http.ResponseWriter, r *http.Request) {
	if len(a.secret) == 0 {
		clientapi.RespondError(w, r, mxerr.Unrecognized("shared-secret registration is not enabled"))
		return
	}
	var req registerReq
	if err := clientapi.ReadJSON(r, &req); err != nil {
		clientapi.RespondError(w, r, err)
		return
	}
	switch {
	case req.Nonce == "":
		clientapi.RespondError(w, r, mxerr.MissingParam("nonce is required"))
		return
	case req.Username == "":
		clientapi.RespondError(w, r, mxerr.MissingParam("username is required"))
		return
	case req.Password == "":
		clientapi.RespondError(w, r, mxerr.MissingParam("password is required"))
		return
	case req.MAC == "":
		clientapi.RespondError(w, r, mxerr.MissingParam("mac is required"))
		return
	}
	if !a.takeNonce(req.Nonce) {
		clientapi.RespondError(w, r, mxerr.Unknown("unrecognised nonce"))
		return
	}
	want := MAC(string(a.secret), req.Nonce, req.Username, req.Password, req.Admin, req.UserType)
	if !hmac.Equal([]byte(want), []byte(req.MAC)) {
		clientapi.RespondError(w, r, mxerr.Forbidden("HMAC incorrect"))
		return
	}
	resp, err := a.register(r.Context(), req)
	if err != nil {
		clientapi.RespondError(w, r, err)
		return
	}
	clientapi.RespondJSON(w, http.StatusOK, resp)
}

func (a *Admin) register(ctx context.Context, req registerReq) (map[string]any, error) {
	// The MAC covers the name as sent; the account is created lower-cased, as Synapse (and POST /register) do.
	userID, err := a.users.Register(ctx, strings.ToLower(req.Username), req.Password, users.RegisterOpts{Admin: req.Admin})
	if err != nil {
		return nil, err
	}
	if req.DisplayName != "" {
		if err := a.users.SetDisplayName(ctx, userID, req.DisplayName); err != nil {
			return nil, err
		}
	}
	deviceID, token, err := a.users.NewDevice(ctx, userID, "", "shared-secret registration")
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"user_id":      userID,
		"access_token": token,
		"device_id":    deviceID,
		"home_server":  a.serverName,
	}, nil
}
