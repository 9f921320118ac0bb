package email

import (
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // registers the "sqlite3-fk-wal" driver

	"github.com/passerelle/passerelle/internal/testenv"
)

// withAllDatabases runs f on a fresh SQLite file and on a fresh PostgreSQL database.
func withAllDatabases(t *testing.T, f func(t *testing.T, db *dbutil.Database)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "bridge-email.db")+"?_txlock=immediate", "sqlite3-fk-wal")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		f(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		db, err := dbutil.NewWithDialect(testenv.Postgres(t), "pgx")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		f(t, db)
	})
}

func TestStore(t *testing.T) {
	t.Parallel()
	withAllDatabases(t, func(t *testing.T, db *dbutil.Database) {
		ctx := t.Context()
		log := zerolog.New(zerolog.NewTestWriter(t))
		st, err := NewStore(ctx, db, log)
		if err != nil {
			t.Fatal(err)
		}
		// Running the migrations again on an up-to-date database is a no-op.
		if _, err := NewStore(ctx, db, log); err != nil {
			t.Fatalf("second NewStore: %v", err)
		}
		if _, found, err := st.LoadState(ctx, "a@x.test", "INBOX"); err != nil || found {
			t.Fatalf("LoadState on empty store = found %v, err %v", found, err)
		}
		now := time.UnixMilli(time.Now().UnixMilli())
		// UIDs and UIDVALIDITY are unsigned 32-bit: the top of the range must survive both dialects.
		want := MailboxState{UIDValidity: 4294967295, LastUID: 4294967000, Updated: now}
		if err := st.SaveState(ctx, "a@x.test", "INBOX", want); err != nil {
			t.Fatal(err)
		}
		got, found, err := st.LoadState(ctx, "a@x.test", "INBOX")
		if err != nil || !found || got.UIDValidity != want.UIDValidity || got.LastUID != want.LastUID || !got.Updated.Equal(want.Updated) {
			t.Fatalf("LoadState = %+v %v %v, want %+v", got, found, err, want)
		}
		want.LastUID = 7
		want.UIDValidity = 3
		if err := st.SaveState(ctx, "a@x.test", "INBOX", want); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := st.LoadState(ctx, "a@x.test", "INBOX"); got.LastUID != 7 || got.UIDValidity != 3 {
			t.Fatalf("after update LoadState = %+v", got)
		}
		if _, found, _ := st.LoadState(ctx, "b@x.test", "INBOX"); found {
			t.Fatal("state leaked to another login")
		}

		if p, err := st.ThreadBySubject(ctx, "a@x.test", "Lunch"); err != nil || p != "" {
			t.Fatalf("ThreadBySubject on empty = %q, %v", p, err)
		}
		if err := st.SetThreadSubject(ctx, "a@x.test", "Lunch", "root-1@x.test"); err != nil {
			t.Fatal(err)
		}
		if err := st.SetThreadSubject(ctx, "a@x.test", "Lunch", "root-2@x.test"); err != nil {
			t.Fatal(err)
		}
		if p, _ := st.ThreadBySubject(ctx, "a@x.test", "Lunch"); p != "root-2@x.test" {
			t.Fatalf("ThreadBySubject = %q, want the newest thread", p)
		}
		if p, _ := st.ThreadBySubject(ctx, "b@x.test", "Lunch"); p != "" {
			t.Fatalf("subject index leaked to another login: %q", p)
		}
		if err := st.DeleteLogin(ctx, "a@x.test"); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := st.LoadState(ctx, "a@x.test", "INBOX"); found {
			t.Fatal("state survived DeleteLogin")
		}
		if p, _ := st.ThreadBySubject(ctx, "a@x.test", "Lunch"); p != "" {
			t.Fatal("subject index survived DeleteLogin")
		}
	})
}
