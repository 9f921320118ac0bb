package homeserver_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/registration"
)

// cryptoClient turns a logged-in client into an end-to-end encrypting one (mautrix-go's OlmMachine with goolm,
// its own SQLite store) and starts syncing it until the test ends. loginAs, when set, makes the helper log in
// first (as bridgev2 does for its bot).
func cryptoClient(t *testing.T, cli *mautrix.Client, name string, loginAs ...*mautrix.ReqLogin) *cryptohelper.CryptoHelper {
	t.Helper()
	cli.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("client", name).Logger()
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("test pickle key"), filepath.Join(t.TempDir(), name+".db"))
	if err != nil {
		t.Fatal(err)
	}
	if len(loginAs) > 0 {
		helper.LoginAs = loginAs[0]
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
		got := decrypted(bob)
		cryptoClient(t, alice, "alice")
		cryptoClient(t, bob, "bob")
		encryptedExchange(t, e, alice, bob, got)
	})
}

// TestE2EEBridgeBotDecrypts shows the homeserver side of a bridge bot in an encrypted portal: the bot logs in
// with its appservice token (m.login.application_service, as bridgev2's crypto helper does), gets a device,
// uploads its keys, and decrypts a user's message in an encrypted room it was invited to.
func TestE2EEBridgeBotDecrypts(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		alice := e.user("alice")
		botID := id.NewUserID("bridgebot", "localhost")
		bot, err := mautrix.NewClient(e.url, botID, "")
		if err != nil {
			t.Fatal(err)
		}
		bot.AccessToken = e.hs.Appservices().All()[0].AppToken
		got := decrypted(bot)
		cryptoClient(t, alice, "alice")
		cryptoClient(t, bot, "bot", &mautrix.ReqLogin{Type: mautrix.AuthTypeAppservice,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: botID.String()}})
		if bot.DeviceID == "" || bot.AccessToken == e.hs.Appservices().All()[0].AppToken {
			t.Fatalf("bot did not get its own device and token: %q", bot.DeviceID)
		}
		encryptedExchange(t, e, alice, bot, got)
	}, func() []*registration.Registration {
		return []*registration.Registration{registration.Generate("bridge", "http://127.0.0.1:1", "bridgebot", `@bridge_.*:localhost`)}
	})
}

// decrypted returns a channel of the bodies of the encrypted messages cli decrypts.
func decrypted(cli *mautrix.Client) chan string {
	got := make(chan string, 4)
	cli.Syncer.(mautrix.ExtensibleSyncer).OnEventType(event.EventMessage, func(_ context.Context, evt *event.Event) {
		if evt.Mautrix.WasEncrypted {
			got <- evt.Content.AsMessage().Body
		}
	})
	return got
}

// encryptedExchange has alice create an encrypted DM with bob and send one message, which bob must decrypt.
func encryptedExchange(t *testing.T, e *env, alice, bob *mautrix.Client, got chan string) {
	t.Helper()
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
	if err != nil || stored.Type != event.EventEncrypted.Type || strings.Contains(string(stored.Content), "secret") {
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
}
