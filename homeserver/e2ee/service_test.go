package e2ee_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/e2ee"
	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
	"github.com/passerelle/passerelle/homeserver/internal/dbtest"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const server = "e2ee.test"

// wakes records the waker calls.
type wakes struct {
	mu    sync.Mutex
	users []id.UserID
	rooms []id.RoomID
}

func (w *wakes) WakeUsers(us ...id.UserID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.users = append(w.users, us...)
}

func (w *wakes) WakeRoom(r id.RoomID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rooms = append(w.rooms, r)
}

func (w *wakes) reset() (us []id.UserID, rs []id.RoomID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	us, rs = w.users, w.rooms
	w.users, w.rooms = nil, nil
	return
}

type fixture struct {
	t     testing.TB
	db    *dbutil.Database
	users *users.Service
	rooms *rooms.Service
	svc   *e2ee.Service
	wakes *wakes
}

func newFixture(t testing.TB, db *dbutil.Database) *fixture {
	t.Helper()
	ctx := t.Context()
	us, err := users.New(ctx, db, server, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rooms.New(ctx, db, server, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	w := &wakes{}
	svc, err := e2ee.New(ctx, db, server, rs, us, w, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, db: db, users: us, rooms: rs, svc: svc, wakes: w}
}

// user registers localpart with password "pw" and logs in one device.
func (f *fixture) user(localpart string, dev id.DeviceID) id.UserID {
	f.t.Helper()
	u, err := f.users.Register(f.t.Context(), localpart, "pw", users.RegisterOpts{})
	if err != nil {
		f.t.Fatal(err)
	}
	f.device(u, dev)
	return u
}

func (f *fixture) device(u id.UserID, dev id.DeviceID) {
	f.t.Helper()
	if _, _, err := f.users.NewDevice(f.t.Context(), u, dev, "dev "+string(dev)); err != nil {
		f.t.Fatal(err)
	}
}

// sharedRoom makes a room with every given user joined.
func (f *fixture) sharedRoom(members ...id.UserID) id.RoomID {
	f.t.Helper()
	ctx := f.t.Context()
	room, err := f.rooms.CreateRoom(ctx, members[0], &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, m := range members[1:] {
		if _, err := f.rooms.Join(ctx, room, m); err != nil {
			f.t.Fatal(err)
		}
	}
	return room
}

// signer is an ed25519 key pair that signs JSON objects the Matrix way.
type signer struct {
	pub  string
	priv ed25519.PrivateKey
}

func newSigner(t *testing.T) signer {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// sign adds the signature of keyID by user to obj.
func (s signer) sign(t *testing.T, obj map[string]any, user id.UserID, keyID string) map[string]any {
	t.Helper()
	c := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			c[k] = v
		}
	}
	msg, err := canonicaljson.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
		obj["signatures"] = sigs
	}
	by, _ := sigs[string(user)].(map[string]any)
	if by == nil {
		by = map[string]any{}
		sigs[string(user)] = by
	}
	by[keyID] = base64.RawStdEncoding.EncodeToString(ed25519.Sign(s.priv, msg))
	return obj
}

// deviceKeys builds self-signed device keys for user's device.
func deviceKeys(t *testing.T, user id.UserID, dev id.DeviceID) (map[string]any, signer) {
	s := newSigner(t)
	obj := map[string]any{
		"user_id": string(user), "device_id": string(dev),
		"algorithms": []any{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]any{
			"curve25519:" + string(dev): base64.RawStdEncoding.EncodeToString([]byte(fmt.Sprintf("curve-%s-%032d", dev, 0)))[:43],
			"ed25519:" + string(dev):    s.pub,
		},
	}
	return s.sign(t, obj, user, "ed25519:"+string(dev)), s
}

func raw(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func otks(n int, prefix string) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := range n {
		kid := fmt.Sprintf("signed_curve25519:%s%04d", prefix, i)
		out[kid] = json.RawMessage(fmt.Sprintf(`{"key":"k-%s%04d","signatures":{}}`, prefix, i))
	}
	return out
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	e := mxerr.As(err)
	if e == nil || e.Code != code {
		t.Fatalf("want %s, got %v", code, err)
	}
}

func TestUploadQuery(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		f := newFixture(t, db)
		ctx := t.Context()
		alice := f.user("alice", "ADEV")
		bob := f.user("bob", "BDEV")
		room := f.sharedRoom(alice, bob)
		f.wakes.reset()

		dk, _ := deviceKeys(t, alice, "ADEV")
		counts, err := f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{DeviceKeys: raw(t, dk), OneTimeKeys: otks(5, "A")})
		if err != nil {
			t.Fatal(err)
		}
		if counts["signed_curve25519"] != 5 {
			t.Fatalf("counts after upload: %v", counts)
		}
		us, rs := f.wakes.reset()
		if !slices.Contains(us, alice) || !slices.Contains(rs, room) {
			t.Fatalf("new device keys must wake alice and her rooms, woke %v %v", us, rs)
		}

		// Keys for another user or device are refused.
		other, _ := deviceKeys(t, bob, "ADEV")
		_, err = f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{DeviceKeys: raw(t, other)})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{OneTimeKeys: map[string]json.RawMessage{"nocolon": json.RawMessage(`"x"`)}})
		wantCode(t, err, "M_INVALID_PARAM")

		res, err := f.svc.Query(ctx, bob, map[id.UserID][]id.DeviceID{alice: nil, bob: nil, "@x:elsewhere.test": nil})
		if err != nil {
			t.Fatal(err)
		}
		got := res.DeviceKeys[alice]["ADEV"]
		if got == nil || got["device_id"] != "ADEV" || got["unsigned"].(map[string]any)["device_display_name"] != "dev ADEV" {
			t.Fatalf("query alice: %#v", res.DeviceKeys[alice])
		}
		if got["keys"].(map[string]any)["ed25519:ADEV"] != dk["keys"].(map[string]any)["ed25519:ADEV"] {
			t.Fatalf("keys changed in storage: %#v", got)
		}
		if _, ok := res.DeviceKeys[bob]; !ok || len(res.DeviceKeys[bob]) != 0 {
			t.Fatalf("bob has no keys but must be listed: %#v", res.DeviceKeys)
		}
		if res.Failures["elsewhere.test"] == nil {
			t.Fatalf("remote user must fail: %#v", res.Failures)
		}
		// A device filter that names another device returns nothing for alice.
		res, _ = f.svc.Query(ctx, bob, map[id.UserID][]id.DeviceID{alice: {"OTHER"}})
		if len(res.DeviceKeys[alice]) != 0 {
			t.Fatalf("device filter ignored: %#v", res.DeviceKeys[alice])
		}

		// Re-uploading identical keys is not a change; deleting the device drops its keys and is one.
		pos := f.svc.Pos()
		if _, err := f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{DeviceKeys: raw(t, dk)}); err != nil {
			t.Fatal(err)
		}
		if f.svc.Pos() != pos {
			t.Fatalf("identical re-upload advanced the stream")
		}
		if err := f.users.DeleteDevice(ctx, alice, "ADEV"); err != nil {
			t.Fatal(err)
		}
		// Even before the e2ee service hears of it, keys of a deleted device are not served.
		res, _ = f.svc.Query(ctx, bob, map[id.UserID][]id.DeviceID{alice: nil})
		if len(res.DeviceKeys[alice]) != 0 {
			t.Fatalf("keys of a deleted device served: %#v", res.DeviceKeys[alice])
		}
		if err := f.svc.DeleteDevice(ctx, alice, "ADEV"); err != nil {
			t.Fatal(err)
		}
		if f.svc.Pos() <= pos {
			t.Fatalf("device deletion is not a device list change")
		}
		if c, _ := f.svc.OneTimeKeyCounts(ctx, alice, "ADEV"); c["signed_curve25519"] != 0 {
			t.Fatalf("one-time keys of a deleted device kept: %v", c)
		}
		ch, _, err := f.svc.Changes(ctx, bob, pos, f.svc.Pos())
		if err != nil || !slices.Equal(ch, []id.UserID{alice}) {
			t.Fatalf("changes after delete: %v %v", ch, err)
		}
	})
}

func TestClaimOnceConcurrently(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		f := newFixture(t, db)
		ctx := t.Context()
		alice := f.user("alice", "ADEV")
		const n = 20
		fb := map[string]json.RawMessage{"signed_curve25519:FB1": json.RawMessage(`{"key":"fallback1","fallback":true}`)}
		if _, err := f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{OneTimeKeys: otks(n, "K"), FallbackKeys: fb}); err != nil {
			t.Fatal(err)
		}
		if ft, _ := f.svc.UnusedFallbackKeyTypes(ctx, alice, "ADEV"); !slices.Equal(ft, []string{"signed_curve25519"}) {
			t.Fatalf("unused fallback types: %v", ft)
		}
		const claimers = n + 5
		got := make([]string, claimers)
		var wg sync.WaitGroup
		errs := make(chan error, claimers)
		for i := range claimers {
			wg.Go(func() {
				res, _, err := f.svc.Claim(ctx, map[id.UserID]map[id.DeviceID]string{alice: {"ADEV": "signed_curve25519"}})
				if err != nil {
					errs <- err
					return
				}
				for kid := range res[alice]["ADEV"] {
					got[i] = kid
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, k := range got {
			seen[k]++
		}
		for k, c := range seen {
			if k != "signed_curve25519:FB1" && c != 1 {
				t.Fatalf("one-time key %q handed out %d times", k, c)
			}
		}
		if len(seen) != n+1 || seen["signed_curve25519:FB1"] != claimers-n {
			t.Fatalf("want %d distinct one-time keys and %d fallback claims, got %v", n, claimers-n, seen)
		}
		if c, _ := f.svc.OneTimeKeyCounts(ctx, alice, "ADEV"); c["signed_curve25519"] != 0 {
			t.Fatalf("counts after claiming all: %v", c)
		}
		if ft, _ := f.svc.UnusedFallbackKeyTypes(ctx, alice, "ADEV"); len(ft) != 0 {
			t.Fatalf("fallback key still unused after being claimed: %v", ft)
		}
		// Re-uploading the same fallback key keeps it used; a new one is unused again.
		_, _ = f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{FallbackKeys: fb})
		if ft, _ := f.svc.UnusedFallbackKeyTypes(ctx, alice, "ADEV"); len(ft) != 0 {
			t.Fatalf("re-upload of the same fallback key reset used: %v", ft)
		}
		fb2 := map[string]json.RawMessage{"signed_curve25519:FB2": json.RawMessage(`{"key":"fallback2","fallback":true}`)}
		_, _ = f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{FallbackKeys: fb2})
		if ft, _ := f.svc.UnusedFallbackKeyTypes(ctx, alice, "ADEV"); len(ft) != 1 {
			t.Fatalf("new fallback key not unused: %v", ft)
		}
		// A device with nothing at all is left out of the answer.
		f.device(alice, "EMPTY")
		res, _, err := f.svc.Claim(ctx, map[id.UserID]map[id.DeviceID]string{alice: {"EMPTY": "signed_curve25519"}})
		if err != nil || len(res) != 0 {
			t.Fatalf("claim from empty device: %v %v", res, err)
		}
	})
}

func TestToDevice(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		f := newFixture(t, db)
		ctx := t.Context()
		alice := f.user("alice", "ADEV")
		bob := f.user("bob", "B1")
		f.device(bob, "B2")
		f.wakes.reset()

		send := func(txn string, msgs map[id.UserID]map[id.DeviceID]json.RawMessage) {
			t.Helper()
			err := f.svc.SendToDevice(ctx, e2ee.ToDeviceRequest{Sender: alice, SenderDevice: "ADEV", TxnID: txn,
				Type: "m.test", Messages: msgs})
			if err != nil {
				t.Fatal(err)
			}
		}
		send("t1", map[id.UserID]map[id.DeviceID]json.RawMessage{bob: {"B1": json.RawMessage(`{"n":1}`)}})
		send("t1", map[id.UserID]map[id.DeviceID]json.RawMessage{bob: {"B1": json.RawMessage(`{"n":1}`)}}) // retry
		send("t2", map[id.UserID]map[id.DeviceID]json.RawMessage{bob: {"*": json.RawMessage(`{"n":2}`), "B2": json.RawMessage(`{"n":3}`)}})
		send("t3", map[id.UserID]map[id.DeviceID]json.RawMessage{bob: {"NOPE": json.RawMessage(`{"n":4}`)}})
		if us, _ := f.wakes.reset(); !slices.Contains(us, bob) {
			t.Fatalf("bob not woken: %v", us)
		}
		contents := func(d *e2ee.SyncData) []string {
			var out []string
			for _, m := range d.ToDevice {
				var ev struct {
					Sender  id.UserID       `json:"sender"`
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				}
				if err := json.Unmarshal(m, &ev); err != nil || ev.Sender != alice || ev.Type != "m.test" {
					t.Fatalf("bad to-device event %s", m)
				}
				out = append(out, string(ev.Content))
			}
			return out
		}
		up := f.svc.Pos()
		d1, err := f.svc.Sync(ctx, bob, "B1", 0, up, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := contents(d1); !slices.Equal(got, []string{`{"n":1}`, `{"n":2}`}) {
			t.Fatalf("B1 got %v", got)
		}
		d2, _ := f.svc.Sync(ctx, bob, "B2", 0, up, true)
		if got := contents(d2); !slices.Equal(got, []string{`{"n":3}`}) {
			t.Fatalf("B2 got %v (explicit message must replace the wildcard one)", got)
		}
		// Not acknowledged yet: an initial sync again delivers them again.
		again, _ := f.svc.Sync(ctx, bob, "B1", 0, up, true)
		if len(again.ToDevice) != 2 {
			t.Fatalf("unacknowledged messages lost: %v", contents(again))
		}
		// Syncing with the token acknowledges and deletes them.
		after, _ := f.svc.Sync(ctx, bob, "B1", d1.Pos, f.svc.Pos(), false)
		if len(after.ToDevice) != 0 {
			t.Fatalf("acknowledged messages delivered again: %v", contents(after))
		}
		fromZero, _ := f.svc.Sync(ctx, bob, "B1", 0, f.svc.Pos(), true)
		if len(fromZero.ToDevice) != 0 {
			t.Fatalf("acknowledged messages not deleted: %v", contents(fromZero))
		}
	})
}

func TestToDeviceBatches(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		f := newFixture(t, db)
		ctx := t.Context()
		alice := f.user("alice", "ADEV")
		bob := f.user("bob", "B1")
		total := e2ee.MaxToDevicePerSync + 7
		for i := range total {
			err := f.svc.SendToDevice(ctx, e2ee.ToDeviceRequest{Sender: alice, SenderDevice: "ADEV", TxnID: fmt.Sprint(i),
				Type: "m.test", Messages: map[id.UserID]map[id.DeviceID]json.RawMessage{bob: {"B1": json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}}})
			if err != nil {
				t.Fatal(err)
			}
		}
		d, _ := f.svc.Sync(ctx, bob, "B1", 0, f.svc.Pos(), true)
		if len(d.ToDevice) != e2ee.MaxToDevicePerSync || d.Pos >= f.svc.Pos() {
			t.Fatalf("first batch: %d messages, pos %d of %d", len(d.ToDevice), d.Pos, f.svc.Pos())
		}
		d2, _ := f.svc.Sync(ctx, bob, "B1", d.Pos, f.svc.Pos(), false)
		if len(d2.ToDevice) != 7 || d2.Pos != f.svc.Pos() {
			t.Fatalf("second batch: %d messages, pos %d", len(d2.ToDevice), d2.Pos)
		}
		var last struct {
			Content struct{ I int } `json:"content"`
		}
		_ = json.Unmarshal(d2.ToDevice[6], &last)
		if last.Content.I != total-1 {
			t.Fatalf("order lost: last is %d", last.Content.I)
		}
	})
}

func TestDeviceListChanges(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		f := newFixture(t, db)
		ctx := t.Context()
		alice := f.user("alice", "ADEV")
		bob := f.user("bob", "BDEV")
		carol := f.user("carol", "CDEV")
		f.sharedRoom(alice, bob)
		start := f.svc.Pos()
		dk, _ := deviceKeys(t, alice, "ADEV")
		if _, err := f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{DeviceKeys: raw(t, dk)}); err != nil {
			t.Fatal(err)
		}
		d, err := f.svc.Sync(ctx, bob, "BDEV", start, f.svc.Pos(), false)
		if err != nil || !slices.Equal(d.Changed, []id.UserID{alice}) {
			t.Fatalf("bob's sync changed = %v %v", d.Changed, err)
		}
		d, _ = f.svc.Sync(ctx, carol, "CDEV", start, f.svc.Pos(), false)
		if len(d.Changed) != 0 {
			t.Fatalf("carol shares no room with alice but sees %v", d.Changed)
		}
		d, _ = f.svc.Sync(ctx, alice, "ADEV", start, f.svc.Pos(), false)
		if !slices.Equal(d.Changed, []id.UserID{alice}) {
			t.Fatalf("alice must see her own change: %v", d.Changed)
		}
		d, _ = f.svc.Sync(ctx, bob, "BDEV", f.svc.Pos(), f.svc.Pos(), false)
		if len(d.Changed) != 0 {
			t.Fatalf("change reported again after its position: %v", d.Changed)
		}
	})
}

// crossSigning builds alice's master, self-signing and user-signing keys, the latter two signed by the master.
func crossSigning(t *testing.T, user id.UserID) (msk, ssk, usk signer, up *e2ee.CrossSigningUpload) {
	msk, ssk, usk = newSigner(t), newSigner(t), newSigner(t)
	key := func(s signer, usage string) map[string]any {
		return map[string]any{"user_id": string(user), "usage": []any{usage}, "keys": map[string]any{"ed25519:" + s.pub: s.pub}}
	}
	m := key(msk, "master")
	sk := msk.sign(t, key(ssk, "self_signing"), user, "ed25519:"+msk.pub)
	uk := msk.sign(t, key(usk, "user_signing"), user, "ed25519:"+msk.pub)
	return msk, ssk, usk, &e2ee.CrossSigningUpload{Master: raw(t, m), SelfSigning: raw(t, sk), UserSigning: raw(t, uk)}
}

func TestCrossSigning(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		f := newFixture(t, db)
		ctx := t.Context()
		alice := f.user("alice", "ADEV")
		bob := f.user("bob", "BDEV")
		f.sharedRoom(alice, bob)
		dk, devKey := deviceKeys(t, alice, "ADEV")
		if _, err := f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{DeviceKeys: raw(t, dk)}); err != nil {
			t.Fatal(err)
		}
		msk, ssk, _, up := crossSigning(t, alice)

		// A self-signing key not signed by the master key is refused.
		bad := *up
		var sk map[string]any
		_ = json.Unmarshal(up.SelfSigning, &sk)
		sk = newSigner(t).sign(t, sk, alice, "ed25519:"+msk.pub)
		bad.SelfSigning = raw(t, sk)
		wantCode(t, f.svc.UploadCrossSigning(ctx, alice, &bad), "M_INVALID_SIGNATURE")
		// A key for someone else is refused.
		_, _, _, bobs := crossSigning(t, bob)
		wantCode(t, f.svc.UploadCrossSigning(ctx, alice, bobs), "M_INVALID_PARAM")

		pos := f.svc.Pos()
		if err := f.svc.UploadCrossSigning(ctx, alice, up); err != nil {
			t.Fatal(err)
		}
		if ch, _, _ := f.svc.Changes(ctx, bob, pos, f.svc.Pos()); !slices.Equal(ch, []id.UserID{alice}) {
			t.Fatalf("cross-signing upload is not a device list change for bob: %v", ch)
		}
		res, _ := f.svc.Query(ctx, bob, map[id.UserID][]id.DeviceID{alice: nil})
		if res.MasterKeys[alice] == nil || res.SelfSigningKeys[alice] == nil {
			t.Fatalf("cross-signing keys missing: %#v", res)
		}
		if res.UserSigningKeys[alice] != nil {
			t.Fatalf("user-signing key shown to someone else")
		}
		res, _ = f.svc.Query(ctx, alice, map[id.UserID][]id.DeviceID{alice: nil})
		if res.UserSigningKeys[alice] == nil {
			t.Fatalf("user-signing key hidden from its owner")
		}

		// Alice signs her device with her self-signing key and her master key with her device.
		signedDev := ssk.sign(t, dk, alice, "ed25519:"+ssk.pub)
		var mk map[string]any
		_ = json.Unmarshal(up.Master, &mk)
		signedMaster := devKey.sign(t, mk, alice, "ed25519:ADEV")
		// A forged signature is reported, not stored.
		forged := newSigner(t).sign(t, map[string]any{"user_id": string(alice), "usage": []any{"master"},
			"keys": map[string]any{"ed25519:" + msk.pub: msk.pub}}, alice, "ed25519:"+ssk.pub)
		fails, err := f.svc.UploadSignatures(ctx, alice, map[id.UserID]map[string]json.RawMessage{
			alice: {"ADEV": raw(t, signedDev), msk.pub: raw(t, signedMaster)},
		})
		if err != nil || len(fails) != 0 {
			t.Fatalf("signature upload: %v %v", fails, err)
		}
		fails, _ = f.svc.UploadSignatures(ctx, alice, map[id.UserID]map[string]json.RawMessage{alice: {msk.pub: raw(t, forged)}})
		if fails[alice][msk.pub] == nil {
			t.Fatalf("forged signature accepted")
		}
		res, _ = f.svc.Query(ctx, bob, map[id.UserID][]id.DeviceID{alice: nil})
		sigs := res.DeviceKeys[alice]["ADEV"]["signatures"].(map[string]any)[string(alice)].(map[string]any)
		if sigs["ed25519:"+ssk.pub] == nil || sigs["ed25519:ADEV"] == nil {
			t.Fatalf("device signatures: %v", sigs)
		}
		msigs := res.MasterKeys[alice]["signatures"].(map[string]any)[string(alice)].(map[string]any)
		if msigs["ed25519:ADEV"] == nil {
			t.Fatalf("master key signatures: %v", msigs)
		}

		// Bob signs alice's master key with his user-signing key: bob sees that signature, carol does not.
		_, _, bobUSK, bobUp := crossSigning(t, bob)
		if err := f.svc.UploadCrossSigning(ctx, bob, bobUp); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal(up.Master, &mk)
		fails, err = f.svc.UploadSignatures(ctx, bob, map[id.UserID]map[string]json.RawMessage{
			alice: {msk.pub: raw(t, bobUSK.sign(t, mk, bob, "ed25519:"+bobUSK.pub))},
		})
		if err != nil || len(fails) != 0 {
			t.Fatalf("bob's signature on alice's master key: %v %v", fails, err)
		}
		// Signing another user's device directly is refused.
		var plainDev map[string]any
		_ = json.Unmarshal(raw(t, dk), &plainDev)
		fails, _ = f.svc.UploadSignatures(ctx, bob, map[id.UserID]map[string]json.RawMessage{
			alice: {"ADEV": raw(t, bobUSK.sign(t, plainDev, bob, "ed25519:"+bobUSK.pub))},
		})
		if fails[alice]["ADEV"] == nil {
			t.Fatalf("bob's signature on alice's device accepted")
		}
		res, _ = f.svc.Query(ctx, bob, map[id.UserID][]id.DeviceID{alice: nil})
		if res.MasterKeys[alice]["signatures"].(map[string]any)[string(bob)] == nil {
			t.Fatalf("bob does not see his signature: %v", res.MasterKeys[alice])
		}
		carol := f.user("carol", "CDEV")
		res, _ = f.svc.Query(ctx, carol, map[id.UserID][]id.DeviceID{alice: nil})
		if res.MasterKeys[alice]["signatures"].(map[string]any)[string(bob)] != nil {
			t.Fatalf("carol sees bob's user-signing signature")
		}
	})
}

func TestRestartKeepsPosition(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		f := newFixture(t, db)
		ctx := context.Background()
		alice := f.user("alice", "ADEV")
		dk, _ := deviceKeys(t, alice, "ADEV")
		_, _ = f.svc.Upload(ctx, alice, "ADEV", &e2ee.Upload{DeviceKeys: raw(t, dk)})
		_ = f.svc.SendToDevice(ctx, e2ee.ToDeviceRequest{Sender: alice, TxnID: "x", Type: "m.t",
			Messages: map[id.UserID]map[id.DeviceID]json.RawMessage{alice: {"ADEV": json.RawMessage(`{}`)}}})
		again, err := e2ee.New(ctx, db, server, f.rooms, f.users, nil, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		if again.Pos() != f.svc.Pos() || again.Pos() != 2 {
			t.Fatalf("position after restart %d, want %d", again.Pos(), f.svc.Pos())
		}
	})
}

func TestDeviceListsOnMembership(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		f := newFixture(t, db)
		ctx := t.Context()
		alice := f.user("alice", "ADEV")
		bob := f.user("bob", "BDEV")
		carol := f.user("carol", "CDEV")
		room := f.sharedRoom(alice, bob)
		other := f.sharedRoom(alice, bob)
		start := f.svc.Pos()
		f.wakes.reset()
		if _, err := f.rooms.Join(ctx, room, carol); err != nil {
			t.Fatal(err)
		}
		if _, rs := f.wakes.reset(); !slices.Contains(rs, room) {
			t.Fatalf("a join must wake the room's waiters again: %v", rs)
		}
		check := func(who id.UserID, from int64, wantChanged, wantLeft []id.UserID) {
			t.Helper()
			ch, left, err := f.svc.Changes(ctx, who, from, f.svc.Pos())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ch, wantChanged) || !slices.Equal(left, wantLeft) {
				t.Fatalf("%s: changed %v left %v, want %v %v", who, ch, left, wantChanged, wantLeft)
			}
		}
		check(alice, start, []id.UserID{carol}, []id.UserID{})
		check(carol, start, []id.UserID{alice, bob}, []id.UserID{})

		// carol also joins the second room, then leaves the first: she still shares a room, so nobody "left".
		if _, err := f.rooms.Join(ctx, other, carol); err != nil {
			t.Fatal(err)
		}
		mid := f.svc.Pos()
		if _, err := f.rooms.Leave(ctx, room, carol, ""); err != nil {
			t.Fatal(err)
		}
		check(alice, mid, []id.UserID{}, []id.UserID{})
		// Leaving the last shared room: alice sees carol leave; carol sees alice and bob leave.
		last := f.svc.Pos()
		if _, err := f.rooms.Leave(ctx, other, carol, ""); err != nil {
			t.Fatal(err)
		}
		check(alice, last, []id.UserID{}, []id.UserID{carol})
		check(carol, last, []id.UserID{}, []id.UserID{alice, bob})
	})
}

func TestToDeviceTokenFromTheFuture(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, db *dbutil.Database) {
		f := newFixture(t, db)
		ctx := t.Context()
		alice := f.user("alice", "ADEV")
		err := f.svc.SendToDevice(ctx, e2ee.ToDeviceRequest{Sender: alice, SenderDevice: "ADEV", TxnID: "1", Type: "m.t",
			Messages: map[id.UserID]map[id.DeviceID]json.RawMessage{alice: {"ADEV": json.RawMessage(`{}`)}}})
		if err != nil {
			t.Fatal(err)
		}
		// A client presents a position the server never reached (e.g. after a database restore).
		d, err := f.svc.Sync(ctx, alice, "ADEV", f.svc.Pos()+50, f.svc.Pos(), false)
		if err != nil || len(d.ToDevice) != 1 || d.Pos != f.svc.Pos() {
			t.Fatalf("pending message must still be delivered: %+v %v", d, err)
		}
	})
}
