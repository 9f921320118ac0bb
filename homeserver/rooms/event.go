package rooms

import (
	"encoding/json"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Event is one persisted room event as the homeserver knows it: the PDU fields plus local bookkeeping
// (stream position, transaction ID and device of the sender, redaction state).
type Event struct {
	ID             id.EventID
	RoomID         id.RoomID
	Sender         id.UserID
	Type           string
	StateKey       *string
	Content        json.RawMessage
	OriginServerTS int64
	// Redacts is the redacted event of an m.room.redaction (top level in v10, content.redacts in v11).
	Redacts id.EventID
	// Unsigned holds server-added data sent to clients: prev_content, prev_sender, replaces_state and
	// redacted_because. age is added by MarshalClient; transaction_id is the HTTP layer's business (only the
	// sending device may see it).
	Unsigned   map[string]any
	Depth      int64
	PrevEvents []id.EventID
	AuthEvents []id.EventID
	StreamPos  int64
	TxnID      string
	DeviceID   id.DeviceID
	Redacted   bool
}

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.StateKey != nil }

// StateKeyString returns the state key, or "" for a non-state event.
func (e *Event) StateKeyString() string {
	if e.StateKey == nil {
		return ""
	}
	return *e.StateKey
}

// Membership returns content.membership for m.room.member events, "" otherwise.
func (e *Event) Membership() string {
	if e.Type != event.StateMember.Type {
		return ""
	}
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(e.Content, &c)
	return c.Membership
}

// PrevMembership returns the membership a member event replaced, read from unsigned.prev_content ("" when the
// event is the user's first membership in the room, or not a member event).
func (e *Event) PrevMembership() string {
	prev, ok := e.Unsigned["prev_content"]
	if !ok || prev == nil {
		return ""
	}
	var raw []byte
	switch p := prev.(type) {
	case json.RawMessage:
		raw = p
	case []byte:
		raw = p
	default:
		raw, _ = json.Marshal(p)
	}
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(raw, &c)
	return c.Membership
}

// clientEvent is the client-server format of a room event.
type clientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        id.EventID      `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         id.RoomID       `json:"room_id"`
	Sender         id.UserID       `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        id.EventID      `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

func (e *Event) client(now time.Time) clientEvent {
	unsigned := make(map[string]any, len(e.Unsigned)+1)
	for k, v := range e.Unsigned {
		unsigned[k] = v
	}
	if age := now.UnixMilli() - e.OriginServerTS; age >= 0 {
		unsigned["age"] = age
	} else {
		unsigned["age"] = 0
	}
	content := e.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	return clientEvent{
		Content:        content,
		EventID:        e.ID,
		OriginServerTS: e.OriginServerTS,
		RoomID:         e.RoomID,
		Sender:         e.Sender,
		StateKey:       e.StateKey,
		Type:           e.Type,
		Redacts:        e.Redacts,
		Unsigned:       unsigned,
	}
}

// MarshalClient returns the event in the client-server format (content, event_id, origin_server_ts, room_id,
// sender, state_key, type, redacts, unsigned with age and the stored unsigned fields).
func (e *Event) MarshalClient() json.RawMessage {
	data, err := json.Marshal(e.client(time.Now()))
	if err != nil {
		// Every field is plain data that was valid JSON when stored; this cannot happen.
		panic("rooms: marshal client event: " + err.Error())
	}
	return data
}

// ClientEvent returns the event as a mautrix event in the client-server format, with its content parsed into
// the typed struct when mautrix knows the type.
func (e *Event) ClientEvent() *event.Event {
	var evt event.Event
	if err := json.Unmarshal(e.MarshalClient(), &evt); err != nil {
		// Fall back to a raw copy: an unusual content must not hide the event.
		evt = event.Event{
			ID: e.ID, RoomID: e.RoomID, Sender: e.Sender, Type: event.Type{Type: e.Type},
			StateKey: e.StateKey, Timestamp: e.OriginServerTS, Redacts: e.Redacts,
		}
		evt.Content.VeryRaw = e.Content
	}
	if e.StateKey != nil {
		evt.Type.Class = event.StateEventType
	} else {
		evt.Type.Class = event.MessageEventType
	}
	_ = evt.Content.ParseRaw(evt.Type)
	return &evt
}
