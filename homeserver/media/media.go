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
	mid := newMediaID()
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
