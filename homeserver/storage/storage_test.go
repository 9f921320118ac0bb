package storage

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func roundTrip(t *testing.T, db *dbutil.Database) {
	t.Helper()
	ctx := t.Context()
	if _, err := db.Exec(ctx, `CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO t (k, v) VALUES ($1, $2)`, "a", int64(1)<<40); err != nil {
		t.Fatal(err)
	}
	var v int64
	if err := db.QueryRow(ctx, `SELECT v FROM t WHERE k = $1`, "a").Scan(&v); err != nil || v != 1<<40 {
		t.Fatalf("read back %d, %v", v, err)
	}
}

func TestOpenSQLite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	db, err := Open(t.Context(), configs.Database{Type: "sqlite"}, dir, "homeserver", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Dialect != dbutil.SQLite {
		t.Fatalf("dialect %v", db.Dialect)
	}
	roundTrip(t, db)
	if _, err = os.Stat(filepath.Join(dir, "homeserver.db")); err != nil {
		t.Fatalf("database file: %v", err)
	}
	// Foreign keys are on (the driver's hook), which the services' ON DELETE CASCADE rely on.
	var fk int
	if err = db.QueryRow(t.Context(), `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("foreign_keys = %d, %v", fk, err)
	}
}

func TestOpenPostgres(t *testing.T) {
	dsn := testenv.Postgres(t)
	db, err := Open(t.Context(), configs.Database{Type: "postgres", URI: dsn}, t.TempDir(), "homeserver", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Dialect != dbutil.Postgres {
		t.Fatalf("dialect %v", db.Dialect)
	}
	roundTrip(t, db)
}

func TestOpenErrors(t *testing.T) {
	for name, cfg := range map[string]configs.Database{
		"unknown type":         {Type: "oracle"},
		"postgres without uri": {Type: "postgres"},
		"unreachable postgres": {Type: "postgres", URI: "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"},
	} {
		t.Run(name, func(t *testing.T) {
			db, err := Open(t.Context(), cfg, t.TempDir(), "x", zerolog.Nop())
			if err == nil {
				db.Close()
				t.Fatal("opened")
			}
		})
	}
}

// TestSQLiteSecureDeleteAndPrivateFiles: deleted rows are zeroed (secure_delete) and the database files are
// readable by the owner only, also when an older file was created with a wider mode.
func TestSQLiteSecureDeleteAndPrivateFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "homeserver.db")
	for _, p := range []string{path, path + "-wal"} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := Open(t.Context(), configs.Database{Type: "sqlite"}, dir, "homeserver", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var sd int
	if err = db.QueryRow(t.Context(), `PRAGMA secure_delete`).Scan(&sd); err != nil || sd != 1 {
		t.Fatalf("secure_delete = %d, %v", sd, err)
	}
	ctx := t.Context()
	const secret = "hunter2-secure-delete-marker-7f3a"
	if _, err = db.Exec(ctx, `CREATE TABLE s (k TEXT PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err = db.Exec(ctx, `INSERT INTO s (k, v) VALUES ('a', $1), ('b', 'keep')`, secret); err != nil {
		t.Fatal(err)
	}
	if _, err = db.Exec(ctx, `DELETE FROM s WHERE k = 'a'`); err != nil {
		t.Fatal(err)
	}
	if _, err = db.Exec(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), st.Mode().Perm())
		}
		data, _ := os.ReadFile(p)
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("%s still contains the deleted secret", filepath.Base(p))
		}
	}
}

// TestSQLiteNewFileIsPrivate: a database created from scratch is 0600 whatever the umask allows.
func TestSQLiteNewFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(t.Context(), configs.Database{Type: "sqlite"}, dir, "bridge-x", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	roundTrip(t, db)
	st, err := os.Stat(filepath.Join(dir, "bridge-x.db"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode().Perm(), err)
	}
}
