package testenv

import (
	"context"
	"errors"
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
		t.Fatalf("testenv: create database %s: %v\n%s", name, err, srv.proc.health())
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

// queryString runs a one-value query on the maintenance database.
func (s *pgServer) queryString(ctx context.Context, sql string) (string, error) {
	conn, err := pgx.Connect(ctx, s.dsn("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, sql).Scan(&v)
	return v, err
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
	var errs []error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		srv, err := runPostgres(bindir, dir, data, sock, cred)
		if err == nil {
			srv.proc.ready.Store(true)
			return srv, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
	}
	return nil, errors.Join(errs...)
}

// runPostgres starts the cluster in data on a fresh port and waits until it answers queries as itself.
func runPostgres(bindir, dir, data, sock string, cred *syscall.Credential) (*pgServer, error) {
	ports, err := pickPorts(1)
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
		p.discard()
		return nil, err
	}
	// Accepting TCP is not the same as accepting queries: wait for the end of startup, and make sure the
	// server answering is ours (another test process's PostgreSQL could hold the port we picked).
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		dataDir, err := srv.queryString(ctx, "SHOW data_directory")
		cancel()
		if err == nil && dataDir != data {
			p.discard()
			return nil, fmt.Errorf("postgres: %w 127.0.0.1:%d (data directory %s)", errPortTaken, port, dataDir)
		}
		if err == nil {
			break
		}
		if h := p.health(); h != "" {
			p.discard()
			return nil, fmt.Errorf("%s", h)
		}
		if time.Now().After(deadline) {
			p.discard()
			return nil, fmt.Errorf("postgres not ready after %s: %w%s", startTimeout, err, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return srv, nil
}
