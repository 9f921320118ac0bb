package rooms

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// Event returns one event by ID (redacted content if it was redacted), or mxerr.NotFound.
func (s *Service) Event(ctx context.Context, eventID id.EventID) (*Event, error) {
	ev, err := s.queryEvent(ctx, `SELECT `+eventColumns+` FROM rooms_events e WHERE e.event_id = $1`, eventID)
	if err != nil {
		return nil, fmt.Errorf("load event %s: %w", eventID, err)
	}
	if ev == nil {
		return nil, mxerr.NotFound("event %s not found", eventID)
	}
	return ev, nil
}

// RoomVersion returns the version of a room, or mxerr.NotFound.
func (s *Service) RoomVersion(ctx context.Context, roomID id.RoomID) (string, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	return r.version, nil
}

// StateEvent returns the current state event (evType, stateKey) of a room, or mxerr.NotFound.
func (s *Service) StateEvent(ctx context.Context, roomID id.RoomID, evType, stateKey string) (*Event, error) {
	ev, err := s.queryEvent(ctx, `SELECT `+eventColumns+` FROM rooms_current_state cs
		JOIN rooms_events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND cs.type = $2 AND cs.state_key = $3`, roomID, evType, stateKey)
	if err != nil {
		return nil, fmt.Errorf("load state %s/%s of %s: %w", evType, stateKey, roomID, err)
	}
	if ev == nil {
		return nil, mxerr.NotFound("no %s state with key %q in %s", evType, stateKey, roomID)
	}
	return ev, nil
}

// CurrentState returns every current state event of a room, in stream order. An unknown room gives an empty
// list.
func (s *Service) CurrentState(ctx context.Context, roomID id.RoomID) ([]*Event, error) {
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_current_state cs
		JOIN rooms_events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 ORDER BY cs.stream_pos`, roomID)
	if err != nil {
		return nil, fmt.Errorf("load current state of %s: %w", roomID, err)
	}
	return evs, nil
}

// MembershipOf returns a user's current membership in a room and its event; "leave" and nil when the user
// never had one.
func (s *Service) MembershipOf(ctx context.Context, roomID id.RoomID, userID id.UserID) (string, *Event, error) {
	ev, err := s.queryEvent(ctx, `SELECT `+eventColumns+` FROM rooms_current_state cs
		JOIN rooms_events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND cs.type = 'm.room.member' AND cs.state_key = $2`, roomID, userID)
	if err != nil {
		return "", nil, fmt.Errorf("load membership of %s in %s: %w", userID, roomID, err)
	}
	if ev == nil {
		return memberLeave, nil, nil
	}
	return ev.Membership(), ev, nil
}

// Members returns the current m.room.member events of a room (every membership), in stream order.
func (s *Service) Members(ctx context.Context, roomID id.RoomID) ([]*Event, error) {
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_current_state cs
		JOIN rooms_events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND cs.type = 'm.room.member' ORDER BY cs.stream_pos`, roomID)
	if err != nil {
		return nil, fmt.Errorf("load members of %s: %w", roomID, err)
	}
	return evs, nil
}

// JoinedMembers returns the user IDs currently joined to a room.
func (s *Service) JoinedMembers(ctx context.Context, roomID id.RoomID) ([]id.UserID, error) {
	rows, err := s.db.Query(ctx, `SELECT state_key FROM rooms_current_state
		WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join' ORDER BY stream_pos`, roomID)
	if err != nil {
		return nil, fmt.Errorf("load joined members of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []id.UserID
	for rows.Next() {
		var u id.UserID
		if err = rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("load joined members of %s: %w", roomID, err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// RoomsForUser lists the rooms where the user's current membership is one of memberships (all memberships
// when none are given), in order of the membership's stream position.
func (s *Service) RoomsForUser(ctx context.Context, userID id.UserID, memberships ...string) ([]id.RoomID, error) {
	query := `SELECT room_id, membership FROM rooms_current_state
		WHERE type = 'm.room.member' AND state_key = $1 ORDER BY stream_pos`
	rows, err := s.db.Query(ctx, query, userID)
	if err != nil {
		return nil, fmt.Errorf("load rooms of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []id.RoomID
	for rows.Next() {
		var (
			roomID id.RoomID
			m      string
		)
		if err = rows.Scan(&roomID, &m); err != nil {
			return nil, fmt.Errorf("load rooms of %s: %w", userID, err)
		}
		if len(memberships) == 0 || contains(memberships, m) {
			out = append(out, roomID)
		}
	}
	return out, rows.Err()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Messages paginates a room's timeline by stream token. A token t means "just after the event at stream
// position t". With dir 'b' it returns up to limit events with position <= from, newest first; with 'f' the
// events with position > from, oldest first. next is the token to continue from in the same direction, or 0
// when there is nothing more. Pass MaxStreamPos as from for "the newest events".
func (s *Service) Messages(ctx context.Context, roomID id.RoomID, from int64, dir byte, limit int) ([]*Event, int64, error) {
	if limit <= 0 {
		limit = 10
	}
	var (
		evs []*Event
		err error
	)
	switch dir {
	case 'b':
		evs, err = s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_events e
			WHERE e.room_id = $1 AND e.stream_pos <= $2 ORDER BY e.stream_pos DESC LIMIT $3`, roomID, from, limit+1)
	case 'f':
		evs, err = s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_events e
			WHERE e.room_id = $1 AND e.stream_pos > $2 ORDER BY e.stream_pos LIMIT $3`, roomID, from, limit+1)
	default:
		return nil, 0, mxerr.InvalidParam("dir must be b or f")
	}
	if err != nil {
		return nil, 0, fmt.Errorf("paginate %s: %w", roomID, err)
	}
	if len(evs) <= limit {
		return evs, 0, nil
	}
	evs = evs[:limit]
	last := evs[len(evs)-1].StreamPos
	if dir == 'b' {
		return evs, last - 1, nil
	}
	return evs, last, nil
}

// EventsAfter returns up to limit events of every room with stream position > after, in stream order. Writers
// commit in position order, so a reader never sees position N+1 before N.
func (s *Service) EventsAfter(ctx context.Context, after int64, limit int) ([]*Event, error) {
	if limit <= 0 {
		limit = math.MaxInt32
	}
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_events e
		WHERE e.stream_pos > $1 ORDER BY e.stream_pos LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("load events after %d: %w", after, err)
	}
	return evs, nil
}

// RoomEventsBetween returns the newest limit events of a room with position in (after, upTo], oldest first,
// and whether older events in that range were left out.
func (s *Service) RoomEventsBetween(ctx context.Context, roomID id.RoomID, after, upTo int64, limit int) ([]*Event, bool, error) {
	if limit <= 0 {
		limit = 10
	}
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_events e
		WHERE e.room_id = $1 AND e.stream_pos > $2 AND e.stream_pos <= $3
		ORDER BY e.stream_pos DESC LIMIT $4`, roomID, after, upTo, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("load events of %s: %w", roomID, err)
	}
	limited := len(evs) > limit
	if limited {
		evs = evs[:limit]
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs, limited, nil
}

// MaxStreamPos returns the newest stream position (0 before the first event).
func (s *Service) MaxStreamPos(ctx context.Context) (int64, error) {
	var pos int64
	if err := s.db.QueryRow(ctx, `SELECT pos FROM rooms_stream WHERE id = 0`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("load stream position: %w", err)
	}
	return pos, nil
}

// StateAt returns the state of a room just after the event at stream position pos (or, if pos is not an event
// of that room, after the room's last event before it), in stream order. History is linear on a single
// server, so this is the current state with every change after pos undone: each state event records the event
// it replaced (unsigned.replaces_state), so only the events after pos are read, which for /sync is a handful.
func (s *Service) StateAt(ctx context.Context, roomID id.RoomID, pos int64) ([]*Event, error) {
	cur, err := s.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	later, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_events e
		WHERE e.room_id = $1 AND e.stream_pos > $2 AND e.state_key IS NOT NULL ORDER BY e.stream_pos`, roomID, pos)
	if err != nil {
		return nil, fmt.Errorf("load state of %s at %d: %w", roomID, pos, err)
	}
	if len(later) == 0 {
		return cur, nil
	}
	type key struct{ typ, stateKey string }
	undone := make(map[key]bool, len(later))
	var restore []id.EventID
	for _, ev := range later {
		k := key{ev.Type, *ev.StateKey}
		if undone[k] {
			continue
		}
		// The first change after pos replaced the state at pos (none: the key did not exist yet).
		undone[k] = true
		if prev, _ := ev.Unsigned["replaces_state"].(string); prev != "" {
			restore = append(restore, id.EventID(prev))
		}
	}
	out := make([]*Event, 0, len(cur))
	for _, ev := range cur {
		if !undone[key{ev.Type, *ev.StateKey}] {
			out = append(out, ev)
		}
	}
	for _, evID := range restore {
		ev, err := s.Event(ctx, evID)
		if err != nil {
			return nil, fmt.Errorf("load state of %s at %d: %w", roomID, pos, err)
		}
		out = append(out, ev)
	}
	slices.SortFunc(out, func(a, b *Event) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	return out, nil
}

// strippedStateTypes are the state events the spec recommends showing to invitees and knockers.
var strippedStateTypes = []string{"m.room.create", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.join_rules",
	"m.room.canonical_alias", "m.room.encryption"}

// InviteState returns the current state events an invitee may see before joining (create, name, avatar,
// topic, join rules, canonical alias, encryption) plus the member events of user and of the sender of
// user's invite, for /sync's invite_state. The caller strips them to {type, state_key, sender, content}.
func (s *Service) InviteState(ctx context.Context, roomID id.RoomID, user id.UserID) ([]*Event, error) {
	_, own, err := s.MembershipOf(ctx, roomID, user)
	if err != nil {
		return nil, err
	}
	inviter := user
	if own != nil {
		inviter = own.Sender
	}
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_current_state cs
		JOIN rooms_events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND (
			(cs.state_key = '' AND cs.type IN ($2, $3, $4, $5, $6, $7, $8))
			OR (cs.type = 'm.room.member' AND cs.state_key IN ($9, $10)))
		ORDER BY cs.stream_pos`, roomID, strippedStateTypes[0], strippedStateTypes[1], strippedStateTypes[2],
		strippedStateTypes[3], strippedStateTypes[4], strippedStateTypes[5], strippedStateTypes[6], user, inviter)
	if err != nil {
		return nil, fmt.Errorf("load invite state of %s: %w", roomID, err)
	}
	return evs, nil
}

// UserMemberships returns the user's current m.room.member event in every room where the membership is one
// of memberships (all when none are given), in stream order, with one query: /sync uses it instead of
// RoomsForUser followed by MembershipOf per room.
func (s *Service) UserMemberships(ctx context.Context, userID id.UserID, memberships ...string) ([]*Event, error) {
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_current_state cs
		JOIN rooms_events e ON e.event_id = cs.event_id
		WHERE cs.type = 'm.room.member' AND cs.state_key = $1 ORDER BY cs.stream_pos`, userID)
	if err != nil {
		return nil, fmt.Errorf("load memberships of %s: %w", userID, err)
	}
	if len(memberships) == 0 {
		return evs, nil
	}
	out := evs[:0]
	for _, ev := range evs {
		if contains(memberships, ev.Membership()) {
			out = append(out, ev)
		}
	}
	return out, nil
}

// RoomsWithEventsBetween returns which of the user's rooms (any current membership) have events with
// stream position in (after, upTo], so that an incremental /sync looks only at rooms that changed.
func (s *Service) RoomsWithEventsBetween(ctx context.Context, userID id.UserID, after, upTo int64) ([]id.RoomID, error) {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT e.room_id FROM rooms_current_state cs
		JOIN rooms_events e ON e.room_id = cs.room_id
		WHERE cs.type = 'm.room.member' AND cs.state_key = $1 AND e.stream_pos > $2 AND e.stream_pos <= $3`,
		userID, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("load changed rooms of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []id.RoomID
	for rows.Next() {
		var r id.RoomID
		if err = rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("load changed rooms of %s: %w", userID, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
