package homeserver_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

// garbageBodies are request bodies of every malformed kind we know of: not JSON, JSON of the wrong shape, wrong
// field types, floats (not canonical JSON), deep nesting, invalid UTF-8, huge numbers.
var garbageBodies = []string{
	"", "{", "}", "null", "[]", "123", `"str"`, "{}", `{"a":}`, "\x00\xff\xfe", `{"body":"\xff"}`,
	`{"user_id":5}`, `{"user_id":"not a user"}`, `{"room_id":[]}`, `{"visibility":{}}`, `{"typing":"yes"}`,
	`{"timeout":-1,"typing":true}`, `{"x":1.5}`, `{"x":1e400}`, `{"x":-0}`, `{"x":123456789012345678901234567890}`,
	strings.Repeat("[", 5000) + strings.Repeat("]", 5000), `{"a":` + strings.Repeat(`{"a":`, 2000) + "1" + strings.Repeat("}", 2001),
	`{"type":"m.login.password","identifier":{"type":"m.id.user","user":5}}`, `{"auth":{"type":5}}`,
	`{"preset":5}`, `{"invite":["@a"]}`, `{"initial_state":[{"type":5}]}`, `{"power_level_content_override":{"users":{"@a:b":"100"}}}`,
	`{"creation_content":[]}`, `{"room_version":11}`, `{"membership":"join"}`, `{"displayname":{}}`, `{"avatar_url":"http://x"}`,
	`{"m.fully_read":5}`, `{"m.read":"$nope"}`, `{"thread_id":7}`, `{"room":{"timeline":{"limit":"5"}}}`,
	`{"nonce":5}`, `{"presence":"online","status_msg":5}`, `{"search_term":null}`, `{"auth":{"type":"m.login.password","password":5}}`, `{"transaction_id":[]}`, `{"filter":{"generic_search_term":1}}`,
}

// garbageClient fails a request that hangs instead of hanging the test.
var garbageClient = &http.Client{Timeout: 20 * time.Second}

type garbageTarget struct{ method, path string }

func garbageTargets(room, user string) []garbageTarget {
	rp := "/_matrix/client/v3/rooms/" + room
	return []garbageTarget{
		{"POST", "/_matrix/client/v3/register"}, {"POST", "/_matrix/client/v3/login"},
		{"POST", "/_matrix/client/v3/createRoom"}, {"POST", "/_matrix/client/v3/join/" + room}, {"POST", "/_matrix/client/v3/join/%23nope:localhost"},
		{"POST", rp + "/invite"}, {"POST", rp + "/kick"}, {"POST", rp + "/ban"}, {"POST", rp + "/unban"}, {"POST", rp + "/leave"},
		{"PUT", rp + "/send/m.room.message/g1"}, {"PUT", rp + "/send/m.room.redaction/g2"}, {"PUT", rp + "/state/m.room.name"},
		{"PUT", rp + "/state/m.room.power_levels/"}, {"PUT", rp + "/state/m.room.member/" + user}, {"PUT", rp + "/state/m.room.join_rules"},
		{"PUT", rp + "/redact/$nope/g3"}, {"PUT", rp + "/typing/" + user}, {"POST", rp + "/receipt/m.read/$nope"},
		{"POST", rp + "/read_markers"}, {"PUT", "/_matrix/client/v3/profile/" + user + "/displayname"},
		{"PUT", "/_matrix/client/v3/profile/" + user + "/avatar_url"}, {"POST", "/_matrix/client/v3/user/" + user + "/filter"},
		{"PUT", "/_matrix/client/v3/user/" + user + "/account_data/org.x"}, {"PUT", "/_matrix/client/v3/user/" + user + "/rooms/" + room + "/account_data/org.x"},
		{"PUT", "/_matrix/client/v3/directory/room/%23g:localhost"}, {"PUT", "/_matrix/client/v3/directory/list/room/" + room},
		{"POST", "/_matrix/client/v3/publicRooms"}, {"POST", "/_synapse/admin/v1/register"}, {"POST", "/_matrix/media/v3/upload"},
		{"POST", "/_matrix/client/v1/appservice/x/ping"}, {"PUT", "/_matrix/client/v3/presence/" + user + "/status"},
		{"POST", "/_matrix/client/v3/user_directory/search"}, {"DELETE", "/_matrix/client/v3/devices/NOPE"},
		{"PUT", "/_matrix/client/v3/devices/NOPE"}, {"POST", "/_matrix/client/v3/account/password"}, {"POST", "/_matrix/client/v3/delete_devices"},
		{"POST", "/_matrix/client/v3/account/deactivate"}, {"PUT", "/_matrix/client/v3/pushrules/global/override/u.x"},
		{"PUT", "/_matrix/client/v3/pushrules/global/room/" + room}, {"PUT", "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled"}, {"PUT", "/_matrix/client/v3/user/" + user + "/rooms/" + room + "/tags/u.x"},
	}
}

type garbageEnv struct {
	e     *env
	token string
	tgts  []garbageTarget
}

// checkNo500 sends one request and fails on a 5xx or on an error without errcode.
func checkNo500(t testing.TB, g *garbageEnv, tgt garbageTarget, body []byte) {
	req, err := http.NewRequest(tgt.method, g.e.url+tgt.path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+g.token)
	resp, err := garbageClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s with %q: %v", tgt.method, tgt.path, truncate(body), err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %s with %q: %d %s", tgt.method, tgt.path, truncate(body), resp.StatusCode, data)
	}
	var out map[string]any
	if resp.StatusCode == 401 && bytes.Contains(data, []byte(`"flows"`)) {
		return // a User-Interactive Authentication challenge, not an error
	}
	if resp.StatusCode >= 400 && (json.Unmarshal(data, &out) != nil || out["errcode"] == nil) {
		t.Fatalf("%s %s with %q: error without errcode: %d %s", tgt.method, tgt.path, truncate(body), resp.StatusCode, data)
	}
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

func setupGarbage(t testing.TB) *garbageEnv {
	e := newEnv(t, "sqlite", nil, nil)
	alice := e.user("alice")
	room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	return &garbageEnv{e: e, token: alice.AccessToken, tgts: garbageTargets(string(room.RoomID), string(alice.UserID))}
}

// TestNo500OnGarbage sends every malformed body to every endpoint that takes one: the answer is always a Matrix
// error (or a success), never a 500.
func TestNo500OnGarbage(t *testing.T) {
	g := setupGarbage(t)
	for _, tgt := range g.tgts {
		for _, b := range garbageBodies {
			checkNo500(t, g, tgt, []byte(b))
		}
	}
	// The session survived, so every request above reached its handler rather than an auth refusal.
	if status, body := g.e.do("GET", "/_matrix/client/v3/account/whoami", g.token, nil); status != 200 {
		t.Fatalf("the garbage run lost its session: %d %v", status, body)
	}
}

// FuzzClientAPI feeds arbitrary bodies to the endpoints above (one homeserver for the whole fuzz run).
func FuzzClientAPI(f *testing.F) {
	for i, b := range garbageBodies {
		f.Add(uint8(i), []byte(b))
	}
	g := setupGarbage(f)
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		checkNo500(t, g, g.tgts[int(which)%len(g.tgts)], body)
	})
}
