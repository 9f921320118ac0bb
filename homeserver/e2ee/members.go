package e2ee

import (
	"context"
	"fmt"
	"slices"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/rooms"
)

// memberChangeTimeout bounds the write made for a join or leave. It runs on the room writer's goroutine, so it
// must not hold up sending for long if the database is stuck.
const memberChangeTimeout = 5 * time.Second

// onRoomEvent records joins and leaves at an e2ee position: a user who starts sharing a room with someone must
// see them in device_lists.changed (their keys are new to the client), and one who stops sharing every room with
// them in device_lists.left. Only member events that change whether the user is joined are recorded.
func (s *Service) onRoomEvent(ev *rooms.Event) {
	if ev.Type != event.StateMember.Type || ev.StateKey == nil {
		return
	}
	now := ev.Membership() == "join"
	if now == (ev.PrevMembership() == "join") {
		return
	}
	user := id.UserID(*ev.StateKey)
	ctx, cancel := context.WithTimeout(context.Background(), memberChangeTimeout)
	defer cancel()
	_, err := s.advance(ctx, func(ctx context.Context, pos int64) (bool, error) {
		_, err := s.db.Exec(ctx, `INSERT INTO e2ee_member_changes (pos, room_id, user_id, joined) VALUES ($1, $2, $3, $4)`,
			pos, ev.RoomID, user, now)
		return err == nil, err
	})
	if err != nil {
		s.log.Err(err).Stringer("room_id", ev.RoomID).Stringer("user_id", user).Msg("cannot record a membership change for device lists")
	}
	// The room's waiters were woken by the event itself, possibly before this row existed; wake them again so
	// that they see it.
	if s.waker != nil {
		s.waker.WakeRoom(ev.RoomID)
		s.waker.WakeUsers(user)
	}
}

type memberChange struct {
	room   id.RoomID
	user   id.UserID
	joined bool
}

// membershipChanges returns how who-shares-rooms-with-user changed between the e2ee positions (from, to]: users
// who now share a room with user and did not before it (newly = they joined one of user's rooms, or user joined
// theirs), and users who share no room with user any more after one of them left.
func (s *Service) membershipChanges(ctx context.Context, user id.UserID, from, to int64) (changed, left []id.UserID, err error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, user_id, joined FROM e2ee_member_changes WHERE pos>$1 AND pos<=$2 ORDER BY pos`, from, to)
	if err != nil {
		return nil, nil, fmt.Errorf("load membership changes: %w", err)
	}
	var changes []memberChange
	for rows.Next() {
		var c memberChange
		if err := rows.Scan(&c.room, &c.user, &c.joined); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("load membership changes: %w", err)
		}
		changes = append(changes, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("load membership changes: %w", err)
	}
	if len(changes) == 0 {
		return nil, nil, nil
	}
	mine, err := s.rooms.RoomsForUser(ctx, user, "join")
	if err != nil {
		return nil, nil, fmt.Errorf("rooms of %s: %w", user, err)
	}
	joinedByMe := func(r id.RoomID) bool { return slices.Contains(mine, r) }
	candidatesJoined := map[id.UserID]bool{}
	candidatesLeft := map[id.UserID]bool{}
	for _, c := range changes {
		switch {
		case c.user == user && c.joined && joinedByMe(c.room):
			members, err := s.rooms.JoinedMembers(ctx, c.room)
			if err != nil {
				return nil, nil, fmt.Errorf("members of %s: %w", c.room, err)
			}
			for _, m := range members {
				candidatesJoined[m] = true
			}
		case c.user == user && !c.joined:
			// The members of the room user left may share nothing with user any more. Who they were is no longer
			// cheap to know exactly; the room's current members are the ones a client was tracking through it.
			members, err := s.rooms.JoinedMembers(ctx, c.room)
			if err != nil {
				return nil, nil, fmt.Errorf("members of %s: %w", c.room, err)
			}
			for _, m := range members {
				candidatesLeft[m] = true
			}
		case c.user != user && c.joined && joinedByMe(c.room):
			candidatesJoined[c.user] = true
		case c.user != user && !c.joined && joinedByMe(c.room):
			candidatesLeft[c.user] = true
		}
	}
	delete(candidatesJoined, user)
	delete(candidatesLeft, user)
	for u := range candidatesJoined {
		changed = append(changed, u)
	}
	for u := range candidatesLeft {
		if candidatesJoined[u] {
			continue
		}
		theirs, err := s.rooms.RoomsForUser(ctx, u, "join")
		if err != nil {
			return nil, nil, fmt.Errorf("rooms of %s: %w", u, err)
		}
		if !slices.ContainsFunc(theirs, joinedByMe) {
			left = append(left, u)
		}
	}
	slices.Sort(changed)
	slices.Sort(left)
	return changed, left, nil
}
