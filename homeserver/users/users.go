// Package users is the homeserver's account core: accounts and their passwords, devices and access tokens,
// profiles, and account data with its own stream position.
//
// It is used by the HTTP layer, /sync and the CLI. It must not import rooms, any HTTP, sync, appservice or
// bridge package; it imports only mxerr from the project.
package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/users/upgrades"
)

// maxUserIDLength is the spec's limit on a full user ID, sigil and server name included.
const maxUserIDLength = 255

// Service owns the users tables. It is safe for concurrent use.
type Service struct {
	db         *dbutil.Database
	serverName string
	log        zerolog.Logger

	// bcryptCost is bcrypt.DefaultCost in production; tests lower it.
	bcryptCost int

	tokenMu    sync.RWMutex
	tokenCache map[string]session // by token hash
	// tokenTTL is how long a cached token is trusted before the database is asked again (tokenCacheTTL; tests
	// lower it).
	tokenTTL time.Duration

	// adMu serialises account-data writers so stream positions commit in order.
	adMu sync.Mutex
}

type session struct {
	userID   id.UserID
	deviceID id.DeviceID
	checked  time.Time // when the database last confirmed the token
}

// tokenCacheTTL bounds how long a token revoked by another process (the CLI, a second node sharing PostgreSQL, a
// deactivation from an admin tool) keeps working in this one: a minute keeps the database out of the hot path
// (one lookup per token per minute) while revocations still take effect quickly everywhere.
const tokenCacheTTL = time.Minute

// maxCachedTokens bounds the token cache; when it is full the cache is emptied and refills from the database.
// 200k sessions keep the map around 40 MB at worst, enough for 40,000 users with a few devices each.
const maxCachedTokens = 200_000

// RegisterOpts are the optional parts of an account.
type RegisterOpts struct {
	// Admin marks the account as a server administrator.
	Admin bool
	// AppserviceID is the ID of the appservice that registered the account ("" for people).
	AppserviceID string
}

// New runs the users migrations on db (version table "users_version") and returns the service.
func New(ctx context.Context, db *dbutil.Database, serverName string, log zerolog.Logger) (*Service, error) {
	child := db.Child("users_version", upgrades.Table, dbutil.ZeroLogger(log))
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade users database: %w", err)
	}
	return &Service{
		db:         child,
		serverName: serverName,
		log:        log,
		bcryptCost: bcrypt.DefaultCost,
		tokenCache: make(map[string]session),
		tokenTTL:   tokenCacheTTL,
	}, nil
}

// ServerName returns the server name the service builds user IDs with.
func (s *Service) ServerName() string { return s.serverName }

// ValidLocalpart reports whether localpart may be used for a new user on this server: only a-z, 0-9 and
// ._=-/+, not empty, and the full user ID at most 255 bytes long.
func (s *Service) ValidLocalpart(localpart string) error {
	if localpart == "" {
		return mxerr.InvalidUsername("user name is empty")
	}
	for i := 0; i < len(localpart); i++ {
		c := localpart[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("._=-/+", c) >= 0:
		default:
			return mxerr.InvalidUsername("user name may contain only a-z, 0-9 and ._=-/+")
		}
	}
	if len(id.NewUserID(localpart, s.serverName)) > maxUserIDLength {
		return mxerr.InvalidUsername("user ID is longer than %d characters", maxUserIDLength)
	}
	return nil
}

// UserID returns @localpart:server for this server.
func (s *Service) UserID(localpart string) id.UserID { return id.NewUserID(localpart, s.serverName) }

// Register creates an account. An empty password creates an account that cannot log in with a password (for
// appservice users). It returns mxerr.InvalidUsername for a bad localpart and mxerr.UserInUse when taken.
func (s *Service) Register(ctx context.Context, localpart, password string, opts RegisterOpts) (id.UserID, error) {
	if err := s.ValidLocalpart(localpart); err != nil {
		return "", err
	}
	userID := s.UserID(localpart)
	var hash string
	if password != "" {
		h, err := bcrypt.GenerateFromPassword([]byte(password), s.bcryptCost)
		if err != nil {
			if errors.Is(err, bcrypt.ErrPasswordTooLong) {
				return "", mxerr.InvalidParam("password is longer than 72 bytes")
			}
			return "", fmt.Errorf("hash password: %w", err)
		}
		hash = string(h)
	}
	res, err := s.db.Exec(ctx, `
		INSERT INTO users_accounts (user_id, password_hash, admin, appservice_id, created_ts)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO NOTHING`,
		userID, hash, opts.Admin, opts.AppserviceID, time.Now().UnixMilli())
	if err != nil {
		return "", fmt.Errorf("insert account %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return "", mxerr.UserInUse("user ID already taken")
	}
	zerolog.Ctx(ctx).Debug().Stringer("user_id", userID).Str("appservice_id", opts.AppserviceID).Msg("Registered account")
	return userID, nil
}

// errBadLogin is the one answer for every failed password check, so that it does not reveal which accounts
// exist.
func errBadLogin() error { return mxerr.Forbidden("invalid user name or password") }

// CheckPassword verifies a password. Unknown users, deactivated users, accounts without a password and wrong
// passwords all get the same mxerr.Forbidden.
func (s *Service) CheckPassword(ctx context.Context, userID id.UserID, password string) error {
	var (
		hash        string
		deactivated bool
	)
	err := s.db.QueryRow(ctx, `SELECT password_hash, deactivated FROM users_accounts WHERE user_id = $1`, userID).
		Scan(&hash, &deactivated)
	if errors.Is(err, sql.ErrNoRows) {
		// Spend the time a real check would, so timing does not reveal which accounts exist.
		_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
		return errBadLogin()
	} else if err != nil {
		return fmt.Errorf("load password of %s: %w", userID, err)
	}
	if hash == "" || deactivated || password == "" {
		return errBadLogin()
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		return errBadLogin()
	}
	return nil
}

// dummyHash is compared against when the account does not exist. It is made on first use: hashing at
// package init would cost every program that imports users a bcrypt round at start.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("passerelle timing equaliser"), bcrypt.DefaultCost)
	return h
})

// SetPassword replaces a user's password ("" disables password login).
func (s *Service) SetPassword(ctx context.Context, userID id.UserID, password string) error {
	var hash string
	if password != "" {
		h, err := bcrypt.GenerateFromPassword([]byte(password), s.bcryptCost)
		if err != nil {
			return fmt.Errorf("hash password: %w", err)
		}
		hash = string(h)
	}
	res, err := s.db.Exec(ctx, `UPDATE users_accounts SET password_hash = $2 WHERE user_id = $1`, userID, hash)
	if err != nil {
		return fmt.Errorf("set password of %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("no such user")
	}
	return nil
}

// Exists reports whether the account exists (deactivated accounts exist).
func (s *Service) Exists(ctx context.Context, userID id.UserID) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM users_accounts WHERE user_id = $1`, userID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("look up account %s: %w", userID, err)
	}
	return true, nil
}

// IsAdmin reports whether the user is a server administrator (false for unknown users).
func (s *Service) IsAdmin(ctx context.Context, userID id.UserID) (bool, error) {
	var admin bool
	err := s.db.QueryRow(ctx, `SELECT admin FROM users_accounts WHERE user_id = $1`, userID).Scan(&admin)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("look up account %s: %w", userID, err)
	}
	return admin, nil
}

// SetAdmin grants or revokes server administration.
func (s *Service) SetAdmin(ctx context.Context, userID id.UserID, admin bool) error {
	res, err := s.db.Exec(ctx, `UPDATE users_accounts SET admin = $2 WHERE user_id = $1`, userID, admin)
	if err != nil {
		return fmt.Errorf("set admin of %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("no such user")
	}
	return nil
}

// Account is the stored description of one account (no password).
type Account struct {
	UserID       id.UserID
	Admin        bool
	AppserviceID string
	DisplayName  string
	AvatarURL    string
	Deactivated  bool
	CreatedTS    int64
}

// Account returns one account, or mxerr.NotFound.
func (s *Service) Account(ctx context.Context, userID id.UserID) (*Account, error) {
	var a Account
	err := s.db.QueryRow(ctx, `
		SELECT user_id, admin, appservice_id, displayname, avatar_url, deactivated, created_ts
		FROM users_accounts WHERE user_id = $1`, userID).
		Scan(&a.UserID, &a.Admin, &a.AppserviceID, &a.DisplayName, &a.AvatarURL, &a.Deactivated, &a.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.NotFound("no such user")
	} else if err != nil {
		return nil, fmt.Errorf("load account %s: %w", userID, err)
	}
	return &a, nil
}

// Deactivate marks the account deactivated, removes its password and logs out every device.
func (s *Service) Deactivate(ctx context.Context, userID id.UserID) error {
	res, err := s.db.Exec(ctx, `UPDATE users_accounts SET deactivated = true, password_hash = '' WHERE user_id = $1`, userID)
	if err != nil {
		return fmt.Errorf("deactivate %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("no such user")
	}
	return s.LogoutAll(ctx, userID)
}
