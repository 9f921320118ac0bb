package appservice

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/rooms"
	"github.com/passerelle/passerelle/registration"
)

// TestSenderWithRoomsService runs the sender against the real room service (SQLite and PostgreSQL): the
// appservice gets exactly the events of rooms it has a stake in, in stream order, and nothing else.
func TestSenderWithRoomsService(t *testing.T) {
	for _, dc := range allDatabases(t) {
		t.Run(dc.name, func(t *testing.T) {
			ctx := t.Context()
			db := dc.open(t)
			rs, err := rooms.New(ctx, db, "hs", zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			as := newFakeAS(t, "", 2)
			srv := httptest.NewServer(as)
			t.Cleanup(srv.Close)
			reg := testReg(t, srv.URL)
			as.hsToken = reg.ServerToken

			const alice, bob, ghost = id.UserID("@alice:hs"), id.UserID("@bob:hs"), id.UserID("@bridge_g:hs")
			withGhost, err := rs.CreateRoom(ctx, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			if err != nil {
				t.Fatal(err)
			}
			private, err := rs.CreateRoom(ctx, bob, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			if err != nil {
				t.Fatal(err)
			}

			s, err := NewSender(ctx, db, rs, []*registration.Registration{reg}, srv.Client(),
				configs.Appservices{MaxRetryInterval: 20 * time.Millisecond}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Stop)

			var want []id.EventID
			keep := func(ev *rooms.Event, err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, ev.ID)
			}
			send := func(room id.RoomID, sender id.UserID, body string) (*rooms.Event, error) {
				content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": body})
				return rs.Send(ctx, rooms.SendRequest{RoomID: room, Sender: sender, Type: "m.room.message", Content: content})
			}
			keep(rs.Invite(ctx, withGhost, alice, ghost, ""))
			keep(rs.Join(ctx, withGhost, ghost))
			for i := range 30 {
				keep(send(withGhost, alice, fmt.Sprint("to the ghost ", i)))
				if _, err := send(private, bob, fmt.Sprint("private ", i)); err != nil {
					t.Fatal(err)
				}
			}
			keep(send(withGhost, ghost, "from the ghost"))

			waitFor(t, "the appservice to get its events", 20*time.Second, func() bool { return len(as.accepted()) >= len(want) })
			if got := as.accepted(); !slices.Equal(got, want) {
				t.Fatalf("appservice got %d events, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
			waitFor(t, "the stream position to reach the end", 5*time.Second, func() bool {
				maxPos, err := rs.MaxStreamPos(ctx)
				return err == nil && s.Status()[0].StreamPos == maxPos
			})
			if len(as.snapshot()) < 3 || as.snapshot()[0].ID != as.snapshot()[2].ID {
				t.Error("the two refused attempts were not retried with the same transaction")
			}
		})
	}
}
