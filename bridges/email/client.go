package email

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/bridgev2/simplevent"
	"maunium.net/go/mautrix/bridgev2/status"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/bridges/email/msgconv"
)

// Client is one login's connection to its mailbox: the IMAP watcher for incoming mail and SMTP for replies.
type Client struct {
	conn  *Connector
	login *bridgev2.UserLogin

	mu       sync.Mutex
	acct     *Account
	cancel   context.CancelFunc
	done     chan struct{}
	loggedIn atomic.Bool
}

var (
	_ bridgev2.NetworkAPI           = (*Client)(nil)
	_ bridgev2.NetworkAPIWithUserID = (*Client)(nil)
)

func newClient(c *Connector, login *bridgev2.UserLogin) *Client {
	cl := &Client{conn: c, login: login}
	if meta, ok := login.Metadata.(*UserLoginMetadata); ok && meta.SealedPassword != "" {
		cl.loggedIn.Store(true)
	}
	return cl
}

func (cl *Client) meta() *UserLoginMetadata {
	meta, _ := cl.login.Metadata.(*UserLoginMetadata)
	if meta == nil {
		meta = &UserLoginMetadata{}
	}
	return meta
}

func (cl *Client) self() string { return strings.ToLower(cl.meta().Address) }

// account returns the unsealed account, caching it.
func (cl *Client) account() (*Account, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.acct != nil {
		return cl.acct, nil
	}
	acct, err := cl.meta().account(cl.conn.sealer)
	if err != nil {
		return nil, err
	}
	cl.acct = acct
	return acct, nil
}

// Connect implements bridgev2.NetworkAPI: it starts the mailbox watcher in the background.
func (cl *Client) Connect(ctx context.Context) {
	log := cl.login.Log.With().Str("component", "email_imap").Logger()
	acct, err := cl.account()
	if err != nil {
		log.Err(err).Msg("Cannot unseal mailbox password")
		cl.loggedIn.Store(false)
		cl.login.BridgeState.Send(status.BridgeState{StateEvent: status.StateBadCredentials, Error: "email-unseal-failed",
			Message: "The stored password cannot be decrypted (was the key file replaced?). Log in again."})
		return
	}
	if cl.conn.store == nil {
		log.Error().Msg("Email bridge store not started")
		return
	}
	cl.mu.Lock()
	if cl.cancel != nil {
		cl.mu.Unlock()
		return
	}
	runCtx, cancel := context.WithCancel(log.WithContext(cl.conn.br.BackgroundCtx))
	cl.cancel = cancel
	done := make(chan struct{})
	cl.done = done
	cl.mu.Unlock()

	cl.login.BridgeState.Send(status.BridgeState{StateEvent: status.StateConnecting})
	w := &Watcher{
		Account:        acct,
		LoginID:        string(cl.login.ID),
		Store:          cl.conn.store,
		Handle:         cl.handleMail,
		OnState:        cl.onState,
		IdleTimeout:    cl.conn.cfg.IdleTimeout,
		CommandTimeout: cl.conn.commandTimeout,
		MaxBackoff:     cl.conn.maxBackoff,
		AllowInsecure:  cl.conn.cfg.AllowInsecure,
		Log:            log,
	}
	go func() {
		defer close(done)
		_ = w.Run(runCtx)
	}()
}

func (cl *Client) onState(st ConnState) {
	switch {
	case st.Connected:
		cl.loggedIn.Store(true)
		cl.login.BridgeState.Send(status.BridgeState{StateEvent: status.StateConnected})
	case st.BadCredentials:
		cl.loggedIn.Store(false)
		cl.login.BridgeState.Send(status.BridgeState{StateEvent: status.StateBadCredentials, Error: "email-auth-failed",
			Message: st.Err.Error()})
	case st.Err != nil:
		cl.login.BridgeState.Send(status.BridgeState{StateEvent: status.StateTransientDisconnect, Error: "email-imap-disconnected",
			Message: st.Err.Error()})
	}
}

// Disconnect implements bridgev2.NetworkAPI: it stops the watcher and waits for it (bounded by the watcher's
// own command timeouts, since cancelling closes the connection).
func (cl *Client) Disconnect() {
	cl.mu.Lock()
	cancel, done := cl.cancel, cl.done
	cl.cancel, cl.done = nil, nil
	cl.mu.Unlock()
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cl.login.Log.Warn().Msg("IMAP watcher did not stop within 15s")
		}
	}
}

// IsLoggedIn implements bridgev2.NetworkAPI.
func (cl *Client) IsLoggedIn() bool { return cl.loggedIn.Load() }

// LogoutRemote implements bridgev2.NetworkAPI. Mail servers have no session to revoke; the login's sync
// position is forgotten so a later login starts fresh.
func (cl *Client) LogoutRemote(ctx context.Context) {
	cl.Disconnect()
	cl.loggedIn.Store(false)
	if cl.conn.store != nil {
		if err := cl.conn.store.DeleteLogin(ctx, string(cl.login.ID)); err != nil {
			zerolog.Ctx(ctx).Err(err).Msg("Failed to delete email sync state")
		}
	}
}

// GetUserID implements bridgev2.NetworkAPIWithUserID: the user's own address is their remote ID.
func (cl *Client) GetUserID() networkid.UserID { return networkid.UserID(cl.self()) }

// IsThisUser implements bridgev2.NetworkAPI.
func (cl *Client) IsThisUser(_ context.Context, userID networkid.UserID) bool {
	return strings.EqualFold(string(userID), cl.self())
}

// GetCapabilities implements bridgev2.NetworkAPI: formatted text and files go out; edits, redactions and
// reactions have no email equivalent.
func (cl *Client) GetCapabilities(context.Context, *bridgev2.Portal) *event.RoomFeatures {
	fmtAll := event.FormattingFeatureMap{}
	for _, f := range []event.FormattingFeature{event.FmtBold, event.FmtItalic, event.FmtUnderline, event.FmtStrikethrough,
		event.FmtInlineCode, event.FmtCodeBlock, event.FmtBlockquote, event.FmtInlineLink, event.FmtUnorderedList,
		event.FmtOrderedList, event.FmtHorizontalLine, event.FmtHeaders, event.FmtTable} {
		fmtAll[f] = event.CapLevelFullySupported
	}
	fileCaps := &event.FileFeatures{MimeTypes: map[string]event.CapabilitySupportLevel{"*/*": event.CapLevelFullySupported},
		Caption: event.CapLevelFullySupported, MaxSize: cl.conn.maxAttachmentBytes()}
	return &event.RoomFeatures{
		ID:         "net.passerelle.email.capabilities.1",
		Formatting: fmtAll,
		File: event.FileFeatureMap{
			event.MsgFile: fileCaps, event.MsgImage: fileCaps, event.MsgVideo: fileCaps, event.MsgAudio: fileCaps,
		},
		Reply:  event.CapLevelPartialSupport,
		Edit:   event.CapLevelRejected,
		Delete: event.CapLevelRejected,
	}
}

// GetUserInfo implements bridgev2.NetworkAPI. A ghost's ID is the correspondent's address (or, for a mail
// whose author headers hold no address, see unreadableSenderID); its name is the display name last seen in a
// header, else the ID.
func (cl *Client) GetUserInfo(_ context.Context, ghost *bridgev2.Ghost) (*bridgev2.UserInfo, error) {
	addr := string(ghost.ID)
	name := cl.conn.nameOf(addr)
	isBot := false
	var idents []string
	if strings.Contains(addr, "@") {
		idents = []string{"mailto:" + addr}
	}
	return &bridgev2.UserInfo{Identifiers: idents, Name: &name, IsBot: &isBot}, nil
}

// unreadableSenderPrefix starts the ghost ID of an author with no readable address. It holds no "@", so it
// cannot collide with a real address, and such a ghost is never a reply recipient.
const unreadableSenderPrefix = "unreadable-sender."

// unreadableSenderID names the ghost of a mail whose From, Sender, Reply-To and Return-Path hold no address:
// the raw From text reduced to lower-case letters, digits and dashes, so the same broken sender always gets the
// same ghost.
func unreadableSenderID(raw string) networkid.UserID {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(raw) {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			if b.Len() >= 64 {
				break
			}
		} else {
			dash = true
		}
	}
	if b.Len() == 0 {
		return unreadableSenderPrefix + "unknown"
	}
	return networkid.UserID(unreadableSenderPrefix + b.String())
}

// GetChatInfo implements bridgev2.NetworkAPI: the room name is the thread's base subject and the members are
// the user plus every correspondent of the thread.
func (cl *Client) GetChatInfo(_ context.Context, portal *bridgev2.Portal) (*bridgev2.ChatInfo, error) {
	meta, _ := portal.Metadata.(*PortalMetadata)
	if meta == nil {
		meta = &PortalMetadata{}
	}
	return cl.chatInfo(meta), nil
}

func (cl *Client) chatInfo(meta *PortalMetadata) *bridgev2.ChatInfo {
	name := meta.Subject
	if name == "" {
		name = "(no subject)"
	}
	members := bridgev2.ChatMemberMap{}
	self := cl.self()
	// The user: invited (or joined through double puppeting). No Sender, so no ghost of their own address joins.
	members.Set(bridgev2.ChatMember{
		EventSender: bridgev2.EventSender{IsFromMe: true, SenderLogin: cl.login.ID},
		Membership:  event.MembershipJoin,
	})
	for _, p := range meta.Participants {
		addr := strings.ToLower(p.Address)
		if addr == self {
			continue
		}
		pname := p.Name
		if pname == "" {
			pname = p.Address
		}
		members.Set(bridgev2.ChatMember{
			EventSender: bridgev2.EventSender{Sender: networkid.UserID(addr)},
			Membership:  event.MembershipJoin,
			UserInfo:    &bridgev2.UserInfo{Name: &pname, Identifiers: []string{"mailto:" + addr}},
		})
	}
	roomType := database.RoomTypeDefault
	return &bridgev2.ChatInfo{
		Name:    &name,
		Members: &bridgev2.ChatMemberList{MemberMap: members},
		Type:    &roomType,
	}
}

// handleTimeout bounds the wait for bridgev2 to bridge one mail (room creation plus uploading attachments of up
// to max_attachment_bytes each); after it the watcher retries, and the Message-ID dedupe absorbs a late success.
const handleTimeout = 5 * time.Minute

// synthID makes a stable stand-in Message-ID for a mail that has none, from its bytes, so the same mail
// fetched twice still dedupes.
func synthID(body io.ReadSeeker) (string, error) {
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, body); err != nil {
		return "", err
	}
	return "synth-" + hex.EncodeToString(h.Sum(nil)[:16]) + "@passerelle.invalid", nil
}

// handleMail is the watcher's Handler: parse, find the thread, queue the message to bridgev2.
func (cl *Client) handleMail(ctx context.Context, m *Mail) error {
	log := zerolog.Ctx(ctx).With().Uint32("uid", m.UID).Logger()
	e, err := msgconv.Parse(m.Body, msgconv.ParseOptions{MaxAttachmentBytes: cl.conn.maxAttachmentBytes()})
	if err != nil || e == nil {
		// Nothing usable at all (empty or unreadable). Skipping is the only option; it is logged, not retried.
		log.Warn().Err(err).Int64("size", m.Size).Msg("Mail could not be parsed at all, skipping it")
		return nil
	}
	if len(e.Problems) > 0 {
		log.Debug().Strs("problems", e.Problems).Msg("Mail parsed with problems")
	}
	msgID, realID := e.MessageID, e.MessageID != ""
	if !realID {
		if msgID, err = synthID(m.Body); err != nil {
			return fmt.Errorf("hash mail without Message-ID: %w", err)
		}
	}
	portalID, err := cl.resolveThread(ctx, e, msgID)
	if err != nil {
		return err
	}
	key := networkid.PortalKey{ID: portalID, Receiver: cl.login.ID}
	for _, a := range append(append([]msgconv.Address{e.From}, e.To...), e.Cc...) {
		cl.conn.rememberName(a.Email, a.Name)
	}
	senderID := networkid.UserID(strings.ToLower(e.From.Email))
	if e.From.Email == "" {
		senderID = unreadableSenderID(e.From.Name)
		name := e.From.Name
		if name == "" {
			name = "Unknown sender"
		}
		cl.conn.rememberName(string(senderID), name)
	}
	// A new thread gets its room first, synchronously, so a failed room creation is an error here (retried by
	// the watcher) rather than an event that silently goes nowhere.
	portal, err := cl.conn.br.GetPortalByKey(ctx, key)
	if err != nil {
		return fmt.Errorf("get portal %s: %w", portalID, err)
	}
	if portal.MXID == "" {
		pre := &PortalMetadata{}
		pre.observe(e, msgID, realID)
		if err := portal.CreateMatrixRoom(ctx, cl.login, cl.chatInfo(pre)); err != nil {
			return fmt.Errorf("create room for thread %s: %w", portalID, err)
		}
	}

	ts := e.Date
	if ts.IsZero() || ts.After(time.Now()) {
		ts = time.Now()
	}
	sender := bridgev2.EventSender{Sender: senderID}
	if e.From.Email != "" && strings.EqualFold(e.From.Email, cl.self()) {
		sender = bridgev2.EventSender{IsFromMe: true, SenderLogin: cl.login.ID, Sender: networkid.UserID(cl.self())}
	}
	evt := &simplevent.Message[*msgconv.Email]{
		EventMeta: simplevent.EventMeta{
			Type:         bridgev2.RemoteEventMessage,
			PortalKey:    key,
			Sender:       sender,
			CreatePortal: true,
			Timestamp:    ts,
			LogContext: func(c zerolog.Context) zerolog.Context {
				return c.Str("message_id", msgID).Uint32("uid", m.UID)
			},
		},
		Data: e,
		ID:   networkid.MessageID(msgID),
		ConvertMessageFunc: func(ctx context.Context, portal *bridgev2.Portal, intent bridgev2.MatrixAPI, e *msgconv.Email) (*bridgev2.ConvertedMessage, error) {
			return cl.convert(ctx, portal, intent, e, msgID, realID)
		},
	}
	// bridgev2 may queue the event for the portal's loop; wait until it was handled and check the message is
	// stored before the watcher advances its position, so a crash in between cannot lose the mail.
	handled := make(chan bool, 1)
	evt.PostHandleFunc = func(ctx context.Context, portal *bridgev2.Portal) {
		msg, err := portal.Bridge.DB.Message.GetFirstPartByID(ctx, cl.login.ID, networkid.MessageID(msgID))
		handled <- err == nil && msg != nil
	}
	cl.conn.mailsHandled.Add(1)
	res := cl.login.QueueRemoteEvent(evt)
	if !res.Success {
		if res.Error != nil {
			return fmt.Errorf("queue mail %s: %w", msgID, res.Error)
		}
		return fmt.Errorf("queue mail %s failed", msgID)
	}
	if res.Queued {
		t := time.NewTimer(handleTimeout)
		defer t.Stop()
		select {
		case ok := <-handled:
			if !ok {
				return fmt.Errorf("mail %s was not stored by the bridge", msgID)
			}
		case <-t.C:
			return fmt.Errorf("mail %s not handled within %s", msgID, handleTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	} else if !res.Ignored {
		select {
		case ok := <-handled:
			if !ok {
				return fmt.Errorf("mail %s was not stored by the bridge", msgID)
			}
		default:
		}
	}
	if base := msgconv.BaseSubject(e.Subject); base != "" && cl.conn.store != nil {
		if err := cl.conn.store.SetThreadSubject(ctx, string(cl.login.ID), base, string(portalID)); err != nil {
			log.Warn().Err(err).Msg("Failed to index thread subject")
		}
	}
	return nil
}

// convert runs inside the portal's event loop: it updates the thread state and converts the mail.
func (cl *Client) convert(ctx context.Context, portal *bridgev2.Portal, intent bridgev2.MatrixAPI, e *msgconv.Email, msgID string, realID bool) (*bridgev2.ConvertedMessage, error) {
	meta, _ := portal.Metadata.(*PortalMetadata)
	if meta == nil {
		meta = &PortalMetadata{}
		portal.Metadata = meta
	}
	first := meta.LastMessageID == "" && len(meta.Participants) == 0
	meta.observe(e, msgID, realID)
	if err := portal.Save(ctx); err != nil {
		zerolog.Ctx(ctx).Err(err).Msg("Failed to save thread state")
	}
	upload := func(ctx context.Context, data []byte, fileName, mimeType string) (id.ContentURIString, error) {
		uri, file, err := intent.UploadMedia(ctx, portal.MXID, data, fileName, mimeType)
		if err != nil {
			return "", err
		}
		if uri == "" && file != nil {
			return "", errors.New("encrypted portal rooms are not supported for email attachments yet")
		}
		return uri, nil
	}
	return msgconv.ToMatrixWith(ctx, e, upload, msgconv.MatrixOptions{SubjectLine: first})
}

// resolveThread finds the portal of a mail: a known message among its References/In-Reply-To, else the thread
// root it names, else (no threading headers, reply-style subject) the newest thread with the same base subject,
// else a new thread rooted at the mail itself.
func (cl *Client) resolveThread(ctx context.Context, e *msgconv.Email, msgID string) (networkid.PortalID, error) {
	db := cl.conn.br.DB.Message
	lookup := func(id string) (networkid.PortalID, error) {
		msg, err := db.GetFirstPartByID(ctx, cl.login.ID, networkid.MessageID(id))
		if err != nil {
			return "", fmt.Errorf("look up message %s: %w", id, err)
		}
		if msg != nil {
			return msg.Room.ID, nil
		}
		return "", nil
	}
	cands := msgconv.ThreadCandidates(e)
	for _, c := range append(append([]string(nil), cands...), msgID) {
		if p, err := lookup(c); err != nil || p != "" {
			return p, err
		}
	}
	if len(cands) > 0 {
		return networkid.PortalID(cands[0]), nil
	}
	base := msgconv.BaseSubject(e.Subject)
	if base != "" && base != strings.TrimSpace(e.Subject) && cl.conn.store != nil {
		p, err := cl.conn.store.ThreadBySubject(ctx, string(cl.login.ID), base)
		if err != nil {
			return "", err
		}
		if p != "" {
			return networkid.PortalID(p), nil
		}
	}
	return networkid.PortalID(msgID), nil
}
