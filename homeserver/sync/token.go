package sync

import (
	"fmt"
	"strconv"
	"strings"
)

// Token is a /sync position: one counter per stream the homeserver keeps. A client hands back the token of its
// previous response as `since`; everything after each counter is new to it.
type Token struct {
	// Events is the global room event stream position (rooms.Service stream positions).
	Events int64
	// AccountData is the account data stream position (users.Service).
	AccountData int64
	// Receipts is the read receipt stream position (this package).
	Receipts int64
	// Typing is the typing notification stream position (this package, in memory).
	Typing int64
	// Presence is the presence stream position (this package, in memory).
	Presence int64
	// E2EE is the to-device / device-list stream position (homeserver/e2ee, through the E2EE interface).
	E2EE int64
}

// tokenPrefix marks the token format version so that a later format can tell old tokens apart.
const tokenPrefix = "s"

// String encodes the token as "s<events>_<account data>_<receipts>_<typing>_<presence>_<e2ee>", which is also a valid pagination
// token for /messages (the events position is read by ParseToken and by ParseStreamToken).
func (t Token) String() string {
	return tokenPrefix + strconv.FormatInt(t.Events, 10) + "_" + strconv.FormatInt(t.AccountData, 10) + "_" +
		strconv.FormatInt(t.Receipts, 10) + "_" + strconv.FormatInt(t.Typing, 10) + "_" + strconv.FormatInt(t.Presence, 10) +
		"_" + strconv.FormatInt(t.E2EE, 10)
}

// IsZero reports whether t is the empty token (an initial sync).
func (t Token) IsZero() bool { return t == Token{} }

// ParseToken decodes a token made by Token.String. Every counter must be a non-negative decimal integer. Tokens
// of the earlier four- and five-counter forms (before presence and e2ee) are accepted, the missing counters 0.
func ParseToken(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return Token{}, fmt.Errorf("sync token %q: missing prefix", s)
	}
	parts := strings.Split(rest, "_")
	if len(parts) < 4 || len(parts) > 6 {
		return Token{}, fmt.Errorf("sync token %q: want 6 positions, got %d", s, len(parts))
	}
	var vals [6]int64
	for i, p := range parts {
		v, err := parsePos(p)
		if err != nil {
			return Token{}, fmt.Errorf("sync token %q: %w", s, err)
		}
		vals[i] = v
	}
	return Token{Events: vals[0], AccountData: vals[1], Receipts: vals[2], Typing: vals[3], Presence: vals[4], E2EE: vals[5]}, nil
}

// ParseStreamToken reads the event stream position out of a pagination token: either a full sync token or a
// bare "s<pos>" / "t<pos>" as /messages hands out.
func ParseStreamToken(s string) (int64, error) {
	if t, err := ParseToken(s); err == nil {
		return t.Events, nil
	}
	if len(s) < 2 || (s[0] != 's' && s[0] != 't') {
		return 0, fmt.Errorf("pagination token %q: unknown format", s)
	}
	v, err := parsePos(s[1:])
	if err != nil {
		return 0, fmt.Errorf("pagination token %q: %w", s, err)
	}
	return v, nil
}

// parsePos parses one counter: plain decimal digits only (no sign, no spaces), at most 18 of them so it fits int64.
func parsePos(p string) (int64, error) {
	if p == "" || len(p) > 18 {
		return 0, fmt.Errorf("bad position %q", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return 0, fmt.Errorf("bad position %q", p)
		}
	}
	return strconv.ParseInt(p, 10, 64)
}
