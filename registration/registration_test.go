package registration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
)

const bridgeYAML = `id: email
url: http://127.0.0.1:29340
as_token: aaaaaaaa
hs_token: bbbbbbbb
sender_localpart: email
rate_limited: false
namespaces:
  users:
  - regex: '@email_.*:localhost'
    exclusive: true
  - regex: '@.*:localhost'
    exclusive: false
  aliases:
  - regex: '#email_.*:localhost'
    exclusive: true
  rooms:
  - regex: '!bridged.*:localhost'
    exclusive: false
protocols: [email]
receive_ephemeral: true
de.sorunome.msc2409.push_ephemeral: true
io.element.msc4190: true
`

func TestParseBridgeFormat(t *testing.T) {
	t.Parallel()
	r, err := Parse([]byte(bridgeYAML))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if r.ID != "email" || r.URL != "http://127.0.0.1:29340" || r.AppToken != "aaaaaaaa" ||
		r.ServerToken != "bbbbbbbb" || r.SenderLocalpart != "email" {
		t.Fatalf("fields not read: %+v", r.Registration)
	}
	if r.RateLimited == nil || *r.RateLimited {
		t.Errorf("rate_limited: got %v, want false", r.RateLimited)
	}
	if !r.EphemeralEvents || !r.SoruEphemeralEvents || !r.MSC4190 {
		t.Errorf("ephemeral/msc4190 flags not read: %+v", r.Registration)
	}
	if len(r.Protocols) != 1 || r.Protocols[0] != "email" {
		t.Errorf("protocols: %v", r.Protocols)
	}
	if len(r.Namespaces.UserIDs) != 2 || len(r.Namespaces.RoomAliases) != 1 || len(r.Namespaces.RoomIDs) != 1 {
		t.Errorf("namespaces: %+v", r.Namespaces)
	}
}

func TestMatching(t *testing.T) {
	t.Parallel()
	r, err := Parse([]byte(bridgeYAML))
	if err != nil {
		t.Fatal(err)
	}
	r.SetServerName("localhost")
	cases := []struct {
		name                  string
		user                  id.UserID
		interested, exclusive bool
	}{
		{"ghost", "@email_bob=40example.org:localhost", true, true},
		{"bot", "@email:localhost", true, true},
		{"local user non-exclusive", "@alice:localhost", true, false},
		{"remote user", "@alice:example.org", false, false},
		{"remote ghost lookalike", "@email_bob:localhost.evil", false, false},
		{"prefix not full match", "@x@email_a:localhost", true, false},
		{"suffix not full match", "@email_a:localhostX", false, false},
		{"empty", "", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := r.IsInterestedUser(c.user); got != c.interested {
				t.Errorf("IsInterestedUser(%q) = %v, want %v", c.user, got, c.interested)
			}
			if got := r.OwnsUserExclusively(c.user); got != c.exclusive {
				t.Errorf("OwnsUserExclusively(%q) = %v, want %v", c.user, got, c.exclusive)
			}
		})
	}
	if !r.MatchesAlias("#email_x:localhost") || r.MatchesAlias("#email_x:localhost2") || r.MatchesAlias("#other:localhost") {
		t.Error("alias matching is not full-match")
	}
	if !r.OwnsAliasExclusively("#email_x:localhost") {
		t.Error("exclusive alias not owned")
	}
	if !r.MatchesRoom("!bridged123:localhost") || r.MatchesRoom("!x!bridged1:localhost") {
		t.Error("room matching is not full-match")
	}
}

func TestBotNotMatchedWithoutServerName(t *testing.T) {
	t.Parallel()
	r := Generate("x", "", "xbot", "@x_.*:hs")
	if r.IsInterestedUser("@xbot:hs") {
		t.Error("sender matched before the server name is known")
	}
	r.SetServerName("hs")
	if !r.IsInterestedUser("@xbot:hs") || !r.OwnsUserExclusively("@xbot:hs") {
		t.Error("sender not matched after SetServerName")
	}
	if r.BotUserID() != "@xbot:hs" {
		t.Errorf("BotUserID = %q", r.BotUserID())
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	r := &Registration{}
	r.URL = "ftp://x"
	r.SenderLocalpart = "Bad Bot"
	r.Namespaces.UserIDs = appservice.NamespaceList{
		{Regex: "(unclosed", Exclusive: true},
		{Regex: ".*", Exclusive: true},
		{Regex: "@.*:.*", Exclusive: false},
		{Regex: "", Exclusive: false},
		{Regex: "(?=lookahead)", Exclusive: false},
	}
	r.Namespaces.RoomAliases = appservice.NamespaceList{{Regex: "#.*"}}
	r.Namespaces.RoomIDs = appservice.NamespaceList{{Regex: "!.+"}}
	err := r.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken registration")
	}
	msg := err.Error()
	for _, want := range []string{
		"id is missing", "as_token is missing", "hs_token is missing", "sender_localpart",
		"scheme must be http or https",
		"namespaces.users[0]", "namespaces.users[1]", "namespaces.users[2]", "namespaces.users[3]",
		"namespaces.users[4]", "namespaces.aliases[0]", "namespaces.rooms[0]",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
}

func TestValidateSameTokens(t *testing.T) {
	t.Parallel()
	r := Generate("a", "http://x", "bot", "@a_.*:hs")
	r.ServerToken = r.AppToken
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "must differ") {
		t.Fatalf("want same-token error, got %v", err)
	}
}

func TestEscapeAnchorsRefused(t *testing.T) {
	t.Parallel()
	// Wrapped naively as ^(?:X)$ this would become ^(?:)|(.*)$ and match everyone.
	if _, err := CompileNamespace(`)|(.*`); err == nil {
		t.Fatal("pattern escaping the anchors was accepted")
	}
}

func TestGenerateSaveLoadRoundTrip(t *testing.T) {
	t.Parallel()
	r := Generate("email", "http://127.0.0.1:8008/_passerelle/appservice/email", "email", `@email_.*:localhost`)
	r.EphemeralEvents = true
	if err := r.Validate(); err != nil {
		t.Fatalf("generated registration invalid: %v", err)
	}
	if len(r.AppToken) < 32 || r.AppToken == r.ServerToken {
		t.Fatalf("weak tokens: %q %q", r.AppToken, r.ServerToken)
	}
	path := filepath.Join(t.TempDir(), "sub", "email.yaml")
	if err := r.Save(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("registration file mode %v, want 0600", st.Mode().Perm())
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != r.ID || back.URL != r.URL || back.AppToken != r.AppToken || back.ServerToken != r.ServerToken ||
		back.SenderLocalpart != r.SenderLocalpart || !back.EphemeralEvents ||
		len(back.Namespaces.UserIDs) != 1 || back.Namespaces.UserIDs[0] != r.Namespaces.UserIDs[0] {
		t.Fatalf("round trip changed the registration:\n%+v\n%+v", r.Registration, back.Registration)
	}
	// The file must be readable by mautrix's own loader too (the format bridges write).
	mx, err := appservice.LoadRegistration(path)
	if err != nil || mx.AppToken != r.AppToken || mx.Namespaces.UserIDs[0].Regex != `@email_.*:localhost` {
		t.Fatalf("mautrix could not read our file: %v %+v", err, mx)
	}
}

func TestSet(t *testing.T) {
	t.Parallel()
	a := Generate("a", "http://a", "abot", "@a_.*:hs")
	b := Generate("b", "http://b", "bbot", "@b_.*:hs")
	s, err := NewSet("hs", a, b)
	if err != nil {
		t.Fatal(err)
	}
	if s.ByASToken(a.AppToken) != a || s.ByASToken(b.AppToken) != b || s.ByASToken("") != nil ||
		s.ByASToken(a.ServerToken) != nil {
		t.Error("ByASToken wrong")
	}
	if s.ExclusiveOwner("@a_x:hs") != a || s.ExclusiveOwner("@bbot:hs") != b || s.ExclusiveOwner("@c:hs") != nil {
		t.Error("ExclusiveOwner wrong")
	}
	if s.ByID("b") != b || len(s.All()) != 2 {
		t.Error("ByID/All wrong")
	}

	c := Generate("a", "http://c", "cbot", "@c_.*:hs")
	c.AppToken = b.ServerToken
	bad := Generate("d", "http://d", "", "(")
	_, err = NewSet("hs", a, b, c, bad)
	if err == nil {
		t.Fatal("NewSet accepted duplicates")
	}
	for _, want := range []string{`"a" is used twice`, `invalid registration "d"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
	c.ID = "c"
	if _, err := NewSet("hs", a, b, c); err == nil || !strings.Contains(err.Error(), "reuses a token") {
		t.Errorf("token reuse not reported: %v", err)
	}
}

func TestLoadDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if regs, err := LoadDir(filepath.Join(dir, "missing")); err != nil || regs != nil {
		t.Fatalf("missing dir: %v %v", regs, err)
	}
	if err := Generate("b", "http://b", "bbot", "@b_.*:hs").Save(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := Generate("a", "http://a", "abot", "@a_.*:hs").Save(filepath.Join(dir, "a.yml")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	regs, err := LoadDir(dir)
	if err != nil || len(regs) != 2 || regs[0].ID != "a" || regs[1].ID != "b" {
		t.Fatalf("LoadDir: %v %v", regs, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "c.yaml"), []byte("id: c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "c.yaml") {
		t.Fatalf("bad file not reported: %v", err)
	}
}

// fullMatchOracle decides full-match independently of the ^(?:…)$ wrapping: with leftmost-longest semantics,
// a match of the whole string exists exactly when the longest match starting at 0 ends at len(s).
func fullMatchOracle(pattern, s string) (bool, bool) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return false, false
	}
	re.Longest()
	loc := re.FindStringIndex(s)
	return loc != nil && loc[0] == 0 && loc[1] == len(s), true
}

func FuzzNamespaceRegex(f *testing.F) {
	f.Add(`@email_.*:localhost`, "@email_bob:localhost", true)
	f.Add(`@.*:localhost`, "@alice:localhost", false)
	f.Add(`)|(.*`, "@x:y", true)
	f.Add(`a|ab`, "ab", true)
	f.Add(`(?i)@BOT:hs`, "@bot:hs", true)
	f.Add(`.*`, "", true)
	f.Add(`@[a-z]+:x|#y`, "#y", false)
	f.Fuzz(func(t *testing.T, pattern, user string, exclusive bool) {
		re, err := CompileNamespace(pattern)
		want, ok := fullMatchOracle(pattern, user)
		if !ok || pattern == "" {
			if err == nil {
				t.Fatalf("CompileNamespace accepted %q which does not compile on its own", pattern)
			}
			return
		}
		if err != nil {
			t.Fatalf("CompileNamespace(%q) failed but the pattern compiles: %v", pattern, err)
		}
		if got := re.MatchString(user); got != want {
			t.Fatalf("full match of %q against %q: got %v, oracle %v", pattern, user, got, want)
		}

		r := Generate("fz", "", "fzbot", "")
		r.Namespaces.UserIDs = appservice.NamespaceList{{Regex: pattern, Exclusive: exclusive}}
		verr := r.Validate()
		everyone := true
		for _, p := range probeUsers {
			if m, _ := fullMatchOracle(pattern, p); !m {
				everyone = false
			}
		}
		control := strings.ContainsFunc(pattern, unicode.IsControl)
		if (everyone || control) != (verr != nil) {
			t.Fatalf("Validate(%q) = %v, but matches-everyone = %v, control = %v", pattern, verr, everyone, control)
		}
		if verr != nil {
			return
		}
		uid := id.UserID(user)
		if got := r.IsInterestedUser(uid); got != (want && user != "") {
			t.Fatalf("IsInterestedUser(%q) with %q = %v, want %v", user, pattern, got, want)
		}
		if got := r.OwnsUserExclusively(uid); got != (want && user != "" && exclusive) {
			t.Fatalf("OwnsUserExclusively(%q) with %q = %v", user, pattern, got)
		}
		// Saving and parsing back must keep the namespace and its meaning.
		data, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(data)
		if err != nil {
			t.Fatalf("round trip of %q: %v", pattern, err)
		}
		if back.Namespaces.UserIDs[0] != r.Namespaces.UserIDs[0] || back.IsInterestedUser(uid) != r.IsInterestedUser(uid) {
			t.Fatalf("round trip changed namespace %q", pattern)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(bridgeYAML))
	f.Add([]byte("id: x\nas_token: a\nhs_token: b\nsender_localpart: x\nnamespaces: {users: [{regex: '(', exclusive: true}]}\n"))
	f.Add([]byte("- not a map"))
	f.Add([]byte("namespaces: {users: 5}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err != nil {
			return
		}
		// Anything Parse accepts is valid, and it stays valid after a round trip.
		if r.ID == "" || r.AppToken == "" || r.ServerToken == "" || r.AppToken == r.ServerToken {
			t.Fatalf("Parse accepted missing or equal fields: %+v", r.Registration)
		}
		out, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("valid registration did not survive a round trip: %v\n%s", err, out)
		}
	})
}

func TestQuoteCannotEscapeAnchors(t *testing.T) {
	t.Parallel()
	re, err := CompileNamespace(`@a\Q)|(.*`)
	if err != nil {
		t.Fatal(err)
	}
	if !re.MatchString(`@a)|(.*`) || re.MatchString("@a") || re.MatchString("@anything") {
		t.Errorf("quoted pattern did not match literally: %v", re)
	}
}
