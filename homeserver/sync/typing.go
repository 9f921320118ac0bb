package sync

import (
	"slices"
	stdsync "sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// maxTypingTimeout caps how long one typing notification lasts, so that a client that vanishes mid-sentence
// does not show as typing forever (Synapse and Dendrite use similar caps).
const maxTypingTimeout = 2 * time.Minute

// Typing keeps who is typing in which room, in memory only: typing is ephemeral and needs no durability.
// Every change (start, stop, expiry) advances a stream position so /sync can tell what changed.
type Typing struct {
	mu     stdsync.Mutex
	pos    int64
	rooms  map[id.RoomID]*roomTyping
	onWake func(id.RoomID)
}

type roomTyping struct {
	pos    int64 // stream position of the last change in this room
	expiry map[id.UserID]time.Time
	timers map[id.UserID]*time.Timer
}

// NewTyping returns an empty typing tracker; onChange (may be nil) is called after each change, outside the lock.
func NewTyping(onChange func(id.RoomID)) *Typing {
	// Positions start at the wall clock in milliseconds so that they keep increasing across restarts: a
	// client's token from before a restart must not hide changes made after it.
	return &Typing{pos: time.Now().UnixMilli(), rooms: make(map[id.RoomID]*roomTyping), onWake: onChange}
}

// Set marks user as typing in room for timeout (capped), or as not typing when typing is false.
func (t *Typing) Set(room id.RoomID, user id.UserID, typing bool, timeout time.Duration) {
	if timeout <= 0 || timeout > maxTypingTimeout {
		timeout = maxTypingTimeout
	}
	t.mu.Lock()
	rt := t.rooms[room]
	if rt == nil {
		rt = &roomTyping{expiry: make(map[id.UserID]time.Time), timers: make(map[id.UserID]*time.Timer)}
		t.rooms[room] = rt
	}
	_, was := rt.expiry[user]
	if tm := rt.timers[user]; tm != nil {
		tm.Stop()
		delete(rt.timers, user)
	}
	if typing {
		exp := time.Now().Add(timeout)
		rt.expiry[user] = exp
		rt.timers[user] = time.AfterFunc(timeout, func() { t.expire(room, user, exp) })
	} else {
		delete(rt.expiry, user)
	}
	changed := typing || was
	if changed {
		t.pos++
		rt.pos = t.pos
	}
	t.mu.Unlock()
	if changed && t.onWake != nil {
		t.onWake(room)
	}
}

func (t *Typing) expire(room id.RoomID, user id.UserID, exp time.Time) {
	t.mu.Lock()
	rt := t.rooms[room]
	if rt == nil || !rt.expiry[user].Equal(exp) {
		t.mu.Unlock()
		return
	}
	delete(rt.expiry, user)
	delete(rt.timers, user)
	t.pos++
	rt.pos = t.pos
	t.mu.Unlock()
	if t.onWake != nil {
		t.onWake(room)
	}
}

// Pos returns the current typing stream position.
func (t *Typing) Pos() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

// Since returns the sorted list of users typing in room and whether it changed after position since.
func (t *Typing) Since(room id.RoomID, since int64) (users []id.UserID, changed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[room]
	if rt == nil {
		return nil, false
	}
	for u := range rt.expiry {
		users = append(users, u)
	}
	slices.Sort(users)
	return users, rt.pos > since
}
