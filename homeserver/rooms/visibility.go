package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"maunium.net/go/mautrix/id"
)

// History visibility values of m.room.history_visibility (spec, "Room history visibility").
const (
	// VisibilityWorldReadable lets anyone, member or not, read the event.
	VisibilityWorldReadable = "world_readable"
	// VisibilityShared lets every user who has been joined to the room read the event, even from before they joined.
	VisibilityShared = "shared"
	// VisibilityInvited lets a user read the event if they were invited or joined when it was sent.
	VisibilityInvited = "invited"
	// VisibilityJoined lets a user read the event only if they were joined when it was sent.
	VisibilityJoined = "joined"
)

// historyVisibilityOf returns content.history_visibility of an m.room.history_visibility event; unknown or
// missing values count as "shared", the spec's default.
func historyVisibilityOf(ev *Event) string {
	if ev == nil {
		return VisibilityShared
	}
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	switch c.HistoryVisibility {
	case VisibilityWorldReadable, VisibilityShared, VisibilityInvited, VisibilityJoined:
		return c.HistoryVisibility
	}
	return VisibilityShared
}

// CurrentHistoryVisibility returns the room's current m.room.history_visibility ("shared" when unset).
func (s *Service) CurrentHistoryVisibility(ctx context.Context, roomID id.RoomID) (string, error) {
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_current_state cs
		JOIN rooms_events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND cs.type = $2 AND cs.state_key = ''`, roomID, typeHistoryVisibility)
	if err != nil {
		return "", fmt.Errorf("load history visibility of %s: %w", roomID, err)
	}
	if len(evs) == 0 {
		return VisibilityShared, nil
	}
	return historyVisibilityOf(evs[0]), nil
}

// EventVisible decides whether user may see ev given the room's history visibility and the user's membership
// in the state before ev. peeking means the user
// has never been joined to the room (or is reading it from outside), so "shared" history is closed to them.
func EventVisible(visibility, membership string, peeking bool) bool {
	if membership == memberJoin || visibility == VisibilityWorldReadable {
		return true
	}
	switch visibility {
	case VisibilityShared:
		return !peeking
	case VisibilityInvited:
		return membership == memberInvite
	}
	return false
}

// FilterVisible returns the events of evs (all in roomID, any order) that user may see under the room's
// history visibility rules, keeping their order; the user's own membership events are always kept. Each
// returned event is a copy whose unsigned.membership is user's membership at that event (MSC4115: the
// membership the event itself sets for the user's own member events, the one before it otherwise).
// peeking: see EventVisible.
func (s *Service) FilterVisible(ctx context.Context, roomID id.RoomID, user id.UserID, evs []*Event, peeking bool) ([]*Event, error) {
	if len(evs) == 0 {
		return evs, nil
	}
	newest := int64(0)
	for _, ev := range evs {
		newest = max(newest, ev.StreamPos)
	}
	// The history of the two state entries that matter, oldest first; both are ranges of the state index.
	hist, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_events e
		WHERE e.room_id = $1 AND e.stream_pos < $4
			AND ((e.type = $2 AND e.state_key = '') OR (e.type = 'm.room.member' AND e.state_key = $3))
		ORDER BY e.stream_pos`, roomID, typeHistoryVisibility, user, newest)
	if err != nil {
		return nil, fmt.Errorf("load visibility history of %s: %w", roomID, err)
	}
	out := make([]*Event, 0, len(evs))
	for _, ev := range evs {
		if ev.RoomID != roomID {
			continue
		}
		var visEv *Event
		membership := memberLeave
		for _, h := range hist {
			if h.StreamPos >= ev.StreamPos {
				break
			}
			if h.Type == typeHistoryVisibility {
				visEv = h
			} else {
				membership = h.Membership()
			}
		}
		// Users always see the changes of their own membership (an invite, a kick, their leave).
		own := ev.Type == typeMember && ev.StateKeyString() == string(user)
		if own {
			membership = ev.Membership()
		}
		if own || EventVisible(historyVisibilityOf(visEv), membership, peeking) {
			out = append(out, withMembership(ev, membership))
		}
	}
	return out, nil
}

// AnnotateJoined returns copies of evs with unsigned.membership for a user who was joined throughout them
// ("join", or what the user's own member events among them set), without a database query.
func AnnotateJoined(user id.UserID, evs []*Event) []*Event {
	out := make([]*Event, len(evs))
	for i, ev := range evs {
		m := memberJoin
		if ev.Type == typeMember && ev.StateKeyString() == string(user) {
			m = ev.Membership()
		}
		out[i] = withMembership(ev, m)
	}
	return out
}

func withMembership(ev *Event, membership string) *Event {
	cp := *ev
	cp.Unsigned = maps.Clone(ev.Unsigned)
	if cp.Unsigned == nil {
		cp.Unsigned = map[string]any{}
	}
	cp.Unsigned["membership"] = membership
	return &cp
}
