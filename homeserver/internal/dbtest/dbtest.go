// Package dbtest runs a storage test once per supported database: a fresh SQLite file and a fresh
// PostgreSQL database started by internal/testenv.
//
// It is for tests only and imports only storage, configs and testenv from the project.
package dbtest

import (
	"context"
	"testing"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/storage"
	"github.com/passerelle/passerelle/internal/testenv"
)

// Open returns a fresh, empty database of the given type ("sqlite" or "postgres"), closed by t.Cleanup.
func Open(t testing.TB, dbType string) *dbutil.Database {
	t.Helper()
	cfg := configs.Database{Type: dbType}
	if dbType == "postgres" {
		cfg.URI = testenv.Postgres(t)
	}
	db, err := storage.Open(context.Background(), cfg, t.TempDir(), "test", zerolog.Nop())
	if err != nil {
		t.Fatalf("open %s database: %v", dbType, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Run runs fn as the subtests "sqlite" and "postgres", each with its own fresh database.
func Run(t *testing.T, fn func(t *testing.T, db *dbutil.Database)) {
	t.Helper()
	for _, dbType := range []string{"sqlite", "postgres"} {
		t.Run(dbType, func(t *testing.T) {
			fn(t, Open(t, dbType))
		})
	}
}
