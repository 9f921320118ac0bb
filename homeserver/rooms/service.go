// Package rooms is the homeserver's room core: events and their IDs for room versions 10 and 11, the
// redaction algorithm, the authorisation rules, the persisted timeline with one global stream position, current
// state, memberships, aliases, the createRoom recipe, and the relations and message-search indexes written
// with each event (relations.go, search.go).
//
// It is used by the HTTP layer, /sync and the appservice sender. It must not import any HTTP, sync, appservice
// or bridge package; it imports only mxerr and internal helpers from the project.
package rooms

import (
	"context"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
)

// Service owns the rooms tables. It is safe for concurrent use.
type Service struct {
	db         *dbutil.Database
	serverName string
	log        zerolog.Logger

	// writeMu serialises writers so that stream positions are committed in the order they are assigned.
	writeMu sync.Mutex

	subMu sync.RWMutex
	subs  []func(*Event)

	profile ProfileFunc
}

// New runs the rooms migrations on db (version table "rooms_version") and returns the service.
func New(ctx context.Context, db *dbutil.Database, serverName string, log zerolog.Logger) (*Service, error) {
	child := db.Child("rooms_version", upgradeTable, dbutil.ZeroLogger(log))
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade rooms database: %w", err)
	}
	return &Service{db: child, serverName: serverName, log: log}, nil
}

// Subscribe registers fn to be called once per persisted event, in stream order, after the event's
// transaction has committed. fn runs on the writer's goroutine while the writer lock is held: it must be quick
// and must not call back into Send.
func (s *Service) Subscribe(fn func(*Event)) {
	s.subMu.Lock()
	s.subs = append(s.subs, fn)
	s.subMu.Unlock()
}

func (s *Service) notify(evs []*Event) {
	s.subMu.RLock()
	subs := s.subs
	s.subMu.RUnlock()
	for _, ev := range evs {
		for _, fn := range subs {
			fn(ev)
		}
	}
}
