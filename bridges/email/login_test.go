package email

import (
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/bridgev2"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/internal/testenv"
)

func TestDefaultServers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		addr       string
		imap, smtp string
	}{
		{"alice@example.org", "imap.example.org:993", "smtp.example.org:587"},
		{"Bob@GMAIL.com", "imap.gmail.com:993", "smtp.gmail.com:465"},
		{"c@outlook.com", "outlook.office365.com:993", "smtp.office365.com:587"},
		{"nodomain", ":993", ":587"},
	}
	for _, c := range cases {
		i, s := DefaultServers(c.addr)
		if i.Addr() != c.imap || s.Addr() != c.smtp {
			t.Errorf("DefaultServers(%q) = %s, %s; want %s, %s", c.addr, i.Addr(), s.Addr(), c.imap, c.smtp)
		}
	}
	if p := DefaultPort("imap", SecurityStartTLS); p != 143 {
		t.Errorf("IMAP STARTTLS port %d", p)
	}
	if p := DefaultPort("smtp", SecurityTLS); p != 465 {
		t.Errorf("SMTP TLS port %d", p)
	}
	for in, want := range map[string]Security{"TLS": SecurityTLS, "ssl": SecurityTLS, "StartTLS": SecurityStartTLS, "none": SecurityNone} {
		if got, err := ParseSecurity(in); err != nil || got != want {
			t.Errorf("ParseSecurity(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseSecurity("maybe"); err == nil {
		t.Error("ParseSecurity accepted nonsense")
	}
}

func TestLoginFlowAsksEverythingInOrderWithDefaults(t *testing.T) {
	t.Parallel()
	c := NewConnector(configs.Default().Bridges.Email)
	if flows := c.GetLoginFlows(); len(flows) != 1 || flows[0].ID != "login" {
		t.Fatalf("login flows %+v", flows)
	}
	lp, err := c.CreateLogin(t.Context(), nil, "login")
	if err != nil {
		t.Fatal(err)
	}
	step, err := lp.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if step.Type != bridgev2.LoginStepTypeUserInput || len(step.UserInputParams.Fields) != 1 || step.UserInputParams.Fields[0].ID != fieldEmail {
		t.Fatalf("first step %+v", step)
	}
	if _, err := validateAddress("not an address"); err == nil {
		t.Fatal("validateAddress accepted garbage")
	}
	step, err = lp.(*LoginProcess).SubmitUserInput(t.Context(), map[string]string{fieldEmail: "Alice@Example.ORG"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	defaults := map[string]string{}
	for _, f := range step.UserInputParams.Fields {
		ids = append(ids, f.ID)
		defaults[f.ID] = f.DefaultValue
		if f.ID == fieldPassword && (f.Type != bridgev2.LoginInputFieldTypePassword || f.Optional) {
			t.Errorf("password field %+v must be a required password field", f)
		}
	}
	want := []string{fieldIMAPHost, fieldIMAPPort, fieldIMAPSecurity, fieldSMTPHost, fieldSMTPPort, fieldSMTPSecurity, fieldUsername, fieldPassword}
	if !slices.Equal(ids, want) {
		t.Fatalf("fields %v, want %v", ids, want)
	}
	if defaults[fieldIMAPHost] != "imap.example.org" || defaults[fieldSMTPHost] != "smtp.example.org" ||
		defaults[fieldIMAPSecurity] != "tls" || defaults[fieldSMTPSecurity] != "starttls" || defaults[fieldUsername] != "alice@example.org" {
		t.Fatalf("defaults %v", defaults)
	}
	if !strings.Contains(step.Instructions, "imap.example.org:993") {
		t.Errorf("instructions do not show the suggestion: %q", step.Instructions)
	}
	// Skipped fields take the suggestions; the port follows the chosen security.
	acct, err := lp.(*LoginProcess).accountFrom(map[string]string{fieldIMAPSecurity: "starttls", fieldSMTPPort: "2525", fieldPassword: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if acct.IMAP.Addr() != "imap.example.org:143" || acct.IMAP.Security != SecurityStartTLS ||
		acct.SMTP.Addr() != "smtp.example.org:2525" || acct.Username != "alice@example.org" || acct.Password != "pw" {
		t.Fatalf("account from skipped fields: %+v", acct)
	}
	if _, err := lp.(*LoginProcess).accountFrom(map[string]string{fieldIMAPPort: "99999", fieldPassword: "pw"}); err == nil {
		t.Fatal("port 99999 accepted")
	}
	if _, err := lp.(*LoginProcess).accountFrom(map[string]string{}); err == nil {
		t.Fatal("empty password accepted")
	}
}

// loginInput is what a user types for the test servers.
func loginInput(ms *testenv.MailServers, user, password string) map[string]string {
	return map[string]string{
		fieldIMAPHost: ms.Host, fieldIMAPPort: strconv.Itoa(ms.IMAPPort), fieldIMAPSecurity: "none",
		fieldSMTPHost: ms.Host, fieldSMTPPort: strconv.Itoa(ms.SMTPPort), fieldSMTPSecurity: "none",
		fieldUsername: user, fieldPassword: password,
	}
}

func newTestConnector(t *testing.T, insecure bool) *Connector {
	t.Helper()
	cfg := configs.Default().Bridges.Email
	cfg.AllowInsecure = insecure
	c := NewConnector(cfg)
	c.SetDataDir(t.TempDir())
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "bridge-email.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	st, err := NewStore(t.Context(), db, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	c.store = st
	return c
}

func TestLoginWrongPasswordGivesClearErrorAndStoresNothing(t *testing.T) {
	t.Parallel()
	ms := testenv.Mail(t)
	acct := newMailbox(t, ms)
	c := newTestConnector(t, true)
	lp := &LoginProcess{conn: c}
	if _, err := lp.SubmitUserInput(t.Context(), map[string]string{fieldEmail: acct.Address}); err != nil {
		t.Fatal(err)
	}
	if _, err := lp.SubmitUserInput(t.Context(), loginInput(ms, acct.Address, "wrong-password")); err != nil {
		t.Fatal(err)
	}
	_, err := lp.Wait(t.Context())
	want := "IMAP login to " + ms.IMAPAddr + " failed: authentication failed"
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("error %v does not wrap ErrAuthFailed", err)
	}
	if strings.Contains(err.Error(), "wrong-password") {
		t.Fatal("error message contains the password")
	}
	if _, found, _ := c.store.LoadState(t.Context(), acct.Address, "INBOX"); found {
		t.Fatal("a failed login stored sync state")
	}
	// SMTP refuses the same way, with its own clear message.
	bad := *acct
	bad.Password = "wrong-password"
	err = CheckSMTP(t.Context(), &bad, true)
	if want := "SMTP login to " + ms.SMTPAddr + " failed: authentication failed"; err == nil || err.Error() != want {
		t.Fatalf("SMTP error %v, want %q", err, want)
	}
	// The right password passes both checks.
	if _, err := CheckIMAP(t.Context(), acct, true); err != nil {
		t.Fatalf("CheckIMAP with the right password: %v", err)
	}
	if err := CheckSMTP(t.Context(), acct, true); err != nil {
		t.Fatalf("CheckSMTP with the right password: %v", err)
	}
}

func TestLoginRefusesPlaintextUnlessAllowed(t *testing.T) {
	t.Parallel()
	ms := testenv.Mail(t)
	acct := newMailbox(t, ms)
	c := newTestConnector(t, false)
	lp := &LoginProcess{conn: c}
	if _, err := lp.SubmitUserInput(t.Context(), map[string]string{fieldEmail: acct.Address}); err != nil {
		t.Fatal(err)
	}
	_, err := lp.SubmitUserInput(t.Context(), loginInput(ms, acct.Address, acct.Password))
	if err == nil || !strings.Contains(err.Error(), "allow_insecure") {
		t.Fatalf("plaintext login with allow_insecure off: %v", err)
	}
}

func TestCheckIMAPUnreachableServer(t *testing.T) {
	t.Parallel()
	acct := &Account{Address: "a@x.test", IMAP: Server{Host: "127.0.0.1", Port: 1, Security: SecurityNone}, Username: "a", Password: "b"}
	_, err := CheckIMAP(t.Context(), acct, true)
	if err == nil || !strings.HasPrefix(err.Error(), "IMAP connection to 127.0.0.1:1 failed") {
		t.Fatalf("error %v", err)
	}
}

func TestMaxAttachmentBytesFollowsHomeserverLimit(t *testing.T) {
	t.Parallel()
	cfg := configs.Default().Bridges.Email
	cfg.MaxAttachmentBytes = 25 << 20
	c := NewConnector(cfg)
	if got := c.maxAttachmentBytes(); got != 25<<20 {
		t.Fatalf("before SetMaxFileSize: %d", got)
	}
	c.SetMaxFileSize(10 << 20)
	if got := c.maxAttachmentBytes(); got != 10<<20 {
		t.Fatalf("homeserver limit 10 MiB: %d", got)
	}
	c.SetMaxFileSize(100 << 20)
	if got := c.maxAttachmentBytes(); got != 25<<20 {
		t.Fatalf("homeserver limit above the config: %d", got)
	}
}

// TestLoginRefusesNoneAtTheSecurityPrompt: with allow_insecure off, "none" is refused by the security field's
// own validation (so the bot re-asks that field) with a message naming the config key, instead of after the
// password.
func TestLoginRefusesNoneAtTheSecurityPrompt(t *testing.T) {
	t.Parallel()
	for _, insecure := range []bool{false, true} {
		cfg := configs.Default().Bridges.Email
		cfg.AllowInsecure = insecure
		lp := &LoginProcess{conn: NewConnector(cfg)}
		step, err := lp.SubmitUserInput(t.Context(), map[string]string{fieldEmail: "a@example.org"})
		if err != nil {
			t.Fatal(err)
		}
		checked := 0
		for _, f := range step.UserInputParams.Fields {
			if f.ID != fieldIMAPSecurity && f.ID != fieldSMTPSecurity {
				continue
			}
			checked++
			got, err := f.Validate("None")
			if insecure {
				if err != nil || got != "none" {
					t.Errorf("%s with allow_insecure on: %q, %v", f.ID, got, err)
				}
				continue
			}
			if err == nil || !strings.Contains(err.Error(), "bridges.email.allow_insecure") {
				t.Errorf("%s accepted none with allow_insecure off: %q, %v", f.ID, got, err)
			}
			if got, err := f.Validate("starttls"); err != nil || got != "starttls" {
				t.Errorf("%s refused starttls: %q, %v", f.ID, got, err)
			}
		}
		if checked != 2 {
			t.Fatalf("found %d security fields", checked)
		}
	}
}

// TestLoginSilentServerTimesOutQuicklyWithClearMessage: a server that accepts TCP but never greets fails the
// check within the check timeout, naming host:port, for every security mode; and the user has already been
// told the servers are being checked.
func TestLoginSilentServerTimesOutQuicklyWithClearMessage(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = conn.Close() }) // hold it open, say nothing
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	c := newTestConnector(t, true)
	c.checkTimeout = 1500 * time.Millisecond
	for _, sec := range []string{"none", "tls", "starttls"} {
		lp := &LoginProcess{conn: c}
		if _, err := lp.SubmitUserInput(t.Context(), map[string]string{fieldEmail: "a@example.org"}); err != nil {
			t.Fatal(err)
		}
		step, err := lp.SubmitUserInput(t.Context(), map[string]string{
			fieldIMAPHost: "127.0.0.1", fieldIMAPPort: strconv.Itoa(addr.Port), fieldIMAPSecurity: sec,
			fieldSMTPHost: "127.0.0.1", fieldSMTPPort: strconv.Itoa(addr.Port), fieldSMTPSecurity: sec,
			fieldPassword: "pw",
		})
		if err != nil {
			t.Fatal(err)
		}
		if step.Type != bridgev2.LoginStepTypeDisplayAndWait || !strings.Contains(step.Instructions, "Checking") ||
			!strings.Contains(step.Instructions, addr.String()) {
			t.Fatalf("%s: step before the check %+v", sec, step)
		}
		start := time.Now()
		_, err = lp.Wait(t.Context())
		took := time.Since(start)
		want := "IMAP server " + addr.String() + " did not answer within 1.5s"
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", sec, err, want)
		}
		if took > 4*time.Second {
			t.Errorf("%s: the check took %s", sec, took)
		}
		start = time.Now()
		acct := &Account{Address: "a@example.org", SMTP: Server{Host: "127.0.0.1", Port: addr.Port, Security: Security(sec)},
			Username: "a", Password: "pw"}
		err = checkSMTP(t.Context(), acct, true, 1500*time.Millisecond)
		if want := "SMTP server " + addr.String() + " did not answer within 1.5s"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: SMTP error %v, want %q", sec, err, want)
		}
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("%s: the SMTP check took %s", sec, took)
		}
	}
}

func TestUnreadableSenderID(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"garbage <<<>>>":         "unreadable-sender.garbage",
		"  Bob  (Ünïcode)":       "unreadable-sender.bob-n-code",
		"":                       "unreadable-sender.unknown",
		"<<<>>>":                 "unreadable-sender.unknown",
		"x@@y":                   "unreadable-sender.x-y",
		strings.Repeat("a", 300): "unreadable-sender." + strings.Repeat("a", 64),
	} {
		got := string(unreadableSenderID(in))
		if got != want {
			t.Errorf("unreadableSenderID(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "@") {
			t.Errorf("unreadableSenderID(%q) = %q looks like an address", in, got)
		}
	}
}
