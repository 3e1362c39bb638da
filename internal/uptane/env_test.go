package uptane_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
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
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/repo"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/uptane"
)

const (
	product   = "acme-gw"
	hwRev2    = "acme-gw-rev2"
	logOrigin = "rampart.local/log" // InitDataDir's default
)

// env is a real rampart server opened from a data directory, served over
// TLS, with an offline image repository whose release keys the test holds
// and a pushed director root.
type env struct {
	t       *testing.T
	ts      *httptest.Server
	dataDir string
	caPEM   []byte
	admin   string
	pool    *http.Client

	repo         *repo.Repo
	rel          keys.Signer
	imageRoot    []byte
	directorRoot []byte
	logKey       note.Verifier
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "srv")
	res, err := server.InitDataDir(dir, server.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dataDir: dir, admin: res.AdminToken}
	ctx, cancel := context.WithCancel(context.Background())
	in, err := server.OpenDataDir(ctx, dir, server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.ts = httptest.NewUnstartedServer(in.Server.Handler())
	e.ts.TLS = in.TLS
	e.ts.StartTLS()
	t.Cleanup(func() { e.ts.Close(); cancel(); in.Close() })
	e.caPEM = e.read("ca.pem")
	e.pool = e.client(nil)
	vkey := strings.TrimSpace(string(e.read("online/log.pub")))
	if e.logKey, err = note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}

	// Offline image repository naming the server's online keys.
	k := func() keys.Signer {
		s, err := keys.Generate(keys.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		return keys.InMemory(s)
	}
	root, targets := k(), k()
	e.rel = k()
	rdir := filepath.Join(t.TempDir(), "repo")
	e.repo, err = repo.Init(rdir, repo.InitOptions{RootKeys: []crypto.PublicKey{root.Public()}, RootThreshold: 1,
		TargetsKeys: []crypto.PublicKey{targets.Public()}, TargetsThreshold: 1,
		SnapshotKeys: e.pub("snapshot.pub"), TimestampKeys: e.pub("timestamp.pub")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.repo.Close() })
	e.must(e.repo.Sign("root", root))
	e.imageRoot, err = os.ReadFile(filepath.Join(rdir, "staged", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.repo.Delegate(product, []crypto.PublicKey{e.rel.Public()}, 1); err != nil {
		t.Fatal(err)
	}
	e.must(e.repo.Sign("targets", targets))

	// Offline director root naming the server's director keys.
	rk := k()
	ddir := filepath.Join(t.TempDir(), "director")
	dr, err := repo.Init(ddir, repo.InitOptions{RootKeys: []crypto.PublicKey{rk.Public()}, RootThreshold: 1,
		TargetsKeys: e.pub("director-targets.pub"), TargetsThreshold: 1,
		SnapshotKeys: e.pub("director-snapshot.pub"), TimestampKeys: e.pub("director-timestamp.pub")})
	if err != nil {
		t.Fatal(err)
	}
	e.must(dr.Sign("root", rk))
	dr.Close()
	e.directorRoot, err = os.ReadFile(filepath.Join(ddir, "staged", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	e.call(e.pool, "POST", "/api/v1/director/root", e.admin, map[string]any{"roots": [][]byte{e.directorRoot}}, 200)
	return e
}

func (e *env) must(_ string, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) read(name string) []byte {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dataDir, name))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) pub(name string) []crypto.PublicKey {
	e.t.Helper()
	p, err := keys.ReadPublicFile(filepath.Join(e.dataDir, "online", name))
	if err != nil {
		e.t.Fatal(err)
	}
	return []crypto.PublicKey{p}
}

// client pins the server CA and presents cert; wrap, when set, sits
// between the device code and the TLS transport (a hostile network or
// server that rewrites responses).
func (e *env) client(cert *tls.Certificate) *http.Client {
	pool, err := pki.CertPoolFromPEM(e.caPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, cert)}, Timeout: 30 * time.Second}
}

func (e *env) call(c *http.Client, method, path, token string, body any, want int) []byte {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(body)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.ts.URL+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		e.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, out, want)
	}
	return out
}

// release adds, signs and pushes PRODUCT/version/fw.img, the way
// rampart repo push does, and returns the image bytes.
func (e *env) release(version string, secVer uint64, hw ...string) []byte {
	e.t.Helper()
	img := filepath.Join(e.t.TempDir(), "fw.img")
	b := make([]byte, 256<<10+7)
	rand.Read(b)
	if err := os.WriteFile(img, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.repo.AddRelease(repo.ReleaseOptions{Image: img, Product: product, Version: version, SecurityVersion: secVer, Hardware: hw}); err != nil {
		e.t.Fatal(err)
	}
	e.must(e.repo.Sign(product, e.rel))

	var v struct{ Versions map[string]int64 }
	json.Unmarshal(e.call(e.pool, "GET", "/api/v1/repo/versions", e.admin, nil, 200), &v)
	ps, err := e.repo.PushSet(v.Versions)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, bf := range ps.Blobs {
		data, err := os.ReadFile(bf.Path)
		if err != nil {
			e.t.Fatal(err)
		}
		e.call(e.pool, "PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", bf.SHA256, bf.Length), e.admin, data, 201)
	}
	var res struct{ Versions map[string]int64 }
	json.Unmarshal(e.call(e.pool, "POST", "/api/v1/repo/push", e.admin, map[string]any{"roots": ps.Roots, "targets": ps.Targets, "roles": ps.Roles}, 200), &res)
	files := map[string][]byte{}
	for r := v.Versions["root"] + 1; r <= res.Versions["root"]; r++ {
		n := fmt.Sprintf("%d.root.json", r)
		files[n] = e.call(e.pool, "GET", "/repo/"+n, "", nil, 200)
		files["root.json"] = files[n]
	}
	for role, ver := range res.Versions {
		if role == "root" || role == "timestamp" || ver <= v.Versions[role] {
			continue
		}
		n := fmt.Sprintf("%d.%s.json", ver, role)
		files[n] = e.call(e.pool, "GET", "/repo/"+n, "", nil, 200)
	}
	files["timestamp.json"] = e.call(e.pool, "GET", "/repo/timestamp.json", "", nil, 200)
	if err := e.repo.AdoptPublished(ps, files); err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) deploy(target, hw string) {
	e.t.Helper()
	e.call(e.pool, "POST", "/api/v1/deploy", e.admin, map[string]string{"target": target, "hardware": hw}, 200)
}

// enroll enrolls a device and returns its mTLS certificate.
func (e *env) enroll(id, hw string) *tls.Certificate {
	e.t.Helper()
	var tok struct{ Token string }
	json.Unmarshal(e.call(e.pool, "POST", "/api/v1/devices/tokens", e.admin, map[string]any{"hardware": hw, "ttl_seconds": 600}, 201), &tok)
	key, err := pki.GenerateDeviceKey()
	if err != nil {
		e.t.Fatal(err)
	}
	csr, err := pki.NewDeviceCSR(key, id)
	if err != nil {
		e.t.Fatal(err)
	}
	var out struct{ Certificate string }
	json.Unmarshal(e.call(e.pool, "POST", "/api/v1/enroll", "", map[string]any{"token": tok.Token, "device_id": id, "csr": csr}, 201), &out)
	keyPEM, _ := pki.MarshalKeyPEM(key)
	cert, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return &cert
}

// device is one device's configuration with a fresh state directory.
func (e *env) device(id, hw string, cert *tls.Certificate) uptane.Config {
	return uptane.Config{
		ServerURL:    e.ts.URL,
		HTTPClient:   e.client(cert),
		StateDir:     e.t.TempDir(),
		ImageRoot:    e.imageRoot,
		DirectorRoot: e.directorRoot,
		LogOrigin:    logOrigin,
		LogKey:       e.logKey,
		DeviceID:     id,
		HardwareID:   hw,
	}
}

// hostile rewrites responses: fn returns a replacement response for a
// request, or nil to let it through to the real server. It records the
// paths requested.
type hostile struct {
	base http.RoundTripper
	fn   func(*http.Request) *http.Response

	mu    sync.Mutex
	paths []string
}

func (h *hostile) RoundTrip(req *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.paths = append(h.paths, req.URL.RequestURI())
	h.mu.Unlock()
	if h.fn != nil {
		if resp := h.fn(req); resp != nil {
			return resp, nil
		}
	}
	return h.base.RoundTrip(req)
}

func (h *hostile) requested(prefix string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.paths {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

// intercept puts a hostile transport in front of cfg's client.
func intercept(cfg *uptane.Config, fn func(*http.Request) *http.Response) *hostile {
	h := &hostile{base: cfg.HTTPClient.Transport, fn: fn}
	cfg.HTTPClient = &http.Client{Transport: h, Timeout: cfg.HTTPClient.Timeout}
	return h
}

func respond(req *http.Request, code int, body []byte) *http.Response {
	return &http.Response{StatusCode: code, Status: http.StatusText(code), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: req}
}
