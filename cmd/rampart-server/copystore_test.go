package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/server/attacktest"
	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
)

// A server used on SQLite moves to PostgreSQL with copy-store: the admin
// token, the enrolled device and its director repository, and the audit
// chain all carry over, and the server serves them from PostgreSQL. A
// second copy into the same database is refused.
func TestCopyStoreToPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real server")
	}
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	bin := buildServer(t)
	dir := t.TempDir()
	a, err := attacktest.Start(bin, dir, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := a.Enroll("gw-1", "acme-gw-rev2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Checkin(a.Client(cert, false)); err != nil {
		t.Fatal(err)
	}
	before := auditChain(t, a)
	a.Stop()

	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"copy-store", "--data", a.Data, "--store", dsn}, &out, &errb); code != 0 {
		t.Fatalf("copy-store: %d %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "1 devices") || strings.Contains(out.String(), "password") {
		t.Fatalf("copy-store said: %s", out.String())
	}
	errb.Reset()
	if code := run(t.Context(), []string{"copy-store", "--data", a.Data, "--store", dsn}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "not empty") {
		t.Fatalf("a second copy into the same database: %d %s", code, errb.String())
	}

	// The same data directory served from PostgreSQL (Replica reads the
	// configuration file again).
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"store": "`+dsn+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := a.Replica()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	if !strings.Contains(b.Logs(), `"store":"postgres://`) {
		t.Fatalf("the server is not on PostgreSQL:\n%s", b.Logs())
	}
	if _, err := b.Checkin(b.Client(cert, false)); err != nil {
		t.Fatalf("the enrolled device after the copy: %v", err)
	}
	after := auditChain(t, b)
	if len(after) < len(before) {
		t.Fatalf("%d audit entries before the copy, %d after", len(before), len(after))
	}
	for i := range before {
		if before[i].Hash != after[i].Hash {
			t.Fatalf("audit entry %d changed in the copy", before[i].Seq)
		}
	}
	if code, body, err := b.Call(b.Client(nil, false), "GET", "/api/v1/devices/gw-1", b.Admin, nil); err != nil || code != 200 {
		t.Fatalf("the admin token or the device after the copy: %d %s %v", code, body, err)
	}
}

// auditChain reads s's whole audit log with the admin token and checks
// its chain.
func auditChain(t *testing.T, s *attacktest.Server) []audit.Entry {
	t.Helper()
	code, body, err := s.Call(s.Client(nil, false), "GET", "/api/v1/audit?limit=1000", s.Admin, nil)
	if err != nil || code != 200 {
		t.Fatalf("audit: %d %s %v", code, body, err)
	}
	var es []audit.Entry
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		es = append(es, e)
	}
	if len(es) == 0 {
		t.Fatal("empty audit log")
	}
	if err := audit.Verify(nil, es); err != nil {
		t.Fatal(err)
	}
	return es
}
