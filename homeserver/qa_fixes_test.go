package homeserver_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestLoginUnknownTypeAndBadBody: unknown login types are 400 M_UNKNOWN (even without an identifier); an empty
// or non-JSON body is 400 M_NOT_JSON.
func TestLoginUnknownTypeAndBadBody(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		e.user("alice")
		for _, typ := range []string{"m.login.foo", "m.login.token"} {
			st, body := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": typ})
			if st != http.StatusBadRequest || body["errcode"] != "M_UNKNOWN" {
				t.Errorf("type %s: %d %v", typ, st, body)
			}
			st, body = e.do("POST", "/_matrix/client/v3/login", "", map[string]any{
				"type": typ, "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "token": "x",
			})
			if st != http.StatusBadRequest || body["errcode"] != "M_UNKNOWN" {
				t.Errorf("type %s with identifier: %d %v", typ, st, body)
			}
		}
		for _, b := range []string{"", "   ", "not json", "{"} {
			st, body := e.do("POST", "/_matrix/client/v3/login", "", b)
			if st != http.StatusBadRequest || body["errcode"] != "M_NOT_JSON" {
				t.Errorf("body %q: %d %v", b, st, body)
			}
		}
	})
}

// TestUIAWrongPassword401: a wrong password in the auth of a UIA-protected endpoint is a 401 carrying the
// flows, the session, params and errcode M_FORBIDDEN (not a bare 403), and nothing changes.
func TestUIAWrongPassword401(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		second, err := e.client().Login(ctx(t), &mautrix.ReqLogin{
			Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
			Password: "pw-alice",
		})
		if err != nil {
			t.Fatal(err)
		}
		bad := map[string]any{"type": "m.login.password", "password": "wrong",
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}
		cases := []struct{ method, path string }{
			{"DELETE", "/_matrix/client/v3/devices/" + string(second.DeviceID)},
			{"POST", "/_matrix/client/v3/delete_devices"},
			{"POST", "/_matrix/client/v3/account/password"},
			{"POST", "/_matrix/client/v3/account/deactivate"},
		}
		for _, c := range cases {
			st, body := e.do(c.method, c.path, alice.AccessToken, map[string]any{
				"auth": bad, "devices": []string{string(second.DeviceID)}, "new_password": "new-pw",
			})
			if st != http.StatusUnauthorized || body["errcode"] != "M_FORBIDDEN" || body["error"] == nil ||
				body["flows"] == nil || body["session"] == nil || body["params"] == nil {
				t.Errorf("%s %s: %d %v", c.method, c.path, st, body)
			}
		}
		// Nothing happened: both devices still work and the password is unchanged.
		if _, err := alice.Whoami(ctx(t)); err != nil {
			t.Fatalf("first device: %v", err)
		}
		cli := e.client()
		cli.AccessToken = second.AccessToken
		if _, err := cli.Whoami(ctx(t)); err != nil {
			t.Fatalf("second device: %v", err)
		}
		// The right password still works.
		st, body := e.do("DELETE", "/_matrix/client/v3/devices/"+string(second.DeviceID), alice.AccessToken,
			map[string]any{"auth": map[string]any{"type": "m.login.password", "password": "pw-alice",
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}})
		if st != http.StatusOK {
			t.Fatalf("delete with right password: %d %v", st, body)
		}
	})
}

// TestInviteUnknownOrRemoteUser: inviting a local user who does not exist is 404 M_NOT_FOUND; inviting a user
// of another server (no federation) is 403 M_FORBIDDEN; neither stores an event.
func TestInviteUnknownOrRemoteUser(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		before, _ := e.hs.Rooms().MaxStreamPos(ctx(t))
		_, err = alice.InviteUser(ctx(t), room.RoomID, &mautrix.ReqInviteUser{UserID: id.NewUserID("nobody", e.cfg.Server.ServerName)})
		wantErr(t, err, "M_NOT_FOUND")
		_, err = alice.InviteUser(ctx(t), room.RoomID, &mautrix.ReqInviteUser{UserID: "@bob:elsewhere.example"})
		wantErr(t, err, "M_FORBIDDEN")
		if after, _ := e.hs.Rooms().MaxStreamPos(ctx(t)); after != before {
			t.Fatalf("stream moved from %d to %d", before, after)
		}
		e.user("bob")
		if _, err = alice.InviteUser(ctx(t), room.RoomID, &mautrix.ReqInviteUser{UserID: id.NewUserID("bob", e.cfg.Server.ServerName)}); err != nil {
			t.Fatalf("invite existing user: %v", err)
		}
	})
}

// TestIdempotentJoinAndState: joining a room one is in answers 200 with the room and stores nothing; setting a
// state event to the content it already has (same sender) returns the existing event ID; a different content
// stores a new event.
func TestIdempotentJoinAndState(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Same"})
		if err != nil {
			t.Fatal(err)
		}
		rs := e.hs.Rooms()
		before, _ := rs.MaxStreamPos(ctx(t))
		resp, err := alice.JoinRoomByID(ctx(t), room.RoomID)
		if err != nil || resp.RoomID != room.RoomID {
			t.Fatalf("join again: %v %v", resp, err)
		}
		if after, _ := rs.MaxStreamPos(ctx(t)); after != before {
			t.Fatalf("re-join stored an event (stream %d → %d)", before, after)
		}
		cur, err := rs.StateEvent(ctx(t), room.RoomID, "m.room.name", "")
		if err != nil {
			t.Fatal(err)
		}
		// Same content, keys in another order and with spaces: still the same state.
		st, body := e.do("PUT", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/state/m.room.name/", alice.AccessToken,
			`{ "name" : "Same" }`)
		if st != http.StatusOK || body["event_id"] != string(cur.ID) {
			t.Fatalf("identical state: %d %v, want %s", st, body, cur.ID)
		}
		if after, _ := rs.MaxStreamPos(ctx(t)); after != before {
			t.Fatalf("identical state stored an event (stream %d → %d)", before, after)
		}
		changed, err := alice.SendStateEvent(ctx(t), room.RoomID, event.StateRoomName, "", map[string]any{"name": "Other"})
		if err != nil || changed.EventID == cur.ID {
			t.Fatalf("changed state: %v %v", changed, err)
		}
		// A custom state event set twice with the same content is stored once.
		free, err := alice.SendStateEvent(ctx(t), room.RoomID, event.NewEventType("org.example.free"), "k", map[string]any{"a": 1})
		if err != nil {
			t.Fatal(err)
		}
		again, err := alice.SendStateEvent(ctx(t), room.RoomID, event.NewEventType("org.example.free"), "k", map[string]any{"a": 1})
		if err != nil || again.EventID != free.EventID {
			t.Fatalf("same custom state: %v %v, want %s", again, err, free.EventID)
		}
	})
}

// TestCannotKickNonPresentUser: kicking someone who never joined, or who already left, is 403 M_FORBIDDEN and
// stores nothing; kicking a member works.
func TestCannotKickNonPresentUser(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		rs := e.hs.Rooms()
		before, _ := rs.MaxStreamPos(ctx(t))
		_, err = alice.KickUser(ctx(t), room.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "never here"})
		wantErr(t, err, "M_FORBIDDEN")
		if after, _ := rs.MaxStreamPos(ctx(t)); after != before {
			t.Fatalf("kick of a non-member stored an event")
		}
		if _, err = bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err = bob.LeaveRoom(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		_, err = alice.KickUser(ctx(t), room.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID})
		wantErr(t, err, "M_FORBIDDEN")
		if _, err = bob.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err = alice.KickUser(ctx(t), room.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID}); err != nil {
			t.Fatalf("kick a member: %v", err)
		}
	})
}

// TestPathTraversalIsJSON404: a request path with ".." segments (curl --path-as-is) gets a Matrix JSON 404,
// not the mux's HTML redirect to the cleaned path.
func TestPathTraversalIsJSON404(t *testing.T) {
	e := newEnv(t, "sqlite", nil, nil)
	for _, p := range []string{
		"/_matrix/media/v3/download/localhost/../../etc/passwd",
		"/_matrix/client/v3/../versions",
		"/_matrix//client/versions",
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write([]byte("GET " + p + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(conn)
		conn.Close()
		resp := buf.String()
		if !strings.HasPrefix(resp, "HTTP/1.1 404") || !strings.Contains(resp, `"errcode":"M_UNRECOGNIZED"`) ||
			strings.Contains(strings.ToLower(resp), "location:") {
			t.Errorf("%s: %q", p, resp)
		}
	}
}

// TestEncodedSlashIsNotTraversal: %2F inside a path segment (an mxc URI pasted into the media path) is data, so the
// request reaches its handler and is judged there (here: no token → 401), not refused as a non-canonical path.
func TestEncodedSlashIsNotTraversal(t *testing.T) {
	e := newEnv(t, "sqlite", nil, nil)
	resp, err := http.Get(e.url + "/_matrix/client/v1/media/download/localhost/mxc:%2F%2Flocalhost%2Fabc")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "M_MISSING_TOKEN") {
		t.Fatalf("got %d %s, want 401 M_MISSING_TOKEN", resp.StatusCode, body)
	}
}

// TestRedactedSecretLeavesSQLiteFile: once a message is redacted and the WAL checkpointed, its text is gone from
// the database file bytes (secure_delete), and the files are private (0600).
func TestRedactedSecretLeavesSQLiteFile(t *testing.T) {
	e := newEnv(t, "sqlite", nil, nil)
	alice := e.user("alice")
	room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	const secret = "my-password-is-Zq7#unique-9f1c2e"
	sent, err := alice.SendText(ctx(t), room.RoomID, "oops "+secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = alice.RedactEvent(ctx(t), room.RoomID, sent.EventID); err != nil {
		t.Fatal(err)
	}
	if _, err = e.hs.DB().Exec(ctx(t), `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.cfg.Server.DataDir, "homeserver.db")
	for _, p := range []string{path, path + "-wal"} {
		data, err := os.ReadFile(p)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("%s still contains the redacted text", filepath.Base(p))
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", filepath.Base(p), st.Mode().Perm())
		}
	}
}
