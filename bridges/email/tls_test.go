package email

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var (
	testCertOnce sync.Once
	testCert     tls.Certificate
)

// testTLS returns a server config with a self-signed certificate for 127.0.0.1 and trusts it in the client.
// Dovecot and Postfix in testenv run without TLS, so the TLS and STARTTLS paths are tested against go-imap's
// and go-smtp's own servers.
func testTLS(t *testing.T) *tls.Config {
	t.Helper()
	testCertOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "passerelle test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true, IsCA: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		pool := x509.NewCertPool()
		pool.AddCert(leaf)
		tlsRoots.Store(pool)
		testCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	})
	return &tls.Config{Certificates: []tls.Certificate{testCert}, MinVersion: tls.VersionTLS12}
}

func listen(t *testing.T, cfg *tls.Config) (net.Listener, int) {
	t.Helper()
	var ln net.Listener
	var err error
	if cfg != nil {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", cfg)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).Port
}

// startIMAPServers starts go-imap's in-memory server twice: implicit TLS and STARTTLS (plaintext login refused).
func startIMAPServers(t *testing.T) (tlsPort, startTLSPort int) {
	cfg := testTLS(t)
	mem := imapmemserver.New()
	u := imapmemserver.NewUser("alice", "right")
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	opts := func(starttls *tls.Config) *imapserver.Options {
		return &imapserver.Options{
			NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
				return mem.NewSession(), nil, nil
			},
			Caps:      imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
			TLSConfig: starttls,
			Logger:    discardLogger{},
		}
	}
	ln1, p1 := listen(t, cfg)
	go func() { _ = imapserver.New(opts(nil)).Serve(ln1) }()
	ln2, p2 := listen(t, nil)
	go func() { _ = imapserver.New(opts(cfg)).Serve(ln2) }()
	return p1, p2
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

type smtpRecorder struct {
	mu    sync.Mutex
	msgs  []string
	sizes []int64
	tls   []bool
}

type smtpSession struct {
	rec    *smtpRecorder
	authed bool
	isTLS  bool
	size   int64
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "alice" || pass != "right" {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.authed = true
		return nil
	}), nil
}
func (s *smtpSession) Mail(_ string, opts *smtp.MailOptions) error {
	if !s.authed {
		return &smtp.SMTPError{Code: 530, Message: "authentication required"}
	}
	if opts != nil {
		s.size = opts.Size
	}
	return nil
}
func (s *smtpSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	s.rec.msgs = append(s.rec.msgs, string(b))
	s.rec.sizes = append(s.rec.sizes, s.size)
	s.rec.tls = append(s.rec.tls, s.isTLS)
	return nil
}
func (s *smtpSession) Reset()        {}
func (s *smtpSession) Logout() error { return nil }

// startSMTPServers starts go-smtp servers with implicit TLS and with STARTTLS (no AUTH before TLS).
func startSMTPServers(t *testing.T) (rec *smtpRecorder, tlsPort, startTLSPort int) {
	cfg := testTLS(t)
	rec = &smtpRecorder{}
	newSrv := func(starttls *tls.Config) *smtp.Server {
		s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
			_, isTLS := c.TLSConnectionState()
			return &smtpSession{rec: rec, isTLS: isTLS}, nil
		}))
		s.Domain = "localhost"
		s.TLSConfig = starttls
		s.MaxMessageBytes = 1 << 20
		s.MaxRecipients = 10
		s.ReadTimeout = 10 * time.Second
		s.WriteTimeout = 10 * time.Second
		return s
	}
	ln1, p1 := listen(t, cfg)
	go func() { _ = newSrv(nil).Serve(ln1) }()
	ln2, p2 := listen(t, nil)
	go func() { _ = newSrv(cfg).Serve(ln2) }()
	return rec, p1, p2
}

func TestTLSAndStartTLS(t *testing.T) {
	t.Parallel()
	imapTLS, imapStartTLS := startIMAPServers(t)
	rec, smtpTLS, smtpStartTLS := startSMTPServers(t)
	acct := func(imapPort int, imapSec Security, smtpPort int, smtpSec Security, pw string) *Account {
		return &Account{Address: "alice@example.test", Username: "alice", Password: pw,
			IMAP: Server{Host: "127.0.0.1", Port: imapPort, Security: imapSec},
			SMTP: Server{Host: "127.0.0.1", Port: smtpPort, Security: smtpSec}}
	}
	for _, c := range []struct {
		name       string
		a          *Account
		imapErr    string
		smtpErr    string
		plainInput bool
	}{
		{name: "implicit TLS", a: acct(imapTLS, SecurityTLS, smtpTLS, SecurityTLS, "right")},
		{name: "STARTTLS", a: acct(imapStartTLS, SecurityStartTLS, smtpStartTLS, SecurityStartTLS, "right")},
		{name: "wrong password over TLS", a: acct(imapTLS, SecurityTLS, smtpStartTLS, SecurityStartTLS, "wrong"),
			imapErr: "authentication failed", smtpErr: "authentication failed"},
		// Without TLS the servers refuse to take a password: the "none" mode really is plaintext.
		{name: "plaintext to a STARTTLS server", a: acct(imapStartTLS, SecurityNone, smtpStartTLS, SecurityNone, "right"),
			imapErr: "IMAP login to", smtpErr: "allow_insecure is off"},
	} {
		_, err := CheckIMAP(t.Context(), c.a, true)
		if (err == nil) != (c.imapErr == "") || (err != nil && !strings.Contains(err.Error(), c.imapErr)) {
			t.Errorf("%s: CheckIMAP = %v, want %q", c.name, err, c.imapErr)
		}
		err = CheckSMTP(t.Context(), c.a, false)
		if (err == nil) != (c.smtpErr == "") || (err != nil && !strings.Contains(err.Error(), c.smtpErr)) {
			t.Errorf("%s: CheckSMTP = %v, want %q", c.name, err, c.smtpErr)
		}
	}

	msg := []byte("From: <alice@example.test>\r\nTo: <bob@example.test>\r\nSubject: over TLS\r\n\r\nhi\r\n")
	for _, a := range []*Account{acct(imapTLS, SecurityTLS, smtpTLS, SecurityTLS, "right"),
		acct(imapStartTLS, SecurityStartTLS, smtpStartTLS, SecurityStartTLS, "right")} {
		if err := SendMail(t.Context(), a, false, a.Address, []string{"bob@example.test"}, msg); err != nil {
			t.Fatalf("SendMail over %s: %v", a.SMTP.Security, err)
		}
		if folder, err := AppendSent(t.Context(), a, false, msg, "", time.Now()); err != nil || folder != "Sent" {
			t.Fatalf("AppendSent over %s: %q, %v", a.IMAP.Security, folder, err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs) != 2 || rec.msgs[0] != string(msg) || rec.sizes[0] != int64(len(msg)) || !rec.tls[0] || !rec.tls[1] {
		t.Fatalf("SMTP server got %d messages, sizes %v, tls %v", len(rec.msgs), rec.sizes, rec.tls)
	}
}
