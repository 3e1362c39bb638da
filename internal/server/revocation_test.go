package server_test

import (
	"crypto/tls"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

// gateLookups reads how many handshakes had to look their device up in
// the store.
func (e *tlsEnv) gateLookups() int {
	e.t.Helper()
	b := e.mustCall(e.pool, "GET", "/metrics", e.admin, nil, 200)
	m := regexp.MustCompile(`(?m)^rampart_device_gate_store_lookups_total (\d+)$`).FindSubmatch(b)
	if m == nil {
		e.t.Fatalf("no gate lookup metric:\n%s", b)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// handshakes opens n fresh TLS connections (full handshakes, no session
// resumption) with cert and reports how many were refused.
func (e *tlsEnv) handshakes(cert *tls.Certificate, n int) (refused int) {
	for i := 0; i < n; i++ {
		c := e.client(cert)
		if _, _, err := e.call(c, "GET", "/healthz", "", nil); err != nil {
			refused++
		}
		c.CloseIdleConnections()
	}
	return refused
}

// The TLS handshake decides on revocation from memory: no store lookup
// for devices enrolled or seen by this process, revocation effective for
// the very next handshake, revocations loaded again at start, and those
// made by another replica picked up by ReloadRevocations.
func TestRevocationIsImmediateAndInMemory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "srv")
	res, err := datadir.Init(dir, datadir.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := openTLSEnv(t, dir, res.AdminToken)
	cert1, _, _ := e.enroll("gw-1", e.enrollToken("acme-gw-rev2", 60))
	cert2, _, _ := e.enroll("gw-2", e.enrollToken("acme-gw-rev2", 60))
	if refused := e.handshakes(cert1, 5) + e.handshakes(cert2, 5); refused != 0 {
		t.Fatalf("%d handshakes of enrolled devices refused", refused)
	}
	if n := e.gateLookups(); n != 0 {
		t.Fatalf("%d store lookups for devices this process enrolled", n)
	}

	// A connection opened before the revocation, kept alive.
	kept := e.client(cert1)
	e.mustCall(kept, "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"}, 204)
	e.mustCall(e.pool, "POST", "/api/v1/devices/gw-1/revoke", e.admin, nil, 204)
	// The very next handshake is refused, and so is the kept connection.
	if refused := e.handshakes(cert1, 3); refused != 3 {
		t.Fatalf("a revoked device completed %d of 3 handshakes", 3-refused)
	}
	code, b, err := e.call(kept, "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "downloading"})
	if err != nil {
		t.Fatalf("the kept connection was closed: %v", err)
	}
	wantCode(t, code, b, 403, "device-revoked")
	code, b, _ = e.call(e.pool, "POST", "/api/v1/devices/gw-1/revoke", e.admin, nil)
	wantCode(t, code, b, 409, "already-revoked")
	if refused := e.handshakes(cert2, 3); refused != 0 {
		t.Fatal("another device was refused")
	}
	if n := e.gateLookups(); n != 0 {
		t.Fatalf("%d store lookups", n)
	}
	e.close()

	// After a restart: revocations are loaded at start (no lookup needed
	// to refuse gw-1), and gw-2 is looked up once, then remembered.
	e = openTLSEnv(t, dir, res.AdminToken)
	defer e.close()
	if refused := e.handshakes(cert1, 3); refused != 3 {
		t.Fatal("a revoked device was accepted after a restart")
	}
	if n := e.gateLookups(); n != 0 {
		t.Fatalf("%d store lookups to refuse a revoked device", n)
	}
	if refused := e.handshakes(cert2, 5); refused != 0 {
		t.Fatal("an enrolled device was refused after a restart")
	}
	if n := e.gateLookups(); n != 1 {
		t.Fatalf("%d store lookups for 5 handshakes of one device, want 1", n)
	}

	// Another replica revokes gw-2 in the shared store. A connection this
	// replica already holds is refused at its next report; new handshakes
	// are refused once revocations are reloaded (Run does it every
	// interval).
	other, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	kept2 := e.client(cert2)
	e.mustCall(kept2, "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"}, 204)
	if err := other.RevokeDevice(t.Context(), "gw-2", time.Now()); err != nil {
		t.Fatal(err)
	}
	code, b, _ = e.call(kept2, "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "downloading"})
	wantCode(t, code, b, 403, "device-revoked")
	if refused := e.handshakes(cert2, 1); refused != 1 {
		t.Fatal("a device refused at its report still completes handshakes")
	}

	cert3, _, _ := e.enroll("gw-3", e.enrollToken("acme-gw-rev2", 60))
	if refused := e.handshakes(cert3, 1); refused != 0 {
		t.Fatal("gw-3 refused")
	}
	if err := other.RevokeDevice(t.Context(), "gw-3", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.ReloadRevocations(t.Context()); err != nil {
		t.Fatal(err)
	}
	if refused := e.handshakes(cert3, 1); refused != 1 {
		t.Fatal("a revocation by another replica was not picked up by a reload")
	}
}
