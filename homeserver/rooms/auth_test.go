package rooms

import (
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/internal/canonicaljson"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

const (
	creator id.UserID = "@creator:x"
	mod     id.UserID = "@mod:x"
	alice   id.UserID = "@alice:x"
	bob     id.UserID = "@bob:x"
	eve     id.UserID = "@eve:x"
)

// stateEv builds a stored-looking state event for authorisation tests.
func stateEv(evType, stateKey string, sender id.UserID, content string) *Event {
	sk := stateKey
	return &Event{ID: id.EventID("$" + evType + "/" + stateKey), Type: evType, StateKey: &sk, Sender: sender,
		Content: json.RawMessage(content), RoomID: "!r:x"}
}

func member(user id.UserID, membership string) *Event {
	return stateEv(typeMember, string(user), user, `{"membership":"`+membership+`"}`)
}

// roomState returns a typical room: creator 100, mod 50, public or invite join rule, and the given members.
func roomState(version, joinRule string, members ...*Event) *authState {
	create := `{"room_version":"` + version + `"}`
	if version == V10 {
		create = `{"room_version":"10","creator":"@creator:x"}`
	}
	st := &authState{members: map[id.UserID]*Event{}}
	st.add(stateEv(typeCreate, "", creator, create))
	st.add(stateEv(typePowerLevels, "", creator,
		`{"users":{"@creator:x":100,"@mod:x":50},"users_default":0,"events":{"m.room.name":50,"m.room.power_levels":100},"events_default":0,"state_default":50,"ban":50,"kick":50,"redact":50,"invite":0}`))
	if joinRule != "" {
		st.add(stateEv(typeJoinRules, "", creator, `{"join_rule":"`+joinRule+`"}`))
	}
	st.add(member(creator, memberJoin))
	st.add(member(mod, memberJoin))
	for _, m := range members {
		st.add(m)
	}
	return st
}

func tryEvent(t *testing.T, version string, st *authState, sender id.UserID, evType string, stateKey *string, content string, target *Event) error {
	t.Helper()
	ev := &Event{RoomID: "!r:x", Sender: sender, Type: evType, StateKey: stateKey, Content: json.RawMessage(content),
		PrevEvents: []id.EventID{"$prev"}}
	v, err := canonicaljson.Decode([]byte(content))
	if err != nil {
		t.Fatal(err)
	}
	return authorize(version, ev, content2map(v), st, target)
}

func content2map(v any) map[string]any { m, _ := v.(map[string]any); return m }

func sk(s string) *string { return &s }

func TestAuthorizationRules(t *testing.T) {
	t.Parallel()
	type tc struct {
		state    func(version string) *authState
		sender   id.UserID
		evType   string
		stateKey *string
		content  string
		target   *Event
		allow    bool
		errHas   string
	}
	invite := func(v string) *authState { return roomState(v, "invite") }
	public := func(v string) *authState { return roomState(v, "public") }
	cases := map[string]tc{
		// Membership: join.
		"join public room":                {state: public, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"join"}`, allow: true},
		"join invite room uninvited":      {state: invite, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"join"}`, errHas: "not invited"},
		"join invite room when invited":   {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberInvite)) }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"join"}`, allow: true},
		"join room without join rules":    {state: func(v string) *authState { return roomState(v, "") }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"join"}`, errHas: "not invited"},
		"join someone else":               {state: public, sender: alice, evType: typeMember, stateKey: sk(string(bob)), content: `{"membership":"join"}`, errHas: "only join themselves"},
		"join while banned":               {state: func(v string) *authState { return roomState(v, "public", member(alice, memberBan)) }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"join"}`, errHas: "banned"},
		"join restricted refused cleanly": {state: func(v string) *authState { return roomState(v, "restricted") }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"join"}`, errHas: "restricted"},
		"join restricted when invited":    {state: func(v string) *authState { return roomState(v, "restricted", member(alice, memberInvite)) }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"join"}`, allow: true},
		"join via authorising server":     {state: func(v string) *authState { return roomState(v, "restricted") }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"join","join_authorised_via_users_server":"@creator:x"}`, errHas: "not supported"},
		"join knock room when knocked":    {state: func(v string) *authState { return roomState(v, "knock", member(alice, memberKnock)) }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"join"}`, errHas: "not invited"},
		"member without membership":       {state: public, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{}`, errHas: "no membership"},
		"member bad state key":            {state: public, sender: alice, evType: typeMember, stateKey: sk("alice"), content: `{"membership":"join"}`, errHas: "not a valid user ID"},
		"unknown membership":              {state: public, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"dance"}`, errHas: "unknown membership"},

		// Invite.
		"invite by member":     {state: invite, sender: mod, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"invite"}`, allow: true},
		"invite by non-member": {state: invite, sender: eve, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"invite"}`, errHas: "not joined"},
		"invite joined user":   {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberJoin)) }, sender: mod, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"invite"}`, errHas: "already joined"},
		"invite banned user":   {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberBan)) }, sender: mod, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"invite"}`, errHas: "banned"},
		"invite below invite level": {state: func(v string) *authState {
			s := roomState(v, "invite", member(bob, memberJoin))
			s.add(stateEv(typePowerLevels, "", creator, `{"users":{"@creator:x":100},"invite":50}`))
			return s
		}, sender: bob, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"invite"}`, errHas: "inviting needs power level 50"},
		"third party invite refused": {state: invite, sender: mod, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"invite","third_party_invite":{"signed":{}}}`, errHas: "third-party"},

		// Leave, kick, unban.
		"leave when joined":      {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberJoin)) }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, allow: true},
		"reject invite":          {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberInvite)) }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, allow: true},
		"leave when not in room": {state: invite, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, errHas: "not in the room"},
		"leave when banned":      {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberBan)) }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, errHas: "not in the room"},
		"kick by moderator":      {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberJoin)) }, sender: mod, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, allow: true},
		"kick by ordinary user": {state: func(v string) *authState {
			return roomState(v, "invite", member(alice, memberJoin), member(bob, memberJoin))
		}, sender: bob, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, errHas: "kicking needs power level 50"},
		"kick higher level":  {state: func(v string) *authState { return roomState(v, "invite") }, sender: mod, evType: typeMember, stateKey: sk(string(creator)), content: `{"membership":"leave"}`, errHas: "not below"},
		"kick by non-member": {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberJoin)) }, sender: eve, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, errHas: "not joined"},
		"unban by moderator": {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberBan)) }, sender: mod, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, allow: true},
		"unban below ban level": {state: func(v string) *authState {
			s := roomState(v, "invite", member(alice, memberBan))
			s.add(stateEv(typePowerLevels, "", creator, `{"users":{"@creator:x":100,"@mod:x":50},"ban":75,"kick":0}`))
			return s
		}, sender: mod, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, errHas: "unbanning needs power level 75"},
		"kick invited user (revoke)": {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberInvite)) }, sender: mod, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"leave"}`, allow: true},

		// Ban.
		"ban by moderator": {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberJoin)) }, sender: mod, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"ban"}`, allow: true},
		"ban absent user":  {state: invite, sender: mod, evType: typeMember, stateKey: sk(string(eve)), content: `{"membership":"ban"}`, allow: true},
		"ban by ordinary user": {state: func(v string) *authState {
			return roomState(v, "invite", member(alice, memberJoin), member(bob, memberJoin))
		}, sender: bob, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"ban"}`, errHas: "banning needs power level 50"},
		"ban higher user":   {state: invite, sender: mod, evType: typeMember, stateKey: sk(string(creator)), content: `{"membership":"ban"}`, errHas: "not below"},
		"ban by non-member": {state: invite, sender: eve, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"ban"}`, errHas: "not joined"},

		// Knock.
		"knock on knock room":    {state: func(v string) *authState { return roomState(v, "knock") }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"knock"}`, allow: true},
		"knock on invite room":   {state: invite, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"knock"}`, errHas: "does not allow knocking"},
		"knock while joined":     {state: func(v string) *authState { return roomState(v, "knock", member(alice, memberJoin)) }, sender: alice, evType: typeMember, stateKey: sk(string(alice)), content: `{"membership":"knock"}`, errHas: "cannot knock"},
		"knock for someone else": {state: func(v string) *authState { return roomState(v, "knock") }, sender: alice, evType: typeMember, stateKey: sk(string(bob)), content: `{"membership":"knock"}`, errHas: "only knock themselves"},

		// Ordinary events and state.
		"message by member":       {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberJoin)) }, sender: alice, evType: "m.room.message", content: `{"body":"hi"}`, allow: true},
		"message by invited user": {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberInvite)) }, sender: alice, evType: "m.room.message", content: `{"body":"hi"}`, errHas: "not joined"},
		"message by stranger":     {state: invite, sender: eve, evType: "m.room.message", content: `{"body":"hi"}`, errHas: "not joined"},
		"message below events_default": {state: func(v string) *authState {
			s := roomState(v, "invite", member(alice, memberJoin))
			s.add(stateEv(typePowerLevels, "", creator, `{"users":{"@creator:x":100},"events_default":10}`))
			return s
		}, sender: alice, evType: "m.room.message", content: `{}`, errHas: "needs power level 10"},
		"state below state_default":    {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberJoin)) }, sender: alice, evType: "m.room.topic", stateKey: sk(""), content: `{"topic":"t"}`, errHas: "needs power level 50"},
		"state by moderator":           {state: invite, sender: mod, evType: "m.room.topic", stateKey: sk(""), content: `{"topic":"t"}`, allow: true},
		"events map overrides default": {state: invite, sender: mod, evType: "m.room.power_levels", stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":50}}`, errHas: "needs power level 100"},
		"user-owned state key of another": {state: func(v string) *authState {
			s := roomState(v, "invite", member(alice, memberJoin))
			s.add(stateEv(typePowerLevels, "", creator, `{"users":{"@creator:x":100},"state_default":0}`))
			return s
		}, sender: alice, evType: "com.example.status", stateKey: sk(string(bob)), content: `{}`, errHas: "belongs to another user"},
		"user-owned state key of self": {state: func(v string) *authState {
			s := roomState(v, "invite", member(alice, memberJoin))
			s.add(stateEv(typePowerLevels, "", creator, `{"users":{"@creator:x":100},"state_default":0}`))
			return s
		}, sender: alice, evType: "com.example.status", stateKey: sk(string(alice)), content: `{}`, allow: true},
		"no power levels: creator 100": {state: func(v string) *authState { s := roomState(v, "invite"); s.powerLevels = nil; return s }, sender: creator, evType: "m.room.topic", stateKey: sk(""), content: `{}`, allow: true},
		"no power levels: others state 0": {state: func(v string) *authState {
			s := roomState(v, "invite", member(alice, memberJoin))
			s.powerLevels = nil
			return s
		}, sender: alice, evType: "m.room.topic", stateKey: sk(""), content: `{}`, allow: true},
		"second create refused":    {state: invite, sender: creator, evType: typeCreate, stateKey: sk(""), content: `{"room_version":"10","creator":"@creator:x"}`, errHas: "first event"},
		"no create event":          {state: func(v string) *authState { s := roomState(v, "invite"); s.create = nil; return s }, sender: creator, evType: "m.room.message", content: `{}`, errHas: "no m.room.create"},
		"third_party_invite event": {state: invite, sender: mod, evType: typeThirdPartyInvite, stateKey: sk("tok"), content: `{}`, allow: true},

		// Power level changes.
		"pl: creator raises mod":        {state: invite, sender: creator, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":90}}`, allow: true},
		"pl: string value refused":      {state: invite, sender: creator, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100},"ban":"50"}`, errHas: "must be an integer"},
		"pl: string user level refused": {state: invite, sender: creator, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":"100"}}`, errHas: "must be an integer"},
		"pl: invalid user ID refused":   {state: invite, sender: creator, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"creator":100}}`, errHas: "not a valid user ID"},
		"pl: raise above own":           {state: modPL, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":50,"@alice:x":60}}`, errHas: "above your level"},
		"pl: grant own level":           {state: modPL, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":50,"@alice:x":50},"events":{"m.room.power_levels":50}}`, allow: true},
		"pl: demote peer at own level": {state: func(v string) *authState {
			s := modPL(v)
			s.add(stateEv(typePowerLevels, "", creator, `{"users":{"@creator:x":100,"@mod:x":50,"@bob:x":50},"events":{"m.room.power_levels":50}}`))
			return s
		}, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":50,"@bob:x":0},"events":{"m.room.power_levels":50}}`, errHas: "not below your level"},
		"pl: demote self":          {state: modPL, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":10},"events":{"m.room.power_levels":50}}`, allow: true},
		"pl: remove higher user":   {state: modPL, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@mod:x":50},"events":{"m.room.power_levels":50}}`, errHas: "not below your level"},
		"pl: change ban above own": {state: modPL, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":50},"events":{"m.room.power_levels":50},"ban":60}`, errHas: "cannot set ban"},
		"pl: change level currently above": {state: func(v string) *authState {
			s := modPL(v)
			s.add(stateEv(typePowerLevels, "", creator, `{"users":{"@creator:x":100,"@mod:x":50},"events":{"m.room.power_levels":50},"kick":80}`))
			return s
		}, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":50},"events":{"m.room.power_levels":50},"kick":40}`, errHas: "cannot change kick"},
		"pl: add events entry above own":    {state: modPL, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":50},"events":{"m.room.power_levels":50,"m.room.topic":70}}`, errHas: "events[m.room.topic]"},
		"pl: change events entry above own": {state: modPL, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":50},"events":{"m.room.power_levels":50,"m.room.name":40}}`, allow: true},
		"pl: notifications above own":       {state: modPL, sender: mod, evType: typePowerLevels, stateKey: sk(""), content: `{"users":{"@creator:x":100,"@mod:x":50},"events":{"m.room.power_levels":50},"notifications":{"room":60}}`, errHas: "notifications[room]"},

		// Redactions.
		"redact own event":          {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberJoin)) }, sender: alice, evType: typeRedaction, content: `{}`, target: &Event{ID: "$t", RoomID: "!r:x", Sender: alice}, allow: true},
		"redact other's event":      {state: func(v string) *authState { return roomState(v, "invite", member(alice, memberJoin)) }, sender: alice, evType: typeRedaction, content: `{}`, target: &Event{ID: "$t", RoomID: "!r:x", Sender: mod}, errHas: "needs power level 50"},
		"moderator redacts other's": {state: invite, sender: mod, evType: typeRedaction, content: `{}`, target: &Event{ID: "$t", RoomID: "!r:x", Sender: alice}, allow: true},
		"redact other room's event": {state: invite, sender: mod, evType: typeRedaction, content: `{}`, target: &Event{ID: "$t", RoomID: "!other:x", Sender: mod}, errHas: "another room"},
	}
	for _, version := range []string{V10, V11} {
		for name, c := range cases {
			t.Run("v"+version+"/"+name, func(t *testing.T) {
				err := tryEvent(t, version, c.state(version), c.sender, c.evType, c.stateKey, c.content, c.target)
				if c.allow {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					return
				}
				e := mxerr.As(err)
				if e == nil || e.Code != "M_FORBIDDEN" {
					t.Fatalf("got %v, want M_FORBIDDEN", err)
				}
				if !strings.Contains(e.Message, c.errHas) {
					t.Fatalf("message %q does not mention %q", e.Message, c.errHas)
				}
			})
		}
	}
}

// modPL is a room where the moderator may send power levels (m.room.power_levels at 50).
func modPL(version string) *authState {
	s := roomState(version, "invite", member(alice, memberJoin), member(bob, memberJoin))
	s.add(stateEv(typePowerLevels, "", creator, `{"users":{"@creator:x":100,"@mod:x":50},"events":{"m.room.power_levels":50,"m.room.name":50}}`))
	return s
}

func TestAuthorizeCreate(t *testing.T) {
	t.Parallel()
	empty := func() *authState { return &authState{members: map[id.UserID]*Event{}} }
	for name, c := range map[string]struct {
		version, content string
		prev             []id.EventID
		errHas           string
	}{
		"v10 with creator":    {V10, `{"creator":"@creator:x","room_version":"10"}`, nil, ""},
		"v10 without creator": {V10, `{"room_version":"10"}`, nil, "no creator"},
		"v11 without creator": {V11, `{"room_version":"11"}`, nil, ""},
		"unsupported version": {V11, `{"room_version":"1"}`, nil, "unsupported room_version"},
		"with prev events":    {V11, `{"room_version":"11"}`, []id.EventID{"$x"}, "first event"},
	} {
		t.Run(name, func(t *testing.T) {
			v, _ := canonicaljson.Decode([]byte(c.content))
			ev := &Event{Type: typeCreate, StateKey: sk(""), Sender: creator, Content: json.RawMessage(c.content), PrevEvents: c.prev}
			err := authorize(c.version, ev, content2map(v), empty(), nil)
			if c.errHas == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.errHas) {
				t.Fatalf("got %v, want error mentioning %q", err, c.errHas)
			}
		})
	}
	// The creator's first join right after the create event is allowed with no join rules.
	st := &authState{members: map[id.UserID]*Event{}}
	st.add(stateEv(typeCreate, "", creator, `{"room_version":"11"}`))
	ev := &Event{Type: typeMember, StateKey: sk(string(creator)), Sender: creator, PrevEvents: []id.EventID{st.create.ID}, Content: json.RawMessage(`{"membership":"join"}`)}
	if err := authorize(V11, ev, map[string]any{"membership": "join"}, st, nil); err != nil {
		t.Fatalf("creator join refused: %v", err)
	}
	ev.Sender, ev.StateKey = alice, sk(string(alice))
	if err := authorize(V11, ev, map[string]any{"membership": "join"}, st, nil); err == nil {
		t.Fatal("non-creator join after create allowed")
	}
}
