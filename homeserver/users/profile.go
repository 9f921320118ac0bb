package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// Profile returns the global display name and avatar URL of a local user, or mxerr.NotFound.
func (s *Service) Profile(ctx context.Context, userID id.UserID) (displayname, avatarURL string, err error) {
	err = s.db.QueryRow(ctx, `SELECT displayname, avatar_url FROM users_accounts WHERE user_id = $1`, userID).
		Scan(&displayname, &avatarURL)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", mxerr.NotFound("profile not found")
	} else if err != nil {
		return "", "", fmt.Errorf("load profile of %s: %w", userID, err)
	}
	return displayname, avatarURL, nil
}

// SetDisplayName sets the global display name ("" removes it). Updating the member events of the user's rooms
// is the caller's business (users does not know rooms).
func (s *Service) SetDisplayName(ctx context.Context, userID id.UserID, name string) error {
	return s.setProfileField(ctx, userID, "displayname", name)
}

// SetAvatarURL sets the global avatar (an mxc:// URI, "" removes it).
func (s *Service) SetAvatarURL(ctx context.Context, userID id.UserID, url string) error {
	return s.setProfileField(ctx, userID, "avatar_url", url)
}

func (s *Service) setProfileField(ctx context.Context, userID id.UserID, column, value string) error {
	// column is one of two constants above, never user input.
	res, err := s.db.Exec(ctx, `UPDATE users_accounts SET `+column+` = $2 WHERE user_id = $1`, userID, value)
	if err != nil {
		return fmt.Errorf("set %s of %s: %w", column, userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("profile not found")
	}
	return nil
}

// AccountDataItem is one account data entry with the stream position of its last change.
type AccountDataItem struct {
	// RoomID is "" for global account data.
	RoomID  id.RoomID
	Type    string
	Content json.RawMessage
	Pos     int64
}

// SetAccountData stores (replacing) one account data entry and returns its new stream position. roomID ""
// means global. content must be a JSON object.
func (s *Service) SetAccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, evType string, content json.RawMessage) (int64, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(content, &obj); err != nil || obj == nil {
		return 0, mxerr.BadJSON("account data content must be a JSON object")
	}
	if evType == "" {
		return 0, mxerr.InvalidParam("account data type is empty")
	}
	s.adMu.Lock()
	defer s.adMu.Unlock()
	var pos int64
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := s.db.QueryRow(ctx, `UPDATE users_stream SET pos = pos + 1 WHERE id = 0 RETURNING pos`).Scan(&pos); err != nil {
			return err
		}
		_, err := s.db.Exec(ctx, `
			INSERT INTO users_account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
			userID, roomID, evType, string(content), pos)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store account data %s of %s: %w", evType, userID, err)
	}
	return pos, nil
}

// AccountData returns one account data entry's content, or mxerr.NotFound.
func (s *Service) AccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, evType string) (json.RawMessage, error) {
	var content string
	err := s.db.QueryRow(ctx, `SELECT content FROM users_account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, evType).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.NotFound("account data not found")
	} else if err != nil {
		return nil, fmt.Errorf("load account data %s of %s: %w", evType, userID, err)
	}
	return json.RawMessage(content), nil
}

// AccountDataSince returns the user's entries changed after the stream position since (0 = all), oldest
// change first.
func (s *Service) AccountDataSince(ctx context.Context, userID id.UserID, since int64) ([]AccountDataItem, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, type, content, stream_pos FROM users_account_data
		WHERE user_id = $1 AND stream_pos > $2 ORDER BY stream_pos`, userID, since)
	if err != nil {
		return nil, fmt.Errorf("list account data of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []AccountDataItem
	for rows.Next() {
		var (
			it      AccountDataItem
			content string
		)
		if err = rows.Scan(&it.RoomID, &it.Type, &content, &it.Pos); err != nil {
			return nil, fmt.Errorf("list account data of %s: %w", userID, err)
		}
		it.Content = json.RawMessage(content)
		out = append(out, it)
	}
	if err = rows.Err(); err != nil {
		return nil, fmt.Errorf("list account data of %s: %w", userID, err)
	}
	return out, nil
}

// MaxAccountDataPos returns the newest account data stream position (0 when there is none).
func (s *Service) MaxAccountDataPos(ctx context.Context) (int64, error) {
	var pos int64
	if err := s.db.QueryRow(ctx, `SELECT pos FROM users_stream WHERE id = 0`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("load account data position: %w", err)
	}
	return pos, nil
}
