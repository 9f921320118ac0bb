// Package sync builds /sync responses: the stream positions every sync token encodes, the notifier that wakes
// long-polling requests, filters, read receipts (stored) and typing notifications (in memory).
//
// It reads rooms and users through their services; it must not import clientapi (the HTTP layer calls it) or
// any bridge.
package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	stdsync "sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
	"github.com/passerelle/passerelle/homeserver/users"
)

// MaxTimeout caps a long-poll. Clients ask for 30 s; a cap keeps a misbehaving client from pinning a request for
// hours and stays below common proxy idle timeouts.
const MaxTimeout = 5 * time.Minute

// changedRoomsScan is how many events after the since position an incremental sync scans to learn which rooms
// changed; a bigger gap falls back to looking at every room of the user.
const changedRoomsScan = 500

// Service assembles /sync responses and owns the receipt, typing and filter state.
type Service struct {
	db       *dbutil.Database
	rooms    *rooms.Service
	users    *users.Service
	notifier *Notifier
	typing   *Typing
	presence *Presence
	log      zerolog.Logger

	filterMu   stdsync.Mutex
	receiptMu  stdsync.Mutex
	receiptPos int64

	closing   chan struct{}
	closeOnce stdsync.Once

	e2ee E2EE
}

// E2EE is the end-to-end encryption part of /sync: to-device messages, device list changes and one-time key
// counts. homeserver/e2ee implements it; it is an interface here because e2ee uses this package's Notifier.
type E2EE interface {
	// Pos returns the current position of the to-device / device-list stream.
	Pos() int64
	// SyncData returns what user's device gets for the stream range (since, upTo] (everything pending when
	// initial).
	SyncData(ctx context.Context, user id.UserID, device id.DeviceID, since, upTo int64, initial bool) (*E2EEData, error)
}

// E2EEData is one device's share of a sync response from the E2EE source.
type E2EEData struct {
	ToDevice      []json.RawMessage
	Changed, Left []id.UserID
	OTKCount      map[string]int
	FallbackKeys  []string
	// Pos, when non-zero, is the e2ee position next_batch carries instead of upTo: the source capped the
	// to-device messages, and the rest must come in the next response rather than be acknowledged unseen.
	Pos int64
}

// SetE2EE plugs in the encryption source; call it once at start-up, before serving. Without one, the
// encryption sections of /sync stay empty.
func (s *Service) SetE2EE(e E2EE) { s.e2ee = e }

// New runs the sync migrations on db (version table sync_version) and subscribes to the room event stream.
func New(ctx context.Context, db *dbutil.Database, rs *rooms.Service, us *users.Service, log zerolog.Logger) (*Service, error) {
	child := db.Child("sync_version", upgradeTable, dbutil.ZeroLogger(log.With().Str("db_section", "sync").Logger()))
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade sync database: %w", err)
	}
	s := &Service{db: child, rooms: rs, users: us, notifier: NewNotifier(), log: log, closing: make(chan struct{})}
	s.typing = NewTyping(s.notifier.WakeRoom)
	s.presence = NewPresence()
	if err := s.loadReceiptPos(ctx); err != nil {
		return nil, err
	}
	rs.Subscribe(s.onEvent)
	return s, nil
}

func (s *Service) onEvent(ev *rooms.Event) {
	s.notifier.WakeRoom(ev.RoomID)
	if ev.Type == event.StateMember.Type && ev.StateKey != nil {
		s.notifier.WakeUsers(id.UserID(*ev.StateKey))
	}
}

// StopWaiting makes every waiting /sync answer now and later ones answer without waiting, so that an HTTP
// server shutting down is not held up by long-polls (they would otherwise last up to their timeout).
func (s *Service) StopWaiting() { s.closeOnce.Do(func() { close(s.closing) }) }

// Notifier returns the notifier (for tests and for other streams that want to wake /sync).
func (s *Service) Notifier() *Notifier { return s.notifier }

// NotifyAccountData wakes the /sync requests of user after its account data changed.
func (s *Service) NotifyAccountData(user id.UserID) { s.notifier.WakeUsers(user) }

// SetTyping records a typing notification of user in room (see Typing.Set).
func (s *Service) SetTyping(room id.RoomID, user id.UserID, typing bool, timeout time.Duration) {
	s.typing.Set(room, user, typing, timeout)
}

// SetPresence records user's presence (and status message when setMsg) and, if it changed, wakes the /sync
// requests of everyone sharing a room with user.
func (s *Service) SetPresence(ctx context.Context, user id.UserID, presence, statusMsg string, setMsg bool) error {
	if !s.presence.Set(user, presence, statusMsg, setMsg) {
		return nil
	}
	joined, err := s.rooms.RoomsForUser(ctx, user, "join")
	if err != nil {
		return fmt.Errorf("rooms of %s: %w", user, err)
	}
	for _, r := range joined {
		s.notifier.WakeRoom(r)
	}
	s.notifier.WakeUsers(user)
	return nil
}

// PresenceOf returns user's presence ("offline" for someone never seen).
func (s *Service) PresenceOf(user id.UserID) PresenceState { return s.presence.Get(user) }

// Request is one /sync call.
type Request struct {
	User      id.UserID
	Device    id.DeviceID
	Since     string
	Timeout   time.Duration
	Filter    *mautrix.Filter
	FullState bool
	// DefaultAccountData is global account data an initial sync sends for each type the user has not stored
	// (the server-default m.push_rules, which only become account data once the user changes a rule).
	DefaultAccountData map[string]json.RawMessage
}

// EventList is the {"events": [...]} object that recurs in a sync response.
type EventList struct {
	Events []json.RawMessage `json:"events"`
}

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// UnreadCounts are the notification counts of a joined room (see unreadCounts for how they are estimated).
type UnreadCounts struct {
	Highlight    int `json:"highlight_count"`
	Notification int `json:"notification_count"`
}

// JoinedRoom is one entry of rooms.join.
type JoinedRoom struct {
	Summary             map[string]any `json:"summary"`
	State               EventList      `json:"state"`
	Timeline            Timeline       `json:"timeline"`
	Ephemeral           EventList      `json:"ephemeral"`
	AccountData         EventList      `json:"account_data"`
	UnreadNotifications UnreadCounts   `json:"unread_notifications"`
}

// InvitedRoom is one entry of rooms.invite.
type InvitedRoom struct {
	InviteState EventList `json:"invite_state"`
}

// LeftRoom is one entry of rooms.leave.
type LeftRoom struct {
	State       EventList `json:"state"`
	Timeline    Timeline  `json:"timeline"`
	AccountData EventList `json:"account_data"`
}

// Rooms is the rooms section.
type Rooms struct {
	Join   map[id.RoomID]*JoinedRoom  `json:"join"`
	Invite map[id.RoomID]*InvitedRoom `json:"invite"`
	Leave  map[id.RoomID]*LeftRoom    `json:"leave"`
	Knock  map[id.RoomID]any          `json:"knock"`
}

// Response is a /sync response body.
type Response struct {
	NextBatch    string         `json:"next_batch"`
	AccountData  EventList      `json:"account_data"`
	Presence     EventList      `json:"presence"`
	ToDevice     EventList      `json:"to_device"`
	Rooms        Rooms          `json:"rooms"`
	DeviceLists  map[string]any `json:"device_lists"`
	OTKCount     map[string]int `json:"device_one_time_keys_count"`
	FallbackKeys []string       `json:"device_unused_fallback_key_types"`
	empty        bool
}

func newResponse() *Response {
	return &Response{
		AccountData: emptyList(), Presence: emptyList(), ToDevice: emptyList(),
		Rooms: Rooms{
			Join: map[id.RoomID]*JoinedRoom{}, Invite: map[id.RoomID]*InvitedRoom{},
			Leave: map[id.RoomID]*LeftRoom{}, Knock: map[id.RoomID]any{},
		},
		DeviceLists:  map[string]any{"changed": []string{}, "left": []string{}},
		OTKCount:     map[string]int{"signed_curve25519": 0},
		FallbackKeys: []string{},
	}
}

func emptyList() EventList { return EventList{Events: []json.RawMessage{}} }

// Sync answers one /sync request: at once if anything is new after req.Since, otherwise after waiting up to
// req.Timeout for something to happen (the answer is then empty but carries a fresh next_batch).
func (s *Service) Sync(ctx context.Context, req Request) (*Response, error) {
	var since Token
	initial := req.Since == ""
	if !initial {
		var err error
		if since, err = ParseToken(req.Since); err != nil {
			return nil, mxerr.InvalidParam("bad since token")
		}
	}
	timeout := min(max(req.Timeout, 0), MaxTimeout)
	deadline := time.Now().Add(timeout)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		watch, err := s.rooms.RoomsForUser(ctx, req.User, "join", "invite")
		if err != nil {
			return nil, fmt.Errorf("list rooms for waiting: %w", err)
		}
		l := s.notifier.Listen(req.User, watch)
		resp, err := s.compute(ctx, req, since, initial)
		if err != nil || !resp.empty || initial || req.FullState || !time.Now().Before(deadline) {
			l.Close()
			return resp, err
		}
		select {
		case <-l.C():
			l.Close()
		case <-s.closing:
			l.Close()
			return s.compute(ctx, req, since, initial)
		case <-timer.C:
			l.Close()
			// One last look, in case something arrived as the timer fired.
			return s.compute(ctx, req, since, initial)
		case <-ctx.Done():
			l.Close()
			return nil, ctx.Err()
		}
	}
}

// compute builds the response for everything after since, up to the stream positions read at its start.
func (s *Service) compute(ctx context.Context, req Request, since Token, initial bool) (*Response, error) {
	evPos, err := s.rooms.MaxStreamPos(ctx)
	if err != nil {
		return nil, fmt.Errorf("read event position: %w", err)
	}
	adPos, err := s.users.MaxAccountDataPos(ctx)
	if err != nil {
		return nil, fmt.Errorf("read account data position: %w", err)
	}
	next := Token{Events: evPos, AccountData: adPos, Receipts: s.ReceiptPos(), Typing: s.typing.Pos(), Presence: s.presence.Pos()}
	if s.e2ee != nil {
		next.E2EE = s.e2ee.Pos()
	}
	resp := newResponse()
	resp.NextBatch = next.String()
	f := req.Filter
	var roomFilter *mautrix.RoomFilter
	if f != nil {
		roomFilter = f.Room
	}
	part := func(get func(*mautrix.RoomFilter) *mautrix.FilterPart) *mautrix.FilterPart {
		if roomFilter == nil {
			return nil
		}
		return get(roomFilter)
	}
	tlPart := part(func(r *mautrix.RoomFilter) *mautrix.FilterPart { return r.Timeline })
	statePart := part(func(r *mautrix.RoomFilter) *mautrix.FilterPart { return r.State })
	ephPart := part(func(r *mautrix.RoomFilter) *mautrix.FilterPart { return r.Ephemeral })
	radPart := part(func(r *mautrix.RoomFilter) *mautrix.FilterPart { return r.AccountData })
	limit := TimelineLimit(f)

	// Account data: global into the top level, per room into the room entries below.
	adItems, err := s.users.AccountDataSince(ctx, req.User, since.AccountData)
	if err != nil {
		return nil, fmt.Errorf("read account data: %w", err)
	}
	roomAD := map[id.RoomID][]json.RawMessage{}
	stored := map[string]bool{}
	for _, it := range adItems {
		if it.RoomID == "" {
			stored[it.Type] = true
		}
	}
	if initial {
		types := make([]string, 0, len(req.DefaultAccountData))
		for t := range req.DefaultAccountData {
			types = append(types, t)
		}
		slices.Sort(types)
		for _, typ := range types {
			if !stored[typ] && (f == nil || PartAllows(f.AccountData, "", "", typ)) {
				resp.AccountData.Events = append(resp.AccountData.Events, accountDataEvent(typ, req.DefaultAccountData[typ]))
			}
		}
	}
	for _, it := range adItems {
		if it.Pos > adPos {
			continue
		}
		raw := accountDataEvent(it.Type, it.Content)
		if it.RoomID == "" {
			if f == nil || PartAllows(f.AccountData, "", "", it.Type) {
				resp.AccountData.Events = append(resp.AccountData.Events, raw)
			}
		} else if PartAllows(radPart, it.RoomID, "", it.Type) {
			roomAD[it.RoomID] = append(roomAD[it.RoomID], raw)
		}
	}

	// On an incremental sync, find the rooms that changed at all so that unchanged rooms cost no queries.
	// changed == nil means "unknown: look at every room" (initial sync, full_state, or a large gap).
	var changed, rcptRooms map[id.RoomID]bool
	if !initial && !req.FullState {
		evs, err := s.rooms.EventsAfter(ctx, since.Events, changedRoomsScan)
		if err != nil {
			return nil, fmt.Errorf("scan changed rooms: %w", err)
		}
		if len(evs) < changedRoomsScan {
			changed = make(map[id.RoomID]bool, len(evs))
			for _, ev := range evs {
				changed[ev.RoomID] = true
			}
		}
		if rcptRooms, err = s.receiptRooms(ctx, since.Receipts, next.Receipts); err != nil {
			return nil, err
		}
	}
	unchanged := func(room id.RoomID) bool { return changed != nil && !changed[room] }

	joined, err := s.rooms.RoomsForUser(ctx, req.User, "join")
	if err != nil {
		return nil, fmt.Errorf("list joined rooms: %w", err)
	}
	ignored := s.ignoredUsers(ctx, req.User)
	var (
		rules       *pushRules // loaded on first use
		rulesLoaded bool
	)
	// Users who start sharing a room with req.User in this sync: their presence is sent even if it did not
	// change since the token (the client has not seen it before).
	newPeers := map[id.UserID]bool{}
	for _, room := range joined {
		if !RoomAllowed(f, room) {
			continue
		}
		if unchanged(room) {
			// No new events: only ephemeral events and account data can be new here.
			if _, typingChanged := s.typing.Since(room, since.Typing); !typingChanged && !rcptRooms[room] && len(roomAD[room]) == 0 {
				continue
			}
		}
		_, memberEv, err := s.rooms.MembershipOf(ctx, room, req.User)
		if err != nil {
			return nil, fmt.Errorf("membership in %s: %w", room, err)
		}
		// A room the user joined after since is sent like in an initial sync: the newest events (limited) and
		// the full state before them. Events sent while the user was only invited are after since's invite
		// but before the join, and must reach the client too. A join → join change (a profile update) is not
		// a new join.
		newly := initial || req.FullState || (memberEv != nil && memberEv.StreamPos > since.Events && memberEv.PrevMembership() != "join")
		after := since.Events
		if newly {
			after = 0
		}
		evs, limited, err := s.timeline(ctx, room, after, evPos, limit)
		if err != nil {
			return nil, fmt.Errorf("timeline of %s: %w", room, err)
		}
		// Bundled aggregations (edits, thread summaries) go on the events sent, not on the ones used for tokens.
		shown, err := s.rooms.Bundle(ctx, evs, req.User, evPos)
		if err == nil && newly {
			// A fresh timeline may reach back before the join: history visibility decides what of it is shown.
			shown, err = s.rooms.FilterVisible(ctx, room, req.User, shown, false)
		} else if err == nil {
			// Incrementally, every new event was sent while the user was joined.
			shown = rooms.AnnotateJoined(req.User, shown)
		}
		if err != nil {
			return nil, fmt.Errorf("aggregations of %s: %w", room, err)
		}
		if !initial {
			if newly {
				members, err := s.rooms.JoinedMembers(ctx, room)
				if err != nil {
					return nil, fmt.Errorf("members of %s: %w", room, err)
				}
				for _, m := range members {
					newPeers[m] = true
				}
			} else {
				for _, ev := range evs {
					if ev.Membership() == "join" && ev.PrevMembership() != "join" {
						newPeers[id.UserID(ev.StateKeyString())] = true
					}
				}
			}
		}
		jr := &JoinedRoom{
			Summary: map[string]any{}, State: emptyList(), Ephemeral: emptyList(), AccountData: emptyList(),
			Timeline: Timeline{Events: []json.RawMessage{}, Limited: limited},
		}
		jr.Timeline.PrevBatch = prevBatch(evs, evPos)
		if newly || slices.ContainsFunc(evs, func(ev *rooms.Event) bool { return ev.Type == event.StateMember.Type }) {
			if jr.Summary, err = s.summary(ctx, room, req.User); err != nil {
				return nil, err
			}
		}
		for _, ev := range shown {
			if PartAllows(tlPart, room, ev.Sender, ev.Type) && !ignored[ev.Sender] {
				jr.Timeline.Events = append(jr.Timeline.Events, ClientEvent(ev, req.User, req.Device))
			}
		}
		if newly || limited {
			at := evPos
			if len(evs) > 0 {
				at = evs[0].StreamPos - 1
			}
			state, err := s.rooms.StateAt(ctx, room, at)
			if err != nil {
				return nil, fmt.Errorf("state of %s: %w", room, err)
			}
			for _, ev := range state {
				if PartAllows(statePart, room, ev.Sender, ev.Type) {
					jr.State.Events = append(jr.State.Events, ev.MarshalClient())
				}
			}
		}
		eph, err := s.ephemeral(ctx, room, req.User, since, next, initial)
		if err != nil {
			return nil, err
		}
		for _, e := range eph {
			if PartAllows(ephPart, room, "", e.typ) {
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, e.raw)
			}
		}
		if ad := roomAD[room]; len(ad) > 0 {
			jr.AccountData.Events = ad
		}
		if newly || len(evs) > 0 || len(jr.Ephemeral.Events) > 0 || len(jr.AccountData.Events) > 0 {
			if !rulesLoaded {
				rules, rulesLoaded = s.loadPushRules(ctx, req.User), true
			}
			if jr.UnreadNotifications, err = s.unreadCounts(ctx, room, req.User, memberEv, evPos, rules); err != nil {
				return nil, err
			}
			resp.Rooms.Join[room] = jr
		}
	}

	delete(newPeers, req.User)
	if err := s.presenceEvents(ctx, resp, req.User, f, joined, since, next, initial, newPeers); err != nil {
		return nil, err
	}

	invited, err := s.rooms.RoomsForUser(ctx, req.User, "invite")
	if err != nil {
		return nil, fmt.Errorf("list invites: %w", err)
	}
	for _, room := range invited {
		if !RoomAllowed(f, room) || unchanged(room) {
			continue
		}
		_, memberEv, err := s.rooms.MembershipOf(ctx, room, req.User)
		if err != nil {
			return nil, fmt.Errorf("membership in %s: %w", room, err)
		}
		if !initial && !req.FullState && memberEv != nil && memberEv.StreamPos <= since.Events {
			continue
		}
		if memberEv != nil && ignored[memberEv.Sender] {
			// Invites from ignored users are not shown at all (spec, "Ignoring users").
			continue
		}
		ir, err := s.inviteState(ctx, room, memberEv)
		if err != nil {
			return nil, err
		}
		resp.Rooms.Invite[room] = ir
	}

	if !initial || (roomFilter != nil && roomFilter.IncludeLeave) {
		left, err := s.rooms.RoomsForUser(ctx, req.User, "leave", "ban")
		if err != nil {
			return nil, fmt.Errorf("list left rooms: %w", err)
		}
		for _, room := range left {
			if !RoomAllowed(f, room) || unchanged(room) {
				continue
			}
			_, memberEv, err := s.rooms.MembershipOf(ctx, room, req.User)
			if err != nil {
				return nil, fmt.Errorf("membership in %s: %w", room, err)
			}
			if memberEv == nil || (!initial && memberEv.StreamPos <= since.Events) {
				continue
			}
			if initial {
				// A forgotten room is gone from the user's archive (an incremental sync still delivers the leave).
				forgotten, err := s.Forgotten(ctx, req.User, room, memberEv.ID)
				if err != nil {
					return nil, err
				}
				if forgotten {
					continue
				}
			}
			upTo := min(memberEv.StreamPos, evPos)
			after := since.Events
			if initial || after > upTo {
				after = 0
			}
			evs, limited, err := s.timeline(ctx, room, after, upTo, limit)
			if err != nil {
				return nil, fmt.Errorf("timeline of left room %s: %w", room, err)
			}
			lr := &LeftRoom{State: emptyList(), AccountData: emptyList(),
				Timeline: Timeline{Events: []json.RawMessage{}, Limited: limited, PrevBatch: prevBatch(evs, upTo)}}
			visible, err := s.rooms.FilterVisible(ctx, room, req.User, evs, false)
			if err != nil {
				return nil, fmt.Errorf("visible timeline of left room %s: %w", room, err)
			}
			for _, ev := range visible {
				if PartAllows(tlPart, room, ev.Sender, ev.Type) {
					lr.Timeline.Events = append(lr.Timeline.Events, ClientEvent(ev, req.User, req.Device))
				}
			}
			if after == 0 || limited {
				// Like a joined room: the state just before the timeline, which for an empty timeline is the
				// state at the leave (the leave included), and never anything from after it.
				at := upTo
				if len(evs) > 0 {
					at = evs[0].StreamPos - 1
				}
				state, err := s.rooms.StateAt(ctx, room, at)
				if err != nil {
					return nil, fmt.Errorf("state of left room %s: %w", room, err)
				}
				for _, ev := range state {
					if PartAllows(statePart, room, ev.Sender, ev.Type) {
						lr.State.Events = append(lr.State.Events, ev.MarshalClient())
					}
				}
			}
			resp.Rooms.Leave[room] = lr
		}
	}

	e2eeNews := false
	if s.e2ee != nil {
		d, err := s.e2ee.SyncData(ctx, req.User, req.Device, since.E2EE, next.E2EE, initial)
		if err != nil {
			return nil, fmt.Errorf("e2ee sync data: %w", err)
		}
		if d != nil {
			if d.ToDevice != nil {
				resp.ToDevice.Events = d.ToDevice
			}
			resp.DeviceLists = map[string]any{"changed": nonNil(d.Changed), "left": nonNil(d.Left)}
			if d.OTKCount != nil {
				resp.OTKCount = d.OTKCount
			}
			if d.FallbackKeys != nil {
				resp.FallbackKeys = d.FallbackKeys
			}
			e2eeNews = len(d.ToDevice) > 0 || len(d.Changed) > 0 || len(d.Left) > 0
			if d.Pos > 0 && d.Pos < next.E2EE {
				next.E2EE = d.Pos
				resp.NextBatch = next.String()
			}
		}
	}

	resp.empty = !e2eeNews && len(resp.AccountData.Events) == 0 && len(resp.Presence.Events) == 0 && len(resp.Rooms.Join) == 0 &&
		len(resp.Rooms.Invite) == 0 && len(resp.Rooms.Leave) == 0
	return resp, nil
}

// ignoredUsers returns the users in user's m.ignored_user_list account data (empty when there is none).
func (s *Service) ignoredUsers(ctx context.Context, user id.UserID) map[id.UserID]bool {
	raw, err := s.users.AccountData(ctx, user, "", "m.ignored_user_list")
	if err != nil {
		return nil
	}
	var c struct {
		IgnoredUsers map[id.UserID]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(raw, &c) != nil || len(c.IgnoredUsers) == 0 {
		return nil
	}
	out := make(map[id.UserID]bool, len(c.IgnoredUsers))
	for u := range c.IgnoredUsers {
		out[u] = true
	}
	return out
}

// summary returns a joined room's summary: joined and invited member counts and up to five other members
// (heroes) for clients that name the room after its members.
func (s *Service) summary(ctx context.Context, room id.RoomID, user id.UserID) (map[string]any, error) {
	members, err := s.rooms.Members(ctx, room)
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", room, err)
	}
	joined, invited := 0, 0
	heroes := []id.UserID{}
	for _, ev := range members {
		switch ev.Membership() {
		case "join":
			joined++
		case "invite":
			invited++
		default:
			continue
		}
		if u := id.UserID(ev.StateKeyString()); u != user && len(heroes) < 5 {
			heroes = append(heroes, u)
		}
	}
	return map[string]any{"m.joined_member_count": joined, "m.invited_member_count": invited, "m.heroes": heroes}, nil
}

// timeline returns the newest limit events of room in (after, upTo] and whether older ones were left out; a
// limit of 0 gives no events, limited when the range has any.
func (s *Service) timeline(ctx context.Context, room id.RoomID, after, upTo int64, limit int) ([]*rooms.Event, bool, error) {
	if limit > 0 {
		return s.rooms.RoomEventsBetween(ctx, room, after, upTo, limit)
	}
	if upTo <= after {
		return nil, false, nil
	}
	evs, _, err := s.rooms.RoomEventsBetween(ctx, room, after, upTo, 1)
	return nil, len(evs) > 0, err
}

// presenceEvents adds the m.presence events of users sharing a joined room with user whose presence changed
// after since (all known ones on an initial sync).
func (s *Service) presenceEvents(ctx context.Context, resp *Response, user id.UserID, f *mautrix.Filter, joined []id.RoomID, since, next Token, initial bool, newPeers map[id.UserID]bool) error {
	from := since.Presence
	if initial {
		from = 0
	}
	changed := s.presence.changedSince(from, next.Presence)
	for u := range newPeers {
		if _, ok := changed[u]; !ok {
			if st, known := s.presence.known(u, next.Presence); known {
				changed[u] = st
			}
		}
	}
	if len(changed) == 0 {
		return nil
	}
	mine := make(map[id.RoomID]bool, len(joined))
	for _, r := range joined {
		mine[r] = true
	}
	users := make([]id.UserID, 0, len(changed))
	for u := range changed {
		users = append(users, u)
	}
	slices.Sort(users)
	now := time.Now()
	for _, u := range users {
		if f != nil && !PartAllows(f.Presence, "", u, event.EphemeralEventPresence.Type) {
			continue
		}
		if u != user {
			theirs, err := s.rooms.RoomsForUser(ctx, u, "join")
			if err != nil {
				return fmt.Errorf("rooms of %s: %w", u, err)
			}
			if !slices.ContainsFunc(theirs, func(r id.RoomID) bool { return mine[r] }) {
				continue
			}
		}
		st := changed[u]
		content := map[string]any{"presence": st.Presence}
		if !st.LastActive.IsZero() {
			content["last_active_ago"] = now.Sub(st.LastActive).Milliseconds()
			content["currently_active"] = st.Presence == "online" && now.Sub(st.LastActive) < 5*time.Minute
		}
		if st.StatusMsg != "" {
			content["status_msg"] = st.StatusMsg
		}
		raw, _ := json.Marshal(map[string]any{"type": event.EphemeralEventPresence.Type, "sender": u, "content": content})
		resp.Presence.Events = append(resp.Presence.Events, raw)
	}
	return nil
}

func nonNil(u []id.UserID) []id.UserID {
	if u == nil {
		return []id.UserID{}
	}
	return u
}

// prevBatch is the pagination token just before the first timeline event (or at upTo for an empty timeline).
func prevBatch(evs []*rooms.Event, upTo int64) string {
	if len(evs) == 0 {
		return Token{Events: upTo}.String()
	}
	return Token{Events: evs[0].StreamPos - 1}.String()
}

func accountDataEvent(evType string, content json.RawMessage) json.RawMessage {
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	raw, _ := json.Marshal(map[string]any{"type": evType, "content": content})
	return raw
}

type ephemeralEvent struct {
	typ string
	raw json.RawMessage
}

// ephemeral returns the typing and receipt events of room for user between since and next.
func (s *Service) ephemeral(ctx context.Context, room id.RoomID, user id.UserID, since, next Token, initial bool) ([]ephemeralEvent, error) {
	var out []ephemeralEvent
	typers, changed := s.typing.Since(room, since.Typing)
	if (initial && len(typers) > 0) || (!initial && changed) {
		if typers == nil {
			typers = []id.UserID{}
		}
		raw, _ := json.Marshal(map[string]any{"type": event.EphemeralEventTyping.Type, "content": map[string]any{"user_ids": typers}})
		out = append(out, ephemeralEvent{typ: event.EphemeralEventTyping.Type, raw: raw})
	}
	from := since.Receipts
	if initial {
		from = 0
	}
	rcpts, err := s.receiptsSince(ctx, room, from, next.Receipts)
	if err != nil {
		return nil, err
	}
	content := map[id.EventID]map[string]map[id.UserID]map[string]any{}
	for _, r := range rcpts {
		if r.Type == string(event.ReceiptTypeReadPrivate) && r.UserID != user {
			continue
		}
		byType := content[r.EventID]
		if byType == nil {
			byType = map[string]map[id.UserID]map[string]any{}
			content[r.EventID] = byType
		}
		if byType[r.Type] == nil {
			byType[r.Type] = map[id.UserID]map[string]any{}
		}
		data := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			data["thread_id"] = r.ThreadID
		}
		byType[r.Type][r.UserID] = data
	}
	if len(content) > 0 {
		raw, _ := json.Marshal(map[string]any{"type": event.EphemeralEventReceipt.Type, "content": content})
		out = append(out, ephemeralEvent{typ: event.EphemeralEventReceipt.Type, raw: raw})
	}
	return out, nil
}

// strippedStateTypes are the state events a user sees about a room they are invited to (spec "stripped state").
var strippedStateTypes = []string{
	event.StateCreate.Type, event.StateJoinRules.Type, event.StateRoomName.Type, event.StateRoomAvatar.Type,
	event.StateCanonicalAlias.Type, event.StateEncryption.Type, event.StateTopic.Type,
}

func (s *Service) inviteState(ctx context.Context, room id.RoomID, inviteEv *rooms.Event) (*InvitedRoom, error) {
	state, err := s.rooms.CurrentState(ctx, room)
	if err != nil {
		return nil, fmt.Errorf("state of invited room %s: %w", room, err)
	}
	ir := &InvitedRoom{InviteState: emptyList()}
	strip := func(ev *rooms.Event) json.RawMessage {
		raw, _ := json.Marshal(map[string]any{"type": ev.Type, "state_key": ev.StateKeyString(), "content": ev.Content, "sender": ev.Sender})
		return raw
	}
	for _, ev := range state {
		if ev.StateKeyString() == "" && slices.Contains(strippedStateTypes, ev.Type) {
			ir.InviteState.Events = append(ir.InviteState.Events, strip(ev))
		}
	}
	if inviteEv != nil {
		ir.InviteState.Events = append(ir.InviteState.Events, strip(inviteEv))
	}
	return ir, nil
}
