// Package storage opens the SQL databases of the homeserver and the bridges: SQLite (the default, one file per
// component under the data directory) or PostgreSQL, both behind go.mau.fi/util/dbutil so that every service
// writes its SQL once with $n placeholders and runs its own migrations with its own version table.
//
// It imports only configs from the project; it must not import any service package.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // registers the "sqlite3-fk-wal" driver

	"github.com/passerelle/passerelle/configs"
)

// Driver names registered by the imports above.
const (
	sqliteDriver   = "sqlite3-fk-wal"
	postgresDriver = "pgx"
)

// sqliteMaxConns bounds the SQLite pool. SQLite serialises writers anyway; a few connections let readers run
// next to the writer in WAL mode without piling up lock waits (busy_timeout is 5 s in the driver's hook).
const sqliteMaxConns = 4

// Open opens (creating if needed) the database called name: for sqlite the file <dataDir>/<name>.db, for
// postgres the database at cfg.URI (name is then only used in logs). It pings the database before returning.
// Callers run their own migrations on db.Child(...).
func Open(ctx context.Context, cfg configs.Database, dataDir, name string, log zerolog.Logger) (*dbutil.Database, error) {
	var (
		driver, uri string
		maxConns    int
	)
	switch strings.ToLower(cfg.Type) {
	case "", "sqlite", "sqlite3":
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory %s: %w", dataDir, err)
		}
		path := filepath.Join(dataDir, name+".db")
		if err := restrictFiles(path); err != nil {
			return nil, fmt.Errorf("open database %s: %w", name, err)
		}
		// _secure_delete=on makes SQLite overwrite deleted or replaced content with zeros, so that a redacted
		// message (which may hold a password someone pasted) does not survive in free pages of the file once
		// the WAL is checkpointed.
		driver, uri, maxConns = sqliteDriver, "file:"+path+"?_txlock=immediate&_secure_delete=on", sqliteMaxConns
	case "postgres", "postgresql", "pgx":
		if cfg.URI == "" {
			return nil, fmt.Errorf("open database %s: database.uri is empty for postgres", name)
		}
		driver, uri, maxConns = postgresDriver, cfg.URI, cfg.MaxOpenConns
		if maxConns <= 0 {
			maxConns = 20
		}
	default:
		return nil, fmt.Errorf("open database %s: unknown database type %q (want sqlite or postgres)", name, cfg.Type)
	}
	db, err := dbutil.NewWithDialect(uri, driver)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", name, err)
	}
	db.Owner = ""
	db.Log = dbutil.ZeroLogger(log.With().Str("db", name).Logger())
	if err = db.Configure(dbutil.Config{PoolConfig: dbutil.PoolConfig{MaxOpenConns: maxConns, MaxIdleConns: maxConns}}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("configure database %s: %w", name, err)
	}
	if err = db.RawDB.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to database %s: %w", name, err)
	}
	return db, nil
}

// restrictFiles makes the SQLite database at path readable by its owner only: it creates the file with mode
// 0600 when missing (SQLite then gives its -wal and -shm files the same mode) and tightens an existing file and
// its -wal/-shm companions, which older versions created with the umask's default.
func restrictFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restrict permissions of %s: %w", p, err)
		}
	}
	return nil
}
