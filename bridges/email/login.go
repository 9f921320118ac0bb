package email

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/bridgev2/status"
)

// LoginFlowID is the only login flow: the user types their mailbox settings and password.
const LoginFlowID = "login"

// Step IDs of the login flow.
const (
	stepAddress  = "net.passerelle.email.address"
	stepSettings = "net.passerelle.email.settings"
	stepChecking = "net.passerelle.email.checking"
	stepComplete = "net.passerelle.email.complete"
)

// Login input field IDs, in the order the bot asks for them.
const (
	fieldEmail        = "email"
	fieldIMAPHost     = "imap_host"
	fieldIMAPPort     = "imap_port"
	fieldIMAPSecurity = "imap_security"
	fieldSMTPHost     = "smtp_host"
	fieldSMTPPort     = "smtp_port"
	fieldSMTPSecurity = "smtp_security"
	fieldUsername     = "username"
	fieldPassword     = "password"
)

// GetLoginFlows implements bridgev2.NetworkConnector.
func (c *Connector) GetLoginFlows() []bridgev2.LoginFlow {
	return []bridgev2.LoginFlow{{
		Name:        "Email account",
		Description: "Connect a mailbox with its IMAP and SMTP settings and password",
		ID:          LoginFlowID,
	}}
}

// CreateLogin implements bridgev2.NetworkConnector.
func (c *Connector) CreateLogin(_ context.Context, user *bridgev2.User, flowID string) (bridgev2.LoginProcess, error) {
	if flowID != LoginFlowID {
		return nil, fmt.Errorf("unknown login flow %q", flowID)
	}
	return &LoginProcess{conn: c, user: user}, nil
}

// LoginProcess asks for the address first, then the server settings with defaults guessed from the address's
// domain, and checks the credentials against both servers before anything is stored.
type LoginProcess struct {
	conn    *Connector
	user    *bridgev2.User
	address string
	// pending is the account from the settings step, checked against the servers in Wait.
	pending *Account
}

var (
	_ bridgev2.LoginProcessUserInput      = (*LoginProcess)(nil)
	_ bridgev2.LoginProcessDisplayAndWait = (*LoginProcess)(nil)
)

// errInsecureRefused is what the security prompt answers to "none" while plaintext is not allowed.
var errInsecureRefused = errors.New(`security "none" sends your password in clear text and is disabled on this bridge ` +
	`(bridges.email.allow_insecure is false); choose tls or starttls`)

// Start implements bridgev2.LoginProcess.
func (lp *LoginProcess) Start(context.Context) (*bridgev2.LoginStep, error) {
	return &bridgev2.LoginStep{
		Type:         bridgev2.LoginStepTypeUserInput,
		StepID:       stepAddress,
		Instructions: "Connect your mailbox. You will be asked for the address, the IMAP and SMTP servers and the password.",
		UserInputParams: &bridgev2.LoginUserInputParams{Fields: []bridgev2.LoginInputDataField{{
			Type:        bridgev2.LoginInputFieldTypeEmail,
			ID:          fieldEmail,
			Name:        "email address",
			Description: "The address your correspondents write to, e.g. alice@example.org",
			Validate:    validateAddress,
		}}},
	}, nil
}

func validateAddress(s string) (string, error) {
	a, err := mail.ParseAddress(strings.TrimSpace(s))
	if err != nil || !strings.Contains(a.Address, "@") {
		return "", errors.New("not an email address")
	}
	return strings.ToLower(a.Address), nil
}

// Cancel implements bridgev2.LoginProcess. Nothing is held between steps.
func (lp *LoginProcess) Cancel() {}

// SubmitUserInput implements bridgev2.LoginProcessUserInput.
func (lp *LoginProcess) SubmitUserInput(ctx context.Context, input map[string]string) (*bridgev2.LoginStep, error) {
	if lp.address == "" {
		addr, err := validateAddress(input[fieldEmail])
		if err != nil {
			return nil, err
		}
		lp.address = addr
		return lp.settingsStep(), nil
	}
	acct, err := lp.accountFrom(input)
	if err != nil {
		return nil, err
	}
	lp.pending = acct
	// Checking the servers can take a while (a server that accepts the connection but never answers costs the
	// whole check timeout), so the user is told now, and the check runs in Wait.
	return &bridgev2.LoginStep{
		Type:   bridgev2.LoginStepTypeDisplayAndWait,
		StepID: stepChecking,
		Instructions: fmt.Sprintf("Checking your password with IMAP %s and SMTP %s, this can take up to %s per server…",
			acct.IMAP.Addr(), acct.SMTP.Addr(), lp.conn.loginCheckTimeout()),
		DisplayAndWaitParams: &bridgev2.LoginDisplayAndWaitParams{Type: bridgev2.LoginDisplayTypeNothing},
	}, nil
}

// Wait implements bridgev2.LoginProcessDisplayAndWait: it checks the settings from the previous step against
// both servers and stores the login.
func (lp *LoginProcess) Wait(ctx context.Context) (*bridgev2.LoginStep, error) {
	acct := lp.pending
	if acct == nil {
		return nil, errors.New("no server settings to check")
	}
	lp.pending = nil
	return lp.finish(ctx, acct)
}

func (lp *LoginProcess) settingsStep() *bridgev2.LoginStep {
	imapSrv, smtpSrv := DefaultServers(lp.address)
	secOpts := []string{string(SecurityTLS), string(SecurityStartTLS), string(SecurityNone)}
	field := func(id, name, desc, def string, typ bridgev2.LoginInputFieldType) bridgev2.LoginInputDataField {
		f := bridgev2.LoginInputDataField{Type: typ, ID: id, Name: name, Description: desc, DefaultValue: def}
		if def != "" {
			f.Optional = true
			f.Description = strings.TrimSpace(desc + " (default: " + def + ")")
		}
		return f
	}
	secField := func(id, name, def string) bridgev2.LoginInputDataField {
		f := field(id, name, "tls, starttls or none.", def, bridgev2.LoginInputFieldTypeSelect)
		f.Options = secOpts
		f.Validate = func(s string) (string, error) {
			if s == "" {
				return "", nil
			}
			sec, err := ParseSecurity(s)
			if err != nil {
				return "", err
			}
			if sec == SecurityNone && !lp.conn.cfg.AllowInsecure {
				return "", errInsecureRefused
			}
			return string(sec), nil
		}
		return f
	}
	portField := func(id, name, desc string) bridgev2.LoginInputDataField {
		f := field(id, name, desc, "", bridgev2.LoginInputFieldTypeUsername)
		f.Optional = true
		f.Description += " Send skip for the usual port of the security you choose."
		f.Validate = func(s string) (string, error) {
			if s == "" {
				return "", nil
			}
			if _, err := parsePort(s); err != nil {
				return "", err
			}
			return strings.TrimSpace(s), nil
		}
		return f
	}
	fields := []bridgev2.LoginInputDataField{
		field(fieldIMAPHost, "IMAP server", "Host name of the incoming mail server.", imapSrv.Host, bridgev2.LoginInputFieldTypeDomain),
		portField(fieldIMAPPort, "IMAP port", "Usually 993 (tls) or 143 (starttls)."),
		secField(fieldIMAPSecurity, "IMAP security", string(imapSrv.Security)),
		field(fieldSMTPHost, "SMTP server", "Host name of the outgoing mail server.", smtpSrv.Host, bridgev2.LoginInputFieldTypeDomain),
		portField(fieldSMTPPort, "SMTP port", "Usually 465 (tls) or 587 (starttls)."),
		secField(fieldSMTPSecurity, "SMTP security", string(smtpSrv.Security)),
		field(fieldUsername, "user name", "The login name for both servers.", lp.address, bridgev2.LoginInputFieldTypeUsername),
		{Type: bridgev2.LoginInputFieldTypePassword, ID: fieldPassword, Name: "password",
			Description: "Your mailbox password or app password. It is stored encrypted and your message is redacted."},
	}
	return &bridgev2.LoginStep{
		Type:   bridgev2.LoginStepTypeUserInput,
		StepID: stepSettings,
		Instructions: fmt.Sprintf("Server settings for %s. Suggested: IMAP %s (%s), SMTP %s (%s). Send skip to accept a suggestion.",
			lp.address, imapSrv.Addr(), imapSrv.Security, smtpSrv.Addr(), smtpSrv.Security),
		UserInputParams: &bridgev2.LoginUserInputParams{Fields: fields},
	}
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return n, nil
}

// accountFrom fills an Account from the settings step, using the suggested values for skipped fields.
func (lp *LoginProcess) accountFrom(input map[string]string) (*Account, error) {
	imapSrv, smtpSrv := DefaultServers(lp.address)
	acct := &Account{Address: lp.address, IMAP: imapSrv, SMTP: smtpSrv, Username: lp.address}
	val := func(k string) string { return strings.TrimSpace(input[k]) }
	if v := val(fieldIMAPHost); v != "" {
		acct.IMAP.Host = v
	}
	if v := val(fieldSMTPHost); v != "" {
		acct.SMTP.Host = v
	}
	for _, s := range []struct {
		srv          *Server
		proto        string
		secKey, port string
	}{{&acct.IMAP, "imap", fieldIMAPSecurity, fieldIMAPPort}, {&acct.SMTP, "smtp", fieldSMTPSecurity, fieldSMTPPort}} {
		if v := val(s.secKey); v != "" {
			sec, err := ParseSecurity(v)
			if err != nil {
				return nil, err
			}
			s.srv.Security = sec
		}
		if s.srv.Security == SecurityNone && !lp.conn.cfg.AllowInsecure {
			return nil, errInsecureRefused
		}
		s.srv.Port = DefaultPort(s.proto, s.srv.Security)
		if v := val(s.port); v != "" {
			p, err := parsePort(v)
			if err != nil {
				return nil, err
			}
			s.srv.Port = p
		}
		if s.srv.Host == "" {
			return nil, fmt.Errorf("%s server host is required", strings.ToUpper(s.proto))
		}
	}
	if v := val(fieldUsername); v != "" {
		acct.Username = v
	}
	acct.Password = input[fieldPassword]
	if acct.Password == "" {
		return nil, errors.New("the password is required")
	}
	return acct, nil
}

// finish checks the credentials on both servers, then stores the login with the password sealed.
func (lp *LoginProcess) finish(ctx context.Context, acct *Account) (*bridgev2.LoginStep, error) {
	c := lp.conn
	insecure := c.cfg.AllowInsecure
	st, err := checkIMAP(ctx, acct, insecure, c.loginCheckTimeout())
	if err != nil {
		return nil, err
	}
	if err := checkSMTP(ctx, acct, insecure, c.loginCheckTimeout()); err != nil {
		return nil, err
	}
	sealed, err := c.sealer.Seal(acct.Password)
	if err != nil {
		return nil, fmt.Errorf("seal password: %w", err)
	}
	meta := &UserLoginMetadata{
		Address:  acct.Address,
		IMAPHost: acct.IMAP.Host, IMAPPort: acct.IMAP.Port, IMAPSecurity: acct.IMAP.Security,
		SMTPHost: acct.SMTP.Host, SMTPPort: acct.SMTP.Port, SMTPSecurity: acct.SMTP.Security,
		Username: acct.Username, SealedPassword: sealed,
	}
	loginID := networkid.UserLoginID(acct.Address)
	// Start bridging from the moment the credentials were checked, unless this mailbox was bridged before
	// (a re-login keeps its position so mail that arrived meanwhile is not lost).
	if c.store != nil {
		if _, found, err := c.store.LoadState(ctx, string(loginID), "INBOX"); err != nil {
			return nil, err
		} else if !found {
			if err := c.store.SaveState(ctx, string(loginID), "INBOX", st); err != nil {
				return nil, err
			}
		}
	}
	ul, err := lp.user.NewLogin(ctx, &database.UserLogin{
		ID:         loginID,
		RemoteName: acct.Address,
		RemoteProfile: status.RemoteProfile{
			Email: acct.Address,
			Name:  acct.Address,
		},
		Metadata: meta,
	}, &bridgev2.NewLoginParams{
		// A mailbox bridged by another Matrix user is refused rather than taken over: both know the password (a
		// shared office mailbox), and silently logging the first one out would lose their bridge.
		DeleteOnConflict: false,
	})
	if err != nil {
		return nil, fmt.Errorf("save login: %w", err)
	}
	go ul.Client.Connect(ul.Log.WithContext(c.br.BackgroundCtx))
	return &bridgev2.LoginStep{
		Type:         bridgev2.LoginStepTypeComplete,
		StepID:       stepComplete,
		Instructions: fmt.Sprintf("Logged in as %s. New mail will appear as rooms, one per thread.", acct.Address),
		CompleteParams: &bridgev2.LoginCompleteParams{
			UserLoginID: ul.ID,
			UserLogin:   ul,
		},
	}, nil
}
