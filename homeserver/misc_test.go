package homeserver_test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/admin"
	"github.com/passerelle/passerelle/registration"
)

func TestMediaRoundTrip(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		data := bytes.Repeat([]byte("passerelle "), 1000)
		up, err := alice.UploadMedia(ctx(t), mautrix.ReqUploadMedia{ContentBytes: data, ContentType: "text/plain", FileName: "bridge.txt"})
		if err != nil {
			t.Fatal(err)
		}
		if up.ContentURI.Homeserver != "localhost" {
			t.Fatalf("content uri: %s", up.ContentURI)
		}
		// Authenticated v1 download (what mautrix uses for v1.11 servers).
		got, err := alice.DownloadBytes(ctx(t), up.ContentURI)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("v1 download: %d bytes, %v", len(got), err)
		}
		// Legacy v3 download, no auth, with a file name.
		resp, err := http.Get(e.url + "/_matrix/media/v3/download/localhost/" + up.ContentURI.FileID + "/other.txt")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(body, data) || resp.Header.Get("Content-Type") != "text/plain" ||
			!strings.Contains(resp.Header.Get("Content-Disposition"), "other.txt") {
			t.Fatalf("v3 download: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
		}
		// v1 without auth is refused.
		status, b := e.do("GET", "/_matrix/client/v1/media/download/localhost/"+up.ContentURI.FileID, "", nil)
		if status != 401 || b["errcode"] != "M_MISSING_TOKEN" {
			t.Fatalf("v1 download without token: %d %v", status, b)
		}
		status, b = e.do("GET", "/_matrix/media/v3/download/localhost/doesnotexist", "", nil)
		if status != 404 || b["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("unknown media: %d %v", status, b)
		}
		status, b = e.do("GET", "/_matrix/media/v3/download/localhost/..%2F..%2Fetc", "", nil)
		if status != 404 {
			t.Fatalf("path traversal media id: %d %v", status, b)
		}
		status, b = e.do("GET", "/_matrix/client/v1/media/thumbnail/localhost/"+up.ContentURI.FileID+"?width=32&height=32", alice.AccessToken, nil)
		if status != 404 || b["errcode"] == nil {
			t.Fatalf("thumbnail: %d %v", status, b)
		}
		// An image gets a real thumbnail.
		var pngBuf bytes.Buffer
		_ = png.Encode(&pngBuf, image.NewRGBA(image.Rect(0, 0, 200, 100)))
		img, err := alice.UploadBytes(ctx(t), pngBuf.Bytes(), "image/png")
		if err != nil {
			t.Fatal(err)
		}
		treq, _ := http.NewRequest("GET", e.url+"/_matrix/client/v1/media/thumbnail/localhost/"+img.ContentURI.FileID+"?width=50&height=50&method=scale", nil)
		treq.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		tresp, err := http.DefaultClient.Do(treq)
		if err != nil {
			t.Fatal(err)
		}
		thumb, _ := io.ReadAll(tresp.Body)
		tresp.Body.Close()
		tcfg, terr := png.DecodeConfig(bytes.NewReader(thumb))
		if tresp.StatusCode != 200 || terr != nil || tcfg.Width != 50 || tcfg.Height != 25 {
			t.Fatalf("thumbnail: %d %v %+v", tresp.StatusCode, terr, tcfg)
		}
		cfg, err := alice.GetMediaConfig(ctx(t))
		if err != nil || cfg.UploadSize != 1<<20 {
			t.Fatalf("media config: %+v %v", cfg, err)
		}
		// Over the limit: M_TOO_LARGE, whether or not Content-Length tells in advance.
		_, err = alice.UploadBytes(ctx(t), make([]byte, 1<<20+1), "application/octet-stream")
		wantErr(t, err, "M_TOO_LARGE")
		req, _ := http.NewRequest("POST", e.url+"/_matrix/media/v3/upload", io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), strings.NewReader("x")))
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		req.ContentLength = -1
		r2, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r2.Body.Close()
		if r2.StatusCode != 413 {
			t.Fatalf("chunked oversize upload: %d", r2.StatusCode)
		}
	})
}

// testAS is an appservice registration plus a fake appservice HTTP server that records pings.
type testAS struct {
	reg   *registration.Registration
	srv   *httptest.Server
	pings atomic.Int32
	auth  atomic.Value
}

func newTestAS(t *testing.T) *testAS {
	a := &testAS{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/app/v1/ping" && r.Method == "POST" {
			a.pings.Add(1)
			a.auth.Store(r.Header.Get("Authorization"))
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("{}"))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(a.srv.Close)
	a.reg = registration.Generate("testbridge", a.srv.URL, "testbot", `@test_.*:localhost`)
	return a
}

func TestAppservice(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			as := newTestAS(t)
			e := newEnv(t, kind, []*registration.Registration{as.reg}, nil)
			bot, err := mautrix.NewClient(e.url, "@testbot:localhost", as.reg.AppToken)
			if err != nil {
				t.Fatal(err)
			}
			who, err := bot.Whoami(ctx(t))
			if err != nil || who.UserID != "@testbot:localhost" {
				t.Fatalf("bot whoami: %+v %v", who, err)
			}
			// Ghost registration the bridgev2 way, then identity assertion.
			status, body := e.do("POST", "/_matrix/client/v3/register", as.reg.AppToken,
				map[string]any{"type": "m.login.application_service", "username": "test_ghost", "inhibit_login": true})
			if status != 200 || body["user_id"] != "@test_ghost:localhost" || body["access_token"] != nil {
				t.Fatalf("ghost register: %d %v", status, body)
			}
			status, body = e.do("POST", "/_matrix/client/v3/register", as.reg.AppToken,
				map[string]any{"type": "m.login.application_service", "username": "outsider"})
			if status != 400 || body["errcode"] != "M_EXCLUSIVE" {
				t.Fatalf("register outside namespace: %d %v", status, body)
			}
			// Normal registration in the exclusive namespace is refused.
			_, err = e.client().RegisterDummy(ctx(t), &mautrix.ReqRegister[any]{Username: "test_squatter", Password: "x"})
			wantErr(t, err, "M_EXCLUSIVE")

			ghost, _ := mautrix.NewClient(e.url, "@test_ghost:localhost", as.reg.AppToken)
			ghost.SetAppServiceUserID = true
			who, err = ghost.Whoami(ctx(t))
			if err != nil || who.UserID != "@test_ghost:localhost" {
				t.Fatalf("asserted whoami: %+v %v", who, err)
			}
			alice := e.user("alice")
			for _, uid := range []string{"@alice:localhost", "@test_unregistered:localhost"} {
				status, body = e.do("GET", "/_matrix/client/v3/account/whoami?user_id="+uid, as.reg.AppToken, nil)
				if status != 403 || body["errcode"] != "M_FORBIDDEN" {
					t.Fatalf("assert %s: %d %v", uid, status, body)
				}
			}
			// ts is honoured for appservice senders and ignored for others.
			room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ghost.JoinRoomByID(ctx(t), room.RoomID); err != nil {
				t.Fatal(err)
			}
			const past = int64(1500000000000)
			status, body = e.do("PUT", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/send/m.room.message/t1?user_id=@test_ghost:localhost&ts=1500000000000",
				as.reg.AppToken, `{"msgtype":"m.text","body":"from the past"}`)
			if status != 200 {
				t.Fatalf("AS send: %d %v", status, body)
			}
			ev, err := alice.GetEvent(ctx(t), room.RoomID, id.EventID(body["event_id"].(string)))
			if err != nil || ev.Timestamp != past || ev.Sender != "@test_ghost:localhost" {
				t.Fatalf("AS event: ts %d sender %s %v", ev.Timestamp, ev.Sender, err)
			}
			status, body = e.do("PUT", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/send/m.room.message/t2?ts=1500000000000",
				alice.AccessToken, `{"msgtype":"m.text","body":"now"}`)
			ev, err = alice.GetEvent(ctx(t), room.RoomID, id.EventID(body["event_id"].(string)))
			if err != nil || ev.Timestamp == past {
				t.Fatalf("normal user set ts: %d %v", status, err)
			}
			// Ping reaches the appservice with its hs_token.
			resp, err := bot.AppservicePing(ctx(t), "testbridge", "ping-1")
			if err != nil || as.pings.Load() != 1 || as.auth.Load() != "Bearer "+as.reg.ServerToken {
				t.Fatalf("ping: %+v %v pings=%d auth=%v", resp, err, as.pings.Load(), as.auth.Load())
			}
			_, err = alice.AppservicePing(ctx(t), "testbridge", "")
			wantErr(t, err, "M_FORBIDDEN")
			// AS login for a namespace user.
			status, body = e.do("POST", "/_matrix/client/v3/login", as.reg.AppToken, map[string]any{
				"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "test_ghost"},
			})
			if status != 200 || body["user_id"] != "@test_ghost:localhost" {
				t.Fatalf("AS login: %d %v", status, body)
			}
			status, body = e.do("POST", "/_matrix/client/v3/login", as.reg.AppToken, map[string]any{
				"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
			})
			if status != 403 {
				t.Fatalf("AS login outside namespace: %d %v", status, body)
			}
		})
	}
}

func TestAppservicePingFailures(t *testing.T) {
	dead := registration.Generate("dead", "http://127.0.0.1:1", "deadbot", `@dead_.*:localhost`)
	e := newEnv(t, "sqlite", []*registration.Registration{dead}, &http.Client{Timeout: 2 * time.Second})
	status, body := e.do("POST", "/_matrix/client/v1/appservice/dead/ping", dead.AppToken, `{}`)
	if status != 502 || body["errcode"] != "M_CONNECTION_FAILED" {
		t.Fatalf("ping to a dead appservice: %d %v", status, body)
	}
}

func TestSynapseAdminRegister(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		nonce := func() string {
			status, body := e.do("GET", "/_synapse/admin/v1/register", "", nil)
			if status != 200 || body["nonce"] == "" {
				t.Fatalf("nonce: %d %v", status, body)
			}
			return body["nonce"].(string)
		}
		n := nonce()
		req := map[string]any{"nonce": n, "username": "root", "password": "toor", "admin": true,
			"mac": admin.MAC(sharedSecret, n, "root", "toor", true, "")}
		status, body := e.do("POST", "/_synapse/admin/v1/register", "", req)
		if status != 200 || body["user_id"] != "@root:localhost" || body["access_token"] == "" {
			t.Fatalf("admin register: %d %v", status, body)
		}
		isAdmin, err := e.hs.Users().IsAdmin(ctx(t), "@root:localhost")
		if err != nil || !isAdmin {
			t.Fatalf("not admin: %v %v", isAdmin, err)
		}
		// Nonces are single-use.
		status, body = e.do("POST", "/_synapse/admin/v1/register", "", req)
		if status != 400 || body["errcode"] != "M_UNKNOWN" {
			t.Fatalf("nonce reuse: %d %v", status, body)
		}
		// A wrong MAC (here: admin flag flipped) is refused and creates nobody.
		n = nonce()
		req = map[string]any{"nonce": n, "username": "mallory", "password": "x", "admin": true,
			"mac": admin.MAC(sharedSecret, n, "mallory", "x", false, "")}
		status, body = e.do("POST", "/_synapse/admin/v1/register", "", req)
		if status != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("bad mac: %d %v", status, body)
		}
		if ok, _ := e.hs.Users().Exists(ctx(t), "@mallory:localhost"); ok {
			t.Fatal("user created despite a bad MAC")
		}
		status, body = e.do("GET", "/_synapse/admin/v1/server_version", "", nil)
		if status != 200 || body["server_version"] == nil {
			t.Fatalf("server_version: %d %v", status, body)
		}
	})
}

func TestSynapseAdminRegisterDisabled(t *testing.T) {
	cfg := configs.Default()
	cfg.Server.DataDir = t.TempDir()
	cfg.Registration.SharedSecret = ""
	e := newEnvFromConfig(t, cfg)
	for _, method := range []string{"GET", "POST"} {
		status, body := e.do(method, "/_synapse/admin/v1/register", "", `{}`)
		if status != 404 || body["errcode"] != "M_UNRECOGNIZED" {
			t.Fatalf("%s disabled admin register: %d %v", method, status, body)
		}
	}
}

func TestMalformedRequests(t *testing.T) {
	e := newEnv(t, "sqlite", nil, nil)
	alice := e.user("alice")
	room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	rp := "/_matrix/client/v3/rooms/" + string(room.RoomID)
	big := `{"body":"` + strings.Repeat("x", 70000) + `"}`
	cases := []struct {
		name, method, path, token string
		body                      any
		status                    int
		code                      string
	}{
		{"not json", "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, "{not json", 400, "M_NOT_JSON"},
		{"json array", "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, "[1,2]", 400, "M_BAD_JSON"},
		{"wrong field type", "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, `{"name":5}`, 400, "M_BAD_JSON"},
		{"send not json", "PUT", rp + "/send/m.room.message/t1", alice.AccessToken, "hello", 400, "M_NOT_JSON"},
		{"send array", "PUT", rp + "/send/m.room.message/t2", alice.AccessToken, "[]", 400, "M_BAD_JSON"},
		{"send too large", "PUT", rp + "/send/m.room.message/t3", alice.AccessToken, big, 413, "M_TOO_LARGE"},
		{"login no type", "POST", "/_matrix/client/v3/login", "", `{"identifier":{"type":"m.id.user","user":"alice"}}`, 400, "M_MISSING_PARAM"},
		{"login unknown type", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.magic","user":"alice"}`, 400, "M_UNKNOWN"},
		{"missing token", "GET", "/_matrix/client/v3/account/whoami", "", nil, 401, "M_MISSING_TOKEN"},
		{"unknown token", "GET", "/_matrix/client/v3/account/whoami", "nope", nil, 401, "M_UNKNOWN_TOKEN"},
		{"unknown endpoint", "GET", "/_matrix/client/v3/nonsense", "", nil, 404, "M_UNRECOGNIZED"},
		{"room keys: no backup", "GET", "/_matrix/client/v3/room_keys/version", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"wrong method", "DELETE", "/_matrix/client/v3/createRoom", alice.AccessToken, nil, 405, "M_UNRECOGNIZED"},
		{"bad room id", "PUT", "/_matrix/client/v3/rooms/notaroom/send/m.room.message/t4", alice.AccessToken, "{}", 400, "M_INVALID_PARAM"},
		{"unknown room", "PUT", "/_matrix/client/v3/rooms/!nope:localhost/send/m.room.message/t5", alice.AccessToken, "{}", 404, "M_NOT_FOUND"},
		{"bad since", "GET", "/_matrix/client/v3/sync?since=garbage", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"bad timeout", "GET", "/_matrix/client/v3/sync?timeout=-5", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"bad inline filter", "GET", "/_matrix/client/v3/sync?filter=%7Bnope", alice.AccessToken, nil, 400, "M_BAD_JSON"},
		{"unknown filter id", "GET", "/_matrix/client/v3/sync?filter=99", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"bad filter body", "POST", "/_matrix/client/v3/user/@alice:localhost/filter", alice.AccessToken, `{"room":{"timeline":{"limit":-1}}}`, 400, "M_BAD_JSON"},
		{"messages no dir", "GET", rp + "/messages", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"messages bad from", "GET", rp + "/messages?dir=b&from=zzz", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"invite no user", "POST", rp + "/invite", alice.AccessToken, `{}`, 400, "M_MISSING_PARAM"},
		{"invite bad user", "POST", rp + "/invite", alice.AccessToken, `{"user_id":"bob"}`, 400, "M_INVALID_PARAM"},
		{"typing missing", "PUT", rp + "/typing/@alice:localhost", alice.AccessToken, `{}`, 400, "M_MISSING_PARAM"},
		{"receipt bad type", "POST", rp + "/receipt/m.bogus/$x", alice.AccessToken, `{}`, 400, "M_INVALID_PARAM"},
		{"receipt unknown event", "POST", rp + "/receipt/m.read/$nope", alice.AccessToken, `{}`, 404, "M_NOT_FOUND"},
		{"event unknown", "GET", rp + "/event/$nope", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"alias other server", "GET", "/_matrix/client/v3/directory/room/%23a:elsewhere", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"alias unknown", "GET", "/_matrix/client/v3/directory/room/%23nope:localhost", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"profile bad user", "GET", "/_matrix/client/v3/profile/notauser", "", nil, 400, "M_INVALID_PARAM"},
		{"register guest", "POST", "/_matrix/client/v3/register?kind=guest", "", `{}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"available no name", "GET", "/_matrix/client/v3/register/available", "", nil, 400, "M_MISSING_PARAM"},
		{"admin register not json", "POST", "/_synapse/admin/v1/register", "", "{", 400, "M_NOT_JSON"},
		{"admin register missing", "POST", "/_synapse/admin/v1/register", "", `{"nonce":"x"}`, 400, "M_MISSING_PARAM"},
		{"ping not an AS", "POST", "/_matrix/client/v1/appservice/x/ping", alice.AccessToken, `{}`, 403, "M_FORBIDDEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := e.do(c.method, c.path, c.token, c.body)
			if status != c.status || body["errcode"] != c.code {
				t.Fatalf("%s %s: got %d %v, want %d %s", c.method, c.path, status, body, c.status, c.code)
			}
		})
	}
	// Nothing was stored by the refused sends.
	resp, err := alice.Messages(ctx(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range resp.Chunk {
		if ev.Type == event.EventMessage {
			t.Fatalf("a refused send was stored: %+v", ev)
		}
	}
}

func TestCORSAndPreflight(t *testing.T) {
	e := newEnv(t, "sqlite", nil, nil)
	req, _ := http.NewRequest("OPTIONS", e.url+"/_matrix/client/v3/login", nil)
	req.Header.Set("Origin", "https://app.element.io")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	for _, path := range []string{"/_matrix/client/versions", "/_matrix/client/v3/nonsense", "/.well-known/matrix/client"} {
		resp, err := http.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("%s: no CORS header", path)
		}
		if path == "/.well-known/matrix/client" && body["m.homeserver"] == nil {
			t.Fatalf("well-known: %v", body)
		}
	}
	status, body := e.do("GET", "/_matrix/client/v3/capabilities", e.user("cap").AccessToken, nil)
	caps, _ := body["capabilities"].(map[string]any)
	if status != 200 || caps["m.room_versions"] == nil {
		t.Fatalf("capabilities: %d %v", status, body)
	}
}
