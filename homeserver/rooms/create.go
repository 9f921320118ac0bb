package rooms

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// Presets of createRoom.
const (
	PresetPrivateChat        = "private_chat"
	PresetTrustedPrivateChat = "trusted_private_chat"
	PresetPublicChat         = "public_chat"
)

// maxInitialState bounds initial_state so that one request cannot write an unbounded transaction.
const maxInitialState = 100

// newRoomID returns a fresh room ID: 18 random letters, enough to never collide on one server.
func (s *Service) newRoomID() id.RoomID {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [18]byte
	_, _ = rand.Read(b[:])
	for i, c := range b {
		b[i] = alphabet[int(c)%len(alphabet)]
	}
	return id.RoomID("!" + string(b[:]) + ":" + s.serverName)
}

func strPtr(s string) *string { return &s }

// contentJSON returns the JSON of a mautrix content as the client sent it.
func contentJSON(c *event.Content) (json.RawMessage, error) {
	if c.Parsed == nil && c.VeryRaw != nil {
		return c.VeryRaw, nil
	}
	return json.Marshal(c)
}

// CreateRoom creates a room the way the spec's createRoom orders it, all in one transaction (a refused event
// leaves nothing behind): m.room.create (room_version, creation_content, creator in v10), the creator's join,
// m.room.power_levels (preset defaults, invitees at 100 under trusted_private_chat, then the override's keys),
// m.room.canonical_alias when room_alias_name is set, the preset's join_rules, history_visibility and
// guest_access (unless initial_state sets them), initial_state, name, topic, then the invites (with
// is_direct). Subscribers see the events after the commit.
func (s *Service) CreateRoom(ctx context.Context, creator id.UserID, req *mautrix.ReqCreateRoom) (id.RoomID, error) {
	if req == nil {
		req = &mautrix.ReqCreateRoom{}
	}
	version := string(req.RoomVersion)
	if version == "" {
		version = DefaultRoomVersion
	}
	if !IsSupportedVersion(version) {
		return "", mxerr.UnsupportedRoomVersion("room version %q is not supported (supported: 10, 11)", version)
	}
	visibility := req.Visibility
	switch visibility {
	case "":
		visibility = "private"
	case "public", "private":
	default:
		return "", mxerr.InvalidParam("visibility must be public or private")
	}
	preset := req.Preset
	if preset == "" {
		preset = PresetPrivateChat
		if visibility == "public" {
			preset = PresetPublicChat
		}
	}
	if preset != PresetPrivateChat && preset != PresetTrustedPrivateChat && preset != PresetPublicChat {
		return "", mxerr.InvalidParam("unknown preset %q", preset)
	}
	if len(req.InitialState) > maxInitialState {
		return "", mxerr.InvalidParam("initial_state has more than %d events", maxInitialState)
	}
	if len(req.Invite3PID) > 0 {
		return "", mxerr.InvalidParam("third-party invites are not supported")
	}
	for _, u := range req.Invite {
		if _, _, err := u.ParseAndValidateRelaxed(); err != nil {
			return "", mxerr.InvalidParam("invalid user ID %q in invite", u)
		}
	}
	var alias id.RoomAlias
	if req.RoomAliasName != "" {
		var err error
		if alias, err = s.aliasFor(req.RoomAliasName); err != nil {
			return "", err
		}
	}

	roomID := s.newRoomID()
	sends, err := s.createRecipe(ctx, roomID, creator, version, preset, alias, req)
	if err != nil {
		return "", err
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var evs []*Event
	err = s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		evs = evs[:0]
		_, err := s.db.Exec(ctx, `INSERT INTO rooms_rooms (room_id, version, creator, visibility, created_ts)
			VALUES ($1, $2, $3, $4, $5)`, roomID, version, creator, visibility, time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("insert room: %w", err)
		}
		if alias != "" {
			if err = s.insertAlias(ctx, alias, roomID, creator); err != nil {
				return err
			}
		}
		room := &roomInfo{id: roomID, version: version, creator: creator, visibility: visibility}
		for _, req := range sends {
			ev, err := s.persist(ctx, room, req)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		return nil
	})
	if err != nil {
		if mxerr.As(err) != nil {
			return "", err
		}
		return "", fmt.Errorf("create room: %w", err)
	}
	s.notify(evs)
	return roomID, nil
}

// createRecipe lists the events of a new room in the spec's order.
func (s *Service) createRecipe(ctx context.Context, roomID id.RoomID, creator id.UserID, version, preset string,
	alias id.RoomAlias, req *mautrix.ReqCreateRoom) ([]SendRequest, error) {
	state := func(evType, stateKey string, content any) (SendRequest, error) {
		raw, err := json.Marshal(content)
		if err != nil {
			return SendRequest{}, mxerr.BadJSON("%s content: %v", evType, err)
		}
		return SendRequest{RoomID: roomID, Sender: creator, Type: evType, StateKey: strPtr(stateKey), Content: raw}, nil
	}
	var out []SendRequest
	add := func(evType, stateKey string, content any) error {
		r, err := state(evType, stateKey, content)
		if err == nil {
			out = append(out, r)
		}
		return err
	}

	// 1. m.room.create
	create := make(map[string]any, len(req.CreationContent)+2)
	for k, v := range req.CreationContent {
		create[k] = v
	}
	create["room_version"] = version
	if version == V10 {
		create["creator"] = creator
	} else {
		// v11 dropped creator: the create event's sender is the creator.
		delete(create, "creator")
	}
	if err := add(typeCreate, "", create); err != nil {
		return nil, err
	}

	// 2. the creator's join
	join := map[string]any{"membership": memberJoin}
	if s.profile != nil {
		name, avatar := s.profile(ctx, creator)
		if name != "" {
			join["displayname"] = name
		}
		if avatar != "" {
			join["avatar_url"] = avatar
		}
	}
	if err := add(typeMember, string(creator), join); err != nil {
		return nil, err
	}

	// 3. power levels
	users := map[string]any{string(creator): 100}
	if preset == PresetTrustedPrivateChat {
		for _, u := range req.Invite {
			users[string(u)] = 100
		}
	}
	pl := map[string]any{
		"users":          users,
		"users_default":  0,
		"events":         map[string]any{"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100, "m.room.server_acl": 100, "m.room.encryption": 100},
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         0,
		"notifications":  map[string]any{"room": 50},
	}
	if req.PowerLevelOverride != nil {
		raw, err := json.Marshal(req.PowerLevelOverride)
		if err != nil {
			return nil, mxerr.BadJSON("power_level_content_override: %v", err)
		}
		var override map[string]any
		if err = json.Unmarshal(raw, &override); err != nil {
			return nil, mxerr.BadJSON("power_level_content_override: %v", err)
		}
		for k, v := range override {
			pl[k] = v
		}
	}
	if err := add(typePowerLevels, "", pl); err != nil {
		return nil, err
	}

	// 4. canonical alias
	if alias != "" {
		if err := add(typeCanonicalAlias, "", map[string]any{"alias": alias}); err != nil {
			return nil, err
		}
	}

	// 5. the preset's state, unless initial_state sets the same key
	inInitial := make(map[[2]string]bool, len(req.InitialState))
	for _, ev := range req.InitialState {
		if ev == nil {
			return nil, mxerr.BadJSON("initial_state contains null")
		}
		sk := ""
		if ev.StateKey != nil {
			sk = *ev.StateKey
		}
		inInitial[[2]string{ev.Type.Type, sk}] = true
	}
	joinRule, guest := "invite", "can_join"
	if preset == PresetPublicChat {
		joinRule, guest = "public", "forbidden"
	}
	presetState := []struct {
		evType  string
		content map[string]any
	}{
		{typeJoinRules, map[string]any{"join_rule": joinRule}},
		{typeHistoryVisibility, map[string]any{"history_visibility": "shared"}},
		{typeGuestAccess, map[string]any{"guest_access": guest}},
	}
	for _, ps := range presetState {
		if inInitial[[2]string{ps.evType, ""}] {
			continue
		}
		if err := add(ps.evType, "", ps.content); err != nil {
			return nil, err
		}
	}

	// 6. initial_state, in order
	for _, ev := range req.InitialState {
		if ev.Type.Type == "" {
			return nil, mxerr.BadJSON("initial_state event has no type")
		}
		if ev.Type.Type == typeCreate || ev.Type.Type == typeMember || ev.Type.Type == typePowerLevels {
			return nil, mxerr.InvalidParam("initial_state may not set %s", ev.Type.Type)
		}
		raw, err := contentJSON(&ev.Content)
		if err != nil {
			return nil, mxerr.BadJSON("initial_state %s content: %v", ev.Type.Type, err)
		}
		sk := ""
		if ev.StateKey != nil {
			sk = *ev.StateKey
		}
		out = append(out, SendRequest{RoomID: roomID, Sender: creator, Type: ev.Type.Type, StateKey: strPtr(sk), Content: raw})
	}

	// 7. name and topic
	if req.Name != "" {
		if err := add(typeName, "", map[string]any{"name": req.Name}); err != nil {
			return nil, err
		}
	}
	if req.Topic != "" {
		topic := map[string]any{
			"topic":   req.Topic,
			"m.topic": map[string]any{"m.text": []any{map[string]any{"body": req.Topic, "mimetype": "text/plain"}}},
		}
		if err := add(typeTopic, "", topic); err != nil {
			return nil, err
		}
	}

	// 8. invites
	for _, u := range req.Invite {
		if u == creator {
			continue
		}
		content := map[string]any{"membership": memberInvite}
		if req.IsDirect {
			content["is_direct"] = true
		}
		if req.InviteReason != "" {
			content["reason"] = req.InviteReason
		}
		if s.profile != nil {
			name, avatar := s.profile(ctx, u)
			if name != "" {
				content["displayname"] = name
			}
			if avatar != "" {
				content["avatar_url"] = avatar
			}
		}
		if err := add(typeMember, string(u), content); err != nil {
			return nil, err
		}
	}
	return out, nil
}
