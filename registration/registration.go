// Package registration reads, checks, writes and matches application service registration files in the YAML
// format Synapse reads (id, url, as_token, hs_token, sender_localpart, namespaces, rate_limited, protocols, the
// ephemeral-event flags). The homeserver uses it to authenticate appservices and to decide which users, aliases
// and rooms an appservice owns; the hub uses it to generate the registrations of its in-process bridges.
//
// Namespace regexes are matched against the whole identifier (full match), so "@email_.*:localhost" does not
// match "@email_x:localhost.evil.example" as an unanchored search would.
//
// It must not import anything from the project except leaf packages: the homeserver imports it.
package registration

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"strings"
	"sync"
	"unicode"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
)

// Registration is one appservice registration. The embedded mautrix type carries the YAML fields exactly as
// Synapse and mautrix bridges write them; this wrapper adds validation and compiled namespace matching. The
// compiled regexes are cached on first use: code that edits Namespaces afterwards must call Validate again.
type Registration struct {
	appservice.Registration `yaml:",inline"`

	// serverName, when set, lets the matching methods recognise the appservice's own sender user.
	serverName string

	mu       sync.Mutex
	compiled *matchers
}

// matchers holds the compiled, anchored regexes of the three namespaces.
type matchers struct {
	users, aliases, rooms []nsMatcher
}

// nsMatcher is one compiled namespace.
type nsMatcher struct {
	re        *regexp.Regexp
	exclusive bool
}

// probeUsers are user IDs that share nothing but the user-ID syntax: a namespace regex that full-matches all of
// them would match every user on every server, which is never a sane appservice namespace.
var probeUsers = []string{
	"@alice:example.org",
	"@0:x",
	"@_zz.9-=/+:[::1]:8448",
	"@Bob:other.invalid",
	"@a:b.c",
}

// probeAliases play the same role for alias namespaces.
var probeAliases = []string{"#room:example.org", "#0:x", "#_zz.9-=/+:[::1]:8448", "#Q:other.invalid"}

// probeRooms play the same role for room ID namespaces.
var probeRooms = []string{"!abc:example.org", "!0:x", "!ZZ_9:[::1]:8448", "!q:other.invalid"}

// Load reads and parses a registration file and validates it.
func Load(path string) (*Registration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read registration: %w", err)
	}
	r, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("registration %s: %w", path, err)
	}
	return r, nil
}

// Parse decodes a registration from YAML and validates it; the error lists every problem found.
func Parse(data []byte) (*Registration, error) {
	r := &Registration{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(r); err != nil {
		return nil, fmt.Errorf("parse registration yaml: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// Validate checks the registration and returns one error naming every bad field (nil if all is well): missing
// id, tokens or sender_localpart, as_token equal to hs_token, a url that is not http(s), namespace regexes that
// do not compile (Go RE2 syntax) or that would match everyone. On success the regexes are compiled for matching.
func (r *Registration) Validate() error {
	var errs []error
	if strings.TrimSpace(r.ID) == "" {
		errs = append(errs, errors.New("id is missing"))
	}
	if r.AppToken == "" {
		errs = append(errs, errors.New("as_token is missing"))
	}
	if r.ServerToken == "" {
		errs = append(errs, errors.New("hs_token is missing"))
	}
	if r.AppToken != "" && r.AppToken == r.ServerToken {
		errs = append(errs, errors.New("as_token and hs_token must differ"))
	}
	if r.SenderLocalpart == "" {
		errs = append(errs, errors.New("sender_localpart is missing"))
	} else if err := checkLocalpart(r.SenderLocalpart); err != nil {
		errs = append(errs, fmt.Errorf("sender_localpart: %w", err))
	}
	// An empty url is allowed: Synapse reads it as "do not push transactions to this appservice".
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("url: %w", err))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("url %q: scheme must be http or https", r.URL))
		case u.Host == "":
			errs = append(errs, fmt.Errorf("url %q: host is missing", r.URL))
		}
	}
	m, nsErrs := compileAll(&r.Namespaces)
	errs = append(errs, nsErrs...)
	if len(errs) > 0 {
		return fmt.Errorf("invalid registration %q: %w", r.ID, errors.Join(errs...))
	}
	r.mu.Lock()
	r.compiled = m
	r.mu.Unlock()
	return nil
}

// checkLocalpart accepts the localparts the Matrix spec allows for new users.
func checkLocalpart(lp string) error {
	for _, c := range lp {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', strings.ContainsRune("._=-/+", c):
		default:
			return fmt.Errorf("%q contains %q, allowed are a-z 0-9 . _ = - / +", lp, c)
		}
	}
	return nil
}

// compileAll compiles every namespace and reports every problem.
func compileAll(ns *appservice.Namespaces) (*matchers, []error) {
	var errs []error
	m := &matchers{}
	m.users, errs = compileList("users", ns.UserIDs, probeUsers, errs)
	m.aliases, errs = compileList("aliases", ns.RoomAliases, probeAliases, errs)
	m.rooms, errs = compileList("rooms", ns.RoomIDs, probeRooms, errs)
	return m, errs
}

func compileList(kind string, list appservice.NamespaceList, probes []string, errs []error) ([]nsMatcher, []error) {
	out := make([]nsMatcher, 0, len(list))
	for i, ns := range list {
		re, err := CompileNamespace(ns.Regex)
		if err != nil {
			errs = append(errs, fmt.Errorf("namespaces.%s[%d]: %w", kind, i, err))
			continue
		}
		// Matrix identifiers never contain control characters, so a raw one in a pattern is a mistake (and YAML
		// cannot round-trip some of them, e.g. a pattern that is only newlines).
		if strings.ContainsFunc(ns.Regex, unicode.IsControl) {
			errs = append(errs, fmt.Errorf("namespaces.%s[%d]: regex %q contains a raw control character", kind, i, ns.Regex))
			continue
		}
		if matchesAll(re, probes) {
			errs = append(errs, fmt.Errorf("namespaces.%s[%d]: regex %q matches every %s on every server",
				kind, i, ns.Regex, strings.TrimSuffix(kind, "s")))
			continue
		}
		out = append(out, nsMatcher{re: re, exclusive: ns.Exclusive})
	}
	return out, errs
}

func matchesAll(re *regexp.Regexp, probes []string) bool {
	for _, p := range probes {
		if !re.MatchString(p) {
			return false
		}
	}
	return true
}

// CompileNamespace compiles a namespace regex (Go RE2 syntax) for full-match use. The pattern is parsed on its
// own and the anchors are added to its syntax tree, not to its text, so no pattern (")|(.*", a trailing \Q)
// can escape them. Empty patterns are refused.
func CompileNamespace(pattern string) (*regexp.Regexp, error) {
	if pattern == "" {
		return nil, errors.New("regex is empty")
	}
	tree, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pattern, err)
	}
	anchored := &syntax.Regexp{Op: syntax.OpConcat, Sub: []*syntax.Regexp{
		{Op: syntax.OpBeginText}, tree, {Op: syntax.OpEndText},
	}}
	re, err := regexp.Compile(anchored.String())
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pattern, err)
	}
	return re, nil
}

// matchers returns the compiled namespaces, compiling them on first use for registrations built in code. Bad
// regexes are skipped here (Validate reports them), so a broken namespace matches nothing.
func (r *Registration) matchers() *matchers {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.compiled == nil {
		r.compiled, _ = compileAll(&r.Namespaces)
	}
	return r.compiled
}

// SetServerName tells the registration the homeserver's name so that the sender user
// (@sender_localpart:server) counts as part of its namespace.
func (r *Registration) SetServerName(serverName string) {
	r.mu.Lock()
	r.serverName = serverName
	r.mu.Unlock()
}

// BotUserID returns @sender_localpart:serverName, or "" when no server name was set.
func (r *Registration) BotUserID() id.UserID {
	r.mu.Lock()
	sn := r.serverName
	r.mu.Unlock()
	if sn == "" || r.SenderLocalpart == "" {
		return ""
	}
	return id.NewUserID(r.SenderLocalpart, sn)
}

func anyMatch(list []nsMatcher, s string, exclusiveOnly bool) bool {
	for _, m := range list {
		if exclusiveOnly && !m.exclusive {
			continue
		}
		if m.re.MatchString(s) {
			return true
		}
	}
	return false
}

// IsInterestedUser reports whether userID is the appservice's sender user or full-matches one of its user
// namespaces (exclusive or not).
func (r *Registration) IsInterestedUser(userID id.UserID) bool {
	if userID == "" {
		return false
	}
	if bot := r.BotUserID(); bot != "" && userID == bot {
		return true
	}
	return anyMatch(r.matchers().users, string(userID), false)
}

// OwnsUserExclusively reports whether userID is the sender user or full-matches an exclusive user namespace:
// nobody else may register or act as that user.
func (r *Registration) OwnsUserExclusively(userID id.UserID) bool {
	if userID == "" {
		return false
	}
	if bot := r.BotUserID(); bot != "" && userID == bot {
		return true
	}
	return anyMatch(r.matchers().users, string(userID), true)
}

// MatchesAlias reports whether alias full-matches one of the alias namespaces.
func (r *Registration) MatchesAlias(alias id.RoomAlias) bool {
	return alias != "" && anyMatch(r.matchers().aliases, string(alias), false)
}

// OwnsAliasExclusively reports whether alias full-matches an exclusive alias namespace.
func (r *Registration) OwnsAliasExclusively(alias id.RoomAlias) bool {
	return alias != "" && anyMatch(r.matchers().aliases, string(alias), true)
}

// MatchesRoom reports whether roomID full-matches one of the room namespaces.
func (r *Registration) MatchesRoom(roomID id.RoomID) bool {
	return roomID != "" && anyMatch(r.matchers().rooms, string(roomID), false)
}

// Generate returns a registration with fresh random tokens whose exclusive user namespace is userRegex (none if
// empty). url may be empty for an appservice that receives no transactions.
func Generate(asID, asURL, senderLocalpart, userRegex string) *Registration {
	r := &Registration{}
	r.ID = asID
	r.URL = asURL
	r.SenderLocalpart = senderLocalpart
	r.AppToken = RandomToken()
	r.ServerToken = RandomToken()
	rl := false
	r.RateLimited = &rl
	if userRegex != "" {
		r.Namespaces.UserIDs = appservice.NamespaceList{{Regex: userRegex, Exclusive: true}}
	}
	return r
}

// RandomToken returns 48 random bytes in URL-safe base64 (64 characters), suitable for as_token and hs_token.
func RandomToken() string {
	b := make([]byte, 48)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand.Read never fails on supported platforms (it panics itself since Go 1.24).
		panic(fmt.Errorf("read random token: %w", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Marshal encodes the registration as YAML in the format Synapse reads.
func (r *Registration) Marshal() ([]byte, error) {
	data, err := yaml.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode registration: %w", err)
	}
	return data, nil
}

// Save writes the registration as YAML to path, readable by the owner only (it holds secrets), creating the
// directory if needed and replacing any existing file atomically.
func (r *Registration) Save(path string) error {
	data, err := r.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create registration directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".registration-*.yaml")
	if err != nil {
		return fmt.Errorf("save registration: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("save registration: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save registration: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return fmt.Errorf("save registration: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save registration: %w", err)
	}
	return nil
}
