package sync

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

//go:embed upgrades/*.sql
var upgradesFS embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgradesFS, "upgrades").Finish()

// SaveFilter stores f for user and returns its new filter ID (a small decimal number, per user).
func (s *Service) SaveFilter(ctx context.Context, user id.UserID, f *mautrix.Filter) (string, error) {
	raw, err := json.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("encode filter: %w", err)
	}
	s.filterMu.Lock()
	defer s.filterMu.Unlock()
	var next int64
	err = s.db.QueryRow(ctx, `SELECT COALESCE(MAX(filter_id), -1) + 1 FROM sync_filters WHERE user_id=$1`, user).Scan(&next)
	if err != nil {
		return "", fmt.Errorf("next filter id: %w", err)
	}
	_, err = s.db.Exec(ctx, `INSERT INTO sync_filters (user_id, filter_id, filter) VALUES ($1, $2, $3)`, user, next, string(raw))
	if err != nil {
		return "", fmt.Errorf("store filter: %w", err)
	}
	return strconv.FormatInt(next, 10), nil
}

// Filter returns the stored filter filterID of user, or mxerr.NotFound.
func (s *Service) Filter(ctx context.Context, user id.UserID, filterID string) (*mautrix.Filter, error) {
	n, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil || n < 0 {
		return nil, mxerr.NotFound("no such filter")
	}
	var raw string
	err = s.db.QueryRow(ctx, `SELECT filter FROM sync_filters WHERE user_id=$1 AND filter_id=$2`, user, n).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.NotFound("no such filter")
	} else if err != nil {
		return nil, fmt.Errorf("load filter: %w", err)
	}
	var f mautrix.Filter
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		return nil, fmt.Errorf("decode stored filter: %w", err)
	}
	return &f, nil
}

// Receipt is one stored read receipt.
type Receipt struct {
	RoomID   id.RoomID
	UserID   id.UserID
	Type     string
	ThreadID string
	EventID  id.EventID
	TS       int64
	Pos      int64
}

// SetReceipt records that user has read up to eventID in room (receiptType "m.read" or "m.read.private"), advances
// the receipt stream and wakes the room's /sync waiters. A later receipt of the same type and thread replaces
// the earlier one.
func (s *Service) SetReceipt(ctx context.Context, r Receipt) error {
	s.receiptMu.Lock()
	pos := s.receiptPos + 1
	_, err := s.db.Exec(ctx, `
		INSERT INTO sync_receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (room_id, user_id, receipt_type, thread_id)
		DO UPDATE SET event_id=excluded.event_id, ts=excluded.ts, pos=excluded.pos`,
		r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.TS, pos)
	if err == nil {
		s.receiptPos = pos
	}
	s.receiptMu.Unlock()
	if err != nil {
		return fmt.Errorf("store receipt: %w", err)
	}
	s.notifier.WakeRoom(r.RoomID)
	return nil
}

// receiptsSince returns the receipts in room with a stream position in (since, upTo].
func (s *Service) receiptsSince(ctx context.Context, room id.RoomID, since, upTo int64) ([]Receipt, error) {
	rows, err := s.db.Query(ctx, `
		SELECT user_id, receipt_type, thread_id, event_id, ts, pos FROM sync_receipts
		WHERE room_id=$1 AND pos>$2 AND pos<=$3 ORDER BY pos`, room, since, upTo)
	if err != nil {
		return nil, fmt.Errorf("query receipts: %w", err)
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		r := Receipt{RoomID: room}
		if err := rows.Scan(&r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.Pos); err != nil {
			return nil, fmt.Errorf("scan receipt: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// receiptRooms returns the rooms with a receipt stream position in (since, upTo].
func (s *Service) receiptRooms(ctx context.Context, since, upTo int64) (map[id.RoomID]bool, error) {
	out := map[id.RoomID]bool{}
	if upTo <= since {
		return out, nil
	}
	rows, err := s.db.Query(ctx, `SELECT DISTINCT room_id FROM sync_receipts WHERE pos>$1 AND pos<=$2`, since, upTo)
	if err != nil {
		return nil, fmt.Errorf("query receipt rooms: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r id.RoomID
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("scan receipt room: %w", err)
		}
		out[r] = true
	}
	return out, rows.Err()
}

func (s *Service) loadReceiptPos(ctx context.Context) error {
	err := s.db.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM sync_receipts`).Scan(&s.receiptPos)
	if err != nil {
		return fmt.Errorf("load receipt position: %w", err)
	}
	return nil
}

// ReceiptPos returns the current receipt stream position.
func (s *Service) ReceiptPos() int64 {
	s.receiptMu.Lock()
	defer s.receiptMu.Unlock()
	return s.receiptPos
}

// Forget records that user forgot room while memberEvent (a leave or ban) is their membership there.
func (s *Service) Forget(ctx context.Context, user id.UserID, room id.RoomID, memberEvent id.EventID) error {
	_, err := s.db.Exec(ctx, `INSERT INTO sync_forgotten (user_id, room_id, member_event_id) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, room_id) DO UPDATE SET member_event_id = excluded.member_event_id`, user, room, memberEvent)
	if err != nil {
		return fmt.Errorf("forget %s for %s: %w", room, user, err)
	}
	return nil
}

// Forgotten reports whether user forgot room and memberEvent is still the membership they forgot it with.
func (s *Service) Forgotten(ctx context.Context, user id.UserID, room id.RoomID, memberEvent id.EventID) (bool, error) {
	if memberEvent == "" {
		return false, nil
	}
	var evID string
	err := s.db.QueryRow(ctx, `SELECT member_event_id FROM sync_forgotten WHERE user_id = $1 AND room_id = $2`, user, room).Scan(&evID)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read forgotten %s for %s: %w", room, user, err)
	}
	return evID == string(memberEvent), nil
}
