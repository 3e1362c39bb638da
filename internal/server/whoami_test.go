package server_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/server"
)

// whoami names each role's actions as the routes decide them: an action
// the answer names is not refused with 403, one it does not name is.
func TestWhoamiMatchesRoutes(t *testing.T) {
	e := newEnv(t)
	probes := map[string]struct{ method, path, body string }{
		api.MayReadFleet:     {"GET", "/api/v1/fleet/stats", ""},
		api.MayReadAudit:     {"GET", "/api/v1/audit?limit=1", ""},
		api.MaySteerRollouts: {"POST", "/api/v1/rollouts/ro-unknown/pause", ""},
		api.MayRevokeKeys:    {"POST", "/api/v1/incidents/revoke-key", `{"key_id":"nothex","reason":"drill"}`},
	}
	for _, role := range server.Roles {
		tok := e.admin
		if role != server.RoleAdmin {
			tok = e.token("who-"+role, role)
		}
		resp, b := e.do("GET", "/api/v1/whoami", tok, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: whoami %d %s", role, resp.StatusCode, b)
		}
		var w api.Whoami
		if err := json.Unmarshal(b, &w); err != nil || w.Role != role {
			t.Fatalf("%s: whoami %s (%v)", role, b, err)
		}
		for may, p := range probes {
			resp, b := e.do(p.method, p.path, tok, strings.NewReader(p.body))
			if named, denied := slices.Contains(w.May, may), resp.StatusCode == http.StatusForbidden; named == denied {
				t.Errorf("%s: whoami names %s: %v, but %s %s answers %d %s", role, may, named, p.method, p.path, resp.StatusCode, b)
			}
		}
	}
	if resp, _ := e.do("GET", "/api/v1/whoami", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("whoami without a token: %d", resp.StatusCode)
	}
}

// The dashboard's files are served without a token, with a
// Content-Security-Policy that allows no inline script or style and no
// framing.
func TestDashboardFiles(t *testing.T) {
	e := newEnv(t)
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css"} {
		resp, b := e.do("GET", path, "", nil)
		if resp.StatusCode != http.StatusOK || len(b) == 0 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, ctype) {
			t.Errorf("%s: Content-Type %q, want %s", path, ct, ctype)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no X-Content-Type-Options: nosniff", path)
		}
	}
	if resp, _ := e.do("GET", "/ui/missing.js", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/ui/missing.js: %d", resp.StatusCode)
	}
}
