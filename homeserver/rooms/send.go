package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// SendRequest describes one event a local user (or an appservice acting for one) sends.
type SendRequest struct {
	RoomID   id.RoomID
	Sender   id.UserID
	Type     string
	StateKey *string
	// Content must be a JSON object; floats and integers outside ±(2^53-1) are refused (canonical JSON).
	Content json.RawMessage
	// TS is the origin_server_ts to use; 0 means now. The HTTP layer decides who may set it (appservices
	// with ?ts=).
	TS int64
	// TxnID makes the send idempotent per (Sender, DeviceID, RoomID, TxnID): a repeat returns the first event.
	TxnID    string
	DeviceID id.DeviceID
	// Redacts is the event an m.room.redaction redacts (content.redacts is accepted too).
	Redacts id.EventID
}

// Send authorises and persists one event: it is given the room's forward extremity as its prev_event, the
// auth events the spec selects and the next depth; the authorisation rules of the room version run against
// the current state; then the event, its stream position and the current state are written in one
// transaction and subscribers are called. Unauthorised events get mxerr.Forbidden and nothing is stored.
// A repeated (Sender, DeviceID, RoomID, TxnID) returns the event stored the first time.
func (s *Service) Send(ctx context.Context, req SendRequest) (*Event, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if req.TxnID != "" {
		// Under the writer lock, so that a concurrent retry cannot store the event twice.
		if ev, err := s.eventByTxn(ctx, req.Sender, req.DeviceID, req.RoomID, req.TxnID); err != nil || ev != nil {
			return ev, err
		}
	}
	var ev *Event
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		room, err := s.loadRoom(ctx, req.RoomID)
		if err != nil {
			return err
		}
		ev, err = s.persist(ctx, room, req)
		return err
	})
	if err != nil {
		if mxerr.As(err) != nil {
			return nil, err
		}
		return nil, fmt.Errorf("send %s to %s: %w", req.Type, req.RoomID, err)
	}
	s.notify([]*Event{ev})
	return ev, nil
}

// eventByTxn finds the event a transaction ID already produced. The spec scopes transaction IDs to the device
// and the request path, and the path names the room, so the same ID in another room is a new transaction.
func (s *Service) eventByTxn(ctx context.Context, sender id.UserID, device id.DeviceID, roomID id.RoomID, txnID string) (*Event, error) {
	ev, err := s.queryEvent(ctx, `SELECT `+eventColumns+` FROM rooms_events e
		WHERE e.sender = $1 AND e.device_id = $2 AND e.room_id = $3 AND e.txn_id = $4`, sender, device, roomID, txnID)
	if err != nil {
		return nil, fmt.Errorf("look up transaction %s: %w", txnID, err)
	}
	return ev, nil
}

// decodeContent parses event content, which must be a JSON object in canonical JSON's value space.
func decodeContent(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 {
		return map[string]any{}, nil
	}
	if !json.Valid(raw) {
		return nil, mxerr.NotJSON("event content is not valid JSON")
	}
	v, err := canonicaljson.Decode(raw)
	if err != nil {
		return nil, mxerr.BadJSON("event content: %v", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, mxerr.BadJSON("event content must be a JSON object")
	}
	return obj, nil
}

// persist builds, authorises and stores one event. It must run inside a DB transaction with writeMu held; room
// is updated in place so that callers can persist several events in one transaction.
func (s *Service) persist(ctx context.Context, room *roomInfo, req SendRequest) (*Event, error) {
	if req.Type == "" {
		return nil, mxerr.MissingParam("event type is empty")
	}
	if len(req.Type) > 255 {
		return nil, mxerr.BadJSON("event type is longer than 255 bytes")
	}
	if req.StateKey != nil && len(*req.StateKey) > 255 {
		return nil, mxerr.BadJSON("state key is longer than 255 bytes")
	}
	if _, server, err := req.Sender.ParseAndValidateRelaxed(); err != nil || server != s.serverName {
		return nil, mxerr.Forbidden("sender %q is not a user of this server", req.Sender)
	}
	content, err := decodeContent(req.Content)
	if err != nil {
		return nil, err
	}
	ts := req.TS
	if ts <= 0 {
		ts = time.Now().UnixMilli()
	}
	ev := &Event{
		RoomID: room.id, Sender: req.Sender, Type: req.Type, StateKey: req.StateKey,
		OriginServerTS: ts, TxnID: req.TxnID, DeviceID: req.DeviceID,
	}
	var target id.UserID
	membership, _ := content["membership"].(string)
	if req.Type == typeMember && req.StateKey != nil {
		target = id.UserID(*req.StateKey)
	}
	st, err := s.loadAuthState(ctx, room.id, req.Sender, target)
	if err != nil {
		return nil, err
	}
	if req.Type == typeCreate && req.StateKey != nil && *req.StateKey == "" && room.lastEvent == "" {
		ev.PrevEvents, ev.Depth = []id.EventID{}, 1
	} else {
		if room.lastEvent == "" {
			return nil, mxerr.Forbidden("the room has no m.room.create event")
		}
		ev.PrevEvents, ev.Depth = []id.EventID{room.lastEvent}, room.lastDepth+1
	}
	ev.AuthEvents = st.authEventIDs(req.Type, req.StateKey, membership, req.Sender)

	var redactTarget *Event
	if req.Type == typeRedaction {
		ev.Redacts = req.Redacts
		if ev.Redacts == "" {
			r, _ := content["redacts"].(string)
			ev.Redacts = id.EventID(r)
		}
		if ev.Redacts == "" {
			return nil, mxerr.MissingParam("m.room.redaction needs the event it redacts")
		}
		if redactTarget, err = s.Event(ctx, ev.Redacts); err != nil && !errors.Is(err, mxerr.NotFound("")) {
			return nil, err
		}
	}
	if ev.Content, err = canonicaljson.Encode(content); err != nil {
		return nil, mxerr.BadJSON("event content: %v", err)
	}
	if err = authorize(room.version, ev, content, st, redactTarget); err != nil {
		return nil, err
	}
	if ev.Type == typeCanonicalAlias && ev.StateKeyString() == "" {
		if err = s.checkCanonicalAlias(ctx, room.id, content); err != nil {
			return nil, err
		}
	}
	pdu, pduJSON, err := s.buildPDU(room.version, ev, content)
	if err != nil {
		if mxerr.As(err) != nil {
			return nil, err
		}
		return nil, mxerr.BadJSON("%v", err)
	}
	_ = pdu

	if err = s.db.QueryRow(ctx, `UPDATE rooms_stream SET pos = pos + 1 WHERE id = 0 RETURNING pos`).Scan(&ev.StreamPos); err != nil {
		return nil, fmt.Errorf("next stream position: %w", err)
	}
	if ev.StateKey != nil {
		prev, err := s.queryEvent(ctx, `SELECT `+eventColumns+` FROM rooms_current_state cs
			JOIN rooms_events e ON e.event_id = cs.event_id
			WHERE cs.room_id = $1 AND cs.type = $2 AND cs.state_key = $3`, room.id, ev.Type, *ev.StateKey)
		if err != nil {
			return nil, fmt.Errorf("load previous state: %w", err)
		}
		if prev != nil {
			ev.Unsigned = map[string]any{
				"prev_content":   prev.Content,
				"prev_sender":    prev.Sender,
				"replaces_state": prev.ID,
			}
		}
	}
	unsigned := "{}"
	if len(ev.Unsigned) > 0 {
		data, err := json.Marshal(ev.Unsigned)
		if err != nil {
			return nil, fmt.Errorf("encode unsigned: %w", err)
		}
		unsigned = string(data)
		// Give subscribers the same generic values a later read returns.
		ev.Unsigned = nil
		_ = json.Unmarshal(data, &ev.Unsigned)
	}
	_, err = s.db.Exec(ctx, `INSERT INTO rooms_events (stream_pos, event_id, room_id, sender, type, state_key, depth,
			origin_server_ts, pdu, unsigned, txn_id, device_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		ev.StreamPos, ev.ID, ev.RoomID, ev.Sender, ev.Type, ev.StateKey, ev.Depth, ev.OriginServerTS,
		string(pduJSON), unsigned, ev.TxnID, ev.DeviceID)
	if err != nil {
		return nil, fmt.Errorf("insert event %s: %w", ev.ID, err)
	}
	if err = s.indexEvent(ctx, ev, content); err != nil {
		return nil, err
	}
	if ev.StateKey != nil {
		_, err = s.db.Exec(ctx, `INSERT INTO rooms_current_state (room_id, type, state_key, event_id, stream_pos, membership)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (room_id, type, state_key) DO UPDATE
			SET event_id = excluded.event_id, stream_pos = excluded.stream_pos, membership = excluded.membership`,
			ev.RoomID, ev.Type, *ev.StateKey, ev.ID, ev.StreamPos, ev.Membership())
		if err != nil {
			return nil, fmt.Errorf("update current state: %w", err)
		}
	}
	if _, err = s.db.Exec(ctx, `UPDATE rooms_rooms SET last_event = $2, last_depth = $3 WHERE room_id = $1`,
		ev.RoomID, ev.ID, ev.Depth); err != nil {
		return nil, fmt.Errorf("update forward extremity: %w", err)
	}
	room.lastEvent, room.lastDepth = ev.ID, ev.Depth
	if redactTarget != nil && !redactTarget.Redacted {
		if err = s.applyRedaction(ctx, room.version, redactTarget, ev); err != nil {
			return nil, err
		}
	}
	zerolog.Ctx(ctx).Debug().Stringer("event_id", ev.ID).Stringer("room_id", ev.RoomID).Str("type", ev.Type).
		Int64("stream_pos", ev.StreamPos).Msg("Persisted event")
	return ev, nil
}

// applyRedaction replaces the stored PDU of target by its redacted form and records the redaction in its
// unsigned redacted_because. The redaction event itself is stored unchanged.
func (s *Service) applyRedaction(ctx context.Context, version string, target, redaction *Event) error {
	var raw string
	if err := s.db.QueryRow(ctx, `SELECT pdu FROM rooms_events WHERE event_id = $1`, target.ID).Scan(&raw); err != nil {
		return fmt.Errorf("load redaction target %s: %w", target.ID, err)
	}
	generic, err := canonicaljson.Decode([]byte(raw))
	if err != nil {
		return fmt.Errorf("decode redaction target %s: %w", target.ID, err)
	}
	pdu, ok := generic.(map[string]any)
	if !ok {
		return fmt.Errorf("redaction target %s is not an object", target.ID)
	}
	redacted, err := canonicaljson.Encode(Redact(version, pdu))
	if err != nil {
		return fmt.Errorf("encode redacted %s: %w", target.ID, err)
	}
	unsigned := maps.Clone(target.Unsigned)
	if unsigned == nil {
		unsigned = map[string]any{}
	}
	because := redaction.client(time.UnixMilli(redaction.OriginServerTS))
	because.Unsigned = nil
	unsigned["redacted_because"] = because
	data, err := json.Marshal(unsigned)
	if err != nil {
		return fmt.Errorf("encode unsigned of %s: %w", target.ID, err)
	}
	_, err = s.db.Exec(ctx, `UPDATE rooms_events SET pdu = $2, unsigned = $3, redacted_by = $4 WHERE event_id = $1`,
		target.ID, string(redacted), string(data), redaction.ID)
	if err != nil {
		return fmt.Errorf("store redacted %s: %w", target.ID, err)
	}
	if err = s.unindexEvent(ctx, target); err != nil {
		return err
	}
	return nil
}
