package sync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	// DefaultTimelineLimit is the number of timeline events per room when the filter sets none (as Synapse).
	DefaultTimelineLimit = 10
	// MaxTimelineLimit caps what a filter may ask for, so that one request cannot load a whole room history.
	MaxTimelineLimit = 1000
	// maxFilterBytes bounds a filter definition; real clients send a few hundred bytes.
	maxFilterBytes = 16 << 10
)

// ParseFilter decodes and validates a filter definition (the body of POST /user/{id}/filter or an inline
// `filter` query parameter that starts with "{"). Limits must be non-negative; event_format must be "client" or
// "federation" when given.
func ParseFilter(data []byte) (*mautrix.Filter, error) {
	if len(data) > maxFilterBytes {
		return nil, fmt.Errorf("filter is larger than %d bytes", maxFilterBytes)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, fmt.Errorf("filter must be a JSON object")
	}
	var f mautrix.Filter
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("decode filter: %w", err)
	}
	if f.EventFormat != "" && f.EventFormat != mautrix.EventFormatClient && f.EventFormat != mautrix.EventFormatFederation {
		return nil, fmt.Errorf("bad event_format %q", f.EventFormat)
	}
	parts := []*mautrix.FilterPart{f.AccountData, f.Presence}
	if f.Room != nil {
		parts = append(parts, f.Room.AccountData, f.Room.Ephemeral, f.Room.State, f.Room.Timeline)
	}
	for _, p := range parts {
		if p == nil {
			continue
		}
		if p.Limit < 0 {
			return nil, fmt.Errorf("negative limit %d", p.Limit)
		}
		if err := checkIDs(p.Rooms, p.NotRooms, p.Senders, p.NotSenders); err != nil {
			return nil, err
		}
	}
	if f.Room != nil {
		if err := checkIDs(f.Room.Rooms, f.Room.NotRooms, nil, nil); err != nil {
			return nil, err
		}
	}
	// mautrix's FilterPart cannot tell "limit": 0 from no limit; a timeline limit of exactly 0 is meaningful
	// (state only, no events), so it is kept as the zeroTimelineLimit marker.
	var explicit struct {
		Room *struct {
			Timeline *struct {
				Limit *int `json:"limit"`
			} `json:"timeline"`
		} `json:"room"`
	}
	if json.Unmarshal(data, &explicit) == nil && explicit.Room != nil && explicit.Room.Timeline != nil &&
		explicit.Room.Timeline.Limit != nil && *explicit.Room.Timeline.Limit == 0 && f.Room.Timeline != nil {
		f.Room.Timeline.Limit = zeroTimelineLimit
	}
	return &f, nil
}

// zeroTimelineLimit is how a parsed or stored filter says "timeline limit 0" (see ParseFilter).
const zeroTimelineLimit = -1

// ForClient returns f as the client wrote it (the zero timeline limit marker undone), for GET /filter.
func ForClient(f *mautrix.Filter) *mautrix.Filter {
	if f == nil || f.Room == nil || f.Room.Timeline == nil || f.Room.Timeline.Limit != zeroTimelineLimit {
		return f
	}
	c, tl := *f, *f.Room.Timeline
	room := *f.Room
	tl.Limit = 0
	room.Timeline = &tl
	c.Room = &room
	return &c
}

// TimelineLimit returns the number of timeline events per room that f asks for, within [1, MaxTimelineLimit].
func TimelineLimit(f *mautrix.Filter) int {
	if f != nil && f.Room != nil && f.Room.Timeline != nil && f.Room.Timeline.Limit == zeroTimelineLimit {
		return 0
	}
	if f == nil || f.Room == nil || f.Room.Timeline == nil || f.Room.Timeline.Limit <= 0 {
		return DefaultTimelineLimit
	}
	return min(f.Room.Timeline.Limit, MaxTimelineLimit)
}

// RoomAllowed reports whether the room-level rooms/not_rooms lists of f let room through.
func RoomAllowed(f *mautrix.Filter, room id.RoomID) bool {
	if f == nil || f.Room == nil {
		return true
	}
	if slices.Contains(f.Room.NotRooms, room) {
		return false
	}
	return f.Room.Rooms == nil || slices.Contains(f.Room.Rooms, room)
}

// PartAllows reports whether an event of type evType sent by sender in room passes the filter part p (nil lets
// everything through). Types and not_types accept a trailing "*" wildcard, as the spec says.
func PartAllows(p *mautrix.FilterPart, room id.RoomID, sender id.UserID, evType string) bool {
	if p == nil {
		return true
	}
	if room != "" {
		if slices.Contains(p.NotRooms, room) || (p.Rooms != nil && !slices.Contains(p.Rooms, room)) {
			return false
		}
	}
	if sender != "" {
		if slices.Contains(p.NotSenders, sender) || (p.Senders != nil && !slices.Contains(p.Senders, sender)) {
			return false
		}
	}
	for _, t := range p.NotTypes {
		if typeMatches(t, evType) {
			return false
		}
	}
	if p.Types != nil {
		return slices.ContainsFunc(p.Types, func(t event.Type) bool { return typeMatches(t, evType) })
	}
	return true
}

func typeMatches(pattern event.Type, evType string) bool {
	p := pattern.Type
	if n := len(p); n > 0 && p[n-1] == '*' {
		return len(evType) >= n-1 && evType[:n-1] == p[:n-1]
	}
	return p == evType
}

// checkIDs refuses room lists holding something that is not a room ID and sender lists holding something that
// is not a user ID: such a filter can never match what its author meant.
func checkIDs(rooms, notRooms []id.RoomID, senders, notSenders []id.UserID) error {
	for _, list := range [][]id.RoomID{rooms, notRooms} {
		for _, r := range list {
			if !strings.HasPrefix(string(r), "!") || len(r) < 2 {
				return fmt.Errorf("%q is not a room ID", r)
			}
		}
	}
	for _, list := range [][]id.UserID{senders, notSenders} {
		for _, u := range list {
			if _, _, err := u.Parse(); err != nil {
				return fmt.Errorf("%q is not a user ID", u)
			}
		}
	}
	return nil
}
