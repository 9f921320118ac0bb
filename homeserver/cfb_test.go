package homeserver_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/admin"
)

// TestProfileAvatarURLAnyString: avatar_url is stored as given (the spec types it as a URI, not only mxc://),
// and other profile checks still hold.
func TestProfileAvatarURLAnyString(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		path := "/_matrix/client/v3/profile/" + url.PathEscape(string(alice.UserID)) + "/avatar_url"
		if st, body := e.do("PUT", path, alice.AccessToken, map[string]any{"avatar_url": "LemurLover"}); st != 200 {
			t.Fatalf("put avatar_url: %d %v", st, body)
		}
		st, body := e.do("GET", path, alice.AccessToken, nil)
		if st != 200 || body["avatar_url"] != "LemurLover" {
			t.Fatalf("get avatar_url: %d %v", st, body)
		}
	})
}

// TestRegisterInvalidUTF8: a request body that is not UTF-8 is 400 M_NOT_JSON, before any auth flow.
func TestRegisterInvalidUTF8(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		st, body := e.do("POST", "/_matrix/client/v3/register", "", []byte("{\"username\":\"a\xed\xa0\x80\",\"password\":\"x\"}"))
		if st != 400 || body["errcode"] != "M_NOT_JSON" {
			t.Fatalf("invalid UTF-8: %d %v", st, body)
		}
		st, body = e.do("POST", "/_matrix/client/v3/register", "", `{"username":"héllo"}`)
		if st != 401 {
			t.Fatalf("valid UTF-8 must reach the auth flow: %d %v", st, body)
		}
	})
}

// TestCanonicalAliasErrcodes: a syntactically bad alias is M_INVALID_PARAM, a well-formed alias that does not
// point to the room is M_BAD_ALIAS.
func TestCanonicalAliasErrcodes(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room.RoomID)) + "/state/m.room.canonical_alias/"
		for alias, code := range map[string]string{
			"%invalid_aliases:" + e.cfg.Server.ServerName: "M_INVALID_PARAM",
			"noprefix":                            "M_INVALID_PARAM",
			"#nowhere:" + e.cfg.Server.ServerName: "M_BAD_ALIAS",
		} {
			st, body := e.do("PUT", path, alice.AccessToken, map[string]any{"alias": alias})
			if st != 400 || body["errcode"] != code {
				t.Errorf("alias %q: %d %v, want 400 %s", alias, st, body, code)
			}
		}
	})
}

// TestJoinCustomContentAndJoinedMembers: custom fields of a join body land in the member event;
// joined_members always carries display_name and avatar_url and is refused to a former member.
func TestJoinCustomContentAndJoinedMembers(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		rid := url.PathEscape(string(room.RoomID))
		st, body := e.do("POST", "/_matrix/client/v3/join/"+rid, bob.AccessToken,
			map[string]any{"foo": "bar", "reason": "hello", "membership": "leave"})
		if st != 200 {
			t.Fatalf("join: %d %v", st, body)
		}
		st, body = e.do("GET", "/_matrix/client/v3/rooms/"+rid+"/state/m.room.member/"+url.PathEscape(string(bob.UserID)),
			bob.AccessToken, nil)
		if st != 200 || body["foo"] != "bar" || body["membership"] != "join" || body["reason"] != "hello" {
			t.Fatalf("member content: %d %v", st, body)
		}
		st, body = e.do("GET", "/_matrix/client/v3/rooms/"+rid+"/joined_members", bob.AccessToken, nil)
		joined, _ := body["joined"].(map[string]any)
		me, _ := joined[string(bob.UserID)].(map[string]any)
		_, hasName := me["display_name"]
		_, hasAvatar := me["avatar_url"]
		if st != 200 || len(joined) != 2 || !hasName || !hasAvatar {
			t.Fatalf("joined_members: %d %v", st, body)
		}
		if _, err := bob.LeaveRoom(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		if st, body = e.do("GET", "/_matrix/client/v3/rooms/"+rid+"/joined_members", bob.AccessToken, nil); st != 403 {
			t.Fatalf("joined_members after leaving: %d %v", st, body)
		}
	})
}

// TestTxnIDScopedToRoom: a transaction ID repeats its event only in the same room (the request path); the
// same ID in another room sends a new event.
func TestTxnIDScopedToRoom(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		var rooms [2]id.RoomID
		for i := range rooms {
			r, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{})
			if err != nil {
				t.Fatal(err)
			}
			rooms[i] = r.RoomID
		}
		send := func(room id.RoomID, body string) string {
			t.Helper()
			st, resp := e.do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/send/m.room.message/abc",
				alice.AccessToken, map[string]any{"msgtype": "m.text", "body": body})
			if st != 200 {
				t.Fatalf("send: %d %v", st, resp)
			}
			return resp["event_id"].(string)
		}
		first := send(rooms[0], "first")
		if again := send(rooms[0], "second"); again != first {
			t.Fatalf("same room, same txn: %s != %s", again, first)
		}
		if other := send(rooms[1], "first"); other == first {
			t.Fatalf("another room reused the event %s", first)
		}
	})
}

// TestKeyClaimUploadOrder: one-time keys are claimed in the order they were uploaded, whatever their IDs.
func TestKeyClaimUploadOrder(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		uploadDeviceKeys(t, alice, 0)
		for _, kid := range []string{"ZZZ", "AAA", "MMM"} {
			otk := map[id.KeyID]mautrix.OneTimeKey{
				id.NewKeyID(id.KeyAlgorithmSignedCurve25519, kid): {Key: id.Curve25519("otk-" + kid)},
			}
			if _, err := alice.UploadKeys(ctx(t), &mautrix.ReqUploadKeys{OneTimeKeys: otk}); err != nil {
				t.Fatal(err)
			}
		}
		for _, want := range []string{"ZZZ", "AAA", "MMM"} {
			resp, err := bob.ClaimKeys(ctx(t), &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
				alice.UserID: {alice.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
			if err != nil {
				t.Fatal(err)
			}
			got := resp.OneTimeKeys[alice.UserID][alice.DeviceID]
			if _, ok := got[id.NewKeyID(id.KeyAlgorithmSignedCurve25519, want)]; !ok || len(got) != 1 {
				t.Fatalf("claimed %v, want %s", got, want)
			}
		}
	})
}

// TestPostcontentPushRuleKind: the MSC4306 kind "postcontent" is addressable: an absent rule is 404, a rule
// can be added, read and disabled.
func TestPostcontentPushRuleKind(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		base := "/_matrix/client/v3/pushrules/global/postcontent/"
		if st, body := e.do("GET", base+".io.element.msc4306.rule.subscribed_thread", alice.AccessToken, nil); st != 404 {
			t.Fatalf("absent rule: %d %v", st, body)
		}
		if st, body := e.do("PUT", base+"mine", alice.AccessToken, map[string]any{"actions": []any{"notify"}}); st != 200 {
			t.Fatalf("put: %d %v", st, body)
		}
		if st, body := e.do("PUT", base+"mine/enabled", alice.AccessToken, map[string]any{"enabled": false}); st != 200 {
			t.Fatalf("disable: %d %v", st, body)
		}
		st, body := e.do("GET", base+"mine", alice.AccessToken, nil)
		if st != 200 || body["rule_id"] != "mine" || body["enabled"] != false {
			t.Fatalf("get: %d %v", st, body)
		}
		if st, body := e.do("GET", "/_matrix/client/v3/pushrules/global/nonsense/x", alice.AccessToken, nil); st != 400 {
			t.Fatalf("unknown kind: %d %v", st, body)
		}
	})
}

// TestUIAAsAnotherUser403: proving another user's password in UIA is 403, and the device survives.
func TestUIAAsAnotherUser403(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		e.user("bob")
		second, err := e.client().Login(ctx(t), &mautrix.ReqLogin{
			Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
			Password: "pw-alice",
		})
		if err != nil {
			t.Fatal(err)
		}
		auth := map[string]any{"type": "m.login.password", "password": "pw-bob",
			"identifier": map[string]any{"type": "m.id.user", "user": "bob"}}
		st, body := e.do("DELETE", "/_matrix/client/v3/devices/"+string(second.DeviceID), alice.AccessToken, map[string]any{"auth": auth})
		if st != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("delete with bob's auth: %d %v", st, body)
		}
		if st, _ := e.do("GET", "/_matrix/client/v3/devices/"+string(second.DeviceID), alice.AccessToken, nil); st != 200 {
			t.Fatalf("device gone after refused delete: %d", st)
		}
		auth = map[string]any{"type": "m.login.password", "password": "pw-alice",
			"identifier": map[string]any{"type": "m.id.user", "user": string(alice.UserID)}}
		if st, body := e.do("DELETE", "/_matrix/client/v3/devices/"+string(second.DeviceID), alice.AccessToken, map[string]any{"auth": auth}); st != 200 {
			t.Fatalf("delete with own auth: %d %v", st, body)
		}
	})
}

// TestSharedSecretRegisterLowercases: shared-secret registration signs the name as sent and creates the
// account lower-cased; symbols are still refused.
func TestSharedSecretRegisterLowercases(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		reg := func(user string) (int, map[string]any) {
			_, n := e.do("GET", "/_synapse/admin/v1/register", "", nil)
			nonce := n["nonce"].(string)
			return e.do("POST", "/_synapse/admin/v1/register", "", map[string]any{
				"nonce": nonce, "username": user, "password": "pw", "admin": false,
				"mac": admin.MAC(sharedSecret, nonce, user, "pw", false, "")})
		}
		st, body := reg("User-UPPER")
		if want := fmt.Sprintf("@user-upper:%s", e.cfg.Server.ServerName); st != http.StatusOK || body["user_id"] != want {
			t.Fatalf("register: %d %v, want %s", st, body, want)
		}
		if st, body = reg("user!"); st != 400 || body["errcode"] != "M_INVALID_USERNAME" {
			t.Fatalf("symbols: %d %v", st, body)
		}
	})
}

// TestAsyncUploadHTTP: POST /media/v1/create reserves an mxc URI; downloading it before the upload is 504
// M_NOT_YET_UPLOADED; PUT /media/v3/upload/{server}/{id} stores it once (then 409); a waiting download gets
// the content as soon as it arrives.
func TestAsyncUploadHTTP(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		st, body := e.do("POST", "/_matrix/media/v1/create", alice.AccessToken, nil)
		if st != 200 || body["unused_expires_at"] == nil {
			t.Fatalf("create: %d %v", st, body)
		}
		uri, err := id.ParseContentURI(body["content_uri"].(string))
		if err != nil {
			t.Fatal(err)
		}
		dl := "/_matrix/client/v1/media/download/" + uri.Homeserver + "/" + uri.FileID
		if st, body = e.do("GET", dl+"?timeout_ms=0", alice.AccessToken, nil); st != 504 || body["errcode"] != "M_NOT_YET_UPLOADED" {
			t.Fatalf("download before upload: %d %v", st, body)
		}
		done := make(chan []byte, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx(t), "GET", e.url+dl+"?timeout_ms=10000", nil)
			req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- nil
				return
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			done <- data
		}()
		time.Sleep(300 * time.Millisecond)
		put := func() (int, map[string]any) {
			req, _ := http.NewRequestWithContext(ctx(t), "PUT", e.url+"/_matrix/media/v3/upload/"+uri.Homeserver+"/"+uri.FileID, strings.NewReader("late bytes"))
			req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
			req.Header.Set("Content-Type", "text/plain")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			out := map[string]any{}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			return resp.StatusCode, out
		}
		if st, body = put(); st != 200 {
			t.Fatalf("upload: %d %v", st, body)
		}
		select {
		case got := <-done:
			if string(got) != "late bytes" {
				t.Fatalf("waiting download got %q", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("waiting download did not finish")
		}
		if st, body = put(); st != 409 || body["errcode"] != "M_CANNOT_OVERWRITE_MEDIA" {
			t.Fatalf("second upload: %d %v", st, body)
		}
	})
}

// TestPushersHTTP: POST /pushers/set stores a pusher listed by GET /pushers; a password change removes the
// pushers of other sessions and keeps the current one's; kind null deletes.
func TestPushersHTTP(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		other, err := e.client().Login(ctx(t), &mautrix.ReqLogin{
			Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
			Password: "pw-alice",
		})
		if err != nil {
			t.Fatal(err)
		}
		set := func(token, key string, kind any) {
			t.Helper()
			st, body := e.do("POST", "/_matrix/client/v3/pushers/set", token, map[string]any{
				"kind": kind, "app_id": "org.example", "pushkey": key, "app_display_name": "App",
				"device_display_name": "Phone", "lang": "en", "append": true,
				"data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify"},
			})
			if st != 200 {
				t.Fatalf("set %s: %d %v", key, st, body)
			}
		}
		list := func() []any {
			t.Helper()
			st, body := e.do("GET", "/_matrix/client/v3/pushers", alice.AccessToken, nil)
			if st != 200 {
				t.Fatalf("list: %d %v", st, body)
			}
			l, _ := body["pushers"].([]any)
			return l
		}
		set(other.AccessToken, "from-other", "http")
		set(alice.AccessToken, "from-alice", "http")
		if l := list(); len(l) != 2 {
			t.Fatalf("pushers: %v", l)
		}
		st, body := e.do("POST", "/_matrix/client/v3/pushers/set", alice.AccessToken, map[string]any{"kind": "http", "app_id": "x"})
		if st != 400 {
			t.Fatalf("incomplete pusher: %d %v", st, body)
		}
		st, body = e.do("POST", "/_matrix/client/v3/account/password", alice.AccessToken, map[string]any{
			"new_password": "new-pw", "logout_devices": false,
			"auth": map[string]any{"type": "m.login.password", "password": "pw-alice",
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}})
		if st != 200 {
			t.Fatalf("password change: %d %v", st, body)
		}
		l := list()
		if len(l) != 1 || l[0].(map[string]any)["pushkey"] != "from-alice" {
			t.Fatalf("after password change: %v", l)
		}
		set(alice.AccessToken, "from-alice", nil)
		if l := list(); len(l) != 0 {
			t.Fatalf("after delete: %v", l)
		}
	})
}
