package email

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/bridgev2/status"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// fakeMatrix stands in for bridgev2's Matrix connector in the bridge-level tests: it records the rooms,
// invites, messages and bridge states bridgev2 produces, so the tests can check what a Matrix user would see
// without a homeserver (the end-to-end test in e2e/ covers the real one).
type fakeMatrix struct {
	br *bridgev2.Bridge

	mu     sync.Mutex
	seq    int
	rooms  map[id.RoomID]*fakeRoom
	msgs   []fakeMsg
	states []status.BridgeState
	media  map[id.ContentURIString][]byte
	names  map[id.UserID]string
	// memberNames are the display names GetMembers reports for Matrix users.
	memberNames map[id.UserID]string
	notify      chan struct{}
	// failCreate makes the next n CreateRoom calls fail, like a homeserver hiccup.
	failCreate int
}

type fakeRoom struct {
	ID      id.RoomID
	Name    string
	Creator id.UserID
	Invited []id.UserID
	Joined  map[id.UserID]bool
}

type fakeMsg struct {
	Room    id.RoomID
	Sender  id.UserID
	Type    event.Type
	Content *event.MessageEventContent
	TS      time.Time
}

func newFakeMatrix() *fakeMatrix {
	return &fakeMatrix{rooms: map[id.RoomID]*fakeRoom{}, media: map[id.ContentURIString][]byte{},
		names: map[id.UserID]string{}, memberNames: map[id.UserID]string{}, notify: make(chan struct{}, 1)}
}

func (fm *fakeMatrix) changed() {
	select {
	case fm.notify <- struct{}{}:
	default:
	}
}

// waitFor polls cond under the lock until it holds or the timeout passes.
func (fm *fakeMatrix) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.After(timeout)
	for {
		fm.mu.Lock()
		ok := cond()
		fm.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-fm.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return false
		}
	}
}

func (fm *fakeMatrix) Init(br *bridgev2.Bridge)    { fm.br = br }
func (fm *fakeMatrix) Start(context.Context) error { return nil }
func (fm *fakeMatrix) PreStop()                    {}
func (fm *fakeMatrix) Stop()                       {}
func (fm *fakeMatrix) GetCapabilities() *bridgev2.MatrixCapabilities {
	return &bridgev2.MatrixCapabilities{}
}
func (fm *fakeMatrix) ServerName() string { return "localhost" }

func (fm *fakeMatrix) ParseGhostMXID(userID id.UserID) (networkid.UserID, bool) {
	local, server, err := userID.Parse()
	if err != nil || server != "localhost" || !strings.HasPrefix(local, "email_") {
		return "", false
	}
	dec, err := id.DecodeUserLocalpart(strings.TrimPrefix(local, "email_"))
	if err != nil {
		return "", false
	}
	return networkid.UserID(dec), true
}

func (fm *fakeMatrix) FormatGhostMXID(userID networkid.UserID) id.UserID {
	return id.NewUserID("email_"+id.EncodeUserLocalpart(string(userID)), "localhost")
}

func (fm *fakeMatrix) GhostIntent(userID networkid.UserID) bridgev2.MatrixAPI {
	return &fakeIntent{fm: fm, mxid: fm.FormatGhostMXID(userID)}
}

func (fm *fakeMatrix) BotIntent() bridgev2.MatrixAPI {
	return &fakeIntent{fm: fm, mxid: "@email:localhost"}
}

func (fm *fakeMatrix) NewUserIntent(context.Context, id.UserID, string) (bridgev2.MatrixAPI, string, error) {
	return nil, "", errors.New("double puppeting is not available in the fake")
}

func (fm *fakeMatrix) SendBridgeStatus(_ context.Context, st *status.BridgeState) error {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	fm.states = append(fm.states, *st)
	fm.changed()
	return nil
}

func (fm *fakeMatrix) SendMessageStatus(context.Context, *bridgev2.MessageStatus, *bridgev2.MessageStatusEventInfo) {
}

func (fm *fakeMatrix) GenerateContentURI(context.Context, networkid.MediaID) (id.ContentURIString, error) {
	return "", errors.New("no direct media")
}

func (fm *fakeMatrix) ParseContentURI(context.Context, id.ContentURIString) (networkid.MediaID, error) {
	return nil, errors.New("no direct media")
}

func (fm *fakeMatrix) GetPowerLevels(context.Context, id.RoomID) (*event.PowerLevelsEventContent, error) {
	return &event.PowerLevelsEventContent{}, nil
}

func (fm *fakeMatrix) GetMembers(_ context.Context, roomID id.RoomID) (map[id.UserID]*event.MemberEventContent, error) {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	out := map[id.UserID]*event.MemberEventContent{}
	if r := fm.rooms[roomID]; r != nil {
		for u := range r.Joined {
			out[u] = &event.MemberEventContent{Membership: event.MembershipJoin, Displayname: fm.memberNames[u]}
		}
		for _, u := range r.Invited {
			if !r.Joined[u] {
				out[u] = &event.MemberEventContent{Membership: event.MembershipInvite, Displayname: fm.memberNames[u]}
			}
		}
	}
	return out, nil
}

func (fm *fakeMatrix) GetMemberInfo(ctx context.Context, roomID id.RoomID, userID id.UserID) (*event.MemberEventContent, error) {
	members, _ := fm.GetMembers(ctx, roomID)
	if m, ok := members[userID]; ok {
		return m, nil
	}
	return &event.MemberEventContent{Membership: event.MembershipLeave}, nil
}

func (fm *fakeMatrix) BatchSend(context.Context, id.RoomID, *mautrix.ReqBeeperBatchSend, []*bridgev2.MatrixSendExtra) (*mautrix.RespBeeperBatchSend, error) {
	return nil, errors.New("no batch sending")
}

func (fm *fakeMatrix) GenerateDeterministicRoomID(networkid.PortalKey) id.RoomID { return "" }
func (fm *fakeMatrix) GenerateDeterministicEventID(id.RoomID, networkid.PortalKey, networkid.MessageID, networkid.PartID) id.EventID {
	return ""
}
func (fm *fakeMatrix) GenerateReactionEventID(id.RoomID, *database.Message, networkid.UserID, networkid.EmojiID) id.EventID {
	return ""
}

// roomMessages returns the m.room.message events of a room (caller holds the lock).
func (fm *fakeMatrix) roomMessages(room id.RoomID) []fakeMsg {
	var out []fakeMsg
	for _, m := range fm.msgs {
		if m.Room == room && m.Type == event.EventMessage {
			out = append(out, m)
		}
	}
	return out
}

// roomNamed returns the room with that name (caller holds the lock).
func (fm *fakeMatrix) roomNamed(name string) *fakeRoom {
	for _, r := range fm.rooms {
		if r.Name == name {
			return r
		}
	}
	return nil
}

type fakeIntent struct {
	fm   *fakeMatrix
	mxid id.UserID
}

var _ bridgev2.MatrixAPI = (*fakeIntent)(nil)

func (fi *fakeIntent) GetMXID() id.UserID   { return fi.mxid }
func (fi *fakeIntent) IsDoublePuppet() bool { return false }

func (fi *fakeIntent) SendMessage(_ context.Context, roomID id.RoomID, evtType event.Type, content *event.Content, extra *bridgev2.MatrixSendExtra) (*mautrix.RespSendEvent, error) {
	fm := fi.fm
	fm.mu.Lock()
	defer fm.mu.Unlock()
	fm.seq++
	msg := fakeMsg{Room: roomID, Sender: fi.mxid, Type: evtType}
	if extra != nil {
		msg.TS = extra.Timestamp
	}
	if mc, ok := content.Parsed.(*event.MessageEventContent); ok {
		msg.Content = mc
	}
	fm.msgs = append(fm.msgs, msg)
	fm.changed()
	return &mautrix.RespSendEvent{EventID: id.EventID(fmt.Sprintf("$ev%d", fm.seq))}, nil
}

func (fi *fakeIntent) SendState(_ context.Context, roomID id.RoomID, evtType event.Type, stateKey string, content *event.Content, _ time.Time) (*mautrix.RespSendEvent, error) {
	fm := fi.fm
	fm.mu.Lock()
	defer fm.mu.Unlock()
	fm.seq++
	if r := fm.rooms[roomID]; r != nil {
		switch c := content.Parsed.(type) {
		case *event.RoomNameEventContent:
			r.Name = c.Name
		case *event.MemberEventContent:
			switch c.Membership {
			case event.MembershipInvite:
				r.Invited = append(r.Invited, id.UserID(stateKey))
			case event.MembershipJoin:
				r.Joined[id.UserID(stateKey)] = true
			}
		}
	}
	fm.changed()
	return &mautrix.RespSendEvent{EventID: id.EventID(fmt.Sprintf("$st%d", fm.seq))}, nil
}

func (fi *fakeIntent) MarkRead(context.Context, id.RoomID, id.EventID, time.Time) error { return nil }
func (fi *fakeIntent) MarkUnread(context.Context, id.RoomID, bool) error                { return nil }
func (fi *fakeIntent) MarkTyping(context.Context, id.RoomID, bridgev2.TypingType, time.Duration) error {
	return nil
}

func (fi *fakeIntent) DownloadMedia(_ context.Context, uri id.ContentURIString, _ *event.EncryptedFileInfo) ([]byte, error) {
	fi.fm.mu.Lock()
	defer fi.fm.mu.Unlock()
	if d, ok := fi.fm.media[uri]; ok {
		return d, nil
	}
	return nil, errors.New("no such media")
}

func (fi *fakeIntent) DownloadMediaToFile(context.Context, id.ContentURIString, *event.EncryptedFileInfo, bool, func(*os.File) error) error {
	return errors.New("not supported by the fake")
}

func (fi *fakeIntent) UploadMedia(_ context.Context, _ id.RoomID, data []byte, _, _ string) (id.ContentURIString, *event.EncryptedFileInfo, error) {
	fm := fi.fm
	fm.mu.Lock()
	defer fm.mu.Unlock()
	fm.seq++
	uri := id.ContentURIString(fmt.Sprintf("mxc://localhost/m%d", fm.seq))
	fm.media[uri] = append([]byte(nil), data...)
	return uri, nil, nil
}

func (fi *fakeIntent) UploadMediaStream(context.Context, id.RoomID, int64, bool, bridgev2.FileStreamCallback) (id.ContentURIString, *event.EncryptedFileInfo, error) {
	return "", nil, errors.New("not supported by the fake")
}

func (fi *fakeIntent) SetDisplayName(_ context.Context, name string) error {
	fi.fm.mu.Lock()
	defer fi.fm.mu.Unlock()
	fi.fm.names[fi.mxid] = name
	return nil
}
func (fi *fakeIntent) SetAvatarURL(context.Context, id.ContentURIString) error { return nil }
func (fi *fakeIntent) SetExtraProfileMeta(context.Context, any) error          { return nil }
func (fi *fakeIntent) SetProfile(context.Context, any) error                   { return nil }

func (fi *fakeIntent) CreateRoom(_ context.Context, req *mautrix.ReqCreateRoom) (id.RoomID, error) {
	fm := fi.fm
	fm.mu.Lock()
	defer fm.mu.Unlock()
	if fm.failCreate > 0 {
		fm.failCreate--
		return "", errors.New("homeserver unavailable")
	}
	fm.seq++
	r := &fakeRoom{ID: id.RoomID(fmt.Sprintf("!r%d:localhost", fm.seq)), Name: req.Name, Creator: fi.mxid,
		Invited: append([]id.UserID(nil), req.Invite...), Joined: map[id.UserID]bool{fi.mxid: true}}
	for _, st := range req.InitialState {
		if nc, ok := st.Content.Parsed.(*event.RoomNameEventContent); ok {
			r.Name = nc.Name
		}
	}
	fm.rooms[r.ID] = r
	fm.changed()
	return r.ID, nil
}

func (fi *fakeIntent) DeleteRoom(context.Context, id.RoomID, bool) error { return nil }

func (fi *fakeIntent) EnsureJoined(_ context.Context, roomID id.RoomID, _ ...bridgev2.EnsureJoinedParams) error {
	fi.fm.mu.Lock()
	defer fi.fm.mu.Unlock()
	if r := fi.fm.rooms[roomID]; r != nil {
		r.Joined[fi.mxid] = true
	}
	return nil
}

func (fi *fakeIntent) EnsureInvited(_ context.Context, roomID id.RoomID, userID id.UserID) error {
	fi.fm.mu.Lock()
	defer fi.fm.mu.Unlock()
	if r := fi.fm.rooms[roomID]; r != nil {
		r.Invited = append(r.Invited, userID)
	}
	fi.fm.changed()
	return nil
}

func (fi *fakeIntent) TagRoom(context.Context, id.RoomID, event.RoomTag, bool) error { return nil }
func (fi *fakeIntent) MuteRoom(context.Context, id.RoomID, time.Time) error          { return nil }
func (fi *fakeIntent) GetEvent(context.Context, id.RoomID, id.EventID) (*event.Event, error) {
	return nil, errors.New("not supported by the fake")
}
