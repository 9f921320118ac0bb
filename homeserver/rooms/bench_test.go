package rooms

import (
	"encoding/json"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/dbtest"
)

// BenchmarkSend measures the send path (auth state, authorisation, hashing, one write transaction) in a room
// with 100 joined members, the shape of the peers' measurement in DESIGN.md.
func BenchmarkSend(b *testing.B) {
	for _, dbType := range []string{"sqlite", "postgres"} {
		b.Run(dbType, func(b *testing.B) {
			db := dbtest.Open(b, dbType)
			s, err := New(b.Context(), db, "example.org", nopLog)
			if err != nil {
				b.Fatal(err)
			}
			room, err := s.CreateRoom(b.Context(), uAlice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				b.Fatal(err)
			}
			for i := range 99 {
				if _, err = s.Join(b.Context(), room, id.UserID(fmt.Sprintf("@u%d:example.org", i))); err != nil {
					b.Fatal(err)
				}
			}
			content := json.RawMessage(`{"msgtype":"m.text","body":"hello world"}`)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					sender := id.UserID(fmt.Sprintf("@u%d:example.org", i%99))
					if _, err := s.Send(b.Context(), SendRequest{RoomID: room, Sender: sender, Type: "m.room.message", Content: content}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkStateAt measures the state query /sync runs for a newly joined or limited room of 1,000 members
// (each with a join and a profile change, so history has two state events per member).
func BenchmarkStateAt(b *testing.B) {
	for _, dbType := range []string{"sqlite", "postgres"} {
		b.Run(dbType, func(b *testing.B) {
			db := dbtest.Open(b, dbType)
			s, err := New(b.Context(), db, "example.org", nopLog)
			if err != nil {
				b.Fatal(err)
			}
			room, err := s.CreateRoom(b.Context(), uAlice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				b.Fatal(err)
			}
			for i := range 1000 {
				u := id.UserID(fmt.Sprintf("@u%d:example.org", i))
				for range 2 {
					if _, err = s.Join(b.Context(), room, u); err != nil {
						b.Fatal(err)
					}
				}
			}
			pos, _ := s.MaxStreamPos(b.Context())
			b.ResetTimer()
			for b.Loop() {
				st, err := s.StateAt(b.Context(), room, pos)
				if err != nil || len(st) < 1000 {
					b.Fatalf("%d events, %v", len(st), err)
				}
			}
		})
	}
}
