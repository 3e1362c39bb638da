package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/server"
)

// doID is e.do with a chosen X-Request-Id, so audit entries can be matched
// to requests.
func (e *env) doID(id, method, path, token, body string) (*http.Response, []byte) {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, e.ts.URL+path, r)
	req.Header.Set("X-Request-Id", id)
	return e.send(req, token)
}

func (e *env) auditEntries() []audit.Entry {
	e.t.Helper()
	es, err := e.db.AuditEntries(e.t.Context(), 0, 10000)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := audit.Verify(nil, es); err != nil {
		e.t.Fatal(err)
	}
	return es
}

// findAudit returns the entry with the request id, failing if there is
// not exactly one.
func findAudit(t *testing.T, es []audit.Entry, requestID string) audit.Entry {
	t.Helper()
	var found []audit.Entry
	for _, a := range es {
		if a.RequestID == requestID {
			found = append(found, a)
		}
	}
	if len(found) != 1 {
		t.Fatalf("request %s has %d audit entries: %+v", requestID, len(found), found)
	}
	return found[0]
}

func TestTokenManagement(t *testing.T) {
	e := newEnv(t)
	ops := e.token("ops", server.RoleOperator)
	ci := e.token("ci", server.RoleReleaseManager)
	enrollBody := `{"hardware":"acme-gw-rev2"}`

	// Listing: names, roles, times, revocation; never secrets or hashes.
	resp, b := e.doID("list-1", "GET", "/api/v1/tokens", e.admin, "")
	if resp.StatusCode != 200 {
		t.Fatalf("list: %d %s", resp.StatusCode, b)
	}
	var list struct{ Tokens []map[string]any }
	if err := json.Unmarshal(b, &list); err != nil || len(list.Tokens) != 3 {
		t.Fatalf("%s %v", b, err)
	}
	for i, want := range []string{"admin", "ci", "ops"} {
		tok := list.Tokens[i]
		if tok["name"] != want || tok["revoked"] != false || tok["created_at"] == nil || len(tok) != 4 {
			t.Fatalf("token %d: %v, want %s with exactly name, role, created_at, revoked", i, tok, want)
		}
	}
	for _, secret := range []string{e.admin, ops, ci} {
		if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte(server.HashToken(secret))) || bytes.Contains(b, []byte("rmp_")) {
			t.Fatalf("the listing shows a secret or its hash: %s", b)
		}
	}

	// Only admin manages tokens; the refusals are audited and change nothing.
	for i, c := range []struct{ method, path, body string }{
		{"GET", "/api/v1/tokens", ""},
		{"POST", "/api/v1/tokens/ci/role", `{"role":"admin"}`},
		{"POST", "/api/v1/tokens/ops/role", `{"role":"admin"}`},
		{"POST", "/api/v1/tokens/ci/revoke", ""},
	} {
		resp, b := e.doID(fmt.Sprintf("denied-%d", i), c.method, c.path, ops, c.body)
		wantError(t, resp, b, 403, "forbidden")
	}

	// A role change applies from the token's next request.
	resp, b = e.do("POST", "/api/v1/devices/tokens", ops, strings.NewReader(enrollBody))
	if resp.StatusCode != 201 {
		t.Fatalf("operator enroll token: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", "/api/v1/audit", ops, nil)
	wantError(t, resp, b, 403, "forbidden")
	resp, b = e.doID("role-1", "POST", "/api/v1/tokens/ops/role", e.admin, `{"role":"auditor"}`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"role":"auditor"`) || strings.Contains(string(b), "rmp_") {
		t.Fatalf("set role: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("POST", "/api/v1/devices/tokens", ops, strings.NewReader(enrollBody))
	wantError(t, resp, b, 403, "forbidden")
	if resp, b := e.do("GET", "/api/v1/audit", ops, nil); resp.StatusCode != 200 {
		t.Fatalf("auditor after role change: %d %s", resp.StatusCode, b)
	}
	resp, b = e.doID("role-bad", "POST", "/api/v1/tokens/ops/role", e.admin, `{"role":"root"}`)
	wantError(t, resp, b, 400, "bad-role")
	resp, b = e.doID("role-missing", "POST", "/api/v1/tokens/nobody/role", e.admin, `{"role":"auditor"}`)
	wantError(t, resp, b, 404, "not-found")

	// A revoked token is refused at once, with its own code; an unknown
	// one stays "unauthenticated".
	if resp, b := e.do("PUT", "/api/v1/blobs/"+strings.Repeat("0", 64)+"?length=0", ci, nil); resp.StatusCode == 401 || resp.StatusCode == 403 {
		t.Fatalf("ci before revocation: %d %s", resp.StatusCode, b)
	}
	resp, b = e.doID("revoke-1", "POST", "/api/v1/tokens/ci/revoke", e.admin, "")
	if resp.StatusCode != 204 {
		t.Fatalf("revoke: %d %s", resp.StatusCode, b)
	}
	resp, b = e.doID("use-revoked", "GET", "/api/v1/repo/versions", ci, "")
	wantError(t, resp, b, 401, "token-revoked")
	resp, b = e.do("GET", "/api/v1/repo/versions", "rmp_unknown", nil)
	wantError(t, resp, b, 401, "unauthenticated")
	resp, b = e.doID("revoke-again", "POST", "/api/v1/tokens/ci/revoke", e.admin, "")
	wantError(t, resp, b, 409, "token-revoked")
	resp, b = e.do("POST", "/api/v1/tokens/ci/role", e.admin, strings.NewReader(`{"role":"admin"}`))
	wantError(t, resp, b, 409, "token-revoked")
	resp, b = e.do("GET", "/api/v1/repo/versions", ci, nil)
	wantError(t, resp, b, 401, "token-revoked")
	// Its name is not free again: audit actors name one token for ever.
	resp, b = e.do("POST", "/api/v1/tokens", e.admin, strings.NewReader(`{"name":"ci","role":"auditor"}`))
	wantError(t, resp, b, 409, "exists")
	resp, b = e.do("POST", "/api/v1/tokens", e.admin, strings.NewReader(`{"name":"..","role":"auditor"}`))
	wantError(t, resp, b, 400, "bad-name")
	resp, b = e.do("GET", "/api/v1/tokens", e.admin, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token list: %d %s", resp.StatusCode, b)
	}
	if !strings.Contains(string(b), `"name":"ci","role":"release-manager","created_at":`) || !strings.Contains(string(b), `"revoked":true,"revoked_at":`) {
		t.Fatalf("revoked token not listed as revoked: %s", b)
	}

	// The last admin cannot be demoted or revoked; with a second admin it
	// can, and is refused from then on.
	resp, b = e.doID("last-admin", "POST", "/api/v1/tokens/admin/revoke", e.admin, "")
	wantError(t, resp, b, 409, "last-admin")
	resp, b = e.do("POST", "/api/v1/tokens/admin/role", e.admin, strings.NewReader(`{"role":"auditor"}`))
	wantError(t, resp, b, 409, "last-admin")
	admin2 := e.token("admin2", server.RoleAdmin)
	if resp, b := e.do("POST", "/api/v1/tokens/admin/revoke", admin2, nil); resp.StatusCode != 204 {
		t.Fatalf("revoke first admin: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do("GET", "/api/v1/tokens", e.admin, nil)
	wantError(t, resp, b, 401, "token-revoked")

	// Every action is in the audit log with its actor, request id and
	// outcome.
	es := e.auditEntries()
	for _, c := range []struct{ id, actor, action, subject, outcome, code string }{
		{"list-1", "token:admin", "list-tokens", "", "ok", ""},
		{"denied-0", "token:ops", "authorize", "GET /api/v1/tokens", "denied", ""},
		{"denied-3", "token:ops", "authorize", "POST /api/v1/tokens/ci/revoke", "denied", ""},
		{"role-1", "token:admin", "set-token-role", "ops", "ok", ""},
		{"role-bad", "token:admin", "set-token-role", "ops", "refused", "bad-role"},
		{"role-missing", "token:admin", "set-token-role", "nobody", "refused", "not-found"},
		{"revoke-1", "token:admin", "revoke-token", "ci", "ok", ""},
		{"use-revoked", "token:ci", "authenticate", "GET /api/v1/repo/versions", "refused", "token-revoked"},
		{"revoke-again", "token:admin", "revoke-token", "ci", "refused", "token-revoked"},
		{"last-admin", "token:admin", "revoke-token", "admin", "refused", "last-admin"},
	} {
		a := findAudit(t, es, c.id)
		if a.Actor != c.actor || a.Action != c.action || a.Subject != c.subject || a.Outcome != c.outcome || a.Detail["code"] != c.code {
			t.Errorf("request %s audited as %+v, want %+v", c.id, a, c)
		}
	}
	if a := findAudit(t, es, "role-1"); a.Detail["from"] != "operator" || a.Detail["to"] != "auditor" {
		t.Errorf("role change detail: %v", a.Detail)
	}

	// Secrets are stored only as their SHA-256: not in any row, and not
	// anywhere in the database files.
	toks, err := e.db.OperatorTokens(t.Context())
	if err != nil || len(toks) != 4 {
		t.Fatalf("%+v %v", toks, err)
	}
	hashes := map[string]string{"admin": server.HashToken(e.admin), "ops": server.HashToken(ops), "ci": server.HashToken(ci), "admin2": server.HashToken(admin2)}
	for _, tok := range toks {
		if tok.Hash != hashes[tok.Name] {
			t.Errorf("token %s stored as %q", tok.Name, tok.Hash)
		}
	}
	for _, f := range []string{e.dbPath, e.dbPath + "-wal"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{e.admin, ops, ci, admin2} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Fatalf("%s contains a token secret", f)
			}
		}
	}
}
