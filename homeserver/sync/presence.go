package sync

import (
	stdsync "sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// Presence keeps each user's presence (online, unavailable, offline) and status message in memory: presence is
// advisory, so losing it on restart costs nothing. Every change advances a stream position; positions start at
// the wall clock in milliseconds so that they keep increasing across restarts.
type Presence struct {
	mu    stdsync.Mutex
	pos   int64
	users map[id.UserID]*PresenceState
}

// PresenceState is one user's presence.
type PresenceState struct {
	Presence   string
	StatusMsg  string
	LastActive time.Time
	pos        int64
}

// Valid presence values.
var validPresence = map[string]bool{"online": true, "unavailable": true, "offline": true}

// ValidPresence reports whether p is a presence value of the spec.
func ValidPresence(p string) bool { return validPresence[p] }

// NewPresence returns an empty presence tracker.
func NewPresence() *Presence {
	return &Presence{pos: time.Now().UnixMilli(), users: make(map[id.UserID]*PresenceState)}
}

// Set records user's presence; it returns whether anything visible changed (and the stream advanced).
func (p *Presence) Set(user id.UserID, presence, statusMsg string, setMsg bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.users[user]
	if st == nil {
		st = &PresenceState{}
		p.users[user] = st
	}
	if presence == "online" {
		st.LastActive = time.Now()
	}
	if st.Presence == presence && (!setMsg || st.StatusMsg == statusMsg) {
		return false
	}
	st.Presence = presence
	if setMsg {
		st.StatusMsg = statusMsg
	}
	p.pos++
	st.pos = p.pos
	return true
}

// Get returns user's presence ("offline" for someone never seen).
func (p *Presence) Get(user id.UserID) PresenceState {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.users[user]; st != nil {
		return *st
	}
	return PresenceState{Presence: "offline"}
}

// Pos returns the current presence stream position.
func (p *Presence) Pos() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos
}

// changedSince returns the users whose presence changed in (since, upTo].
func (p *Presence) changedSince(since, upTo int64) map[id.UserID]PresenceState {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[id.UserID]PresenceState{}
	for u, st := range p.users {
		if st.pos > since && st.pos <= upTo {
			out[u] = *st
		}
	}
	return out
}

// known returns user's presence if it was ever set at or before upTo.
func (p *Presence) known(user id.UserID, upTo int64) (PresenceState, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.users[user]
	if st == nil || st.pos == 0 || st.pos > upTo {
		return PresenceState{}, false
	}
	return *st, true
}
