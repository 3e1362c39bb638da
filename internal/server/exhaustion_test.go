package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/pki/pkitest"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
	"github.com/rampartfw/rampart/internal/tlog"
)

// countingSigner counts the signatures of the device CA.
type countingSigner struct {
	crypto.Signer
	n *atomic.Int64
}

func (c countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(r, d, o)
}

// Enrollment signs a certificate only for a good credential and a good
// CSR: a valid CSR with a made-up, used or expired token, or a huge RSA
// CSR with a valid token, never reaches the device CA's key, and the
// refusal says precisely why.
func TestEnrollmentSignsOnlyAfterEveryCheck(t *testing.T) {
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	blobs, _ := blob.NewFS(filepath.Join(dir, "blobs"))
	skey, vkey, _ := tlog.GenerateKey("rampart.test/log")
	signer, _ := note.NewSigner(skey)
	lg, err := tlog.Open(context.Background(), filepath.Join(dir, "log"), signer, "rampart.test/log")
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	ca, err := pki.NewCA("device ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var signed atomic.Int64
	now := time.Now()
	srv, err := server.New(server.Config{Store: db, Blobs: blobs, Log: lg, LogVerifierKey: vkey, Snapshot: key(t), Timestamp: key(t),
		DeviceCA: &pki.CA{Cert: ca.Cert, Key: countingSigner{ca.Key, &signed}}, Now: func() time.Time { return now },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	token := func(ttl time.Duration) string {
		secret, hash := server.NewToken()
		if err := db.CreateEnrollToken(context.Background(), store.EnrollToken{Hash: hash, HardwareID: "hw-1", Expires: now.Add(ttl)}); err != nil {
			t.Fatal(err)
		}
		return secret
	}
	dkey, _ := pki.GenerateDeviceKey()
	enroll := func(id, tok string, csr []byte) (int, string) {
		body, _ := json.Marshal(map[string]any{"token": tok, "device_id": id, "csr": csr})
		resp, err := ts.Client().Post(ts.URL+"/api/v1/enroll", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	good := func(id string) []byte { return csrFor(t, dkey, id) }
	used := token(time.Hour)
	if code, b := enroll("gw-1", used, good("gw-1")); code != 201 {
		t.Fatalf("enroll: %d %s", code, b)
	}
	if signed.Load() != 1 {
		t.Fatalf("%d signatures for one enrollment", signed.Load())
	}
	huge, err := pkitest.HugeRSACSR(60000, "gw-2")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, token string
		csr         []byte
		status      int
		code, msg   string
	}{
		{"made-up token", "rmp_" + strings.Repeat("x", 43), good("gw-2"), 401, "bad-token", "enrollment token: not found"},
		{"no token prefix", "guess", good("gw-2"), 401, "bad-token", "not found"},
		{"used token", used, good("gw-2"), 401, "token-used", "already used"},
		{"expired token", token(-time.Minute), good("gw-2"), 401, "token-expired", "expired"},
		{"huge RSA key, valid token", token(time.Hour), huge, 400, "unsupported-key", "rsa key of 60000 bits, want ecdsa P-256 or ed25519"},
		{"huge RSA key, made-up token", "rmp_nope", huge, 401, "bad-token", "not found"},
		{"CSR signed by another key", token(time.Hour), tamperCSR(t, good("gw-2")), 400, "bad-csr", "signature"},
	} {
		start := time.Now()
		code, b := enroll("gw-2", c.token, c.csr)
		if code != c.status || !strings.Contains(b, `"code":"`+c.code+`"`) || !strings.Contains(b, c.msg) {
			t.Errorf("%s: %d %s; want %d %s (%s)", c.name, code, b, c.status, c.code, c.msg)
		}
		t.Logf("%s: %d %s in %s", c.name, code, c.code, time.Since(start).Round(time.Microsecond))
	}
	if n := signed.Load(); n != 1 {
		t.Fatalf("the device CA signed %d times; only the good enrollment may be signed", n)
	}
}

// tamperCSR flips a bit of a CSR's signature, keeping it parsable.
func tamperCSR(t *testing.T, csr []byte) []byte {
	b := append([]byte(nil), csr...)
	b[len(b)-5] ^= 1
	return b
}

// A device's reports: the same status again is recorded and counted but
// not audited; every change is audited; the history keeps the latest
// with their reasons truncated; past the burst, 429 with Retry-After.
func TestReportsBoundedPerDevice(t *testing.T) {
	e := newTLSEnv(t, func(c *server.Config) { c.Limits.ReportBurst, c.Limits.ReportEvery = 50, time.Hour })
	cert, code, b := e.enroll("gw-1", e.enrollToken("acme-gw-rev2", 600))
	if cert == nil {
		t.Fatalf("enroll: %d %s", code, b)
	}
	dev := e.client(cert)
	before := len(e.audit())
	long := strings.Repeat("é", 400) // 800 bytes, cut at a character boundary
	for i := 1; i <= 40; i++ {
		st := "downloading"
		if i > 30 {
			st = []string{"failed", "downloading"}[i%2]
		}
		e.mustCall(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": i, "status": st, "reason": long}, 204)
	}
	reports := 0
	for _, a := range e.audit()[before:] {
		if a.Action == "report" {
			reports++
			if len(a.Detail["reason"]) > 256 {
				t.Fatalf("audited reason of %d bytes", len(a.Detail["reason"]))
			}
		}
	}
	// 1 (downloading) + 9 changes (32..40 alternate; 31 is downloading).
	if reports != 10 {
		t.Fatalf("%d reports audited, want 10 state changes", reports)
	}
	var d struct {
		Reports []struct {
			Counter        uint64
			Status, Reason string
		}
		ReportCounts map[string]uint64 `json:"report_counts"`
	}
	json.Unmarshal(e.mustCall(e.pool, "GET", "/api/v1/devices/gw-1", e.admin, nil, 200), &d)
	if len(d.Reports) != store.ReportHistory || d.Reports[0].Counter != 40 || d.ReportCounts["downloading"] != 35 || d.ReportCounts["failed"] != 5 {
		t.Fatalf("history of %d, newest %+v, counts %v", len(d.Reports), d.Reports[0], d.ReportCounts)
	}
	if r := d.Reports[0].Reason; len(r) > 256 || !strings.HasPrefix(long, r) || len(r) < 250 {
		t.Fatalf("stored reason of %d bytes", len(r))
	}
	for i := 41; i <= 50; i++ {
		e.mustCall(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": i, "status": "downloading"}, 204)
	}
	code, b, resp := e.call(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 51, "status": "downloading"})
	wantCode(t, code, b, 429, "rate-limited")
	_ = resp
}

// Unreferenced blobs expire after the grace period; blobs of published
// releases, and fresh ones, stay.
func TestUnreferencedBlobsExpire(t *testing.T) {
	e := newTLSEnv(t, func(c *server.Config) { c.Retention.BlobGrace = time.Hour })
	e.publish("acme-gw-rev2")
	data := make([]byte, 1000)
	rand.Read(data)
	sum := sha256.Sum256(data)
	orphan := hex.EncodeToString(sum[:])
	req, _ := http.NewRequest("PUT", e.ts.URL+fmt.Sprintf("/api/v1/blobs/%s?length=%d", orphan, len(data)), bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.pool.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("upload: %v %v", resp, err)
	}
	resp.Body.Close()
	blobsDir := filepath.Join(e.dataDirPath, "blobs")
	var all []string
	filepath.WalkDir(blobsDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && len(d.Name()) == 64 {
			all = append(all, p)
		}
		return nil
	})
	if len(all) != 3 {
		t.Fatalf("%d blobs, want the release's payload and index and the orphan", len(all))
	}
	if n, err := e.srv.ExpireBlobs(context.Background()); n != 0 || err != nil {
		t.Fatalf("fresh blobs expired: %d %v", n, err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range all {
		os.Chtimes(p, old, old)
	}
	if n, err := e.srv.ExpireBlobs(context.Background()); n != 1 || err != nil {
		t.Fatalf("expired %d, %v; want the orphan only", n, err)
	}
	code, _, _ := e.call(e.pool, "HEAD", "/api/v1/blobs/"+orphan, e.admin, nil)
	if code != 404 {
		t.Fatalf("the orphan is still there: %d", code)
	}
	b := e.mustCall(e.pool, "GET", "/metrics", e.admin, nil, 200)
	if !strings.Contains(string(b), "rampart_blobs_expired_total 1") {
		t.Fatalf("expiry not counted")
	}
}
