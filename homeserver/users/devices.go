package users

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// tokenPrefix marks Passerelle access tokens so that a leaked one is recognisable by secret scanners.
const tokenPrefix = "psr_"

// Device is one logged-in device of a user.
type Device struct {
	DeviceID    id.DeviceID
	DisplayName string
	CreatedTS   int64
	LastSeenTS  int64
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func newToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on supported platforms
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

func newDeviceID() id.DeviceID {
	// Ten capital letters, as Synapse generates: short enough to read out, 26^10 possibilities per user.
	var b [10]byte
	_, _ = rand.Read(b[:])
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for i, c := range b {
		b[i] = alphabet[int(c)%len(alphabet)]
	}
	return id.DeviceID(b[:])
}

// NewDevice logs userID in on a device and returns the device ID and a fresh access token. An empty deviceID
// generates one; an existing deviceID keeps its row and gets a new token (the old one stops working), as the
// spec's login requires. The token is returned once and stored only as its SHA-256 hash.
func (s *Service) NewDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID, displayName string) (id.DeviceID, string, error) {
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	if len(deviceID) > 255 {
		return "", "", mxerr.InvalidParam("device ID is too long")
	}
	token := newToken()
	hash := hashToken(token)
	now := time.Now().UnixMilli()
	var oldHash string
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		err := s.db.QueryRow(ctx, `SELECT token_hash FROM users_devices WHERE user_id = $1 AND device_id = $2`,
			userID, deviceID).Scan(&oldHash)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if oldHash != "" {
			if displayName == "" {
				_, err = s.db.Exec(ctx, `UPDATE users_devices SET token_hash = $3, last_seen_ts = $4
					WHERE user_id = $1 AND device_id = $2`, userID, deviceID, hash, now)
			} else {
				_, err = s.db.Exec(ctx, `UPDATE users_devices SET token_hash = $3, last_seen_ts = $4, display_name = $5
					WHERE user_id = $1 AND device_id = $2`, userID, deviceID, hash, now, displayName)
			}
			return err
		}
		_, err = s.db.Exec(ctx, `INSERT INTO users_devices (user_id, device_id, display_name, token_hash, created_ts, last_seen_ts)
			VALUES ($1, $2, $3, $4, $5, $5)`, userID, deviceID, displayName, hash, now)
		return err
	})
	if err != nil {
		if strings.Contains(err.Error(), "FOREIGN KEY") || strings.Contains(err.Error(), "foreign key") {
			return "", "", mxerr.NotFound("no such user")
		}
		return "", "", fmt.Errorf("store device %s of %s: %w", deviceID, userID, err)
	}
	if oldHash != "" {
		s.forget(oldHash)
	}
	s.remember(hash, session{userID: userID, deviceID: deviceID})
	return deviceID, token, nil
}

func (s *Service) remember(hash string, sess session) {
	sess.checked = time.Now()
	s.tokenMu.Lock()
	if len(s.tokenCache) >= maxCachedTokens {
		clear(s.tokenCache)
	}
	s.tokenCache[hash] = sess
	s.tokenMu.Unlock()
}

func (s *Service) forget(hashes ...string) {
	s.tokenMu.Lock()
	for _, h := range hashes {
		delete(s.tokenCache, h)
	}
	s.tokenMu.Unlock()
}

// Authenticate returns the user and device an access token belongs to, or mxerr.UnknownToken. Known tokens are
// answered from memory for up to tokenCacheTTL, then confirmed by the database again.
func (s *Service) Authenticate(ctx context.Context, token string) (id.UserID, id.DeviceID, error) {
	if token == "" {
		return "", "", mxerr.MissingToken("missing access token")
	}
	hash := hashToken(token)
	s.tokenMu.RLock()
	sess, ok := s.tokenCache[hash]
	s.tokenMu.RUnlock()
	if ok && time.Since(sess.checked) < s.tokenTTL {
		return sess.userID, sess.deviceID, nil
	}
	err := s.db.QueryRow(ctx, `SELECT d.user_id, d.device_id FROM users_devices d
		JOIN users_accounts a ON a.user_id = d.user_id
		WHERE d.token_hash = $1 AND NOT a.deactivated`, hash).Scan(&sess.userID, &sess.deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		s.forget(hash)
		return "", "", mxerr.UnknownToken("unknown access token")
	} else if err != nil {
		return "", "", fmt.Errorf("look up access token: %w", err)
	}
	s.remember(hash, sess)
	return sess.userID, sess.deviceID, nil
}

// Logout invalidates one access token and deletes its device. An unknown token is mxerr.UnknownToken.
func (s *Service) Logout(ctx context.Context, token string) error {
	hash := hashToken(token)
	res, err := s.db.Exec(ctx, `DELETE FROM users_devices WHERE token_hash = $1`, hash)
	s.forget(hash)
	if err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.UnknownToken("unknown access token")
	}
	return nil
}

// DeleteDevice logs out one device of a user. A missing device is mxerr.NotFound.
func (s *Service) DeleteDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID) error {
	var hash string
	err := s.db.QueryRow(ctx, `DELETE FROM users_devices WHERE user_id = $1 AND device_id = $2 RETURNING token_hash`,
		userID, deviceID).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) {
		return mxerr.NotFound("no such device")
	} else if err != nil {
		return fmt.Errorf("delete device %s of %s: %w", deviceID, userID, err)
	}
	s.forget(hash)
	return nil
}

// LogoutAll invalidates every access token of the user and deletes all of their devices.
func (s *Service) LogoutAll(ctx context.Context, userID id.UserID) error {
	rows, err := s.db.Query(ctx, `DELETE FROM users_devices WHERE user_id = $1 RETURNING token_hash`, userID)
	if err != nil {
		return fmt.Errorf("delete devices of %s: %w", userID, err)
	}
	hashes, err := dbutilCollectStrings(rows)
	if err != nil {
		return fmt.Errorf("delete devices of %s: %w", userID, err)
	}
	s.forget(hashes...)
	return nil
}

// Devices lists a user's devices, oldest first.
func (s *Service) Devices(ctx context.Context, userID id.UserID) ([]Device, error) {
	rows, err := s.db.Query(ctx, `SELECT device_id, display_name, created_ts, last_seen_ts FROM users_devices
		WHERE user_id = $1 ORDER BY created_ts, device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		if err = rows.Scan(&d.DeviceID, &d.DisplayName, &d.CreatedTS, &d.LastSeenTS); err != nil {
			return nil, fmt.Errorf("list devices of %s: %w", userID, err)
		}
		out = append(out, d)
	}
	if err = rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices of %s: %w", userID, err)
	}
	return out, nil
}

// Device returns one device, or mxerr.NotFound.
func (s *Service) Device(ctx context.Context, userID id.UserID, deviceID id.DeviceID) (*Device, error) {
	d := Device{DeviceID: deviceID}
	err := s.db.QueryRow(ctx, `SELECT display_name, created_ts, last_seen_ts FROM users_devices
		WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&d.DisplayName, &d.CreatedTS, &d.LastSeenTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.NotFound("no such device")
	} else if err != nil {
		return nil, fmt.Errorf("load device %s of %s: %w", deviceID, userID, err)
	}
	return &d, nil
}

// SetDeviceDisplayName renames a device; a missing device is mxerr.NotFound.
func (s *Service) SetDeviceDisplayName(ctx context.Context, userID id.UserID, deviceID id.DeviceID, name string) error {
	res, err := s.db.Exec(ctx, `UPDATE users_devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID, name)
	if err != nil {
		return fmt.Errorf("rename device %s of %s: %w", deviceID, userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("no such device")
	}
	return nil
}

func dbutilCollectStrings(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close() error
}) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
