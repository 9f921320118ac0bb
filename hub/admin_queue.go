package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/rooms"
	"github.com/passerelle/passerelle/registration"
)

const (
	// maxQueueScan bounds how many stream events one queue measurement reads: the status page and each
	// metrics scrape must stay cheap even when a bridge has been off for days. Beyond it the length is a lower
	// bound (QueueInfo.Capped).
	maxQueueScan = 10000
	// queueScanBatch is the page size of the scan.
	queueScanBatch = 500
)

// QueueInfo describes what an appservice has not acknowledged yet.
type QueueInfo struct {
	// Length counts the events after the acknowledged stream position that are for this appservice (its
	// users, or rooms where one of its users is joined now).
	Length int `json:"length"`
	// OldestTS is the origin_server_ts (ms) of the oldest of them, 0 when the queue is empty.
	OldestTS int64 `json:"oldest_ts,omitempty"`
	// Capped is true when more than maxQueueScan stream events were waiting and Length is a lower bound.
	Capped bool `json:"capped,omitempty"`
}

// OldestAge is how long the oldest queued event has waited (0 when the queue is empty).
func (q QueueInfo) OldestAge() time.Duration {
	if q.OldestTS == 0 {
		return 0
	}
	return max(0, time.Since(time.UnixMilli(q.OldestTS)))
}

// regByID returns the registration with the given appservice ID, or nil.
func (h *Hub) regByID(asID string) *registration.Registration {
	for _, r := range h.regs {
		if r.ID == asID {
			return r
		}
	}
	return nil
}

// queueOf measures the queue of appservice asID after its acknowledged stream position pos. It applies the same
// interest rules as the sender (user namespace for sender or member target, room namespace, a joined member in
// the user namespace), except canonical aliases.
func (h *Hub) queueOf(ctx context.Context, asID string, pos int64) (QueueInfo, error) {
	reg := h.regByID(asID)
	if reg == nil {
		return QueueInfo{}, fmt.Errorf("unknown appservice %q", asID)
	}
	src := h.hs.Rooms()
	var q QueueInfo
	roomCache := make(map[id.RoomID]bool)
	for scanned := 0; scanned < maxQueueScan; {
		evs, err := src.EventsAfter(ctx, pos, queueScanBatch)
		if err != nil {
			return q, fmt.Errorf("read queue of %s: %w", asID, err)
		}
		for _, ev := range evs {
			ok, err := interestedIn(ctx, src, reg, ev, roomCache)
			if err != nil {
				return q, fmt.Errorf("read queue of %s: %w", asID, err)
			}
			if ok {
				q.Length++
				if q.OldestTS == 0 {
					q.OldestTS = ev.OriginServerTS
				}
			}
			pos = ev.StreamPos
		}
		scanned += len(evs)
		if len(evs) < queueScanBatch {
			return q, nil
		}
	}
	q.Capped = true
	return q, nil
}

// interestedIn reports whether the appservice reg receives ev.
func interestedIn(ctx context.Context, src *rooms.Service, reg *registration.Registration, ev *rooms.Event,
	cache map[id.RoomID]bool) (bool, error) {
	if reg.IsInterestedUser(ev.Sender) {
		return true, nil
	}
	if ev.Type == event.StateMember.Type && ev.StateKey != nil && reg.IsInterestedUser(id.UserID(*ev.StateKey)) {
		return true, nil
	}
	if ok, seen := cache[ev.RoomID]; seen {
		return ok, nil
	}
	ok := reg.MatchesRoom(ev.RoomID)
	if !ok {
		member, err := joinedMemberOf(ctx, src, reg, ev.RoomID)
		if err != nil {
			return false, err
		}
		ok = member != ""
	}
	cache[ev.RoomID] = ok
	return ok, nil
}

// joinedMemberOf returns a joined member of the room in reg's user namespace, preferring the appservice's
// own bot, or "" when there is none.
func joinedMemberOf(ctx context.Context, src *rooms.Service, reg *registration.Registration, roomID id.RoomID) (id.UserID, error) {
	members, err := src.Members(ctx, roomID)
	if err != nil {
		if errors.Is(err, errNotFound) {
			return "", nil
		}
		return "", fmt.Errorf("read members of %s: %w", roomID, err)
	}
	var found id.UserID
	for _, m := range members {
		if m.StateKey == nil || m.Membership() != string(event.MembershipJoin) {
			continue
		}
		u := id.UserID(*m.StateKey)
		if !reg.IsInterestedUser(u) {
			continue
		}
		if u.Localpart() == reg.SenderLocalpart {
			return u, nil
		}
		if found == "" {
			found = u
		}
	}
	return found, nil
}
