package email

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"path"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/bridges/email/msgconv"
)

// ErrNoRecipients is returned by HandleMatrixMessage when the thread has nobody but the user to write to.
var ErrNoRecipients = errors.New("this thread has no other participant to send to")

// HandleMatrixMessage implements bridgev2.NetworkAPI: the user's message becomes a reply to the thread's newest
// mail (In-Reply-To, References, one "Re: " subject) addressed to the thread's participants, sent over SMTP
// and copied to the Sent folder. Its Message-ID is derived from the Matrix event ID, so a retried send of the
// same event produces the same Message-ID; that ID is the remote message ID, so the mail joins the thread
// and is not bridged again if it comes back over IMAP.
func (cl *Client) HandleMatrixMessage(ctx context.Context, msg *bridgev2.MatrixMessage) (*bridgev2.MatrixMessageResponse, error) {
	acct, err := cl.account()
	if err != nil {
		return nil, err
	}
	meta, _ := msg.Portal.Metadata.(*PortalMetadata)
	if meta == nil {
		meta = &PortalMetadata{}
		msg.Portal.Metadata = meta
	}
	self := cl.self()
	text, html := msgconv.FromMatrix(msg.Content)
	out, err := buildReply(acct, meta, msg.Event.ID, msg.Event.Timestamp, text, html)
	if err != nil {
		return nil, err
	}
	out.From.Name = cl.senderName(ctx, msg)
	if msg.ReplyTo != nil && !strings.HasPrefix(string(msg.ReplyTo.ID), "synth-") {
		// The user answered a specific earlier mail: point In-Reply-To at it (References keep the full chain).
		out.InReplyTo = string(msg.ReplyTo.ID)
	}
	if msg.Content.MsgType.IsMedia() {
		att, err := cl.downloadAttachment(ctx, msg)
		if err != nil {
			return nil, err
		}
		out.Attachments = append(out.Attachments, *att)
	}
	if _, err := deliverReply(ctx, acct, cl.conn.cfg.AllowInsecure, out); err != nil {
		return nil, err
	}
	log := zerolog.Ctx(ctx)
	meta.observeSent(out.MessageID)
	if err := msg.Portal.Save(ctx); err != nil {
		log.Err(err).Msg("Failed to save thread state after sending")
	}
	return &bridgev2.MatrixMessageResponse{DB: &database.Message{
		ID:        networkid.MessageID(out.MessageID),
		SenderID:  networkid.UserID(self),
		Timestamp: out.Date,
	}}, nil
}

// senderName is the display name for the From header of a reply: the Matrix sender's display name in the
// portal room. A relayed message (another Matrix user writing through this login) and a sender without a
// usable name get none, so the mail shows only the address.
func (cl *Client) senderName(ctx context.Context, msg *bridgev2.MatrixMessage) string {
	if msg.OrigSender != nil || msg.Event == nil || msg.Portal == nil || msg.Portal.MXID == "" ||
		cl.conn.br == nil || cl.conn.br.Matrix == nil {
		return ""
	}
	member, err := cl.conn.br.Matrix.GetMemberInfo(ctx, msg.Portal.MXID, msg.Event.Sender)
	if err != nil || member == nil {
		if err != nil {
			zerolog.Ctx(ctx).Debug().Err(err).Msg("Cannot get the sender's display name for the From header")
		}
		return ""
	}
	name := strings.TrimSpace(member.Displayname)
	if name == "" || strings.EqualFold(name, cl.self()) || name == msg.Event.Sender.String() {
		return ""
	}
	return name
}

// downloadAttachment fetches the Matrix media of a file/image/video/audio message.
func (cl *Client) downloadAttachment(ctx context.Context, msg *bridgev2.MatrixMessage) (*msgconv.Attachment, error) {
	c := msg.Content
	uri := c.URL
	if c.File != nil {
		uri = c.File.URL
	}
	if max := cl.conn.maxAttachmentBytes(); max > 0 && c.Info != nil && int64(c.Info.Size) > max {
		return nil, fmt.Errorf("file is %d bytes, over the email bridge's %d byte limit", c.Info.Size, max)
	}
	data, err := msg.Portal.Bridge.Bot.DownloadMedia(ctx, uri, c.File)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", uri, err)
	}
	name := c.FileName
	if name == "" {
		name = c.Body
	}
	mimeType := ""
	if c.Info != nil {
		mimeType = c.Info.MimeType
	}
	if mimeType == "" {
		mimeType = mime.TypeByExtension(path.Ext(name))
	}
	if mimeType == "" {
		mimeType = "application/octet-stream"
	}
	if name == "" {
		name = defaultFileName(c.MsgType)
	}
	return &msgconv.Attachment{Filename: name, ContentType: mimeType, Size: int64(len(data)), Data: data}, nil
}

func defaultFileName(t event.MessageType) string {
	switch t {
	case event.MsgImage:
		return "image"
	case event.MsgVideo:
		return "video"
	case event.MsgAudio:
		return "audio"
	}
	return "file"
}

// buildReply addresses a reply by the account's owner to the thread described by meta.
func buildReply(acct *Account, meta *PortalMetadata, eventID id.EventID, tsMillis int64, text, html string) (*msgconv.Outgoing, error) {
	to, cc := meta.recipients(acct.Address)
	if len(to) == 0 {
		return nil, ErrNoRecipients
	}
	date := time.UnixMilli(tsMillis)
	if tsMillis == 0 {
		date = time.Now()
	}
	return &msgconv.Outgoing{
		From:       msgconv.Address{Email: acct.Address},
		To:         to,
		Cc:         cc,
		Subject:    msgconv.ReplySubject(meta.Subject),
		InReplyTo:  meta.LastMessageID,
		References: meta.References,
		MessageID:  msgconv.MessageIDFor(eventID, domainOf(acct.Address)),
		Date:       date,
		Text:       text,
		HTML:       html,
	}, nil
}

// deliverReply composes out, sends it over SMTP to every To and Cc address and keeps a copy in the Sent folder
// (a failed copy is logged, not returned: the mail is already out). It returns the composed message.
func deliverReply(ctx context.Context, acct *Account, allowInsecure bool, out *msgconv.Outgoing) ([]byte, error) {
	raw, err := msgconv.Compose(out)
	if err != nil {
		return nil, fmt.Errorf("compose reply: %w", err)
	}
	rcpts := make([]string, 0, len(out.To)+len(out.Cc))
	for _, a := range append(append([]msgconv.Address(nil), out.To...), out.Cc...) {
		rcpts = append(rcpts, a.Email)
	}
	if err := SendMail(ctx, acct, allowInsecure, acct.Address, rcpts, raw); err != nil {
		return nil, err
	}
	log := zerolog.Ctx(ctx)
	log.Debug().Str("message_id", out.MessageID).Int("recipients", len(rcpts)).Msg("Reply sent over SMTP")
	if folder, err := AppendSent(ctx, acct, allowInsecure, raw, out.MessageID, out.Date); err != nil {
		log.Warn().Err(err).Msg("Failed to store a copy in the Sent folder")
	} else {
		log.Debug().Str("folder", folder).Msg("Reply stored in Sent folder")
	}
	return raw, nil
}
