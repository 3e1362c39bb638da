package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/server/attacktest"
	"github.com/rampartfw/rampart/internal/store/postgres"
	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
)

// withPassword puts a password in a pgtest DSN (the test server trusts
// loopback, so any password is accepted): the one thing no log or error
// may show.
func withPassword(dsn, pw string) string {
	return strings.Replace(dsn, "postgres://"+pgtest.User+"@", "postgres://"+pgtest.User+":"+pw+"@", 1)
}

// TestServeMetadataOnPostgres runs the real server with its metadata in
// PostgreSQL: init gives the database the admin token, a device enrolls
// and checks in, and the records are in the database, not in
// rampart.db. The password never appears in the logs.
func TestServeMetadataOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real server")
	}
	const pw = "pw-Sekrit-4711"
	dsn := withPassword(pgtest.NewDatabase(t), pw)
	bin := buildServer(t)
	logDir := filepath.Join(t.TempDir(), "shared", "log")
	srv, err := attacktest.Start(bin, t.TempDir(), map[string]any{"store": dsn, "log_dir": logDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	cert, err := srv.Enroll("gw-1", "acme-gw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Checkin(srv.Client(cert, true)); err != nil {
		t.Fatal(err)
	}
	db, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if d, err := db.Device(t.Context(), "gw-1"); err != nil || d.HardwareID != "acme-gw" {
		t.Fatalf("the device is not in PostgreSQL: %+v %v", d, err)
	}
	if es, err := db.AuditEntries(t.Context(), 0, 100); err != nil || len(es) == 0 {
		t.Fatalf("no audit entries in PostgreSQL: %v", err)
	}
	logs := srv.Logs()
	if strings.Contains(logs, pw) {
		t.Fatalf("the server logged the database password:\n%s", logs)
	}
	if !strings.Contains(logs, `"store":"postgres://rampart:xxxxx@127.0.0.1`) {
		t.Errorf("the server does not log its store:\n%s", logs)
	}
	// With PostgreSQL the log is opened shared, in log_dir: its first
	// writer made the empty checkpoint there.
	if !strings.Contains(logs, `"log_dir":"`+logDir+`","log_shared":true`) {
		t.Errorf("the server does not log its shared log_dir:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(logDir, "checkpoint")); err != nil {
		t.Errorf("no log in log_dir: %v", err)
	}

	// init on a database that already holds a store is refused.
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"init", "--data", filepath.Join(t.TempDir(), "srv2"), "--store", dsn}, io.Discard, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "already holds a server's store") || strings.Contains(stderr.String(), pw) {
		t.Fatalf("init on a used database: exit %d\n%s", code, stderr.String())
	}
}

// A bad --store is a configuration error (exit 2), an unreachable or
// unprepared database an environment error (exit 3), each saying what to
// do, and none shows the password.
func TestStoreErrors(t *testing.T) {
	const pw = "pw-Sekrit-4711"
	dir := t.TempDir()
	data := filepath.Join(dir, "srv")
	if code := run(context.Background(), []string{"init", "--data", data}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("init: %d", code)
	}
	empty := withPassword(pgtest.NewDatabase(t), pw)
	for _, c := range []struct {
		name  string
		args  []string
		code  int
		wants []string
	}{
		{"not postgres", []string{"serve", "--store", "mysql://u:" + pw + "@h/db"}, 2, []string{"not a PostgreSQL DSN", "postgres://USER:PASSWORD@HOST:PORT/DATABASE"}},
		{"malformed", []string{"serve", "--store", "postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=bogus"}, 2, []string{"invalid PostgreSQL DSN", "postgres://u:xxxxx@127.0.0.1:1/db"}},
		{"unreachable", []string{"serve", "--store", "postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2"}, 3, []string{"cannot connect to PostgreSQL", "check that PostgreSQL is running"}},
		{"not initialised", []string{"serve", "--store", empty}, 3, []string{"has no operator token", "init --data"}},
		{"init unreachable", []string{"init", "--store", "postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2"}, 3, []string{"cannot connect to PostgreSQL"}},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), append(c.args, "--data", data, "--listen", "127.0.0.1:0"), io.Discard, &stderr)
		if code != c.code || strings.Contains(stderr.String(), pw) {
			t.Errorf("%s: exit %d, want %d, without the password:\n%s", c.name, code, c.code, stderr.String())
		}
		for _, w := range c.wants {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%s: no %q in\n%s", c.name, w, stderr.String())
			}
		}
	}
	// A new data directory's store moves to PostgreSQL before it is used:
	// init --store on the complete directory gives the database an admin
	// token.
	var out bytes.Buffer
	if code := run(context.Background(), []string{"init", "--data", data, "--store", empty}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "rmp_") {
		t.Fatalf("init --store on an unused directory: %d\n%s", code, out.String())
	}
}

// Two real rampart-server processes over one PostgreSQL database and one
// shared log directory: one of them takes the background lease; killed
// with SIGKILL (nothing released), the other takes it over within the
// lease's TTL and a third of it.
func TestReplicaTakesOverAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real server")
	}
	t.Parallel()
	const ttl = time.Second
	a, b := replicas(t, "lease_ttl", ttl.String())
	const took = "took the background lease"
	var holder, standby *attacktest.Server
	for deadline := time.Now().Add(10 * time.Second); holder == nil; time.Sleep(20 * time.Millisecond) {
		switch {
		case strings.Contains(a.Logs(), took):
			holder, standby = a, b
		case strings.Contains(b.Logs(), took):
			holder, standby = b, a
		case time.Now().After(deadline):
			t.Fatalf("no replica took the background lease:\n%s\n%s", a.Logs(), b.Logs())
		}
	}
	time.Sleep(2 * ttl) // the standby's renewal attempts while the holder lives
	if strings.Contains(standby.Logs(), took) {
		t.Fatalf("both replicas took the background lease:\n%s\n%s", holder.Logs(), standby.Logs())
	}
	killed := time.Now()
	holder.Kill()
	bound := ttl + ttl/3 + 2*time.Second // slack: a loaded two-core machine
	for !strings.Contains(standby.Logs(), took) {
		if time.Since(killed) > bound {
			t.Fatalf("the standby did not take over within %v of the holder's SIGKILL:\n%s", bound, standby.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("took over %v after SIGKILL (TTL %v)", time.Since(killed), ttl)
	if !strings.Contains(standby.Logs(), `"lease_ttl":"1s"`) {
		t.Errorf("the server does not log its lease_ttl:\n%s", standby.Logs())
	}
}

// A revocation made on one replica reaches the others within the
// configured background_interval (docs/scaling.md, "Bounds, in one
// place"): with the default minute this test would time out.
func TestRevocationReachesReplicasWithinInterval(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real server")
	}
	t.Parallel()
	const every = time.Second
	a, b := replicas(t, "background_interval", every.String())
	if !strings.Contains(b.Logs(), `"background_interval":"1s"`) {
		t.Errorf("the server does not log its background_interval:\n%s", b.Logs())
	}
	cert, err := a.Enroll("gw-1", "acme-gw-rev2")
	if err != nil {
		t.Fatal(err)
	}
	kept := b.Client(cert, true)
	if _, err := b.Checkin(kept); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	if code, body, err := a.Call(a.Client(nil, false), "POST", "/api/v1/devices/gw-1/revoke", a.Admin, nil); err != nil || code != 204 {
		t.Fatalf("revoke on the first replica: %d %s %v", code, body, err)
	}
	revoked := time.Now()
	bound := every + 2*time.Second // slack: a loaded two-core machine
	for {
		_, err := b.Checkin(kept)
		if err != nil && strings.Contains(err.Error(), "403") && strings.Contains(err.Error(), "device-revoked") {
			break
		}
		if err != nil {
			t.Fatalf("the other replica answered %v, want 403 device-revoked", err)
		}
		if time.Since(revoked) > bound {
			t.Fatalf("the other replica still served the revoked device %v after the revocation (interval %v)", bound, every)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the other replica refused the revoked device %v after the revocation (interval %v)", time.Since(revoked).Round(time.Millisecond), every)
}

// replicas starts two real server processes over a new PostgreSQL
// database and one shared log directory, with one more configuration
// member; both stop when t ends.
func replicas(t *testing.T, member, value string) (a, b *attacktest.Server) {
	t.Helper()
	a, err := attacktest.Start(buildServer(t), t.TempDir(), map[string]any{"store": pgtest.NewDatabase(t), "log_dir": filepath.Join(t.TempDir(), "log"), member: value})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	if b, err = a.Replica(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return a, b
}
