// Package pgtest starts a real PostgreSQL server (Debian's PostgreSQL 15,
// /usr/lib/postgresql/15/bin) for tests: one server per test binary, in a
// temporary directory, listening on a Unix socket there and on a random
// loopback port, with fsync off; each test gets a database of its own.
// PostgreSQL refuses to run as root, so when the tests run as root the
// server runs as the "postgres" user (the Debian package creates it).
//
// When PostgreSQL is missing the tests fail, telling to run
// scripts/test-deps.sh (which installs it), unless RAMPART_SKIP_POSTGRES=1.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDir is where the server's programs are looked for first
// (RAMPART_POSTGRES_BIN overrides it).
const BinDir = "/usr/lib/postgresql/15/bin"

// User is the database superuser the server is initialised with.
const User = "rampart"

var srv struct {
	once sync.Once
	err  error
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	dir  string
	port int
	n    atomic.Int64
}

// Main runs a test binary's tests and stops the server afterwards; call
// it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the server, if one was started, and removes its directory.
func Stop() {
	if srv.cmd != nil {
		// SIGINT is PostgreSQL's fast shutdown.
		srv.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-srv.done:
		case <-time.After(10 * time.Second):
			srv.cmd.Process.Kill()
			<-srv.done
		}
		srv.cmd = nil
	}
	if srv.dir != "" {
		os.RemoveAll(srv.dir)
		srv.dir = ""
	}
}

func binDir() (string, error) {
	dir := os.Getenv("RAMPART_POSTGRES_BIN")
	if dir == "" {
		dir = BinDir
	}
	if _, err := os.Stat(filepath.Join(dir, "initdb")); err != nil {
		return "", fmt.Errorf("PostgreSQL 15 is not installed (no %s): run scripts/test-deps.sh, which installs it (Debian package postgresql-15), or set RAMPART_SKIP_POSTGRES=1 to skip the PostgreSQL tests", filepath.Join(dir, "initdb"))
	}
	return dir, nil
}

// need fails (or skips, with RAMPART_SKIP_POSTGRES=1) t when there is no
// server.
func need(t testing.TB) {
	t.Helper()
	if os.Getenv("RAMPART_SKIP_POSTGRES") == "1" {
		t.Skip("RAMPART_SKIP_POSTGRES=1")
	}
	srv.once.Do(func() { srv.err = start() })
	if srv.err != nil {
		t.Fatal(srv.err)
	}
}

// AdminDSN is the DSN of the server's "postgres" database, as the
// superuser; it starts the server on first use.
func AdminDSN(t testing.TB) string {
	t.Helper()
	need(t)
	return dsn("postgres")
}

func dsn(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", User, srv.port, db)
}

// Port is the server's loopback port (after AdminDSN or NewDatabase).
func Port() int { return srv.port }

// NewDatabase creates an empty database for t, dropped when t ends, and
// returns its DSN (postgres://rampart@127.0.0.1:PORT/NAME?sslmode=disable).
func NewDatabase(t testing.TB) string {
	t.Helper()
	need(t)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), srv.n.Add(1))
	ctx := context.Background()
	exec := func(q string) error {
		c, err := pgx.Connect(ctx, dsn("postgres"))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, q)
		return err
	}
	if err := exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		if err := exec("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return dsn(name)
}

func start() error {
	bin, err := binDir()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rampart-pg-")
	if err != nil {
		return err
	}
	srv.dir = dir
	var cred *syscall.Credential
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root, and PostgreSQL refuses to: no postgres user to run it as (%v); run scripts/test-deps.sh", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return err
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", User, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return err
		}
		if lastErr = run(bin, dir, data, port, cred); lastErr == nil {
			srv.port = port
			return nil
		}
	}
	return lastErr
}

// run starts postgres on port and waits until it accepts connections.
func run(bin, dir, data string, port int, cred *syscall.Credential) error {
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	if cred != nil {
		os.Chown(logf.Name(), int(cred.Uid), int(cred.Gid))
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-h", "127.0.0.1", "-p", strconv.Itoa(port),
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300",
		"-c", "shared_buffers=64MB", "-c", "log_min_messages=warning")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server stops with the test binary, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() { exited <- cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("postgres exited: %v\n%s", err, log)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", User, port))
		if err == nil {
			c.Close(ctx)
			cancel()
			srv.cmd, srv.done = cmd, done
			return nil
		}
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-exited
	log, _ := os.ReadFile(logf.Name())
	return errors.New("postgres did not accept connections within 30 s:\n" + strings.TrimSpace(string(log)))
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
