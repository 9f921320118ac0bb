package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// eventColumns are the columns scanEvent reads, in order; prefix "e." where the query joins.
const eventColumns = `e.stream_pos, e.event_id, e.pdu, e.unsigned, e.redacted_by, e.txn_id, e.device_id`

func scanEvent(row dbutil.Scannable) (*Event, error) {
	var (
		ev            Event
		pdu, unsigned string
		redactedBy    string
	)
	if err := row.Scan(&ev.StreamPos, &ev.ID, &pdu, &unsigned, &redactedBy, &ev.TxnID, &ev.DeviceID); err != nil {
		return nil, err
	}
	var p storedPDU
	if err := json.Unmarshal([]byte(pdu), &p); err != nil {
		return nil, fmt.Errorf("decode stored event %s: %w", ev.ID, err)
	}
	ev.RoomID, ev.Sender, ev.Type, ev.StateKey = p.RoomID, p.Sender, p.Type, p.StateKey
	ev.Content, ev.OriginServerTS, ev.Redacts = p.Content, p.OriginServerTS, p.Redacts
	ev.Depth, ev.PrevEvents, ev.AuthEvents = p.Depth, p.PrevEvents, p.AuthEvents
	if ev.Redacts == "" && ev.Type == typeRedaction {
		// Room version 11 carries redacts in the content.
		var c struct {
			Redacts id.EventID `json:"redacts"`
		}
		_ = json.Unmarshal(ev.Content, &c)
		ev.Redacts = c.Redacts
	}
	if unsigned != "" && unsigned != "{}" {
		if err := json.Unmarshal([]byte(unsigned), &ev.Unsigned); err != nil {
			return nil, fmt.Errorf("decode unsigned of %s: %w", ev.ID, err)
		}
	}
	ev.Redacted = redactedBy != ""
	return &ev, nil
}

func (s *Service) queryEvents(ctx context.Context, query string, args ...any) ([]*Event, error) {
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		ev, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, rows.Err()
}

func (s *Service) queryEvent(ctx context.Context, query string, args ...any) (*Event, error) {
	ev, err := scanEvent(s.db.QueryRow(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return ev, err
}

// roomInfo is a row of rooms_rooms.
type roomInfo struct {
	id         id.RoomID
	version    string
	creator    id.UserID
	visibility string
	lastEvent  id.EventID
	lastDepth  int64
}

func (s *Service) loadRoom(ctx context.Context, roomID id.RoomID) (*roomInfo, error) {
	r := roomInfo{id: roomID}
	err := s.db.QueryRow(ctx, `SELECT version, creator, visibility, last_event, last_depth FROM rooms_rooms WHERE room_id = $1`,
		roomID).Scan(&r.version, &r.creator, &r.visibility, &r.lastEvent, &r.lastDepth)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.NotFound("room %s not found", roomID)
	} else if err != nil {
		return nil, fmt.Errorf("load room %s: %w", roomID, err)
	}
	return &r, nil
}

// loadAuthState reads the state the authorisation rules need, with one indexed query on current state.
func (s *Service) loadAuthState(ctx context.Context, roomID id.RoomID, sender, target id.UserID) (*authState, error) {
	if target == "" {
		target = sender
	}
	evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM rooms_current_state cs
		JOIN rooms_events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND (
			(cs.state_key = '' AND cs.type IN ('m.room.create', 'm.room.power_levels', 'm.room.join_rules'))
			OR (cs.type = 'm.room.member' AND cs.state_key IN ($2, $3)))`, roomID, sender, target)
	if err != nil {
		return nil, fmt.Errorf("load auth state of %s: %w", roomID, err)
	}
	st := &authState{members: make(map[id.UserID]*Event, 2)}
	for _, ev := range evs {
		st.add(ev)
	}
	return st, nil
}

// add records a state event in the auth state if the rules need it.
func (st *authState) add(ev *Event) {
	if ev.StateKey == nil {
		return
	}
	switch {
	case ev.Type == typeCreate && *ev.StateKey == "":
		st.create = ev
	case ev.Type == typePowerLevels && *ev.StateKey == "":
		st.powerLevels = ev
	case ev.Type == typeJoinRules && *ev.StateKey == "":
		st.joinRules = ev
	case ev.Type == typeMember:
		st.members[id.UserID(*ev.StateKey)] = ev
	}
}
