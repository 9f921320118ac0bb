package email

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"mime"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Security is how a connection to a mail server is protected.
type Security string

// The connection security modes a login may choose.
const (
	// SecurityTLS is implicit TLS from the first byte (IMAPS 993, SMTPS 465).
	SecurityTLS Security = "tls"
	// SecurityStartTLS upgrades a plaintext connection with STARTTLS (IMAP 143, submission 587).
	SecurityStartTLS Security = "starttls"
	// SecurityNone is plaintext; only allowed when the bridge config sets allow_insecure.
	SecurityNone Security = "none"
)

// ParseSecurity accepts the user's spelling of a security mode.
func ParseSecurity(s string) (Security, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tls", "ssl", "ssl/tls", "implicit":
		return SecurityTLS, nil
	case "starttls", "start_tls", "start-tls":
		return SecurityStartTLS, nil
	case "none", "plain", "plaintext", "insecure":
		return SecurityNone, nil
	}
	return "", fmt.Errorf("unknown security %q (use tls, starttls or none)", s)
}

// Server is one endpoint of a mailbox account.
type Server struct {
	Host     string   `json:"host"`
	Port     int      `json:"port"`
	Security Security `json:"security"`
}

// Addr is host:port.
func (s Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Account is everything needed to reach one mailbox. Password is the clear-text secret and is never
// serialised as is: UserLoginMetadata keeps it sealed.
type Account struct {
	Address  string
	IMAP     Server
	SMTP     Server
	Username string
	Password string
}

// ErrAuthFailed is wrapped by the errors of CheckIMAP/CheckSMTP and the mailbox loop when the server refused
// the user name or password (as opposed to a network failure).
var ErrAuthFailed = errors.New("authentication failed")

// dialTimeout bounds TCP connect plus TLS handshake: a mail server that does not answer in this time is
// treated as down and retried with backoff.
const dialTimeout = 20 * time.Second

// defaultCommandTimeout bounds a single small IMAP/SMTP command (LOGIN, SELECT, NOOP, ending IDLE).
const defaultCommandTimeout = 30 * time.Second

// knownProviders gives the usual servers for big providers whose hosts do not follow imap.<domain>.
var knownProviders = map[string][2]Server{
	"gmail.com":      {{"imap.gmail.com", 993, SecurityTLS}, {"smtp.gmail.com", 465, SecurityTLS}},
	"googlemail.com": {{"imap.gmail.com", 993, SecurityTLS}, {"smtp.gmail.com", 465, SecurityTLS}},
	"outlook.com":    {{"outlook.office365.com", 993, SecurityTLS}, {"smtp.office365.com", 587, SecurityStartTLS}},
	"hotmail.com":    {{"outlook.office365.com", 993, SecurityTLS}, {"smtp.office365.com", 587, SecurityStartTLS}},
	"live.com":       {{"outlook.office365.com", 993, SecurityTLS}, {"smtp.office365.com", 587, SecurityStartTLS}},
	"yahoo.com":      {{"imap.mail.yahoo.com", 993, SecurityTLS}, {"smtp.mail.yahoo.com", 465, SecurityTLS}},
	"icloud.com":     {{"imap.mail.me.com", 993, SecurityTLS}, {"smtp.mail.me.com", 587, SecurityStartTLS}},
	"me.com":         {{"imap.mail.me.com", 993, SecurityTLS}, {"smtp.mail.me.com", 587, SecurityStartTLS}},
	"fastmail.com":   {{"imap.fastmail.com", 993, SecurityTLS}, {"smtp.fastmail.com", 465, SecurityTLS}},
	"posteo.de":      {{"posteo.de", 993, SecurityTLS}, {"posteo.de", 465, SecurityTLS}},
}

// DefaultServers guesses the IMAP and SMTP servers of an address: a table of big providers, else the common
// imap.<domain>:993 (TLS) and smtp.<domain>:587 (STARTTLS).
func DefaultServers(address string) (imapSrv, smtpSrv Server) {
	domain := strings.ToLower(domainOf(address))
	if p, ok := knownProviders[domain]; ok {
		return p[0], p[1]
	}
	if domain == "" {
		return Server{Port: 993, Security: SecurityTLS}, Server{Port: 587, Security: SecurityStartTLS}
	}
	return Server{Host: "imap." + domain, Port: 993, Security: SecurityTLS},
		Server{Host: "smtp." + domain, Port: 587, Security: SecurityStartTLS}
}

// DefaultPort is the usual port of a protocol ("imap" or "smtp") under a security mode.
func DefaultPort(proto string, sec Security) int {
	switch {
	case proto == "imap" && sec == SecurityTLS:
		return 993
	case proto == "imap":
		return 143
	case sec == SecurityTLS:
		return 465
	case sec == SecurityStartTLS:
		return 587
	default:
		return 25
	}
}

func domainOf(address string) string {
	if i := strings.LastIndexByte(address, '@'); i >= 0 {
		return address[i+1:]
	}
	return ""
}

// tlsRoots overrides the system's CA pool when set; only tests set it (to trust their own certificate).
var tlsRoots atomic.Pointer[x509.CertPool]

func tlsConfig(host string) *tls.Config {
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, RootCAs: tlsRoots.Load()}
}

// wordDecoder decodes RFC 2047 words in IMAP envelope data with every charset go-message knows (ISO-2022-JP,
// ks_c_5601, GB2312...): go-imap's default decoder returns those raw.
var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// dialFunc opens a TCP connection; tests replace it to put a fake or a proxy in between.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// dialIMAP connects and logs in. The returned client is authenticated; ctx bounds the whole operation.
func dialIMAP(ctx context.Context, acct *Account, allowInsecure bool, handler *imapclient.UnilateralDataHandler) (*imapclient.Client, error) {
	return dialIMAPWith(ctx, nil, acct, allowInsecure, handler)
}

func dialIMAPWith(ctx context.Context, dial dialFunc, acct *Account, allowInsecure bool, handler *imapclient.UnilateralDataHandler) (*imapclient.Client, error) {
	srv := acct.IMAP
	if srv.Security == SecurityNone && !allowInsecure {
		return nil, fmt.Errorf("IMAP connection to %s refused: security \"none\" sends the password in clear text and allow_insecure is off", srv.Addr())
	}
	opts := &imapclient.Options{
		TLSConfig:             tlsConfig(srv.Host),
		WordDecoder:           wordDecoder,
		UnilateralDataHandler: handler,
	}
	if dial == nil {
		dial = (&net.Dialer{Timeout: dialTimeout}).DialContext
	}
	conn, err := dial(ctx, "tcp", srv.Addr())
	if err != nil {
		return nil, fmt.Errorf("IMAP connection to %s failed: %w", srv.Addr(), err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	_ = conn.SetDeadline(connDeadline(ctx))
	var c *imapclient.Client
	switch srv.Security {
	case SecurityTLS:
		tc := tls.Client(conn, opts.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("IMAP TLS handshake with %s failed: %w", srv.Addr(), err)
		}
		c = imapclient.New(tc, opts)
	case SecurityStartTLS:
		c, err = imapclient.NewStartTLS(conn, opts)
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("IMAP STARTTLS with %s failed: %w", srv.Addr(), err)
		}
	default:
		c = imapclient.New(conn, opts)
	}
	if err := c.WaitGreeting(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("IMAP greeting from %s: %w", srv.Addr(), err)
	}
	if err := c.Login(acct.Username, acct.Password).Wait(); err != nil {
		_ = c.Close()
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo {
			return nil, fmt.Errorf("IMAP login to %s failed: %w", srv.Addr(), ErrAuthFailed)
		}
		return nil, fmt.Errorf("IMAP login to %s failed: %w", srv.Addr(), err)
	}
	_ = conn.SetDeadline(time.Time{})
	if ctx.Err() != nil {
		_ = c.Close()
		return nil, ctx.Err()
	}
	return c, nil
}

// dialSMTP connects, says EHLO and authenticates with PLAIN. A server that offers no AUTH is used
// unauthenticated only when allowInsecure is set (a local relay); otherwise that is an error.
func dialSMTP(ctx context.Context, acct *Account, allowInsecure bool) (*smtp.Client, error) {
	srv := acct.SMTP
	if srv.Security == SecurityNone && !allowInsecure {
		return nil, fmt.Errorf("SMTP connection to %s refused: security \"none\" sends the password in clear text and allow_insecure is off", srv.Addr())
	}
	d := &net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", srv.Addr())
	if err != nil {
		return nil, fmt.Errorf("SMTP connection to %s failed: %w", srv.Addr(), err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	_ = conn.SetDeadline(connDeadline(ctx))
	var c *smtp.Client
	switch srv.Security {
	case SecurityTLS:
		tc := tls.Client(conn, tlsConfig(srv.Host))
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("SMTP TLS handshake with %s failed: %w", srv.Addr(), err)
		}
		c = smtp.NewClient(tc)
	case SecurityStartTLS:
		c, err = smtp.NewClientStartTLS(conn, tlsConfig(srv.Host))
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("SMTP STARTTLS with %s failed: %w", srv.Addr(), err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = defaultCommandTimeout
	// go-smtp's STARTTLS path has already said EHLO (as "localhost") before the upgrade; Hello is only allowed
	// before that.
	if srv.Security != SecurityStartTLS {
		if err := c.Hello(heloName(acct.Address)); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("SMTP greeting from %s: %w", srv.Addr(), err)
		}
	}
	if ok, _ := c.Extension("AUTH"); ok {
		if err := c.Auth(sasl.NewPlainClient("", acct.Username, acct.Password)); err != nil {
			_ = c.Close()
			var se *smtp.SMTPError
			if errors.As(err, &se) && (se.Code == 535 || se.Code == 534 || se.Code == 530) {
				return nil, fmt.Errorf("SMTP login to %s failed: %w", srv.Addr(), ErrAuthFailed)
			}
			return nil, fmt.Errorf("SMTP login to %s failed: %w", srv.Addr(), err)
		}
	} else if !allowInsecure {
		_ = c.Close()
		return nil, fmt.Errorf("SMTP server %s offers no authentication", srv.Addr())
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// heloName is the name we greet SMTP servers with: the address's domain is the best public name we know.
func heloName(address string) string {
	if d := domainOf(address); d != "" {
		return d
	}
	return "localhost"
}

// LoginCheckTimeout bounds each server check of a login (connect, greeting, authentication and, for IMAP,
// selecting INBOX), so a server that accepts the connection but never answers fails the login quickly.
const LoginCheckTimeout = 15 * time.Second

// connDeadline is when a freshly dialled connection must have finished its greeting and authentication: the
// dial timeout, or ctx's deadline if that is sooner.
func connDeadline(ctx context.Context) time.Time {
	d := time.Now().Add(dialTimeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		return cd
	}
	return d
}

// checkTimedOut replaces err by a clear message when the check ran out of time (checkCtx expired while the
// caller's ctx did not).
func checkTimedOut(ctx, checkCtx context.Context, proto, addr string, timeout time.Duration, err error) error {
	if ctx.Err() == nil && (errors.Is(checkCtx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
		return fmt.Errorf("%s server %s did not answer within %s: check the host, port and security", proto, addr, timeout)
	}
	return err
}

// CheckIMAP logs in to the account's IMAP server and selects INBOX, within LoginCheckTimeout. It returns the
// INBOX's UIDVALIDITY and UIDNEXT so a new login starts bridging from "now".
func CheckIMAP(ctx context.Context, acct *Account, allowInsecure bool) (MailboxState, error) {
	return checkIMAP(ctx, acct, allowInsecure, LoginCheckTimeout)
}

func checkIMAP(parent context.Context, acct *Account, allowInsecure bool, timeout time.Duration) (MailboxState, error) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	c, err := dialIMAP(ctx, acct, allowInsecure, nil)
	if err != nil {
		return MailboxState{}, checkTimedOut(parent, ctx, "IMAP", acct.IMAP.Addr(), timeout, err)
	}
	defer func() { _ = c.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return MailboxState{}, checkTimedOut(parent, ctx, "IMAP", acct.IMAP.Addr(), timeout,
			fmt.Errorf("IMAP select INBOX on %s failed: %w", acct.IMAP.Addr(), err))
	}
	_ = c.Logout().Wait()
	last := uint32(0)
	if sel.UIDNext > 0 {
		last = uint32(sel.UIDNext) - 1
	}
	return MailboxState{UIDValidity: sel.UIDValidity, LastUID: last, Updated: time.Now()}, nil
}

// CheckSMTP logs in to the account's SMTP server and quits, within LoginCheckTimeout.
func CheckSMTP(ctx context.Context, acct *Account, allowInsecure bool) error {
	return checkSMTP(ctx, acct, allowInsecure, LoginCheckTimeout)
}

func checkSMTP(parent context.Context, acct *Account, allowInsecure bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	c, err := dialSMTP(ctx, acct, allowInsecure)
	if err != nil {
		return checkTimedOut(parent, ctx, "SMTP", acct.SMTP.Addr(), timeout, err)
	}
	_ = c.Quit()
	return nil
}
