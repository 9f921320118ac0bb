package sync

import (
	stdsync "sync"

	"maunium.net/go/mautrix/id"
)

// Notifier wakes long-polling /sync requests. Each waiting request registers its user and the rooms that user
// is in; a room event wakes only the waiters of that room (and the target of a membership event, who may not be
// in the room yet), and a per-user change (account data, a new invite) wakes only that user's waiters.
type Notifier struct {
	mu     stdsync.Mutex
	byUser map[id.UserID]map[*Listener]struct{}
	byRoom map[id.RoomID]map[*Listener]struct{}
}

// Listener is one waiting /sync request. C is signalled (without blocking the waker) when something it may care
// about happened; Close must be called when the request stops waiting.
type Listener struct {
	n     *Notifier
	user  id.UserID
	rooms []id.RoomID
	ch    chan struct{}
}

// NewNotifier returns an empty notifier.
func NewNotifier() *Notifier {
	return &Notifier{
		byUser: make(map[id.UserID]map[*Listener]struct{}),
		byRoom: make(map[id.RoomID]map[*Listener]struct{}),
	}
}

// Listen registers a waiter for user, interested in rooms. Register before reading stream positions so that no
// change between the read and the wait is missed.
func (n *Notifier) Listen(user id.UserID, rooms []id.RoomID) *Listener {
	l := &Listener{n: n, user: user, rooms: rooms, ch: make(chan struct{}, 1)}
	n.mu.Lock()
	defer n.mu.Unlock()
	add(n.byUser, user, l)
	for _, r := range rooms {
		add(n.byRoom, r, l)
	}
	return l
}

// C is signalled when the listener should recompute its response.
func (l *Listener) C() <-chan struct{} { return l.ch }

// Close unregisters the listener; it is safe to call more than once.
func (l *Listener) Close() {
	n := l.n
	n.mu.Lock()
	defer n.mu.Unlock()
	remove(n.byUser, l.user, l)
	for _, r := range l.rooms {
		remove(n.byRoom, r, l)
	}
}

// WakeUsers signals every listener of the given users.
func (n *Notifier) WakeUsers(users ...id.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		for l := range n.byUser[u] {
			l.signal()
		}
	}
}

// WakeRoom signals every listener interested in room.
func (n *Notifier) WakeRoom(room id.RoomID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for l := range n.byRoom[room] {
		l.signal()
	}
}

// Waiters returns how many listeners are registered for user (for tests and metrics).
func (n *Notifier) Waiters(user id.UserID) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.byUser[user])
}

func (l *Listener) signal() {
	select {
	case l.ch <- struct{}{}:
	default:
	}
}

func add[K comparable](m map[K]map[*Listener]struct{}, k K, l *Listener) {
	s := m[k]
	if s == nil {
		s = make(map[*Listener]struct{})
		m[k] = s
	}
	s[l] = struct{}{}
}

func remove[K comparable](m map[K]map[*Listener]struct{}, k K, l *Listener) {
	s := m[k]
	delete(s, l)
	if len(s) == 0 {
		delete(m, k)
	}
}
