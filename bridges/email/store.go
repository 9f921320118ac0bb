package email

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/passerelle/passerelle/bridges/email/upgrades"
)

// versionTable is the email bridge's own migration version table inside the bridge database.
const versionTable = "email_version"

// MailboxState is how far a login's mailbox has been bridged: the UIDVALIDITY the UIDs belong to and the
// highest UID already handed to the bridge. Updated is when it last advanced.
type MailboxState struct {
	UIDValidity uint32
	LastUID     uint32
	Updated     time.Time
}

// StateStore persists mailbox sync positions. The bridge uses *Store; tests may use their own.
type StateStore interface {
	// LoadState returns the saved state, or found=false when the mailbox was never synced.
	LoadState(ctx context.Context, loginID, mailbox string) (st MailboxState, found bool, err error)
	// SaveState records the state; it must be durable when it returns.
	SaveState(ctx context.Context, loginID, mailbox string, st MailboxState) error
}

// Store is the email bridge's own tables in the bridge database.
type Store struct {
	db *dbutil.Database
}

var _ StateStore = (*Store)(nil)

// NewStore opens the email bridge's tables on db (usually bridgev2's database) and runs its migrations,
// tracked in their own version table.
func NewStore(ctx context.Context, db *dbutil.Database, log zerolog.Logger) (*Store, error) {
	child := db.Child(versionTable, upgrades.Table, dbutil.ZeroLogger(log.With().Str("db_section", "email").Logger()))
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade email bridge tables: %w", err)
	}
	return &Store{db: child}, nil
}

// LoadState implements StateStore.
func (s *Store) LoadState(ctx context.Context, loginID, mailbox string) (MailboxState, bool, error) {
	var validity, last, updated int64
	err := s.db.QueryRow(ctx,
		`SELECT uid_validity, last_uid, updated_at FROM email_mailbox_state WHERE login_id=$1 AND mailbox=$2`,
		loginID, mailbox).Scan(&validity, &last, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return MailboxState{}, false, nil
	} else if err != nil {
		return MailboxState{}, false, fmt.Errorf("load mailbox state of %s: %w", mailbox, err)
	}
	return MailboxState{UIDValidity: uint32(validity), LastUID: uint32(last), Updated: time.UnixMilli(updated)}, true, nil
}

// SaveState implements StateStore.
func (s *Store) SaveState(ctx context.Context, loginID, mailbox string, st MailboxState) error {
	if st.Updated.IsZero() {
		st.Updated = time.Now()
	}
	_, err := s.db.Exec(ctx, `
		INSERT INTO email_mailbox_state (login_id, mailbox, uid_validity, last_uid, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (login_id, mailbox) DO UPDATE
			SET uid_validity=excluded.uid_validity, last_uid=excluded.last_uid, updated_at=excluded.updated_at`,
		loginID, mailbox, int64(st.UIDValidity), int64(st.LastUID), st.Updated.UnixMilli())
	if err != nil {
		return fmt.Errorf("save mailbox state of %s: %w", mailbox, err)
	}
	return nil
}

// ThreadBySubject returns the portal last used for a base subject by this login, or "" when none.
func (s *Store) ThreadBySubject(ctx context.Context, loginID, baseSubject string) (string, error) {
	var portalID string
	err := s.db.QueryRow(ctx,
		`SELECT portal_id FROM email_thread_subject WHERE login_id=$1 AND base_subject=$2`,
		loginID, baseSubject).Scan(&portalID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("look up thread by subject: %w", err)
	}
	return portalID, nil
}

// SetThreadSubject records that baseSubject's newest thread for this login is portalID.
func (s *Store) SetThreadSubject(ctx context.Context, loginID, baseSubject, portalID string) error {
	_, err := s.db.Exec(ctx, `
		INSERT INTO email_thread_subject (login_id, base_subject, portal_id, updated_at)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (login_id, base_subject) DO UPDATE SET portal_id=excluded.portal_id, updated_at=excluded.updated_at`,
		loginID, baseSubject, portalID, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("record thread subject: %w", err)
	}
	return nil
}

// DeleteLogin forgets everything stored for a login (after logout).
func (s *Store) DeleteLogin(ctx context.Context, loginID string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM email_mailbox_state WHERE login_id=$1`, loginID); err != nil {
		return fmt.Errorf("delete mailbox state: %w", err)
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM email_thread_subject WHERE login_id=$1`, loginID); err != nil {
		return fmt.Errorf("delete thread subjects: %w", err)
	}
	return nil
}
