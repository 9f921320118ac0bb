package rooms

import (
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// Event types and memberships the authorisation rules look at.
const (
	typeCreate            = "m.room.create"
	typeMember            = "m.room.member"
	typePowerLevels       = "m.room.power_levels"
	typeJoinRules         = "m.room.join_rules"
	typeThirdPartyInvite  = "m.room.third_party_invite"
	typeRedaction         = "m.room.redaction"
	typeHistoryVisibility = "m.room.history_visibility"
	typeGuestAccess       = "m.room.guest_access"
	typeName              = "m.room.name"
	typeTopic             = "m.room.topic"
	typeCanonicalAlias    = "m.room.canonical_alias"

	memberJoin   = "join"
	memberInvite = "invite"
	memberLeave  = "leave"
	memberBan    = "ban"
	memberKnock  = "knock"
)

// authState is the part of a room's state the authorisation rules need for one event: the create, power
// levels and join rules events, and the member events of the sender and (for m.room.member) the target.
type authState struct {
	create      *Event
	powerLevels *Event
	joinRules   *Event
	members     map[id.UserID]*Event
}

func (st *authState) membership(user id.UserID) string {
	if ev := st.members[user]; ev != nil {
		return ev.Membership()
	}
	return memberLeave
}

// creator returns the room creator: content.creator in v10, the create event's sender in v11.
func (st *authState) creator(version string) id.UserID {
	if st.create == nil {
		return ""
	}
	if version == V10 {
		var c struct {
			Creator id.UserID `json:"creator"`
		}
		_ = json.Unmarshal(st.create.Content, &c)
		return c.Creator
	}
	return st.create.Sender
}

func (st *authState) joinRule() string {
	if st.joinRules == nil {
		// No join rules event: nobody may join uninvited.
		return "invite"
	}
	var c struct {
		JoinRule string `json:"join_rule"`
	}
	_ = json.Unmarshal(st.joinRules.Content, &c)
	return c.JoinRule
}

// authEventIDs selects the auth events of an event per the spec: the create event, the power levels, the
// sender's membership, and for m.room.member the target's membership and (for join, invite and knock) the join
// rules.
func (st *authState) authEventIDs(evType string, stateKey *string, membership string, sender id.UserID) []id.EventID {
	if evType == typeCreate {
		return []id.EventID{}
	}
	out := make([]id.EventID, 0, 5)
	add := func(e *Event) {
		if e == nil {
			return
		}
		for _, have := range out {
			if have == e.ID {
				return
			}
		}
		out = append(out, e.ID)
	}
	add(st.create)
	add(st.powerLevels)
	add(st.members[sender])
	if evType == typeMember && stateKey != nil {
		add(st.members[id.UserID(*stateKey)])
		if membership == memberJoin || membership == memberInvite || membership == memberKnock {
			add(st.joinRules)
		}
	}
	return out
}

// powerLevels is a parsed m.room.power_levels content with the spec's defaults applied.
type powerLevels struct {
	users         map[id.UserID]int64
	usersDefault  int64
	events        map[string]int64
	eventsDefault int64
	stateDefault  int64
	ban           int64
	kick          int64
	redact        int64
	invite        int64
	notifications map[string]int64
	// present records which top-level keys the content had, for the change rules.
	present map[string]bool
}

// plScalarKeys are the single-value power level keys, in the order the change rules check them.
var plScalarKeys = []string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

func (pl *powerLevels) scalar(key string) int64 {
	switch key {
	case "users_default":
		return pl.usersDefault
	case "events_default":
		return pl.eventsDefault
	case "state_default":
		return pl.stateDefault
	case "ban":
		return pl.ban
	case "redact":
		return pl.redact
	case "kick":
		return pl.kick
	case "invite":
		return pl.invite
	}
	return 0
}

// parsePowerLevels parses power levels content. Room versions 10 and 11 require integers: strings, floats and
// other types are refused with an error saying which key is wrong.
func parsePowerLevels(content json.RawMessage) (*powerLevels, error) {
	raw, err := canonicaljson.Decode(content)
	if err != nil {
		return nil, fmt.Errorf("power levels: %w", err)
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("power levels content is not an object")
	}
	pl := &powerLevels{
		users: map[id.UserID]int64{}, events: map[string]int64{}, notifications: map[string]int64{},
		stateDefault: 50, ban: 50, kick: 50, redact: 50, present: map[string]bool{},
	}
	intOf := func(key string, v any) (int64, error) {
		n, ok := v.(json.Number)
		if !ok {
			return 0, fmt.Errorf("power level %q must be an integer", key)
		}
		i, err := canonicaljson.Int(n)
		if err != nil {
			return 0, fmt.Errorf("power level %q must be an integer", key)
		}
		return i, nil
	}
	for _, key := range plScalarKeys {
		v, has := obj[key]
		if !has {
			continue
		}
		pl.present[key] = true
		i, err := intOf(key, v)
		if err != nil {
			return nil, err
		}
		switch key {
		case "users_default":
			pl.usersDefault = i
		case "events_default":
			pl.eventsDefault = i
		case "state_default":
			pl.stateDefault = i
		case "ban":
			pl.ban = i
		case "redact":
			pl.redact = i
		case "kick":
			pl.kick = i
		case "invite":
			pl.invite = i
		}
	}
	mapOf := func(key string, into func(k string, v int64) error) error {
		v, has := obj[key]
		if !has {
			return nil
		}
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("power levels %q must be an object", key)
		}
		for k, e := range m {
			i, err := intOf(key+"."+k, e)
			if err != nil {
				return err
			}
			if err = into(k, i); err != nil {
				return err
			}
		}
		return nil
	}
	if err = mapOf("users", func(k string, v int64) error {
		if _, _, err := id.UserID(k).ParseAndValidateRelaxed(); err != nil {
			return fmt.Errorf("power levels users key %q is not a valid user ID", k)
		}
		pl.users[id.UserID(k)] = v
		return nil
	}); err != nil {
		return nil, err
	}
	if err = mapOf("events", func(k string, v int64) error { pl.events[k] = v; return nil }); err != nil {
		return nil, err
	}
	if err = mapOf("notifications", func(k string, v int64) error { pl.notifications[k] = v; return nil }); err != nil {
		return nil, err
	}
	return pl, nil
}

// levels returns the effective power levels: the parsed event, or the spec's defaults when the room has no
// power levels event (creator 100, everyone else 0, every action at 0 except kick, ban and redact at 50).
func (st *authState) levels(version string) *powerLevels {
	if st.powerLevels != nil {
		if pl, err := parsePowerLevels(st.powerLevels.Content); err == nil {
			return pl
		}
	}
	pl := &powerLevels{
		users: map[id.UserID]int64{}, events: map[string]int64{}, notifications: map[string]int64{},
		ban: 50, kick: 50, redact: 50, present: map[string]bool{},
	}
	if c := st.creator(version); c != "" {
		pl.users[c] = 100
	}
	return pl
}

func (pl *powerLevels) userLevel(u id.UserID) int64 {
	if l, ok := pl.users[u]; ok {
		return l
	}
	return pl.usersDefault
}

func (pl *powerLevels) eventLevel(evType string, isState bool) int64 {
	if l, ok := pl.events[evType]; ok {
		return l
	}
	if isState {
		return pl.stateDefault
	}
	return pl.eventsDefault
}

// authorize applies the authorisation rules of room versions 10 and 11 to ev (whose content is given decoded)
// against the room state st. redactTarget is the event an m.room.redaction redacts, when known. It returns
// mxerr.Forbidden describing the first rule the event breaks.
func authorize(version string, ev *Event, content map[string]any, st *authState, redactTarget *Event) error {
	// Rule 1: m.room.create.
	if ev.Type == typeCreate {
		if len(ev.PrevEvents) > 0 {
			return mxerr.Forbidden("m.room.create must be the first event of a room")
		}
		if st.create != nil {
			return mxerr.Forbidden("the room already has an m.room.create event")
		}
		if ev.StateKey == nil || *ev.StateKey != "" {
			return mxerr.Forbidden("m.room.create must have an empty state key")
		}
		if rv, has := content["room_version"]; has {
			if s, ok := rv.(string); !ok || !IsSupportedVersion(s) {
				return mxerr.Forbidden("unsupported room_version in m.room.create")
			}
		}
		if version == V10 {
			if _, has := content["creator"]; !has {
				return mxerr.Forbidden("m.room.create has no creator (required in room version 10)")
			}
		}
		return nil
	}
	// Rule 3: a room must have a create event.
	if st.create == nil {
		return mxerr.Forbidden("the room has no m.room.create event")
	}
	// Rule 4 (m.federate) concerns only remote senders; this server federates with nobody.
	pl := st.levels(version)
	senderLevel := pl.userLevel(ev.Sender)

	// Rule 5: m.room.member.
	if ev.Type == typeMember {
		return authorizeMember(version, ev, content, st, pl)
	}

	// Rule 6: the sender must be joined.
	if st.membership(ev.Sender) != memberJoin {
		return mxerr.Forbidden("%s is not joined to the room", ev.Sender)
	}
	// Rule 7: third-party invites need the invite level.
	if ev.Type == typeThirdPartyInvite {
		if senderLevel >= pl.invite {
			return nil
		}
		return mxerr.Forbidden("power level %d is below the invite level %d", senderLevel, pl.invite)
	}
	// Rule 8: the event type's required level.
	if need := pl.eventLevel(ev.Type, ev.StateKey != nil); senderLevel < need {
		return mxerr.Forbidden("sending %s needs power level %d, %s has %d", ev.Type, need, ev.Sender, senderLevel)
	}
	// Rule 9: state keys that are user IDs belong to that user.
	if ev.StateKey != nil && len(*ev.StateKey) > 0 && (*ev.StateKey)[0] == '@' && *ev.StateKey != string(ev.Sender) {
		return mxerr.Forbidden("state key %q belongs to another user", *ev.StateKey)
	}
	// Rule 10: power level changes.
	if ev.Type == typePowerLevels {
		if err := authorizePowerLevels(ev, st, pl, senderLevel); err != nil {
			return err
		}
	}
	// Room versions 3+ check redactions against their target when it is known: the sender may redact their
	// own events, anything else needs the redact level.
	if ev.Type == typeRedaction {
		if redactTarget != nil && redactTarget.RoomID != ev.RoomID {
			return mxerr.Forbidden("cannot redact an event of another room")
		}
		if senderLevel < pl.redact && (redactTarget == nil || redactTarget.Sender != ev.Sender) {
			return mxerr.Forbidden("redacting others' events needs power level %d, %s has %d", pl.redact, ev.Sender, senderLevel)
		}
	}
	return nil
}

func authorizeMember(version string, ev *Event, content map[string]any, st *authState, pl *powerLevels) error {
	if ev.StateKey == nil {
		return mxerr.Forbidden("m.room.member needs a state key")
	}
	target := id.UserID(*ev.StateKey)
	if _, _, err := target.ParseAndValidateRelaxed(); err != nil {
		return mxerr.Forbidden("m.room.member state key %q is not a valid user ID", *ev.StateKey)
	}
	membership, _ := content["membership"].(string)
	if membership == "" {
		return mxerr.Forbidden("m.room.member has no membership")
	}
	if via, has := content["join_authorised_via_users_server"]; has && via != nil && membership == memberJoin {
		return mxerr.Forbidden("restricted joins through join_authorised_via_users_server are not supported")
	}
	senderMembership := st.membership(ev.Sender)
	targetMembership := st.membership(target)
	senderLevel := pl.userLevel(ev.Sender)
	targetLevel := pl.userLevel(target)

	switch membership {
	case memberJoin:
		// The creator's own join right after the create event.
		if len(ev.PrevEvents) == 1 && st.create != nil && ev.PrevEvents[0] == st.create.ID &&
			target == st.creator(version) && ev.Sender == target {
			return nil
		}
		if ev.Sender != target {
			return mxerr.Forbidden("users can only join themselves")
		}
		if senderMembership == memberBan {
			return mxerr.Forbidden("%s is banned from the room", ev.Sender)
		}
		switch rule := st.joinRule(); rule {
		case "public":
			return nil
		case "invite", "knock", "restricted", "knock_restricted":
			if senderMembership == memberJoin || senderMembership == memberInvite {
				return nil
			}
			if rule == "restricted" || rule == "knock_restricted" {
				return mxerr.Forbidden("the room is restricted and this server does not support restricted joins; ask for an invite")
			}
			return mxerr.Forbidden("%s is not invited to the room", ev.Sender)
		default:
			return mxerr.Forbidden("the room's join rule %q does not allow joining", rule)
		}
	case memberInvite:
		if _, has := content["third_party_invite"]; has {
			return mxerr.Forbidden("third-party invites are not supported")
		}
		if senderMembership != memberJoin {
			return mxerr.Forbidden("%s is not joined to the room", ev.Sender)
		}
		if targetMembership == memberJoin {
			return mxerr.Forbidden("%s is already joined to the room", target)
		}
		if targetMembership == memberBan {
			return mxerr.Forbidden("%s is banned from the room", target)
		}
		if senderLevel < pl.invite {
			return mxerr.Forbidden("inviting needs power level %d, %s has %d", pl.invite, ev.Sender, senderLevel)
		}
		return nil
	case memberLeave:
		if ev.Sender == target {
			switch senderMembership {
			case memberInvite, memberJoin, memberKnock:
				return nil
			}
			return mxerr.Forbidden("%s is not in the room", ev.Sender)
		}
		if senderMembership != memberJoin {
			return mxerr.Forbidden("%s is not joined to the room", ev.Sender)
		}
		if targetMembership == memberBan && senderLevel < pl.ban {
			return mxerr.Forbidden("unbanning needs power level %d, %s has %d", pl.ban, ev.Sender, senderLevel)
		}
		if senderLevel >= pl.kick && targetLevel < senderLevel {
			return nil
		}
		if senderLevel < pl.kick {
			return mxerr.Forbidden("kicking needs power level %d, %s has %d", pl.kick, ev.Sender, senderLevel)
		}
		return mxerr.Forbidden("cannot kick %s: their power level %d is not below %d", target, targetLevel, senderLevel)
	case memberBan:
		if senderMembership != memberJoin {
			return mxerr.Forbidden("%s is not joined to the room", ev.Sender)
		}
		if senderLevel < pl.ban {
			return mxerr.Forbidden("banning needs power level %d, %s has %d", pl.ban, ev.Sender, senderLevel)
		}
		if targetLevel >= senderLevel {
			return mxerr.Forbidden("cannot ban %s: their power level %d is not below %d", target, targetLevel, senderLevel)
		}
		return nil
	case memberKnock:
		if rule := st.joinRule(); rule != "knock" && rule != "knock_restricted" {
			return mxerr.Forbidden("the room's join rule %q does not allow knocking", rule)
		}
		if ev.Sender != target {
			return mxerr.Forbidden("users can only knock themselves")
		}
		if senderMembership == memberBan || senderMembership == memberJoin || senderMembership == memberInvite {
			return mxerr.Forbidden("cannot knock while %s", senderMembership)
		}
		return nil
	}
	return mxerr.Forbidden("unknown membership %q", membership)
}

// authorizePowerLevels applies rule 10: integer values only, valid user IDs, and no change to a level at or
// above the sender's own, nor to a value above it.
func authorizePowerLevels(ev *Event, st *authState, cur *powerLevels, senderLevel int64) error {
	next, err := parsePowerLevels(ev.Content)
	if err != nil {
		return mxerr.Forbidden("invalid power levels: %v", err)
	}
	if st.powerLevels == nil {
		return nil
	}
	old, err := parsePowerLevels(st.powerLevels.Content)
	if err != nil {
		// The stored event passed this parser when it was sent.
		return mxerr.Forbidden("current power levels are invalid: %v", err)
	}
	for _, key := range plScalarKeys {
		if old.present[key] == next.present[key] && old.scalar(key) == next.scalar(key) {
			continue
		}
		if old.present[key] && old.scalar(key) > senderLevel {
			return mxerr.Forbidden("cannot change %s: its current value %d is above your level %d", key, old.scalar(key), senderLevel)
		}
		if next.present[key] && next.scalar(key) > senderLevel {
			return mxerr.Forbidden("cannot set %s to %d, above your level %d", key, next.scalar(key), senderLevel)
		}
	}
	if err = checkMapChange("events", old.events, next.events, senderLevel, nil); err != nil {
		return err
	}
	if err = checkMapChange("notifications", old.notifications, next.notifications, senderLevel, nil); err != nil {
		return err
	}
	oldUsers := make(map[string]int64, len(old.users))
	for k, v := range old.users {
		oldUsers[string(k)] = v
	}
	newUsers := make(map[string]int64, len(next.users))
	for k, v := range next.users {
		newUsers[string(k)] = v
	}
	return checkMapChange("users", oldUsers, newUsers, senderLevel, func(k string) bool { return k == string(ev.Sender) })
}

// checkMapChange enforces the power level change rule on one map: an added or changed value may not exceed the
// sender's level; a changed or removed value may not have been above it (for users: at or above it, except the
// sender's own entry).
func checkMapChange(name string, old, next map[string]int64, senderLevel int64, isSelf func(string) bool) error {
	users := isSelf != nil
	for k, ov := range old {
		nv, has := next[k]
		if has && nv == ov {
			continue
		}
		if users && !isSelf(k) && ov >= senderLevel {
			return mxerr.Forbidden("cannot change the power level of %s: %d is not below your level %d", k, ov, senderLevel)
		}
		if ov > senderLevel {
			return mxerr.Forbidden("cannot change %s[%s]: its current value %d is above your level %d", name, k, ov, senderLevel)
		}
		if has && nv > senderLevel {
			return mxerr.Forbidden("cannot set %s[%s] to %d, above your level %d", name, k, nv, senderLevel)
		}
	}
	for k, nv := range next {
		if _, had := old[k]; had {
			continue
		}
		if nv > senderLevel {
			return mxerr.Forbidden("cannot set %s[%s] to %d, above your level %d", name, k, nv, senderLevel)
		}
	}
	return nil
}
