package registration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"maunium.net/go/mautrix/id"
)

// Set is the homeserver's view of all its appservices: lookup by token and by exclusively owned user. It is
// immutable after NewSet and safe for concurrent use.
type Set struct {
	serverName string
	all        []*Registration
	byASToken  map[string]*Registration
	byID       map[string]*Registration
}

// NewSet validates regs as a group (each must be valid; ids, as_tokens and hs_tokens must be unique across the
// set and no as_token may equal another's hs_token) and tells each one the server name. The error names every
// problem at once.
func NewSet(serverName string, regs ...*Registration) (*Set, error) {
	s := &Set{
		serverName: serverName,
		byASToken:  make(map[string]*Registration, len(regs)),
		byID:       make(map[string]*Registration, len(regs)),
	}
	var errs []error
	tokens := make(map[string]string, 2*len(regs))
	for i, r := range regs {
		if r == nil {
			errs = append(errs, fmt.Errorf("registration %d is nil", i))
			continue
		}
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := s.byID[r.ID]; dup {
			errs = append(errs, fmt.Errorf("registration id %q is used twice", r.ID))
			continue
		}
		dupTok := false
		for _, tok := range []string{r.AppToken, r.ServerToken} {
			if other, ok := tokens[tok]; ok {
				errs = append(errs, fmt.Errorf("registration %q reuses a token of registration %q", r.ID, other))
				dupTok = true
			}
		}
		if dupTok {
			continue
		}
		tokens[r.AppToken] = r.ID
		tokens[r.ServerToken] = r.ID
		r.SetServerName(serverName)
		s.all = append(s.all, r)
		s.byID[r.ID] = r
		s.byASToken[r.AppToken] = r
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// LoadDir loads every *.yaml and *.yml file in dir (sorted by name) as a registration; the error lists every
// file that failed. A missing directory yields no registrations.
func LoadDir(dir string) ([]*Registration, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read registration directory: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	var regs []*Registration
	var errs []error
	for _, n := range names {
		r, err := Load(filepath.Join(dir, n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		regs = append(regs, r)
	}
	return regs, errors.Join(errs...)
}

// ServerName returns the server name the set was built for.
func (s *Set) ServerName() string { return s.serverName }

// ByASToken returns the registration whose as_token is tok, or nil.
func (s *Set) ByASToken(tok string) *Registration {
	if s == nil || tok == "" {
		return nil
	}
	return s.byASToken[tok]
}

// ByID returns the registration with the given id, or nil.
func (s *Set) ByID(asID string) *Registration {
	if s == nil {
		return nil
	}
	return s.byID[asID]
}

// ExclusiveOwner returns the registration that exclusively owns userID (its sender user or an exclusive user
// namespace), or nil. When two registrations claim the same user, the first one in the set wins.
func (s *Set) ExclusiveOwner(userID id.UserID) *Registration {
	if s == nil {
		return nil
	}
	for _, r := range s.all {
		if r.OwnsUserExclusively(userID) {
			return r
		}
	}
	return nil
}

// ExclusiveAliasOwner returns the registration that exclusively owns alias, or nil.
func (s *Set) ExclusiveAliasOwner(alias id.RoomAlias) *Registration {
	if s == nil {
		return nil
	}
	for _, r := range s.all {
		if r.OwnsAliasExclusively(alias) {
			return r
		}
	}
	return nil
}

// All returns the registrations in the order given to NewSet. The slice must not be modified.
func (s *Set) All() []*Registration {
	if s == nil {
		return nil
	}
	return s.all
}
