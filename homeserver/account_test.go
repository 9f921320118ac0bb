package homeserver_test

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

func TestAccounts(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		anon := e.client()
		vers, err := anon.Versions(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if !vers.ContainsGreaterOrEqual(mautrix.SpecV111) {
			t.Fatalf("versions do not advertise v1.11: %v", vers.Versions)
		}

		// Registration discovery: a POST without auth answers 401 with the dummy flow.
		status, body := e.do("POST", "/_matrix/client/v3/register", "", `{"username":"x","password":"y"}`)
		if status != http.StatusUnauthorized || body["flows"] == nil || body["session"] == nil {
			t.Fatalf("register without auth: %d %v", status, body)
		}
		alice := e.user("alice")
		who, err := alice.Whoami(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if who.UserID != "@alice:localhost" || who.DeviceID == "" || who.DeviceID != alice.DeviceID {
			t.Fatalf("whoami: %+v", who)
		}
		status, body = e.do("GET", "/_matrix/client/v3/account/whoami", alice.AccessToken, nil)
		if status != 200 || body["is_guest"] != false {
			t.Fatalf("whoami raw: %d %v", status, body)
		}

		// Taken names.
		_, err = e.client().RegisterDummy(ctx(t), &mautrix.ReqRegister[any]{Username: "alice", Password: "x"})
		wantErr(t, err, "M_USER_IN_USE")
		status, body = e.do("GET", "/_matrix/client/v3/register/available?username=alice", "", nil)
		if status != 400 || body["errcode"] != "M_USER_IN_USE" {
			t.Fatalf("available(alice): %d %v", status, body)
		}
		status, body = e.do("GET", "/_matrix/client/v3/register/available?username=nobody", "", nil)
		if status != 200 || body["available"] != true {
			t.Fatalf("available(nobody): %d %v", status, body)
		}
		_, err = e.client().RegisterDummy(ctx(t), &mautrix.ReqRegister[any]{Username: "Bad Name!", Password: "x"})
		wantErr(t, err, "M_INVALID_USERNAME")

		// Login: flows, identifier form, legacy user form, wrong password.
		flows, err := anon.GetLoginFlows(ctx(t))
		if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) || !flows.HasFlow(mautrix.AuthTypeAppservice) {
			t.Fatalf("login flows: %v %v", flows, err)
		}
		cli := e.client()
		login, err := cli.Login(ctx(t), &mautrix.ReqLogin{
			Type:       mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
			Password:   "pw-alice", StoreCredentials: true,
		})
		if err != nil || login.UserID != "@alice:localhost" || login.AccessToken == "" {
			t.Fatalf("login: %+v %v", login, err)
		}
		status, body = e.do("POST", "/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "user": "@alice:localhost", "password": "pw-alice",
		})
		if status != 200 || body["user_id"] != "@alice:localhost" {
			t.Fatalf("legacy login: %d %v", status, body)
		}
		_, err = e.client().Login(ctx(t), &mautrix.ReqLogin{
			Type:       mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "wrong",
		})
		wantErr(t, err, "M_FORBIDDEN")

		// Logout ends exactly that token.
		if _, err := cli.Logout(ctx(t)); err != nil {
			t.Fatal(err)
		}
		_, err = cli.Whoami(ctx(t))
		wantErr(t, err, "M_UNKNOWN_TOKEN")
		if _, err := alice.Whoami(ctx(t)); err != nil {
			t.Fatalf("other device logged out too: %v", err)
		}
		status, _ = e.do("POST", "/_matrix/client/v3/logout/all", alice.AccessToken, "{}")
		if status != 200 {
			t.Fatalf("logout/all: %d", status)
		}
		_, err = alice.Whoami(ctx(t))
		wantErr(t, err, "M_UNKNOWN_TOKEN")
	})
}

func TestProfileUpdatesMemberEvents(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		room, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.SetDisplayName(ctx(t), "Alice Liddell"); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetAvatarURL(ctx(t), id.ContentURI{Homeserver: "localhost", FileID: "abc"}); err != nil {
			t.Fatal(err)
		}
		prof, err := e.client().GetProfile(ctx(t), alice.UserID)
		if err != nil || prof.DisplayName != "Alice Liddell" || prof.AvatarURL.FileID != "abc" {
			t.Fatalf("profile: %+v %v", prof, err)
		}
		members, err := alice.JoinedMembers(ctx(t), room.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		m := members.Joined[alice.UserID]
		if m.DisplayName != "Alice Liddell" || m.AvatarURL != "mxc://localhost/abc" {
			t.Fatalf("member event not updated: %+v", m)
		}
		// Someone else's profile cannot be changed.
		bob := e.user("bob")
		status, body := e.do("PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname", bob.AccessToken, `{"displayname":"x"}`)
		if status != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("foreign profile: %d %v", status, body)
		}
		_, err = e.client().GetProfile(ctx(t), "@ghost:localhost")
		wantErr(t, err, "M_NOT_FOUND")
		if !slices.Contains([]string{"Alice Liddell"}, prof.DisplayName) {
			t.Fatal("unreachable")
		}
	})
}

func TestDevices(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		second := e.client()
		login, err := second.Login(ctx(t), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, DeviceID: "PHONE",
			InitialDeviceDisplayName: "Phone", StoreCredentials: true,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "pw-alice"})
		if err != nil || login.DeviceID != "PHONE" {
			t.Fatalf("login with device id: %+v %v", login, err)
		}
		status, body := e.do("GET", "/_matrix/client/v3/devices", alice.AccessToken, nil)
		if devs, _ := body["devices"].([]any); status != 200 || len(devs) != 2 {
			t.Fatalf("devices: %d %v", status, body)
		}
		status, body = e.do("PUT", "/_matrix/client/v3/devices/PHONE", alice.AccessToken, `{"display_name":"Old phone"}`)
		if status != 200 {
			t.Fatalf("rename: %d %v", status, body)
		}
		status, body = e.do("GET", "/_matrix/client/v3/devices/PHONE", alice.AccessToken, nil)
		if status != 200 || body["display_name"] != "Old phone" {
			t.Fatalf("device: %d %v", status, body)
		}
		// Deleting needs the password (UIA), then the device's token is dead.
		status, body = e.do("DELETE", "/_matrix/client/v3/devices/PHONE", alice.AccessToken, `{}`)
		if status != 401 || body["flows"] == nil {
			t.Fatalf("delete without auth: %d %v", status, body)
		}
		status, body = e.do("DELETE", "/_matrix/client/v3/devices/PHONE", alice.AccessToken,
			`{"auth":{"type":"m.login.password","password":"wrong"}}`)
		if status != 401 || body["errcode"] != "M_FORBIDDEN" || body["flows"] == nil {
			t.Fatalf("delete with a wrong password: %d %v", status, body)
		}
		status, body = e.do("DELETE", "/_matrix/client/v3/devices/PHONE", alice.AccessToken,
			`{"auth":{"type":"m.login.password","password":"pw-alice","identifier":{"type":"m.id.user","user":"alice"}}}`)
		if status != 200 {
			t.Fatalf("delete: %d %v", status, body)
		}
		_, err = second.Whoami(ctx(t))
		wantErr(t, err, "M_UNKNOWN_TOKEN")
		status, _ = e.do("GET", "/_matrix/client/v3/devices/PHONE", alice.AccessToken, nil)
		if status != 404 {
			t.Fatalf("deleted device still there: %d", status)
		}
		// Several at once: a second and a third session go, unknown IDs are skipped.
		var others []*mautrix.Client
		for _, dev := range []id.DeviceID{"TABLET", "LAPTOP"} {
			c := e.client()
			if _, err := c.Login(ctx(t), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, DeviceID: dev, StoreCredentials: true,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "pw-alice"}); err != nil {
				t.Fatal(err)
			}
			others = append(others, c)
		}
		status, body = e.do("POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, `{"devices":["TABLET","LAPTOP","GHOST"]}`)
		if status != 401 {
			t.Fatalf("delete_devices without auth: %d %v", status, body)
		}
		status, body = e.do("POST", "/_matrix/client/v3/delete_devices", alice.AccessToken,
			`{"devices":["TABLET","LAPTOP","GHOST"],"auth":{"type":"m.login.password","password":"pw-alice"}}`)
		if status != 200 {
			t.Fatalf("delete_devices: %d %v", status, body)
		}
		for _, c := range others {
			_, err := c.Whoami(ctx(t))
			wantErr(t, err, "M_UNKNOWN_TOKEN")
		}
		if _, err := alice.Whoami(ctx(t)); err != nil {
			t.Fatalf("the requesting session was logged out: %v", err)
		}
	})
}

func TestChangePasswordAndDeactivate(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		other := e.client()
		if _, err := other.Login(ctx(t), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, StoreCredentials: true,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "pw-alice"}); err != nil {
			t.Fatal(err)
		}
		status, body := e.do("POST", "/_matrix/client/v3/account/password", alice.AccessToken, `{"new_password":"n3w"}`)
		if status != 401 || body["flows"] == nil {
			t.Fatalf("password change without auth: %d %v", status, body)
		}
		status, body = e.do("POST", "/_matrix/client/v3/account/password", alice.AccessToken,
			`{"new_password":"n3w","auth":{"type":"m.login.password","password":"pw-alice"}}`)
		if status != 200 {
			t.Fatalf("password change: %d %v", status, body)
		}
		if _, err := alice.Whoami(ctx(t)); err != nil {
			t.Fatalf("the changing device was logged out: %v", err)
		}
		_, err := other.Whoami(ctx(t))
		wantErr(t, err, "M_UNKNOWN_TOKEN")
		_, err = e.client().Login(ctx(t), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "pw-alice"})
		wantErr(t, err, "M_FORBIDDEN")

		// Deactivation leaves rooms and ends every session.
		room, err := bob.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.JoinRoomByID(ctx(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		status, body = e.do("POST", "/_matrix/client/v3/account/deactivate", alice.AccessToken,
			`{"auth":{"type":"m.login.password","password":"n3w"}}`)
		if status != 200 {
			t.Fatalf("deactivate: %d %v", status, body)
		}
		members, err := bob.JoinedMembers(ctx(t), room.RoomID)
		if err != nil || len(members.Joined) != 1 {
			t.Fatalf("deactivated user still in the room: %+v %v", members, err)
		}
		_, err = alice.Whoami(ctx(t))
		wantErr(t, err, "M_UNKNOWN_TOKEN")
	})
}
