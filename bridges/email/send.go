package email

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

// SendMail submits one composed message over the account's SMTP server (PLAIN auth, TLS per the account) to
// rcpts, with from as the envelope sender. The message size goes into MAIL FROM (SIZE=) so a server can refuse
// an oversized message before the data is sent. Every recipient must be accepted.
func SendMail(ctx context.Context, acct *Account, allowInsecure bool, from string, rcpts []string, msg []byte) error {
	if len(rcpts) == 0 {
		return errors.New("no recipients")
	}
	c, err := dialSMTP(ctx, acct, allowInsecure)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	if err := c.Mail(from, &smtp.MailOptions{Size: int64(len(msg))}); err != nil {
		return fmt.Errorf("SMTP MAIL FROM refused by %s: %w", acct.SMTP.Addr(), err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return fmt.Errorf("SMTP server %s refused recipient %s: %w", acct.SMTP.Addr(), r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("SMTP DATA refused by %s: %w", acct.SMTP.Addr(), err)
	}
	if _, err := w.Write(msg); err != nil {
		_ = w.Close()
		return fmt.Errorf("SMTP send to %s: %w", acct.SMTP.Addr(), err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("SMTP server %s did not accept the message: %w", acct.SMTP.Addr(), err)
	}
	_ = c.Quit()
	return nil
}

// sentNames are the usual names of the sent-mail folder, tried in order when no folder has \Sent.
var sentNames = []string{"Sent", "Sent Items", "Sent Messages", "INBOX.Sent", "INBOX/Sent"}

// AppendSent stores a copy of a sent message, flagged \Seen, in the account's sent folder: the folder with the
// \Sent special-use attribute, else one with a usual name, else a new "Sent". When a message with the same
// Message-ID is already there (a retried send) nothing is appended. It returns the folder used.
func AppendSent(ctx context.Context, acct *Account, allowInsecure bool, msg []byte, messageID string, date time.Time) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*dialTimeout+2*time.Minute)
	defer cancel()
	c, err := dialIMAP(ctx, acct, allowInsecure, nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()

	mailbox, err := findSentMailbox(c)
	if err != nil {
		return "", err
	}
	if messageID != "" {
		if _, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err == nil {
			data, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{
				{Key: "Message-ID", Value: "<" + messageID + ">"},
			}}, nil).Wait()
			if err == nil && len(data.AllUIDs()) > 0 {
				_ = c.Logout().Wait()
				return mailbox, nil
			}
			_ = c.Unselect().Wait()
		}
	}
	cmd := c.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}, Time: date})
	if _, err := cmd.Write(msg); err != nil {
		_ = cmd.Close()
		return "", fmt.Errorf("append to %s: %w", mailbox, err)
	}
	if err := cmd.Close(); err != nil {
		return "", fmt.Errorf("append to %s: %w", mailbox, err)
	}
	if _, err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("append to %s: %w", mailbox, err)
	}
	_ = c.Logout().Wait()
	return mailbox, nil
}

func findSentMailbox(c *imapclient.Client) (string, error) {
	opts := &imap.ListOptions{}
	if c.Caps().Has(imap.CapSpecialUse) {
		opts.ReturnSpecialUse = true
	}
	list, err := c.List("", "*", opts).Collect()
	if err != nil {
		return "", fmt.Errorf("list folders: %w", err)
	}
	byName := make(map[string]string, len(list))
	for _, mb := range list {
		for _, a := range mb.Attrs {
			if strings.EqualFold(string(a), string(imap.MailboxAttrSent)) {
				return mb.Mailbox, nil
			}
		}
		byName[strings.ToLower(mb.Mailbox)] = mb.Mailbox
	}
	for _, n := range sentNames {
		if real, ok := byName[strings.ToLower(n)]; ok {
			return real, nil
		}
	}
	if err := c.Create("Sent", &imap.CreateOptions{}).Wait(); err != nil {
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeAlreadyExists {
			return "", fmt.Errorf("create Sent folder: %w", err)
		}
	}
	_ = c.Subscribe("Sent").Wait()
	return "Sent", nil
}
