package server_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/rampartfw/rampart/internal/audit"
)

// rawDB opens the server's own database file a second time, as an
// operator with sqlite3 would, to inject faults with triggers.
func (e *tlsEnv) rawDB() *sql.DB {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dataDirPath, "rampart.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	return db
}

func sqlExec(t *testing.T, db *sql.DB, q string) {
	t.Helper()
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
}

func (e *tlsEnv) audit() []audit.Entry {
	e.t.Helper()
	b := e.mustCall(e.pool, "GET", "/api/v1/audit", e.admin, nil, 200)
	var es []audit.Entry
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var a audit.Entry
		if err := dec.Decode(&a); err != nil {
			e.t.Fatal(err)
		}
		es = append(es, a)
	}
	if err := audit.Verify(nil, es); err != nil {
		e.t.Fatal(err)
	}
	return es
}

// When the audit entry cannot be stored, the action it records is not
// committed either; when the action cannot be stored, neither is its
// audit entry. Faults come from triggers in the server's real database.
func TestActionsCommitWithTheirAuditEntry(t *testing.T) {
	e := newTLSEnv(t)
	raw := e.rawDB()
	snap, _ := keysFromFile(t, filepath.Join(e.dataDirPath, "online", "snapshot.pub"))
	ts, _ := keysFromFile(t, filepath.Join(e.dataDirPath, "online", "timestamp.pub"))
	push := offlineRelease(t, snap, ts, "acme-gw-rev2")
	for _, b := range push.blobs {
		e.callRaw(e.pool, "PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", b.digest, len(b.data)), e.admin, b.data)
	}
	cert1, _, _ := e.enroll("gw-1", e.enrollToken("acme-gw-rev2", 600))
	dev1 := e.client(cert1)
	tok2 := e.enrollToken("acme-gw-rev2", 600)
	ops := e.token("ops", "operator")
	directorRoot := e.directorRoot(t)
	before := len(e.audit())

	failing := func(what string, method, path, token string, body any) {
		t.Helper()
		code, b, err := e.call(e.pool, method, path, token, body)
		if err != nil || code != 500 || !strings.Contains(string(b), `"code":"internal"`) {
			t.Fatalf("%s: %d %s %v, want 500 internal", what, code, b, err)
		}
	}

	// 1. The audit insert fails.
	sqlExec(t, raw, `CREATE TRIGGER audit_fails BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END`)
	failing("create token", "POST", "/api/v1/tokens", e.admin, map[string]string{"name": "x", "role": "auditor"})
	failing("set role", "POST", "/api/v1/tokens/ops/role", e.admin, map[string]string{"role": "auditor"})
	failing("revoke token", "POST", "/api/v1/tokens/ops/revoke", e.admin, nil)
	failing("list tokens", "GET", "/api/v1/tokens", e.admin, nil)
	failing("enroll token", "POST", "/api/v1/devices/tokens", e.admin, map[string]any{"hardware": "acme-gw-rev2"})
	failing("push", "POST", "/api/v1/repo/push", e.admin, push.body)
	failing("director root", "POST", "/api/v1/director/root", e.admin, map[string]any{"roots": [][]byte{directorRoot}})
	failing("revoke device", "POST", "/api/v1/devices/gw-1/revoke", e.admin, nil)
	key, _ := pkiKey(t)
	code, b, _ := e.call(e.pool, "POST", "/api/v1/enroll", "", map[string]any{"token": tok2, "device_id": "gw-2", "csr": csrFor(t, key, "gw-2")})
	wantCode(t, code, b, 500, "internal")
	code, b, _ = e.call(dev1, "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"})
	wantCode(t, code, b, 500, "internal")
	sqlExec(t, raw, `DROP TRIGGER audit_fails`)

	// Nothing was committed.
	b = e.mustCall(e.pool, "GET", "/api/v1/tokens", e.admin, nil, 200)
	if strings.Contains(string(b), `"name":"x"`) || !strings.Contains(string(b), `"name":"ops","role":"operator","created_at":`) || strings.Contains(string(b), `"revoked":true`) {
		t.Fatalf("token changes committed without audit: %s", b)
	}
	var n int
	if raw.QueryRow(`SELECT count(*) FROM enroll_tokens`).Scan(&n); n != 2 {
		t.Fatalf("%d enrollment tokens, want the 2 made before the fault", n)
	}
	code, b, _ = e.call(e.pool, "GET", "/repo/timestamp.json", "", nil)
	wantCode(t, code, b, 404, "not-found")
	if b := e.mustCall(e.pool, "GET", "/api/v1/director/root", e.admin, nil, 200); !strings.Contains(string(b), `"director":0`) {
		t.Fatalf("director root committed without audit: %s", b)
	}
	if b := e.mustCall(e.pool, "GET", "/api/v1/devices/gw-1", e.admin, nil, 200); !strings.Contains(string(b), `"revoked":false`) || !strings.Contains(string(b), `"last_status":""`) {
		t.Fatalf("device changes committed without audit: %s", b)
	}
	code, b, _ = e.call(e.pool, "GET", "/api/v1/devices/gw-2", e.admin, nil)
	wantCode(t, code, b, 404, "not-found")
	if got := len(e.audit()); got != before+1 { // +1: the audit export just made
		t.Fatalf("%d audit entries, want %d", got, before+1)
	}
	// The device was not revoked, its report not recorded, and the
	// enrollment token not spent: each works now.
	e.mustCall(dev1, "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"}, 204)
	if c, code, b := e.enroll("gw-2", tok2); c == nil {
		t.Fatalf("the token was spent by a rolled-back enrollment: %d %s", code, b)
	}
	// The push had been accepted (its release logged) when its commit
	// failed: it stayed pending, and the server finishes it, with its
	// audit entry, before the next push, which is then a replay.
	code, b, _ = e.call(e.pool, "POST", "/api/v1/repo/push", e.admin, push.body)
	wantCode(t, code, b, 409, "version-not-next")
	e.mustCall(e.pool, "GET", "/repo/timestamp.json", "", nil, 200)

	// 2. The action fails after its audit entry was appended.
	sqlExec(t, raw, `CREATE TRIGGER enroll_fails BEFORE INSERT ON devices BEGIN SELECT RAISE(ABORT, 'injected device failure'); END`)
	sqlExec(t, raw, `CREATE TRIGGER revoke_fails BEFORE UPDATE ON operator_tokens BEGIN SELECT RAISE(ABORT, 'injected token failure'); END`)
	sqlExec(t, raw, `CREATE TRIGGER deploy_fails BEFORE INSERT ON assignments BEGIN SELECT RAISE(ABORT, 'injected assignment failure'); END`)
	key3, _ := pkiKey(t)
	code, b, _ = e.call(e.pool, "POST", "/api/v1/enroll", "", map[string]any{"token": e.enrollToken("acme-gw-rev2", 60), "device_id": "gw-3", "csr": csrFor(t, key3, "gw-3")})
	wantCode(t, code, b, 500, "internal")
	failing("revoke token", "POST", "/api/v1/tokens/ops/revoke", e.admin, nil)
	failing("deploy", "POST", "/api/v1/deploy", ops, map[string]string{"target": "acme-gw/1.0.0", "hardware": "acme-gw-rev2"})
	sqlExec(t, raw, `DROP TRIGGER enroll_fails; DROP TRIGGER revoke_fails; DROP TRIGGER deploy_fails`)
	for _, a := range e.audit() {
		if a.Outcome == "ok" && (a.Action == "enroll" && a.Subject == "gw-3" || a.Action == "revoke-token" || a.Action == "deploy") {
			t.Errorf("audit entry of an action that was not committed: %+v", a)
		}
	}
	if b := e.mustCall(e.pool, "GET", "/api/v1/devices/gw-1", e.admin, nil, 200); !strings.Contains(string(b), `"assigned":""`) {
		t.Fatalf("%s", b)
	}

	// With the faults gone, actions and entries commit together.
	e.mustCall(e.pool, "POST", "/api/v1/deploy", ops, map[string]string{"target": "acme-gw/1.0.0", "hardware": "acme-gw-rev2"}, 200)
	e.mustCall(e.pool, "POST", "/api/v1/devices/gw-1/revoke", e.admin, nil, 204)
	want := map[string]bool{"deploy acme-gw/1.0.0/fw.img": false, "revoke-device gw-1": false, "enroll gw-2": false, "report gw-1": false, "push image": false}
	for _, a := range e.audit() {
		if _, ok := want[a.Action+" "+a.Subject]; ok && a.Outcome != "refused" {
			want[a.Action+" "+a.Subject] = true
		}
	}
	for k, ok := range want {
		if !ok {
			t.Errorf("no audit entry for %s", k)
		}
	}
}
