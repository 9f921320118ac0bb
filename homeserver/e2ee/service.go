// Package e2ee is the homeserver's end-to-end encryption key service: device keys, one-time and fallback keys,
// to-device messages, device list changes and cross-signing keys with their signatures. It keeps its own tables
// (version table e2ee_version) and one stream position shared by to-device messages and device list changes,
// which /sync tokens carry.
//
// It reads room membership and devices through small interfaces (satisfied by rooms.Service and users.Service)
// and wakes /sync long-polls through a Waker (satisfied by sync.Notifier); it imports sync only for the E2EEData
// type of the sync.E2EE interface it implements. It must not import clientapi, the root homeserver package,
// appservice, hub or any bridge.
package e2ee

import (
	"context"
	"fmt"
	stdsync "sync"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/e2ee/upgrades"
	"github.com/passerelle/passerelle/homeserver/rooms"
	"github.com/passerelle/passerelle/homeserver/users"
)

// Rooms is what the service needs to know about room membership.
type Rooms interface {
	// RoomsForUser lists the rooms where userID's membership is one of memberships.
	RoomsForUser(ctx context.Context, userID id.UserID, memberships ...string) ([]id.RoomID, error)
	// JoinedMembers lists the users joined to roomID.
	JoinedMembers(ctx context.Context, roomID id.RoomID) ([]id.UserID, error)
	// Subscribe calls fn for every persisted event, in stream order, after commit.
	Subscribe(fn func(*rooms.Event))
}

// Devices lists the devices a user is logged in on.
type Devices interface {
	// Devices returns the user's current devices.
	Devices(ctx context.Context, userID id.UserID) ([]users.Device, error)
}

// Waker wakes waiting /sync requests. It must not block.
type Waker interface {
	// WakeUsers wakes every waiting /sync of the given users.
	WakeUsers(users ...id.UserID)
	// WakeRoom wakes every waiting /sync of the members of room.
	WakeRoom(room id.RoomID)
}

// Service stores and serves end-to-end encryption keys and to-device messages.
type Service struct {
	db         *dbutil.Database
	rooms      Rooms
	devices    Devices
	waker      Waker
	serverName string
	log        zerolog.Logger

	// posMu serialises writers of the e2ee stream: a position is taken, its rows committed, and only then is pos
	// advanced, so that a reader of Pos never skips a row that commits later with a smaller position.
	posMu stdsync.Mutex
	pos   int64
}

// New runs the e2ee migrations on db (version table e2ee_version), loads the current stream position and
// subscribes to room events to follow who shares rooms with whom.
func New(ctx context.Context, db *dbutil.Database, serverName string, rooms Rooms, devices Devices, waker Waker,
	log zerolog.Logger) (*Service, error) {
	child := db.Child("e2ee_version", upgrades.Table, dbutil.ZeroLogger(log.With().Str("db_section", "e2ee").Logger()))
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade e2ee database: %w", err)
	}
	s := &Service{db: child, rooms: rooms, devices: devices, waker: waker, serverName: serverName, log: log}
	err := child.QueryRow(ctx, `SELECT COALESCE(MAX(p), 0) FROM (
		SELECT MAX(pos) AS p FROM e2ee_to_device UNION ALL SELECT MAX(pos) AS p FROM e2ee_device_changes
		UNION ALL SELECT MAX(pos) AS p FROM e2ee_member_changes) AS m`).
		Scan(&s.pos)
	if err != nil {
		return nil, fmt.Errorf("load e2ee stream position: %w", err)
	}
	rooms.Subscribe(s.onRoomEvent)
	return s, nil
}

// Pos returns the current e2ee stream position: every to-device message and device list change at or below it
// is committed.
func (s *Service) Pos() int64 {
	s.posMu.Lock()
	defer s.posMu.Unlock()
	return s.pos
}

// advance runs fn in one transaction with the next stream position and publishes that position after commit.
// fn reports whether it used the position; an unused position is not published.
func (s *Service) advance(ctx context.Context, fn func(ctx context.Context, pos int64) (bool, error)) (int64, error) {
	s.posMu.Lock()
	defer s.posMu.Unlock()
	next := s.pos + 1
	var used bool
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		var err error
		used, err = fn(ctx, next)
		return err
	})
	if err != nil {
		return 0, err
	}
	if !used {
		return 0, nil
	}
	s.pos = next
	return next, nil
}

func (s *Service) isLocal(u id.UserID) bool {
	_, server, err := u.Parse()
	return err == nil && server == s.serverName
}
