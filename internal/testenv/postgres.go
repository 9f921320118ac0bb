package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgServer is the PostgreSQL cluster shared by the tests of this process.
type pgServer struct {
	port int
	proc *process
}

var (
	pg      lazy[*pgServer]
	pgDBSeq atomic.Int64
)

// Postgres returns the DSN of a fresh, empty database on this process's PostgreSQL server, starting the
// server on first use. Each call creates a new database (dropped again by t.Cleanup), so tests never see each
// other's tables. The DSN uses the superuser "postgres" with trust authentication over 127.0.0.1.
func Postgres(t testing.TB) string {
	t.Helper()
	bindir, ok := postgresBinDir()
	if !ok {
		unavailable(t, "PostgreSQL is not installed (no initdb/postgres found in /usr/lib/postgresql/*/bin or PATH)")
	}
	srv, err := pg.get(func() (*pgServer, error) { return startPostgres(bindir) })
	if err != nil {
		t.Fatalf("testenv: start PostgreSQL: %v", err)
	}
	name := fmt.Sprintf("test_%d", pgDBSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.exec(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE ends connections a test forgot to close; failure to drop only costs disk in a temp dir.
		if err := srv.exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	return srv.dsn(name)
}

// dsn is the connection string of database name.
func (s *pgServer) dsn(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, name)
}

// exec runs one statement on the maintenance database.
func (s *pgServer) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.dsn("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// postgresBinDir finds the newest installed PostgreSQL server binaries.
func postgresBinDir() (string, bool) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, ok := findBinary("postgres", d); ok {
			if _, ok := findBinary("initdb", d); ok {
				return d, true
			}
		}
	}
	initdb, ok := findBinary("initdb")
	if !ok {
		return "", false
	}
	initdb, _ = filepath.EvalSymlinks(initdb)
	d := filepath.Dir(initdb)
	if _, ok := findBinary("postgres", d); !ok {
		return "", false
	}
	return d, true
}

// startPostgres creates a cluster in the process's temp root and runs it on a free port.
func startPostgres(bindir string) (*pgServer, error) {
	base, err := root()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, "postgres")
	data := filepath.Join(dir, "data")
	sock := filepath.Join(dir, "sock")
	for _, d := range []string{dir, sock} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	// initdb refuses to run as root: as root, run the server as the postgres system user.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres system user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		for _, d := range []string{dir, sock} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, fmt.Errorf("chown %s: %w", d, err)
			}
		}
	}
	initdb := exec.Command(filepath.Join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if err := run(initdb); err != nil {
		return nil, fmt.Errorf("initdb: %w", err)
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	port := ports[0]
	// Durability settings are off: the cluster lives for one test process and speed matters more.
	cmd := exec.Command(filepath.Join(bindir, "postgres"), "-D", data,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+sock,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=300",
		"-c", "shared_buffers=32MB",
		"-c", "logging_collector=off",
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = dir
	// SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its backends down with it.
	p, err := launch("postgres", cmd, filepath.Join(dir, "postgres.log"), true, syscall.SIGQUIT, syscall.SIGQUIT)
	if err != nil {
		return nil, err
	}
	srv := &pgServer{port: port, proc: p}
	if err := p.waitTCP(fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		return nil, err
	}
	// Accepting TCP is not the same as accepting queries: wait for the end of recovery/startup.
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := srv.exec(ctx, "SELECT 1")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("postgres not ready after %s: %w%s", startTimeout, err, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return srv, nil
}
