// Package media is the homeserver's content repository: it stores uploaded files under <data_dir>/media with
// their metadata (type, name, size, hash, uploader) in the homeserver database, and serves them back.
//
// It imports configs and mxerr from the project; it must not import other homeserver services or any HTTP
// handler package (clientapi calls it).
package media

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

//go:embed upgrades/*.sql
var upgradesFS embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgradesFS, "upgrades").Finish()

// Service stores and serves media for one server name.
type Service struct {
	db         *dbutil.Database
	dir        string
	serverName string
	maxBytes   int64
}

// Meta is what the database keeps about one stored file.
type Meta struct {
	MediaID     string
	ContentType string
	Filename    string
	Size        int64
	SHA256      string
	Uploader    id.UserID
	CreatedTS   int64
}

// New runs the media migrations on db (version table media_version) and stores files under dir.
// maxBytes is the largest upload accepted.
func New(ctx context.Context, db *dbutil.Database, dir, serverName string, maxBytes int64, log zerolog.Logger) (*Service, error) {
	child := db.Child("media_version", upgradeTable, dbutil.ZeroLogger(log.With().Str("db_section", "media").Logger()))
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade media database: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create media directory: %w", err)
	}
	return &Service{db: child, dir: dir, serverName: serverName, maxBytes: maxBytes}, nil
}

// MaxBytes returns the upload limit.
func (s *Service) MaxBytes() int64 { return s.maxBytes }

// ServerName returns the server name used in the mxc:// URIs this service hands out.
func (s *Service) ServerName() string { return s.serverName }

// newMediaID returns 24 random characters from [a-zA-Z0-9] (the spec allows [A-Za-z0-9_-]).
func newMediaID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// validMediaID reports whether a media ID from a URL is safe to use as a file name.
func validMediaID(mid string) bool {
	if mid == "" || len(mid) > 255 {
		return false
	}
	for i := 0; i < len(mid); i++ {
		c := mid[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Upload stores the content read from r (at most MaxBytes, else mxerr.TooLarge and nothing is kept) and
// returns its mxc:// URI.
func (s *Service) Upload(ctx context.Context, uploader id.UserID, contentType, filename string, r io.Reader) (id.ContentURI, error) {
	return s.store(ctx, newMediaID(), uploader, contentType, filename, r, nil)
}

// PendingLifetime is how long a media ID reserved with Create waits for its content.
const PendingLifetime = 24 * time.Hour

// MaxPendingPerUser bounds how many reserved, not yet uploaded media IDs one user may hold.
const MaxPendingPerUser = 100

// Create reserves a media ID whose content uploader sends later with UploadTo (asynchronous upload). It
// returns the mxc:// URI and when the reservation expires; a user holding MaxPendingPerUser reservations
// gets mxerr.LimitExceeded.
func (s *Service) Create(ctx context.Context, uploader id.UserID) (id.ContentURI, time.Time, error) {
	now := time.Now()
	if _, err := s.db.Exec(ctx, `DELETE FROM media_pending WHERE expires_ts < $1`, now.UnixMilli()); err != nil {
		return id.ContentURI{}, time.Time{}, fmt.Errorf("expire pending media: %w", err)
	}
	var n int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM media_pending WHERE uploader=$1`, uploader).Scan(&n); err != nil {
		return id.ContentURI{}, time.Time{}, fmt.Errorf("count pending media: %w", err)
	}
	if n >= MaxPendingPerUser {
		return id.ContentURI{}, time.Time{}, mxerr.LimitExceeded("too many media IDs waiting for their upload")
	}
	mid, expires := newMediaID(), now.Add(PendingLifetime)
	_, err := s.db.Exec(ctx, `INSERT INTO media_pending (media_id, uploader, expires_ts) VALUES ($1, $2, $3)`,
		mid, uploader, expires.UnixMilli())
	if err != nil {
		return id.ContentURI{}, time.Time{}, fmt.Errorf("reserve media ID: %w", err)
	}
	return id.ContentURI{Homeserver: s.serverName, FileID: mid}, expires, nil
}

// UploadTo stores the content of a media ID reserved with Create. Content already stored is
// M_CANNOT_OVERWRITE_MEDIA (409); someone else's reservation is M_FORBIDDEN; an unknown or expired one is
// M_NOT_FOUND.
func (s *Service) UploadTo(ctx context.Context, uploader id.UserID, serverName, mediaID, contentType, filename string, r io.Reader) error {
	if serverName != s.serverName || !validMediaID(mediaID) {
		return mxerr.NotFound("unknown media ID")
	}
	claim := func(ctx context.Context) error {
		var owner id.UserID
		var expires int64
		err := s.db.QueryRow(ctx, `SELECT uploader, expires_ts FROM media_pending WHERE media_id=$1`, mediaID).Scan(&owner, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			var one int
			err = s.db.QueryRow(ctx, `SELECT 1 FROM media WHERE media_id=$1`, mediaID).Scan(&one)
			if err == nil {
				return errCannotOverwrite()
			} else if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("look up media: %w", err)
			}
			return mxerr.NotFound("unknown media ID")
		} else if err != nil {
			return fmt.Errorf("look up pending media: %w", err)
		}
		if owner != uploader {
			return mxerr.Forbidden("this media ID was reserved by another user")
		}
		if expires < time.Now().UnixMilli() {
			return mxerr.NotFound("the media ID reservation has expired")
		}
		// Whoever deletes the reservation owns the upload; a concurrent upload finds it gone.
		res, err := s.db.Exec(ctx, `DELETE FROM media_pending WHERE media_id=$1`, mediaID)
		if err != nil {
			return fmt.Errorf("claim pending media: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errCannotOverwrite()
		}
		return nil
	}
	_, err := s.store(ctx, mediaID, uploader, contentType, filename, r, claim)
	return err
}

func errCannotOverwrite() error {
	return mxerr.New(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "media has already been uploaded to this ID")
}

// Pending reports whether mediaID is reserved and still waiting for its content.
func (s *Service) Pending(ctx context.Context, serverName, mediaID string) (bool, error) {
	if serverName != s.serverName || !validMediaID(mediaID) {
		return false, nil
	}
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM media_pending WHERE media_id=$1 AND expires_ts >= $2`,
		mediaID, time.Now().UnixMilli()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("look up pending media: %w", err)
	}
	return true, nil
}

// store writes the content read from r as media mid. claim, when set, runs once the content is read (and
// within limits) and before anything is stored: its error aborts the upload.
func (s *Service) store(ctx context.Context, mid string, uploader id.UserID, contentType, filename string, r io.Reader,
	claim func(context.Context) error) (id.ContentURI, error) {
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	tmp, err := os.CreateTemp(s.dir, ".upload-*")
	if err != nil {
		return id.ContentURI{}, fmt.Errorf("create upload file: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, s.maxBytes+1))
	if err != nil {
		return id.ContentURI{}, fmt.Errorf("read upload: %w", err)
	}
	if n > s.maxBytes {
		return id.ContentURI{}, mxerr.TooLarge("upload is larger than %d bytes", s.maxBytes)
	}
	if err = tmp.Sync(); err != nil {
		return id.ContentURI{}, fmt.Errorf("sync upload file: %w", err)
	}
	if claim != nil {
		if err = claim(ctx); err != nil {
			return id.ContentURI{}, err
		}
	}
	if err = os.Rename(tmp.Name(), filepath.Join(s.dir, mid)); err != nil {
		return id.ContentURI{}, fmt.Errorf("store upload file: %w", err)
	}
	_, err = s.db.Exec(ctx, `INSERT INTO media (media_id, content_type, filename, size, sha256, uploader, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, mid, contentType, filename, n, hex.EncodeToString(h.Sum(nil)),
		uploader, time.Now().UnixMilli())
	if err != nil {
		_ = os.Remove(filepath.Join(s.dir, mid))
		return id.ContentURI{}, fmt.Errorf("store media metadata: %w", err)
	}
	return id.ContentURI{Homeserver: s.serverName, FileID: mid}, nil
}

// Open returns the metadata and content of a stored file; mxerr.NotFound if the server name is not ours or the
// media ID is unknown. The caller closes the file.
func (s *Service) Open(ctx context.Context, serverName, mediaID string) (*Meta, *os.File, error) {
	if serverName != s.serverName || !validMediaID(mediaID) {
		return nil, nil, mxerr.NotFound("media not found")
	}
	m := Meta{MediaID: mediaID}
	err := s.db.QueryRow(ctx, `SELECT content_type, filename, size, sha256, uploader, created_ts FROM media WHERE media_id=$1`,
		mediaID).Scan(&m.ContentType, &m.Filename, &m.Size, &m.SHA256, &m.Uploader, &m.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, mxerr.NotFound("media not found")
	} else if err != nil {
		return nil, nil, fmt.Errorf("load media metadata: %w", err)
	}
	f, err := os.Open(filepath.Join(s.dir, mediaID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, mxerr.NotFound("media content is missing")
	} else if err != nil {
		return nil, nil, fmt.Errorf("open media: %w", err)
	}
	return &m, f, nil
}
