package homeserver_test

import (
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
)

// BenchmarkSendMessage measures one PUT /send through the whole HTTP stack on SQLite (auth, JSON, event
// authorisation, persistence, notifier), with one other member long-polling nothing.
func BenchmarkSendMessage(b *testing.B) {
	e := newEnv(b, "sqlite", nil, nil)
	alice := e.user("alice")
	room, err := alice.CreateRoom(ctx(b), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := alice.SendText(ctx(b), room.RoomID, fmt.Sprintf("message %d", i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIncrementalSync measures an incremental /sync that finds one new message, for a user in 20 rooms.
func BenchmarkIncrementalSync(b *testing.B) {
	e := newEnv(b, "sqlite", nil, nil)
	alice, bob := e.user("alice"), e.user("bob")
	var target mautrix.RespCreateRoom
	for i := 0; i < 20; i++ {
		room, err := bob.CreateRoom(ctx(b), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := alice.JoinRoomByID(ctx(b), room.RoomID); err != nil {
			b.Fatal(err)
		}
		target = *room
	}
	first, err := alice.SyncRequest(ctx(b), 0, "", "", false, "")
	if err != nil {
		b.Fatal(err)
	}
	since := first.NextBatch
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		if _, err := bob.SendText(ctx(b), target.RoomID, "tick"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		resp, err := alice.SyncRequest(ctx(b), 0, since, "", false, "")
		if err != nil || resp.Rooms.Join[target.RoomID] == nil {
			b.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
	}
}
