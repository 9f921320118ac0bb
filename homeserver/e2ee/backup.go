package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// maxBackupKeysPerRequest bounds the sessions in one key backup upload. Clients upload in batches (Element: 200
// per request); the bound keeps one request's transaction short.
const maxBackupKeysPerRequest = 1000

// BackupVersion is the answer to GET /room_keys/version[/{version}].
type BackupVersion struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// BackupKey is one backed-up session (KeyBackupData in the spec).
type BackupKey struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// BackupRooms maps room → session ID → key, the shape of GET/PUT /room_keys/keys.
type BackupRooms map[id.RoomID]map[id.SessionID]*BackupKey

// errNoBackup is the spec's answer for an unknown or deleted backup version.
func errNoBackup() *mxerr.Error { return mxerr.NotFound("no such backup version") }

func parseVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

// CreateBackupVersion makes a new backup version for user, which becomes the current one.
func (s *Service) CreateBackupVersion(ctx context.Context, user id.UserID, algorithm string, authData json.RawMessage) (string, error) {
	if algorithm == "" {
		return "", mxerr.MissingParam("algorithm is required")
	}
	if len(authData) == 0 || authData[0] != '{' {
		return "", mxerr.BadJSON("auth_data must be an object")
	}
	var version int64
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		err := s.db.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM e2ee_backup_versions WHERE user_id=$1`, user).Scan(&version)
		if err != nil {
			return err
		}
		_, err = s.db.Exec(ctx, `INSERT INTO e2ee_backup_versions (user_id, version, algorithm, auth_data, etag, deleted)
			VALUES ($1, $2, $3, $4, 0, $5)`, user, version, algorithm, string(authData), false)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create backup version for %s: %w", user, err)
	}
	return strconv.FormatInt(version, 10), nil
}

// BackupVersion returns user's backup version ("" = the current one), or M_NOT_FOUND.
func (s *Service) BackupVersion(ctx context.Context, user id.UserID, version string) (*BackupVersion, error) {
	v, err := s.resolveVersion(ctx, user, version)
	if err != nil {
		return nil, err
	}
	var bv BackupVersion
	var auth string
	var etag int64
	err = s.db.QueryRow(ctx, `SELECT algorithm, auth_data, etag FROM e2ee_backup_versions WHERE user_id=$1 AND version=$2`,
		user, v).Scan(&bv.Algorithm, &auth, &etag)
	if err != nil {
		return nil, fmt.Errorf("load backup version: %w", err)
	}
	if err = s.db.QueryRow(ctx, `SELECT COUNT(*) FROM e2ee_backup_keys WHERE user_id=$1 AND version=$2`, user, v).Scan(&bv.Count); err != nil {
		return nil, fmt.Errorf("count backup keys: %w", err)
	}
	bv.AuthData, bv.ETag, bv.Version = json.RawMessage(auth), strconv.FormatInt(etag, 10), strconv.FormatInt(v, 10)
	return &bv, nil
}

// resolveVersion returns the number of a live backup version of user ("" = the current one) or M_NOT_FOUND.
func (s *Service) resolveVersion(ctx context.Context, user id.UserID, version string) (int64, error) {
	var v int64
	var err error
	if version == "" {
		err = s.db.QueryRow(ctx, `SELECT version FROM e2ee_backup_versions WHERE user_id=$1 AND deleted=$2
			ORDER BY version DESC LIMIT 1`, user, false).Scan(&v)
	} else {
		n, ok := parseVersion(version)
		if !ok {
			return 0, errNoBackup()
		}
		err = s.db.QueryRow(ctx, `SELECT version FROM e2ee_backup_versions WHERE user_id=$1 AND version=$2 AND deleted=$3`,
			user, n, false).Scan(&v)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return 0, errNoBackup()
	} else if err != nil {
		return 0, fmt.Errorf("find backup version: %w", err)
	}
	return v, nil
}

// UpdateBackupVersion replaces the auth_data of a backup version; the algorithm cannot change.
func (s *Service) UpdateBackupVersion(ctx context.Context, user id.UserID, version, algorithm string, authData json.RawMessage) error {
	v, err := s.resolveVersion(ctx, user, version)
	if err != nil {
		return err
	}
	if len(authData) == 0 || authData[0] != '{' {
		return mxerr.BadJSON("auth_data must be an object")
	}
	var old string
	if err = s.db.QueryRow(ctx, `SELECT algorithm FROM e2ee_backup_versions WHERE user_id=$1 AND version=$2`, user, v).Scan(&old); err != nil {
		return fmt.Errorf("load backup version: %w", err)
	}
	if algorithm != old {
		return mxerr.InvalidParam("the algorithm of a backup version cannot change")
	}
	_, err = s.db.Exec(ctx, `UPDATE e2ee_backup_versions SET auth_data=$3 WHERE user_id=$1 AND version=$2`, user, v, string(authData))
	if err != nil {
		return fmt.Errorf("update backup version: %w", err)
	}
	return nil
}

// DeleteBackupVersion deletes a backup version and its keys. Its number is not reused.
func (s *Service) DeleteBackupVersion(ctx context.Context, user id.UserID, version string) error {
	v, err := s.resolveVersion(ctx, user, version)
	if err != nil {
		return err
	}
	return s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := s.db.Exec(ctx, `DELETE FROM e2ee_backup_keys WHERE user_id=$1 AND version=$2`, user, v); err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		_, err := s.db.Exec(ctx, `UPDATE e2ee_backup_versions SET deleted=$3 WHERE user_id=$1 AND version=$2`, user, v, true)
		if err != nil {
			return fmt.Errorf("delete backup version: %w", err)
		}
		return nil
	})
}

// errWrongVersion is the spec's refusal to write keys into a backup version that is not the current one.
func errWrongVersion(current int64) *mxerr.Error {
	e := mxerr.New(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION", "that is not the current backup version")
	e.Extra = map[string]any{"current_version": strconv.FormatInt(current, 10)}
	return e
}

// better reports whether a new backed-up session should replace the stored one, by the spec's rules: a verified
// key beats an unverified one; then the lower first message index (it decrypts more); then fewer forwards.
func better(n, old *BackupKey) bool {
	if n.IsVerified != old.IsVerified {
		return n.IsVerified
	}
	if n.FirstMessageIndex != old.FirstMessageIndex {
		return n.FirstMessageIndex < old.FirstMessageIndex
	}
	return n.ForwardedCount < old.ForwardedCount
}

// PutBackupKeys stores keys into the current backup version, which version must name (else
// M_WRONG_ROOM_KEYS_VERSION), keeping a stored key when it is better than the uploaded one. It returns the
// version's key count and etag.
func (s *Service) PutBackupKeys(ctx context.Context, user id.UserID, version string, keys BackupRooms) (int64, string, error) {
	n, ok := parseVersion(version)
	if !ok {
		return 0, "", errNoBackup()
	}
	current, err := s.resolveVersion(ctx, user, "")
	if err != nil {
		return 0, "", err
	}
	if n != current {
		return 0, "", errWrongVersion(current)
	}
	total := 0
	for room, sessions := range keys {
		if _, err := parseRoom(room); err != nil {
			return 0, "", err
		}
		for sid, k := range sessions {
			total++
			if sid == "" || k == nil || len(k.SessionData) == 0 || k.SessionData[0] != '{' || k.FirstMessageIndex < 0 || k.ForwardedCount < 0 {
				return 0, "", mxerr.BadJSON("bad key backup data for session %q", sid)
			}
		}
	}
	if total > maxBackupKeysPerRequest {
		return 0, "", mxerr.TooLarge("at most %d sessions per request", maxBackupKeysPerRequest)
	}
	err = s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		changed := false
		for room, sessions := range keys {
			for sid, k := range sessions {
				var old BackupKey
				err := s.db.QueryRow(ctx, `SELECT first_message_index, forwarded_count, is_verified FROM e2ee_backup_keys
					WHERE user_id=$1 AND version=$2 AND room_id=$3 AND session_id=$4`, user, n, room, sid).
					Scan(&old.FirstMessageIndex, &old.ForwardedCount, &old.IsVerified)
				if err == nil && !better(k, &old) {
					continue
				} else if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("load backup key: %w", err)
				}
				_, err = s.db.Exec(ctx, `INSERT INTO e2ee_backup_keys (user_id, version, room_id, session_id,
					first_message_index, forwarded_count, is_verified, session_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
					ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
					first_message_index=excluded.first_message_index, forwarded_count=excluded.forwarded_count,
					is_verified=excluded.is_verified, session_data=excluded.session_data`,
					user, n, room, sid, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData))
				if err != nil {
					return fmt.Errorf("store backup key: %w", err)
				}
				changed = true
			}
		}
		if changed {
			if _, err := s.db.Exec(ctx, `UPDATE e2ee_backup_versions SET etag=etag+1 WHERE user_id=$1 AND version=$2`, user, n); err != nil {
				return fmt.Errorf("bump backup etag: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, "", fmt.Errorf("back up keys of %s: %w", user, err)
	}
	return s.backupCount(ctx, user, n)
}

func (s *Service) backupCount(ctx context.Context, user id.UserID, v int64) (int64, string, error) {
	var count, etag int64
	err := s.db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM e2ee_backup_keys WHERE user_id=$1 AND version=$2), etag
		FROM e2ee_backup_versions WHERE user_id=$1 AND version=$2`, user, v).Scan(&count, &etag)
	if err != nil {
		return 0, "", fmt.Errorf("count backup keys: %w", err)
	}
	return count, strconv.FormatInt(etag, 10), nil
}

// BackupKeys returns the keys of a backup version, all of them or those of one room ("" = all) or one session.
func (s *Service) BackupKeys(ctx context.Context, user id.UserID, version string, room id.RoomID, session id.SessionID) (BackupRooms, error) {
	v, err := s.resolveVersion(ctx, user, version)
	if err != nil {
		return nil, err
	}
	q := `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM e2ee_backup_keys
		WHERE user_id=$1 AND version=$2`
	args := []any{user, v}
	if room != "" {
		q += ` AND room_id=$3`
		args = append(args, room)
		if session != "" {
			q += ` AND session_id=$4`
			args = append(args, session)
		}
	}
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("load backup keys: %w", err)
	}
	defer rows.Close()
	out := BackupRooms{}
	for rows.Next() {
		var r id.RoomID
		var sid id.SessionID
		var k BackupKey
		var data string
		if err := rows.Scan(&r, &sid, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			return nil, fmt.Errorf("load backup keys: %w", err)
		}
		k.SessionData = json.RawMessage(data)
		if out[r] == nil {
			out[r] = map[id.SessionID]*BackupKey{}
		}
		out[r][sid] = &k
	}
	return out, rows.Err()
}

// DeleteBackupKeys deletes keys from a backup version (all, one room's or one session) and returns the new count
// and etag.
func (s *Service) DeleteBackupKeys(ctx context.Context, user id.UserID, version string, room id.RoomID, session id.SessionID) (int64, string, error) {
	v, err := s.resolveVersion(ctx, user, version)
	if err != nil {
		return 0, "", err
	}
	q := `DELETE FROM e2ee_backup_keys WHERE user_id=$1 AND version=$2`
	args := []any{user, v}
	if room != "" {
		q += ` AND room_id=$3`
		args = append(args, room)
		if session != "" {
			q += ` AND session_id=$4`
			args = append(args, session)
		}
	}
	err = s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		res, err := s.db.Exec(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			_, err = s.db.Exec(ctx, `UPDATE e2ee_backup_versions SET etag=etag+1 WHERE user_id=$1 AND version=$2`, user, v)
		}
		return err
	})
	if err != nil {
		return 0, "", err
	}
	return s.backupCount(ctx, user, v)
}

func parseRoom(r id.RoomID) (id.RoomID, error) {
	if len(r) < 3 || r[0] != '!' || len(r) > 255 {
		return "", mxerr.InvalidParam("invalid room ID %q", r)
	}
	return r, nil
}
