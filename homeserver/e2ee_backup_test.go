package homeserver_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/id"
)

func TestE2EEKeyBackup(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		_, err := alice.GetKeyBackupLatestVersion(ctx(t))
		wantErr(t, err, "M_NOT_FOUND")

		auth := backup.MegolmAuthData{PublicKey: "cHVibGljIGtleQ"}
		v1, err := alice.CreateKeyBackupVersion(ctx(t), &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: auth})
		if err != nil || v1.Version != "1" {
			t.Fatalf("create version: %+v %v", v1, err)
		}
		latest, err := alice.GetKeyBackupLatestVersion(ctx(t))
		if err != nil || latest.Version != "1" || latest.Count != 0 || latest.AuthData.PublicKey != auth.PublicKey {
			t.Fatalf("latest: %+v %v", latest, err)
		}
		_, err = bob.GetKeyBackupVersion(ctx(t), "1")
		wantErr(t, err, "M_NOT_FOUND")

		room := id.RoomID("!room:localhost")
		data := func(tag string) json.RawMessage {
			return json.RawMessage(`{"ciphertext":"` + tag + `","ephemeral":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","mac":"AAAA"}`)
		}
		put := func(fmi int, verified bool, tag string) *mautrix.RespRoomKeysUpdate {
			t.Helper()
			r, err := alice.PutKeysInBackup(ctx(t), "1", &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
				room: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{"sess1": {FirstMessageIndex: fmi, IsVerified: verified, SessionData: data(tag)}}}}})
			if err != nil {
				t.Fatalf("put keys: %v", err)
			}
			return r
		}
		r1 := put(5, false, "AAAA")
		if r1.Count != 1 {
			t.Fatalf("count after first put: %+v", r1)
		}
		// A worse copy (higher first message index) does not replace it, and the etag stays.
		if r2 := put(10, false, "BBBB"); r2.ETag != r1.ETag {
			t.Fatalf("etag changed without a change: %s → %s", r1.ETag, r2.ETag)
		}
		got, err := alice.GetKeyBackupForRoomAndSession(ctx(t), "1", room, "sess1")
		if err != nil || got.FirstMessageIndex != 5 {
			t.Fatalf("worse key replaced the better one: %+v %v", got, err)
		}
		// A verified copy wins even with a higher index.
		if r3 := put(7, true, "CCCC"); r3.ETag == r1.ETag {
			t.Fatalf("etag unchanged after a replacement")
		}
		all, err := alice.GetKeyBackup(ctx(t), "1")
		if err != nil || len(all.Rooms[room].Sessions) != 1 || !all.Rooms[room].Sessions["sess1"].IsVerified {
			t.Fatalf("get all keys: %+v %v", all, err)
		}

		// A new version becomes current; writing into the old one is refused with the current version named.
		if v2, err := alice.CreateKeyBackupVersion(ctx(t), &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: auth}); err != nil || v2.Version != "2" {
			t.Fatalf("second version: %+v %v", v2, err)
		}
		st, body := e.do("PUT", "/_matrix/client/v3/room_keys/keys/"+string(room)+"/sess2?version=1", alice.AccessToken,
			map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{}})
		if st != http.StatusForbidden || body["errcode"] != "M_WRONG_ROOM_KEYS_VERSION" || body["current_version"] != "2" {
			t.Fatalf("write to old version: %d %v", st, body)
		}
		// The algorithm of a version cannot change; auth_data can.
		st, _ = e.do("PUT", "/_matrix/client/v3/room_keys/version/2", alice.AccessToken,
			map[string]any{"algorithm": "m.other", "auth_data": map[string]any{}})
		if st != http.StatusBadRequest {
			t.Fatalf("algorithm change: %d", st)
		}
		// (Raw request: mautrix-go's UpdateKeyBackupVersion sends no body.)
		st, body = e.do("PUT", "/_matrix/client/v3/room_keys/version/2", alice.AccessToken, map[string]any{
			"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": map[string]any{"public_key": "bmV3IGtleQ"}, "version": "2"})
		if st != http.StatusOK {
			t.Fatalf("update auth_data: %d %v", st, body)
		}
		if v, err := alice.GetKeyBackupVersion(ctx(t), "2"); err != nil || v.AuthData.PublicKey != "bmV3IGtleQ" {
			t.Fatalf("auth_data not updated: %+v %v", v, err)
		}
		// Deleting version 2 makes 1 the latest again; its keys can then be deleted one by one.
		if err := alice.DeleteKeyBackupVersion(ctx(t), "2"); err != nil {
			t.Fatal(err)
		}
		if latest, err = alice.GetKeyBackupLatestVersion(ctx(t)); err != nil || latest.Version != "1" || latest.Count != 1 {
			t.Fatalf("latest after deleting 2: %+v %v", latest, err)
		}
		if _, err = alice.GetKeyBackupVersion(ctx(t), "2"); err == nil {
			t.Fatal("deleted version still served")
		}
		del, err := alice.DeleteKeysInBackupForRoomAndSession(ctx(t), "1", room, "sess1")
		if err != nil || del.Count != 0 {
			t.Fatalf("delete session: %+v %v", del, err)
		}
		_, err = alice.GetKeyBackupForRoomAndSession(ctx(t), "1", room, "sess1")
		wantErr(t, err, "M_NOT_FOUND")
	})
}
