package email

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/passerelle/passerelle/configs"
)

// FuzzSealerOpen: Open of arbitrary stored text never panics and never "succeeds" on text Seal did not make;
// anything Seal makes opens to the same plaintext.
func FuzzSealerOpen(f *testing.F) {
	s := NewSealer(filepath.Join(f.TempDir(), "k"))
	good, err := s.Seal("pw")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{good, "", "v1:", "v1:AAAA", "v1:" + strings.Repeat("A", 40), good[:len(good)-2]} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		plain, err := s.Open(in)
		if err == nil && in != good {
			// Only an authentic ciphertext opens; the fuzzer forging one would mean GCM is broken.
			sealed, _ := s.Seal(plain)
			if back, err := s.Open(sealed); err != nil || back != plain {
				t.Fatalf("round trip of %q failed", plain)
			}
		} else if err != nil && !errors.Is(err, ErrBadSecret) {
			t.Fatalf("Open(%q) = %v, want ErrBadSecret", in, err)
		}
		if utf8.ValidString(in) {
			sealed, err := s.Seal(in)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := s.Open(sealed); err != nil || back != in {
				t.Fatalf("Seal/Open(%q) = %q, %v", in, back, err)
			}
		}
	})
}

// FuzzLoginSettings: whatever the user types into the settings step, accountFrom never panics, and an account
// it accepts has hosts, ports in range, a known security mode and the password as typed.
func FuzzLoginSettings(f *testing.F) {
	f.Add("imap.x.test", "993", "tls", "smtp.x.test", "587", "starttls", "me", "pw")
	f.Add("", "", "", "", "", "", "", "pw")
	f.Add("h", "0", "SSL", "h", "65536", "bogus", "", "")
	f.Add("h", "-1", "none", "h", "1e3", "plain", "u", "p\r\nq")
	f.Fuzz(func(t *testing.T, ih, ip, is, sh, sp, ss, user, pw string) {
		// allow_insecure follows the user name's length, so both settings get fuzzed.
		cfg := configs.Default().Bridges.Email
		cfg.AllowInsecure = len(user)%2 == 0
		lp := &LoginProcess{conn: NewConnector(cfg), address: "alice@example.org"}
		acct, err := lp.accountFrom(map[string]string{fieldIMAPHost: ih, fieldIMAPPort: ip, fieldIMAPSecurity: is,
			fieldSMTPHost: sh, fieldSMTPPort: sp, fieldSMTPSecurity: ss, fieldUsername: user, fieldPassword: pw})
		if err != nil {
			return
		}
		for _, srv := range []Server{acct.IMAP, acct.SMTP} {
			if srv.Host == "" || srv.Port < 1 || srv.Port > 65535 {
				t.Fatalf("accepted server %+v", srv)
			}
			if srv.Security == SecurityNone && !cfg.AllowInsecure {
				t.Fatalf("accepted security none with allow_insecure off: %+v", srv)
			}
			switch srv.Security {
			case SecurityTLS, SecurityStartTLS, SecurityNone:
			default:
				t.Fatalf("accepted security %q", srv.Security)
			}
		}
		if acct.Password != pw || pw == "" {
			t.Fatalf("password %q, typed %q", acct.Password, pw)
		}
		if p := strings.TrimSpace(ip); p != "" {
			if n, _ := strconv.Atoi(p); n != acct.IMAP.Port {
				t.Fatalf("IMAP port %d, typed %q", acct.IMAP.Port, ip)
			}
		}
	})
}
