package homeserver_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// cryptoClient turns a logged-in client into an end-to-end encrypting one (mautrix-go's OlmMachine with goolm,
// its own SQLite store) and starts syncing it until the test ends.
func cryptoClient(t *testing.T, cli *mautrix.Client, name string) *cryptohelper.CryptoHelper {
	t.Helper()
	cli.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("client", name).Logger()
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("test pickle key"), filepath.Join(t.TempDir(), name+".db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Init(ctx(t)); err != nil {
		t.Fatalf("crypto init of %s: %v", name, err)
	}
	cli.Crypto = helper
	syncCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := cli.SyncWithContext(syncCtx); err != nil && syncCtx.Err() == nil {
			t.Errorf("%s sync: %v", name, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = helper.Close()
	})
	return helper
}

// TestE2EEOlmMegolm is the end-to-end proof: two mautrix-go OlmMachines (goolm) on this homeserver upload their
// keys, one claims the other's one-time key, establishes an Olm session, shares a Megolm room key over
// to-device messages, and the other decrypts the encrypted room message.
func TestE2EEOlmMegolm(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice, bob := e.user("alice"), e.user("bob")
		got := make(chan string, 4)
		bob.Syncer.(mautrix.ExtensibleSyncer).OnEventType(event.EventMessage, func(_ context.Context, evt *event.Event) {
			if evt.Mautrix.WasEncrypted {
				got <- evt.Content.AsMessage().Body
			}
		})
		cryptoClient(t, alice, "alice")
		cryptoClient(t, bob, "bob")

		resp, err := alice.CreateRoom(ctx(t), &mautrix.ReqCreateRoom{
			Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID},
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{
				Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		if _, err := bob.JoinRoomByID(ctx(t), room); err != nil {
			t.Fatal(err)
		}
		// Wait until alice's client has seen the room's encryption and bob's join through /sync.
		deadline := time.Now().Add(15 * time.Second)
		for {
			enc, _ := alice.StateStore.IsEncrypted(ctx(t), room)
			members, _ := alice.StateStore.GetRoomJoinedOrInvitedMembers(ctx(t), room)
			if enc && slices.Contains(members, bob.UserID) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alice's client never saw the encrypted room with bob (encrypted=%v members=%v)", enc, members)
			}
			time.Sleep(100 * time.Millisecond)
		}

		sent, err := alice.SendText(ctx(t), room, "hello bob, this is secret")
		if err != nil {
			t.Fatalf("send encrypted: %v", err)
		}
		// The server only ever saw ciphertext.
		stored, err := e.hs.Rooms().Event(ctx(t), sent.EventID)
		if err != nil || stored.Type != event.EventEncrypted.Type {
			t.Fatalf("stored event: %+v %v", stored, err)
		}
		select {
		case body := <-got:
			if body != "hello bob, this is secret" {
				t.Fatalf("bob decrypted %q", body)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("bob did not decrypt alice's message within 20 s")
		}
	})
}
