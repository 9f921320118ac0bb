// Package storage opens the SQL databases of the homeserver and the bridges: SQLite (the default, one file per
// component under the data directory) or PostgreSQL, both behind go.mau.fi/util/dbutil so that every service
// writes its SQL once with $n placeholders and runs its own migrations with its own version table.
//
// It imports only configs from the project; it must not import any service package.
package storage

import (
	"context"
	"fmt"
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
		driver, uri, maxConns = sqliteDriver, "file:"+path+"?_txlock=immediate", sqliteMaxConns
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
