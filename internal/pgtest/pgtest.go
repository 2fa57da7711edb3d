// Package pgtest starts a real PostgreSQL server for tests, the way internal/redistest does for
// Redis: [Server] runs initdb and postgres in the test's temporary directory, on a free loopback
// port, and kills the server by its PID when the test ends.
//
// The binaries are looked up on PATH, then under /usr/lib/postgresql/*/bin (where Debian's
// postgresql package puts them). Where they are missing the test is skipped with a message saying
// how to install them, unless SURGE_REQUIRE_SERVERS=1 (as CI sets), where it fails instead.
// postgres refuses to run as root, so when the test runs as root the server runs as the
// "postgres" user.
//
// The server is tuned for tests: fsync, full-page writes and synchronous commit are off unless
// [WithDurability] turns them back on.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/surgekit/surge/internal/redistest"
)

// DriverName is the database/sql driver name [PG.DB] opens connections with (pgx's stdlib).
const DriverName = "pgx"

// libDirEnv overrides /usr/lib/postgresql, where Debian puts the binaries (for pgtest's own
// test of a missing installation).
const libDirEnv = "SURGE_PGTEST_LIBDIR"

// startTimeout bounds initdb plus the server's start-up.
const startTimeout = 60 * time.Second

// Option configures [Server].
type Option func(*config)

type config struct {
	durable  bool
	settings []string
}

// WithDurability keeps fsync, full-page writes and synchronous commit on, as in production,
// for benchmarks whose figures must include the cost of a durable commit.
func WithDurability() Option { return func(c *config) { c.durable = true } }

// WithSetting passes a server setting, e.g. WithSetting("max_connections", "200").
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, "-c", name+"="+value) }
}

// PG is a real PostgreSQL server owned by one test. Its methods are safe for concurrent use.
type PG struct {
	t    testing.TB
	dir  string
	port int
	pid  int
	done chan struct{}
	dbs  atomic.Int64

	mu     sync.Mutex
	killed bool
}

// Server runs initdb in a fresh directory under t.TempDir(), starts postgres on a free
// 127.0.0.1 port (no Unix socket), waits until it accepts connections and kills it (its whole
// process group, by PID) when t ends. Authentication is trust; the superuser is "postgres".
// It skips t when PostgreSQL is not installed, and fails it when SURGE_REQUIRE_SERVERS=1.
func Server(t testing.TB, opts ...Option) *PG {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	initdb := lookPG(t, "initdb")
	postgres := lookPG(t, "postgres")

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cred, err := credential(dir)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if cred != nil {
		if err := os.Chown(data, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("pgtest: chown data dir: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, initdb, "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}

	var lastErr error
	for range 8 { // another test may take the port between the check and the bind
		port, err := redistest.FreePort()
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		pg, err := start(t, postgres, data, port, cred, &cfg)
		if err == nil {
			return pg
		}
		lastErr = err
	}
	t.Fatalf("pgtest: could not start postgres: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, data string, port int, cred *syscall.Credential, cfg *config) (*PG, error) {
	logPath := filepath.Join(filepath.Dir(data), fmt.Sprintf("postgres-%d.log", port))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{"-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "max_connections=200",
		// Cleanup kills the server, which cannot then remove its dynamic shared memory: the
		// default POSIX segments would stay in /dev/shm for good, one set per server. In the
		// data directory they go with it.
		"-c", "dynamic_shared_memory_type=mmap",
	}
	if !cfg.durable {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")
	}
	args = append(args, cfg.settings...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so cleanup kills the postmaster and every backend at once, and a
	// Ctrl-C to `go test` does not reach it before cleanup does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	pg := &PG{t: t, dir: data, port: port, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(pg.done) }()
	if err := pg.waitReady(); err != nil {
		pg.Kill()
		return nil, fmt.Errorf("port %d: %w; log: %s", port, err, redistest.LogTail(logPath, 8))
	}
	t.Cleanup(pg.cleanup)
	return pg, nil
}

// waitReady waits until the server accepts connections and is ours (its data_directory is the
// one we made: another test's server may have won the race for the port).
func (pg *PG) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	db, err := sql.Open(DriverName, pg.DSNFor("postgres")+"&connect_timeout=2")
	if err != nil {
		return err
	}
	defer db.Close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var dir string
		err := db.QueryRowContext(ctx, "SHOW data_directory").Scan(&dir)
		if err == nil {
			if dir != pg.dir {
				return fmt.Errorf("port taken by another server (data directory %s)", dir)
			}
			return nil
		}
		select {
		case <-pg.done:
			return errors.New("postgres exited during start-up")
		case <-ctx.Done():
			return fmt.Errorf("no connection within %v: %v", startTimeout, err)
		case <-tick.C:
		}
	}
}

// Port returns the server's TCP port on 127.0.0.1.
func (pg *PG) Port() int { return pg.port }

// PID returns the postmaster's process id.
func (pg *PG) PID() int { return pg.pid }

// DSN returns a URL for the server's "postgres" database, as the superuser "postgres".
func (pg *PG) DSN() string { return pg.DSNFor("postgres") }

// DSNFor returns a URL for the named database on the server.
func (pg *PG) DSNFor(database string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"),
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(pg.port)), Path: "/" + database,
		RawQuery: "sslmode=disable"}
	return u.String()
}

// DB creates a fresh, empty database on the server and returns a *sql.DB for it (pgx driver),
// closed when t ends. Tests that share one server stay isolated by calling DB each.
func (pg *PG) DB(t testing.TB) *sql.DB {
	t.Helper()
	name := fmt.Sprintf("t%d", pg.dbs.Add(1))
	admin, err := sql.Open(DriverName, pg.DSN())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	db, err := sql.Open(DriverName, pg.DSNFor(name))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Kill sends SIGKILL to the server's process group (postmaster and backends) and waits until
// the postmaster is gone. It is idempotent; cleanup calls it.
func (pg *PG) Kill() {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if !pg.killed {
		pg.killed = true
		_ = syscall.Kill(-pg.pid, syscall.SIGKILL)
	}
	<-pg.done
}

func (pg *PG) cleanup() {
	pg.Kill()
	// Backends die with their process group; check none survived.
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(-pg.pid, 0) == nil {
		if time.Now().After(deadline) {
			pg.t.Errorf("pgtest: processes of group %d still running after cleanup", pg.pid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lookPG returns the path of a PostgreSQL server binary: on PATH, else the newest under
// /usr/lib/postgresql/*/bin. It skips t (fails it under SURGE_REQUIRE_SERVERS=1) when missing.
func lookPG(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	lib := "/usr/lib/postgresql"
	if d := os.Getenv(libDirEnv); d != "" {
		lib = d
	}
	matches, _ := filepath.Glob(filepath.Join(lib, "*", "bin", name))
	sort.Slice(matches, func(i, j int) bool { return pgVersion(matches[i]) > pgVersion(matches[j]) })
	if len(matches) > 0 {
		return matches[0]
	}
	msg := fmt.Sprintf("%s is neither on PATH nor under /usr/lib/postgresql/*/bin: this test needs a real "+
		"PostgreSQL server; install it (Debian/Ubuntu: apt-get install -y postgresql, macOS: brew install "+
		"postgresql) or run only the tests that need no server", name)
	if redistest.Required() {
		t.Fatalf("%s (%s=1 makes this a failure)", msg, redistest.RequireEnv)
	}
	t.Skip(msg)
	return ""
}

// pgVersion is the major version in /usr/lib/postgresql/<version>/bin/name, 0 if unreadable.
func pgVersion(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

// credential returns the credential to run PostgreSQL with: nil unless we are root, else the
// "postgres" user's, after opening dir (and its parent, the test's temp root) to it.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and postgres refuses to: no \"postgres\" user to run it as (%v)", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user postgres: bad uid/gid %q/%q", u.Uid, u.Gid)
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, err
		}
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
