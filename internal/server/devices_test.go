package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server"
)

// tlsEnv is a server opened from a real data directory, over real TLS.
type tlsEnv struct {
	t           *testing.T
	ts          *httptest.Server
	pool        *http.Client
	admin       string
	now         time.Time
	caPEM       []byte
	dataDirPath string
	srv         *server.Server
	inst        *datadir.Instance
	close       func()
}

// newTLSEnv opens a fresh data directory; configure, if given, adjusts
// the server's configuration first.
func newTLSEnv(t *testing.T, configure ...func(*server.Config)) *tlsEnv {
	dir := filepath.Join(t.TempDir(), "srv")
	res, err := datadir.Init(dir, datadir.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := openTLSEnv(t, dir, res.AdminToken, configure...)
	t.Cleanup(e.close)
	return e
}

// openTLSEnv serves an initialised data directory over real TLS until
// close.
func openTLSEnv(t *testing.T, dir, admin string, configure ...func(*server.Config)) *tlsEnv {
	e := &tlsEnv{t: t, admin: admin, now: time.Now(), dataDirPath: dir}
	ctx, cancel := context.WithCancel(context.Background())
	c := server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return e.now }}
	for _, f := range configure {
		f(&c)
	}
	in, err := datadir.Open(ctx, dir, c)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.srv, e.inst = in.Server, in
	e.ts = httptest.NewUnstartedServer(in.Server.Handler())
	e.ts.TLS = in.TLS
	e.ts.StartTLS()
	e.close = func() { e.ts.Close(); cancel(); in.Close() }
	e.caPEM, _ = os.ReadFile(filepath.Join(dir, "ca.pem"))
	e.pool = e.client(nil)
	return e
}

// client returns an HTTP client that pins the server CA and presents cert.
func (e *tlsEnv) client(cert *tls.Certificate) *http.Client {
	pool, err := pki.CertPoolFromPEM(e.caPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, cert)}}
}

func (e *tlsEnv) call(c *http.Client, method, path, token string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.ts.URL+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

func (e *tlsEnv) mustCall(c *http.Client, method, path, token string, body any, want int) []byte {
	e.t.Helper()
	code, b, err := e.call(c, method, path, token, body)
	if err != nil || code != want {
		e.t.Fatalf("%s %s: %d %s %v, want %d", method, path, code, b, err, want)
	}
	return b
}

func (e *tlsEnv) enrollToken(hw string, ttl int) string {
	b := e.mustCall(e.pool, "POST", "/api/v1/devices/tokens", e.admin, map[string]any{"hardware": hw, "ttl_seconds": ttl}, 201)
	var out struct{ Token string }
	json.Unmarshal(b, &out)
	return out.Token
}

// enroll makes a device key and CSR and enrolls; it returns the TLS
// certificate the device will present.
func (e *tlsEnv) enroll(id, token string) (*tls.Certificate, int, []byte) {
	key, _ := pki.GenerateDeviceKey()
	csrID := id
	if pki.ValidateDeviceID(id) != nil {
		csrID = "x" // the server must refuse the id itself
	}
	csr, err := pki.NewDeviceCSR(key, csrID)
	if err != nil {
		e.t.Fatal(err)
	}
	code, b, err := e.call(e.pool, "POST", "/api/v1/enroll", "", map[string]any{"token": token, "device_id": id, "csr": csr})
	if err != nil || code != 201 {
		return nil, code, b
	}
	var out struct{ Certificate string }
	json.Unmarshal(b, &out)
	keyPEM, _ := pki.MarshalKeyPEM(key)
	cert, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return &cert, code, b
}

func wantCode(t *testing.T, code int, b []byte, wantStatus int, wantCode string) {
	t.Helper()
	if code != wantStatus || !strings.Contains(string(b), `"code":"`+wantCode+`"`) {
		t.Fatalf("got %d %s, want %d %s", code, b, wantStatus, wantCode)
	}
}

func TestDeviceEnrollmentAndReports(t *testing.T) {
	e := newTLSEnv(t)
	tok := e.enrollToken("acme-gw-rev2", 3600)
	cert, code, b := e.enroll("gw-0001", tok)
	if cert == nil {
		t.Fatalf("enroll: %d %s", code, b)
	}
	dev := e.client(cert)
	e.mustCall(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"}, 204)
	// Replay, and going backwards.
	code, b, _ = e.call(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "installed", "version": "9.9.9"})
	wantCode(t, code, b, 409, "replayed-report")
	// "installed" needs a version; failure needs a reason.
	code, b, _ = e.call(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "installed"})
	wantCode(t, code, b, 400, "bad-version")
	code, b, _ = e.call(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "failed"})
	wantCode(t, code, b, 400, "no-reason")
	code, b, _ = e.call(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "pwned"})
	wantCode(t, code, b, 400, "bad-status")
	// A refusal's reason becomes a metric label: only the known classes,
	// and free-text reasons are bounded.
	code, b, _ = e.call(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "verification-refused", "reason": "evil-label-\u001b[2K"})
	wantCode(t, code, b, 400, "bad-reason")
	if strings.Contains(string(b), "\u001b") {
		t.Fatalf("the refusal echoes the escape: %s", b)
	}
	code, b, _ = e.call(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "failed", "reason": strings.Repeat("x", 1025)})
	wantCode(t, code, b, 400, "bad-reason")
	e.mustCall(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "verification-refused", "reason": "endless-data"}, 204)
	e.mustCall(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 4, "status": "installed-pending-reboot", "version": "2.4.1"}, 204)
	b = e.mustCall(e.pool, "GET", "/api/v1/devices/gw-0001", e.admin, nil, 200)
	if !strings.Contains(string(b), `"version":""`) || !strings.Contains(string(b), `"last_status":"installed-pending-reboot"`) {
		t.Fatalf("download or pending reboot changed the recorded version: %s", b)
	}
	e.publish("acme-gw-rev2") // acme-gw 1.0.0, security version 1
	e.mustCall(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 5, "status": "installed", "version": "1.0.0", "security_version": 1}, 204)
	b = e.mustCall(e.pool, "GET", "/api/v1/devices/gw-0001", e.admin, nil, 200)
	if !strings.Contains(string(b), `"version":"1.0.0"`) || !strings.Contains(string(b), `"hardware":"acme-gw-rev2"`) {
		t.Fatalf("%s", b)
	}

	// No client certificate on a device endpoint.
	code, b, _ = e.call(e.pool, "POST", "/api/v1/device/report", "", map[string]any{"counter": 9, "status": "downloading"})
	wantCode(t, code, b, 401, "no-device-certificate")

	// A reused token, an unknown token, an id taken, an expired token.
	_, code, b = e.enroll("gw-0002", tok)
	wantCode(t, code, b, 401, "token-used")
	_, code, b = e.enroll("gw-0002", "rmp_nope")
	wantCode(t, code, b, 401, "bad-token")
	_, code, b = e.enroll("gw-0001", e.enrollToken("acme-gw-rev2", 60))
	wantCode(t, code, b, 409, "device-exists")
	short := e.enrollToken("acme-gw-rev2", 60)
	e.now = e.now.Add(2 * time.Minute)
	_, code, b = e.enroll("gw-0003", short)
	wantCode(t, code, b, 401, "token-expired")
	_, code, b = e.enroll("../etc", e.enrollToken("acme-gw-rev2", 60))
	wantCode(t, code, b, 400, "bad-device-id")

	// Another device's certificate without its key cannot be used: the
	// TLS handshake proves possession of the key.
	cert2, _, _ := e.enroll("gw-0004", e.enrollToken("acme-gw-rev2", 60))
	stolen := tls.Certificate{Certificate: cert.Certificate, PrivateKey: cert2.PrivateKey}
	if _, _, err := e.call(e.client(&stolen), "POST", "/api/v1/device/report", "", map[string]any{"counter": 10, "status": "downloading"}); err == nil {
		t.Fatal("a certificate was accepted with another device's key")
	}
	// A certificate from another CA with the same device id is refused.
	other, _ := pki.NewCA("attacker", time.Hour)
	key, _ := pki.GenerateDeviceKey()
	csr, _ := pki.NewDeviceCSR(key, "gw-0001")
	der, _, _ := other.IssueDevice(csr, "gw-0001", time.Hour)
	keyPEM, _ := pki.MarshalKeyPEM(key)
	forged, _ := tls.X509KeyPair(pki.CertPEM(der), keyPEM)
	if _, _, err := e.call(e.client(&forged), "POST", "/api/v1/device/report", "", map[string]any{"counter": 11, "status": "downloading"}); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}

	// A revoked device is refused at the handshake.
	e.mustCall(e.pool, "POST", "/api/v1/devices/gw-0001/revoke", e.admin, nil, 204)
	dev = e.client(cert) // a fresh connection
	if _, _, err := e.call(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 12, "status": "downloading"}); err == nil {
		t.Fatal("a revoked device was served")
	}
	// Another device still works.
	e.mustCall(e.client(cert2), "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"}, 204)
}

func TestDeploy(t *testing.T) {
	e := newTLSEnv(t)
	// An offline ceremony naming this server's online keys, then a push.
	srv := e.dataDir()
	snap, _ := keysFromFile(t, filepath.Join(srv, "online", "snapshot.pub"))
	ts, _ := keysFromFile(t, filepath.Join(srv, "online", "timestamp.pub"))
	push := offlineRelease(t, snap, ts, "acme-gw-rev2")
	for _, b := range push.blobs {
		code, body, err := e.callRaw(e.pool, "PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", b.digest, len(b.data)), e.admin, b.data)
		if err != nil || code != 201 {
			t.Fatalf("upload %d %s %v", code, body, err)
		}
	}
	e.mustCall(e.pool, "POST", "/api/v1/repo/push", e.admin, push.body, 200)
	cert, _, _ := e.enroll("gw-1", e.enrollToken("acme-gw-rev2", 60))
	e.enroll("gw-2", e.enrollToken("acme-gw-rev2", 60))
	e.enroll("other-1", e.enrollToken("other-hw", 60))
	ops := e.token("ops", "operator")
	aud := e.token("aud", "auditor")
	b := e.mustCall(e.pool, "POST", "/api/v1/deploy", ops, map[string]string{"target": "acme-gw/1.0.0/fw.img", "hardware": "acme-gw-rev2"}, 200)
	if !strings.Contains(string(b), `"devices":2`) || !strings.Contains(string(b), `"changed":2`) {
		t.Fatalf("%s", b)
	}
	b = e.mustCall(e.pool, "GET", "/api/v1/devices/gw-1", aud, nil, 200)
	if !strings.Contains(string(b), `"assigned":"acme-gw/1.0.0/fw.img"`) {
		t.Fatalf("%s", b)
	}
	b = e.mustCall(e.pool, "GET", "/api/v1/devices/other-1", aud, nil, 200)
	if !strings.Contains(string(b), `"assigned":""`) {
		t.Fatalf("another hardware was assigned: %s", b)
	}
	code, body, _ := e.call(e.pool, "POST", "/api/v1/deploy", ops, map[string]string{"target": "acme-gw/1.0.0/fw.img", "hardware": "other-hw"})
	wantCode(t, code, body, 422, "wrong-hardware")
	code, body, _ = e.call(e.pool, "POST", "/api/v1/deploy", ops, map[string]string{"target": "acme-gw/9.9.9/fw.img", "hardware": "acme-gw-rev2"})
	wantCode(t, code, body, 404, "unknown-release")
	code, body, _ = e.call(e.pool, "POST", "/api/v1/deploy", aud, map[string]string{"target": "acme-gw/1.0.0/fw.img", "hardware": "acme-gw-rev2"})
	wantCode(t, code, body, 403, "forbidden")
	// A device cannot call operator endpoints with its certificate alone.
	code, body, _ = e.call(e.client(cert), "POST", "/api/v1/deploy", "", map[string]string{"target": "acme-gw/1.0.0/fw.img", "hardware": "acme-gw-rev2"})
	wantCode(t, code, body, 401, "unauthenticated")
}
