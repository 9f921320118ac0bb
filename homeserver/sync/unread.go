package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/rooms"
)

// maxUnreadCount caps the unread counts: clients show "99+" beyond that, and counting further would load
// more of the room's history on every sync.
const maxUnreadCount = 100

// unreadCounts approximates the default push rules: a message or encrypted event from someone else after the
// user's newest read receipt (or after their join when there is none) counts as a notification, and one that
// mentions the user (m.mentions, or their user ID or localpart in the body) also as a highlight. Notices, edits
// and the user's own events do not count.
func (s *Service) unreadCounts(ctx context.Context, room id.RoomID, user id.UserID, memberEv *rooms.Event, upTo int64, rules *pushRules) (UnreadCounts, error) {
	if rules.muted(room) {
		return UnreadCounts{}, nil
	}
	from := int64(0)
	if memberEv != nil {
		from = memberEv.StreamPos
	}
	var evIDs []string
	rows, err := s.db.Query(ctx, `SELECT event_id FROM sync_receipts WHERE room_id=$1 AND user_id=$2 AND thread_id=''`, room, user)
	if err != nil {
		return UnreadCounts{}, fmt.Errorf("query own receipts: %w", err)
	}
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			rows.Close()
			return UnreadCounts{}, fmt.Errorf("scan own receipt: %w", err)
		}
		evIDs = append(evIDs, e)
	}
	rows.Close()
	for _, e := range evIDs {
		ev, err := s.rooms.Event(ctx, id.EventID(e))
		if err != nil {
			continue // a receipt for an event we cannot load does not move the marker
		}
		from = max(from, ev.StreamPos)
	}
	if from >= upTo {
		return UnreadCounts{}, nil
	}
	evs, _, err := s.rooms.RoomEventsBetween(ctx, room, from, upTo, maxUnreadCount)
	if err != nil {
		return UnreadCounts{}, fmt.Errorf("unread events: %w", err)
	}
	localpart, _, _ := user.Parse()
	var c UnreadCounts
	for _, ev := range evs {
		if ev.Sender == user || ev.Redacted || (ev.Type != event.EventMessage.Type && ev.Type != event.EventEncrypted.Type) {
			continue
		}
		var content struct {
			MsgType   string `json:"msgtype"`
			Body      string `json:"body"`
			RelatesTo struct {
				RelType string `json:"rel_type"`
			} `json:"m.relates_to"`
			Mentions *struct {
				UserIDs []id.UserID `json:"user_ids"`
				Room    bool        `json:"room"`
			} `json:"m.mentions"`
		}
		_ = json.Unmarshal(ev.Content, &content)
		if content.MsgType == "m.notice" || content.RelatesTo.RelType == "m.replace" {
			continue
		}
		c.Notification++
		switch {
		case content.Mentions != nil:
			if slices.Contains(content.Mentions.UserIDs, user) {
				c.Highlight++
			}
		case strings.Contains(content.Body, string(user)) || (localpart != "" && containsWord(content.Body, localpart)):
			c.Highlight++
		}
	}
	return c, nil
}

// containsWord reports whether word appears in text, case-insensitively, not inside a longer word.
func containsWord(text, word string) bool {
	text, word = strings.ToLower(text), strings.ToLower(word)
	for i := 0; ; {
		j := strings.Index(text[i:], word)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(word)
		if (start == 0 || !isWordByte(text[start-1])) && (end == len(text) || !isWordByte(text[end])) {
			return true
		}
		i = start + 1
	}
}

func isWordByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_'
}

// pushRules is the part of a user's push rules that decides whether a room is muted.
type pushRules struct {
	Override []pushRule `json:"override"`
	Room     []pushRule `json:"room"`
}

type pushRule struct {
	RuleID     string     `json:"rule_id"`
	Enabled    bool       `json:"enabled"`
	Actions    []any      `json:"actions"`
	Conditions []pushCond `json:"conditions"`
}

type pushCond struct {
	Kind    string `json:"kind"`
	Key     string `json:"key"`
	Pattern string `json:"pattern"`
}

func (r pushRule) notifies() bool { return slices.Contains(r.Actions, any("notify")) }

// loadPushRules reads the user's rules from their m.push_rules account data (nil when they never changed any).
func (s *Service) loadPushRules(ctx context.Context, user id.UserID) *pushRules {
	raw, err := s.users.AccountData(ctx, user, "", "m.push_rules")
	if err != nil {
		return nil
	}
	var c struct {
		Global pushRules `json:"global"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return nil
	}
	return &c.Global
}

// muted reports whether the rules silence every message in room: the master rule, a room rule, or an override
// rule that matches only on this room's ID (what clients create for "mute"), without a notify action.
func (p *pushRules) muted(room id.RoomID) bool {
	if p == nil {
		return false
	}
	for _, r := range p.Override {
		if !r.Enabled || r.notifies() {
			continue
		}
		if r.RuleID == ".m.rule.master" {
			return true
		}
		if len(r.Conditions) > 0 && !slices.ContainsFunc(r.Conditions, func(c pushCond) bool {
			return c.Kind != "event_match" || c.Key != "room_id" || c.Pattern != string(room)
		}) {
			return true
		}
	}
	for _, r := range p.Room {
		if r.Enabled && r.RuleID == string(room) && !r.notifies() {
			return true
		}
	}
	return false
}
