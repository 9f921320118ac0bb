package homeserver_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
)

// edKey is an ed25519 key pair for signing test keys.
type edKey struct {
	pub  string
	priv ed25519.PrivateKey
}

func newEdKey(t *testing.T) edKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return edKey{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// sign returns the Matrix signature of v (marshalled without signatures and unsigned).
func (k edKey) sign(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	delete(m, "signatures")
	delete(m, "unsigned")
	msg, err := canonicaljson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawStdEncoding.EncodeToString(ed25519.Sign(k.priv, msg))
}

// uploadDeviceKeys uploads self-signed device keys and n one-time keys for cli's device.
func uploadDeviceKeys(t *testing.T, cli *mautrix.Client, n int) (*mautrix.DeviceKeys, edKey) {
	t.Helper()
	k := newEdKey(t)
	dk := &mautrix.DeviceKeys{
		UserID: cli.UserID, DeviceID: cli.DeviceID,
		Algorithms: []id.Algorithm{id.AlgorithmOlmV1, id.AlgorithmMegolmV1},
		Keys: mautrix.KeyMap{
			id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, cli.DeviceID): "c" + k.pub[1:],
			id.NewDeviceKeyID(id.KeyAlgorithmEd25519, cli.DeviceID):    k.pub,
		},
	}
	dk.Signatures = signatures.NewSingleSignature(cli.UserID, id.KeyAlgorithmEd25519, cli.DeviceID.String(), k.sign(t, dk))
	otks := map[id.KeyID]mautrix.OneTimeKey{}
	for i := range n {
		otks[id.NewKeyID(id.KeyAlgorithmSignedCurve25519, fmt.Sprintf("K%03d", i))] = mautrix.OneTimeKey{Key: id.Curve25519(fmt.Sprintf("otk%03d", i))}
	}
	resp, err := cli.UploadKeys(ctx(t), &mautrix.ReqUploadKeys{DeviceKeys: dk, OneTimeKeys: otks})
	if err != nil {
		t.Fatalf("upload keys: %v", err)
	}
	if resp.OneTimeKeyCounts.SignedCurve25519 != n {
		t.Fatalf("one_time_key_counts after upload = %+v, want %d", resp.OneTimeKeyCounts, n)
	}
	return dk, k
}

// directRoom creates a room of a and joins b.
func directRoom(t *testing.T, a, b *mautrix.Client) id.RoomID {
	t.Helper()
	resp, err := a.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{b.UserID}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.JoinRoomByID(ctx(t), resp.RoomID); err != nil {
		t.Fatal(err)
	}
	return resp.RoomID
}

func TestE2EEKeysUploadQueryClaim(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		dk, _ := uploadDeviceKeys(t, alice, 3)

		q, err := bob.QueryKeys(ctx(t), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := q.DeviceKeys[alice.UserID][alice.DeviceID]
		if !ok || got.Keys.GetEd25519(alice.DeviceID) != dk.Keys.GetEd25519(alice.DeviceID) {
			t.Fatalf("query: %+v", q.DeviceKeys)
		}
		if got.Signatures[alice.UserID][id.NewKeyID(id.KeyAlgorithmEd25519, alice.DeviceID.String())] == "" {
			t.Fatalf("device self-signature lost: %+v", got.Signatures)
		}
		// Keys for somebody else's device are refused.
		wrong := *dk
		wrong.DeviceID = "OTHERDEVICE"
		_, err = alice.UploadKeys(ctx(t), &mautrix.ReqUploadKeys{DeviceKeys: &wrong})
		wantErr(t, err, "M_INVALID_PARAM")

		// A fallback key, uploaded raw (mautrix's request type has no fallback_keys).
		status, body := e.do("POST", "/_matrix/client/v3/keys/upload", alice.AccessToken, map[string]any{
			"fallback_keys": map[string]any{"signed_curve25519:FB": map[string]any{"key": "fallbackkey", "fallback": true}},
		})
		if status != http.StatusOK {
			t.Fatalf("fallback upload: %d %v", status, body)
		}

		// Concurrent claims get distinct one-time keys, then the fallback key.
		var mu sync.Mutex
		var claimed []id.KeyID
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() {
				resp, err := bob.ClaimKeys(ctx(t), &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
					alice.UserID: {alice.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for kid := range resp.OneTimeKeys[alice.UserID][alice.DeviceID] {
					claimed = append(claimed, kid)
				}
			})
		}
		wg.Wait()
		slices.Sort(claimed)
		want := []id.KeyID{"signed_curve25519:FB", "signed_curve25519:FB", "signed_curve25519:K000",
			"signed_curve25519:K001", "signed_curve25519:K002"}
		if !slices.Equal(claimed, want) {
			t.Fatalf("claimed %v, want %v", claimed, want)
		}

		// Counts and the used fallback key show up in alice's sync.
		s, err := alice.SyncRequest(ctx(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if s.DeviceOTKCount.SignedCurve25519 != 0 || len(s.FallbackKeys) != 0 {
			t.Fatalf("sync counts %+v, unused fallback %v", s.DeviceOTKCount, s.FallbackKeys)
		}
		var raw struct {
			Counts map[string]int `json:"device_one_time_keys_count"`
		}
		_, b := e.do("GET", "/_matrix/client/v3/sync", alice.AccessToken, nil)
		data, _ := json.Marshal(b)
		_ = json.Unmarshal(data, &raw)
		if c, ok := raw.Counts["signed_curve25519"]; !ok || c != 0 {
			t.Fatalf("signed_curve25519 must be present (0): %v", raw.Counts)
		}
		uploadDeviceKeys(t, alice, 4)
		s, _ = alice.SyncRequest(ctx(t), 0, "", "", false, "")
		if s.DeviceOTKCount.SignedCurve25519 != 4 {
			t.Fatalf("sync counts after refill %+v", s.DeviceOTKCount)
		}
	})
}

func TestE2EEToDevice(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		bob2 := e.client()
		resp, err := bob2.Login(ctx(t), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"}, Password: "pw-bob"})
		if err != nil {
			t.Fatal(err)
		}
		bob2.UserID, bob2.AccessToken, bob2.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
		_, since := syncUntil(t, bob, "", func(*mautrix.RespSync) bool { return true })
		_, since2 := syncUntil(t, bob2, "", func(*mautrix.RespSync) bool { return true })

		// bob waits in a long-poll; a to-device message must wake it at once.
		type result struct {
			resp *mautrix.RespSync
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			r, err := bob.SyncRequest(ctx(t), 20000, since, "", false, "")
			done <- result{r, err, time.Since(start)}
		}()
		time.Sleep(300 * time.Millisecond)
		body := map[string]any{"messages": map[string]any{string(bob.UserID): map[string]any{"*": map[string]any{"hello": "all"}}}}
		for range 2 { // the retry with the same transaction ID is not delivered twice
			if st, b := e.do("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", alice.AccessToken, body); st != http.StatusOK {
				t.Fatalf("sendToDevice: %d %v", st, b)
			}
		}
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("to-device message did not wake the long-poll")
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.took > 5*time.Second || len(r.resp.ToDevice.Events) != 1 {
			t.Fatalf("after %v got %d to-device events", r.took, len(r.resp.ToDevice.Events))
		}
		ev := r.resp.ToDevice.Events[0]
		if ev.Sender != alice.UserID || ev.Type.Type != "m.test" || ev.Content.Raw["hello"] != "all" {
			t.Fatalf("to-device event %+v", ev)
		}
		// The wildcard reached bob's other device too; an explicit message reaches one device only.
		_, err = alice.SendToDevice(ctx(t), event.Type{Type: "m.test", Class: event.ToDeviceEventType},
			&mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
				bob.UserID: {bob2.DeviceID: {Raw: map[string]any{"only": "bob2"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		s2, err := bob2.SyncRequest(ctx(t), 0, since2, "", false, "")
		if err != nil || len(s2.ToDevice.Events) != 2 || s2.ToDevice.Events[1].Content.Raw["only"] != "bob2" {
			t.Fatalf("bob2 to-device: %+v %v", s2, err)
		}
		// Re-syncing from the same token delivers again (not acknowledged); syncing from the new one does not.
		again, _ := bob.SyncRequest(ctx(t), 0, since, "", false, "")
		if len(again.ToDevice.Events) != 1 {
			t.Fatalf("unacknowledged message not re-delivered: %d", len(again.ToDevice.Events))
		}
		next, _ := bob.SyncRequest(ctx(t), 0, r.resp.NextBatch, "", false, "")
		if len(next.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged message delivered again")
		}
		fromStart, _ := bob.SyncRequest(ctx(t), 0, "", "", false, "")
		if len(fromStart.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged message not deleted: %d", len(fromStart.ToDevice.Events))
		}
	})
}

func TestE2EEDeviceListChanges(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob, carol := e.user("alice"), e.user("bob"), e.user("carol")
		directRoom(t, alice, bob)
		_, bobSince := syncUntil(t, bob, "", func(*mautrix.RespSync) bool { return true })
		_, carolSince := syncUntil(t, carol, "", func(*mautrix.RespSync) bool { return true })

		done := make(chan *mautrix.RespSync, 1)
		go func() {
			r, err := bob.SyncRequest(ctx(t), 20000, bobSince, "", false, "")
			if err != nil {
				t.Error(err)
			}
			done <- r
		}()
		time.Sleep(300 * time.Millisecond)
		start := time.Now()
		uploadDeviceKeys(t, alice, 0)
		var r *mautrix.RespSync
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("key upload did not wake bob's long-poll")
		}
		if r == nil || !slices.Contains(r.DeviceLists.Changed, alice.UserID) || time.Since(start) > 5*time.Second {
			t.Fatalf("bob's device_lists: %+v", r)
		}
		c, err := carol.SyncRequest(ctx(t), 0, carolSince, "", false, "")
		if err != nil || slices.Contains(c.DeviceLists.Changed, alice.UserID) {
			t.Fatalf("carol shares no room with alice but got %+v %v", c.DeviceLists, err)
		}
		ch, err := bob.GetKeyChanges(ctx(t), bobSince, r.NextBatch)
		if err != nil || !slices.Equal(ch.Changed, []id.UserID{alice.UserID}) {
			t.Fatalf("/keys/changes: %+v %v", ch, err)
		}

		// Deleting the device (UIA) removes its keys and is a change too.
		err = alice.DeleteDevice(ctx(t), alice.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "pw-alice"}})
		if err != nil {
			t.Fatal(err)
		}
		q, err := bob.QueryKeys(ctx(t), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
		if err != nil || len(q.DeviceKeys[alice.UserID]) != 0 {
			t.Fatalf("keys of a deleted device: %+v %v", q, err)
		}
		r2, _ := bob.SyncRequest(ctx(t), 0, r.NextBatch, "", false, "")
		if !slices.Contains(r2.DeviceLists.Changed, alice.UserID) {
			t.Fatalf("device deletion not in bob's device_lists: %+v", r2.DeviceLists)
		}

		// carol joining bob's room: bob must learn of her devices, and she of his; her leaving is "left".
		rooms, _ := bob.JoinedRooms(ctx(t))
		room := rooms.JoinedRooms[0]
		if _, err := bob.InviteUser(ctx(t), room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoomByID(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		_, bobSince = syncUntil(t, bob, r2.NextBatch, func(s *mautrix.RespSync) bool {
			return slices.Contains(s.DeviceLists.Changed, carol.UserID)
		})
		syncUntil(t, carol, carolSince, func(s *mautrix.RespSync) bool {
			return slices.Contains(s.DeviceLists.Changed, bob.UserID) && slices.Contains(s.DeviceLists.Changed, alice.UserID)
		})
		if _, err := carol.LeaveRoom(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, bobSince, func(s *mautrix.RespSync) bool { return slices.Contains(s.DeviceLists.Left, carol.UserID) })
	})
}

func TestE2EECrossSigningUIA(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		directRoom(t, alice, bob)
		dk, devKey := uploadDeviceKeys(t, alice, 0)
		msk, ssk, usk := newEdKey(t), newEdKey(t), newEdKey(t)
		csKey := func(k edKey, usage id.CrossSigningUsage) mautrix.CrossSigningKeys {
			return mautrix.CrossSigningKeys{UserID: alice.UserID, Usage: []id.CrossSigningUsage{usage},
				Keys: map[id.KeyID]id.Ed25519{id.NewKeyID(id.KeyAlgorithmEd25519, k.pub): id.Ed25519(k.pub)}}
		}
		master := csKey(msk, id.XSUsageMaster)
		self := csKey(ssk, id.XSUsageSelfSigning)
		self.Signatures = signatures.NewSingleSignature(alice.UserID, id.KeyAlgorithmEd25519, msk.pub, msk.sign(t, self))
		user := csKey(usk, id.XSUsageUserSigning)
		user.Signatures = signatures.NewSingleSignature(alice.UserID, id.KeyAlgorithmEd25519, msk.pub, msk.sign(t, user))
		req := &mautrix.UploadCrossSigningKeysReq[any]{Master: master, SelfSigning: self, UserSigning: user}

		// Without auth: 401 with the password flow and a session.
		var flows *mautrix.RespUserInteractive
		err := alice.UploadCrossSigningKeys(ctx(t), req, func(ui *mautrix.RespUserInteractive) any {
			flows = ui
			return map[string]any{"type": "m.login.password", "session": ui.Session, "password": "wrong",
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}
		})
		if flows == nil || flows.Session == "" || !flows.HasSingleStageFlow(mautrix.AuthTypePassword) {
			t.Fatalf("no password UIA flow offered: %+v", flows)
		}
		wantErr(t, err, "M_FORBIDDEN")
		req.Auth = nil
		err = alice.UploadCrossSigningKeys(ctx(t), req, func(ui *mautrix.RespUserInteractive) any {
			return map[string]any{"type": "m.login.password", "session": ui.Session, "password": "pw-alice",
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}
		})
		if err != nil {
			t.Fatalf("upload with password: %v", err)
		}
		// Someone else's session is refused.
		st, body := e.do("POST", "/_matrix/client/v3/keys/device_signing/upload", bob.AccessToken, map[string]any{})
		if st != http.StatusUnauthorized {
			t.Fatalf("bob without auth: %d %v", st, body)
		}
		st, _ = e.do("POST", "/_matrix/client/v3/keys/device_signing/upload", bob.AccessToken, map[string]any{
			"auth": map[string]any{"type": "m.login.password", "session": flows.Session, "password": "pw-bob"}})
		if st != http.StatusUnauthorized {
			t.Fatalf("bob reused alice's session: %d", st)
		}

		// Signatures: alice's device by her self-signing key.
		dk.Signatures = nil
		sig := ssk.sign(t, dk)
		dk.Signatures = signatures.NewSingleSignature(alice.UserID, id.KeyAlgorithmEd25519, ssk.pub, sig)
		dk.Signatures[alice.UserID][id.NewKeyID(id.KeyAlgorithmEd25519, alice.DeviceID.String())] = devKey.sign(t, dk)
		resp, err := alice.UploadSignatures(ctx(t), &mautrix.ReqUploadSignatures{alice.UserID: {
			alice.DeviceID.String(): {UserID: dk.UserID, DeviceID: dk.DeviceID, Algorithms: dk.Algorithms,
				Keys: map[id.KeyID]string{
					id.NewKeyID(id.KeyAlgorithmCurve25519, alice.DeviceID.String()): string(dk.Keys[id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, alice.DeviceID)]),
					id.NewKeyID(id.KeyAlgorithmEd25519, alice.DeviceID.String()):    devKey.pub,
				},
				Signatures: dk.Signatures}}})
		if err != nil || len(resp.Failures) != 0 {
			t.Fatalf("signature upload: %+v %v", resp, err)
		}
		q, err := bob.QueryKeys(ctx(t), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
		if err != nil {
			t.Fatal(err)
		}
		mk, sk := q.MasterKeys[alice.UserID], q.SelfSigningKeys[alice.UserID]
		if mk.FirstKey() != id.Ed25519(msk.pub) || sk.FirstKey() != id.Ed25519(ssk.pub) {
			t.Fatalf("cross-signing keys: %+v %+v", q.MasterKeys, q.SelfSigningKeys)
		}
		if _, shown := q.UserSigningKeys[alice.UserID]; shown {
			t.Fatalf("alice's user-signing key shown to bob")
		}
		if q.DeviceKeys[alice.UserID][alice.DeviceID].Signatures[alice.UserID][id.NewKeyID(id.KeyAlgorithmEd25519, ssk.pub)] != sig {
			t.Fatalf("self-signing signature missing: %+v", q.DeviceKeys[alice.UserID][alice.DeviceID].Signatures)
		}
	})
}

func TestE2EEToDeviceBatches(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		_, since := syncUntil(t, bob, "", func(*mautrix.RespSync) bool { return true })
		const total = 130 // more than one /sync carries
		for i := range total {
			body := map[string]any{"messages": map[string]any{string(bob.UserID): map[string]any{string(bob.DeviceID): map[string]any{"i": i}}}}
			if st, b := e.do("PUT", fmt.Sprintf("/_matrix/client/v3/sendToDevice/m.test/b%d", i), alice.AccessToken, body); st != http.StatusOK {
				t.Fatalf("sendToDevice: %d %v", st, b)
			}
		}
		var seen []int
		for range 5 {
			r, err := bob.SyncRequest(ctx(t), 0, since, "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range r.ToDevice.Events {
				seen = append(seen, int(ev.Content.Raw["i"].(float64)))
			}
			since = r.NextBatch
			if len(r.ToDevice.Events) == 0 {
				break
			}
		}
		if len(seen) != total {
			t.Fatalf("got %d to-device messages over several syncs, want %d", len(seen), total)
		}
		for i, v := range seen {
			if v != i {
				t.Fatalf("message %d is %d: order or uniqueness lost", i, v)
			}
		}
	})
}
