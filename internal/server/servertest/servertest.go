// Package servertest runs a real rampart server for tests of the code that
// talks to it (the device side, the CLI, benchmarks): opened from a fresh
// data directory, served over TLS with its own CA, with an offline image
// repository whose release keys the test holds, a pushed director root, and
// helpers to release, deploy and enroll. It also has a hostile transport
// that rewrites responses, for the attacks a network or mirror can mount.
package servertest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server"
)

const (
	// Product is the product line Release publishes under.
	Product = "acme-gw"
	// LogOrigin is the log origin of a data directory made by
	// datadir.Init with default options.
	LogOrigin = "rampart.local/log"
)

// Env is a real rampart server opened from a data directory, served over
// TLS, with an offline image repository whose release keys the test holds
// and a pushed director root.
type Env struct {
	t       testing.TB
	TS      *httptest.Server
	DataDir string
	CAPEM   []byte
	Admin   string
	Pool    *http.Client

	Repo *offlinerepo.Repo
	// Rel signs the product role; RootKey and TargetsKey are the offline
	// root and targets keys of the image repository.
	Rel, RootKey, TargetsKey keys.Signer
	ImageRoot                []byte
	DirectorRoot             []byte
	LogKey                   note.Verifier
	// Server is the server behind TS, for what tests run that Run would
	// (retention, refreshes).
	Server *server.Server
	// DirectorRepo is the offline director repository (rampart repo
	// init) and DirectorRootKey its root key, for rotations.
	DirectorRepo    string
	DirectorRootKey keys.Signer

	opts  []Option
	close func()
}

// Option changes the server's configuration before it starts.
type Option func(*server.Config)

// WithManufacturerCAs lets devices enroll with a certificate from one of
// the CAs in pool.
func WithManufacturerCAs(pool *x509.CertPool) Option {
	return func(c *server.Config) { c.ManufacturerCAs = pool }
}

// WithRetention sets the server's retention.
func WithRetention(r server.Retention) Option {
	return func(c *server.Config) { c.Retention = r }
}

// WithNow sets the server's clock (rollout soak times, cool-downs).
func WithNow(now func() time.Time) Option {
	return func(c *server.Config) { c.Now = now }
}

// WithLimits sets the server's limits.
func WithLimits(l server.Limits) Option {
	return func(c *server.Config) { c.Limits = l }
}

// New starts a server for the test and stops it at cleanup.
func New(t testing.TB, opts ...Option) *Env {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "srv")
	res, err := datadir.Init(dir, datadir.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{t: t, DataDir: dir, Admin: res.AdminToken, opts: opts}
	e.start("")
	t.Cleanup(func() { e.close() })
	e.CAPEM = e.Read("ca.pem")
	e.Pool = e.Client(nil)
	vkey := strings.TrimSpace(string(e.Read("online/log.pub")))
	if e.LogKey, err = note.NewVerifier(vkey); err != nil {
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
	e.Rel, e.RootKey, e.TargetsKey = k(), root, targets
	rdir := filepath.Join(t.TempDir(), "repo")
	e.Repo, err = offlinerepo.Init(rdir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{root.Public()}, RootThreshold: 1,
		TargetsKeys: []crypto.PublicKey{targets.Public()}, TargetsThreshold: 1,
		SnapshotKeys: e.pub("snapshot.pub"), TimestampKeys: e.pub("timestamp.pub")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Repo.Close() })
	e.must(e.Repo.Sign("root", root))
	e.ImageRoot, err = os.ReadFile(filepath.Join(rdir, "staged", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Repo.Delegate(Product, []crypto.PublicKey{e.Rel.Public()}, 1); err != nil {
		t.Fatal(err)
	}
	e.must(e.Repo.Sign("targets", targets))

	// Offline director root naming the server's director keys.
	rk := k()
	ddir := filepath.Join(t.TempDir(), "director")
	dr, err := offlinerepo.Init(ddir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{rk.Public()}, RootThreshold: 1,
		TargetsKeys: e.pub("director-targets.pub"), TargetsThreshold: 1,
		SnapshotKeys: e.pub("director-snapshot.pub"), TimestampKeys: e.pub("director-timestamp.pub")})
	if err != nil {
		t.Fatal(err)
	}
	e.must(dr.Sign("root", rk))
	dr.Close()
	e.DirectorRepo, e.DirectorRootKey = ddir, rk
	e.DirectorRoot, err = os.ReadFile(filepath.Join(ddir, "staged", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	e.Call(e.Pool, "POST", "/api/v1/director/root", e.Admin, api.DirectorRootRequest{Roots: [][]byte{e.DirectorRoot}}, 200)
	// As rampart director push-root does: the pushed root is published.
	dr, err = offlinerepo.Open(ddir)
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close()
	if err := dr.AdoptPushedRoots([][]byte{e.DirectorRoot}); err != nil {
		t.Fatal(err)
	}
	return e
}

// start opens the data directory and serves it over TLS, on addr when
// given (a restart keeps the address devices are configured with).
func (e *Env) start(addr string) {
	t := e.t
	ctx, cancel := context.WithCancel(context.Background())
	// Device-side tests replay one device identity through hundreds of
	// scenarios (TestPowerLoss): its report budget is lifted unless
	// WithLimits sets one.
	cfg := server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Limits: server.Limits{ReportBurst: 1 << 30}}
	for _, o := range e.opts {
		o(&cfg)
	}
	in, err := datadir.Open(ctx, e.DataDir, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.Server = in.Server
	e.TS = httptest.NewUnstartedServer(in.Server.Handler())
	if addr != "" {
		e.TS.Listener.Close()
		var l net.Listener
		for i := 0; ; i++ { // the old listener's port may take a moment to free
			if l, err = net.Listen("tcp", addr); err == nil || i == 50 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			cancel()
			in.Close()
			t.Fatal(err)
		}
		e.TS.Listener = l
	}
	e.TS.TLS = in.TLS
	e.TS.StartTLS()
	e.close = func() { e.TS.Close(); cancel(); in.Close() }
}

// Restart stops the server and opens its data directory again, serving
// on the same address: what an operator does after rampart-server keys
// rotate.
func (e *Env) Restart() { e.RestartWith(nil) }

// RestartWith is Restart running stopped while the server is stopped
// (rampart-server keys rotate --log needs it so).
func (e *Env) RestartWith(stopped func()) {
	e.t.Helper()
	addr := e.TS.Listener.Addr().String()
	e.close()
	if stopped != nil {
		stopped()
	}
	e.start(addr)
}

func (e *Env) must(_ string, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

// T is the test the server belongs to.
func (e *Env) T() testing.TB { return e.t }

// Read returns a file of the data directory.
func (e *Env) Read(name string) []byte {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.DataDir, name))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *Env) pub(name string) []crypto.PublicKey {
	e.t.Helper()
	p, err := keys.ReadPublicFile(filepath.Join(e.DataDir, "online", name))
	if err != nil {
		e.t.Fatal(err)
	}
	return []crypto.PublicKey{p}
}

// Client pins the server CA and presents cert (nil for none).
func (e *Env) Client(cert *tls.Certificate) *http.Client {
	pool, err := pki.CertPoolFromPEM(e.CAPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, cert)}, Timeout: 30 * time.Second}
}

// Call makes an API request and fails the test unless the status is want.
func (e *Env) Call(c *http.Client, method, path, token string, body any, want int) []byte {
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
	req, _ := http.NewRequest(method, e.TS.URL+path, r)
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

// Release adds, signs and pushes a random image as PRODUCT/version/fw.img, the way
// rampart repo push does, and returns the image bytes.
func (e *Env) Release(version string, secVer uint64, hw ...string) []byte {
	e.t.Helper()
	b := make([]byte, 256<<10+7)
	rand.Read(b)
	e.ReleaseImage(version, secVer, b, hw...)
	return b
}

// ReleaseImage is Release with the given image bytes.
func (e *Env) ReleaseImage(version string, secVer uint64, b []byte, hw ...string) {
	e.t.Helper()
	img := filepath.Join(e.t.TempDir(), "fw.img")
	if err := os.WriteFile(img, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.Repo.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: Product, Version: version, SecurityVersion: secVer, Hardware: hw}); err != nil {
		e.t.Fatal(err)
	}
	e.must(e.Repo.Sign(Product, e.Rel))
	if err := e.PushStaged(nil); err != nil {
		e.t.Fatal(err)
	}
}

// PushStaged pushes what the repository holds that the server does not,
// the way rampart repo push does, and adopts the server's answer. When
// tamper is not nil, every metadata file fetched back passes through it
// first, as through a hostile front end. It returns the error of PushSet
// or AdoptPublished; a push the server refuses fails the test.
func (e *Env) PushStaged(tamper func(name string, b []byte) []byte) error {
	e.t.Helper()
	var v struct{ Versions map[string]int64 }
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/repo/versions", e.Admin, nil, 200), &v)
	ps, err := e.Repo.PushSet(v.Versions)
	if err != nil {
		return err
	}
	for _, bf := range ps.Blobs {
		data, err := os.ReadFile(bf.Path)
		if err != nil {
			return err
		}
		e.Call(e.Pool, "PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", bf.SHA256, bf.Length), e.Admin, data, 201)
	}
	if !ps.Empty() {
		e.Call(e.Pool, "POST", "/api/v1/repo/push", e.Admin, api.PushRequest{Roots: ps.Roots, Targets: ps.Targets, Roles: ps.Roles}, 200)
	}
	_, err = e.Repo.AdoptPublished(func(name string) ([]byte, error) {
		resp, err := e.Pool.Get(e.TS.URL + "/repo/" + name)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			b = nil
		}
		if tamper != nil {
			b = tamper(name, b)
		}
		if b == nil {
			return nil, fmt.Errorf("GET /repo/%s: %s", name, resp.Status)
		}
		return b, nil
	})
	return err
}

// Deploy assigns target to every device of hardware hw.
func (e *Env) Deploy(target, hw string) {
	e.t.Helper()
	e.Call(e.Pool, "POST", "/api/v1/deploy", e.Admin, map[string]string{"target": target, "hardware": hw}, 200)
}

// Enroll enrolls a device and returns its mTLS certificate.
func (e *Env) Enroll(id, hw string) *tls.Certificate {
	e.t.Helper()
	var tok struct{ Token string }
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/devices/tokens", e.Admin, map[string]any{"hardware": hw, "ttl_seconds": 600}, 201), &tok)
	key, err := pki.GenerateDeviceKey()
	if err != nil {
		e.t.Fatal(err)
	}
	csr, err := pki.NewDeviceCSR(key, id)
	if err != nil {
		e.t.Fatal(err)
	}
	var out struct{ Certificate string }
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/enroll", "", map[string]any{"token": tok.Token, "device_id": id, "csr": csr}, 201), &out)
	keyPEM, _ := pki.MarshalKeyPEM(key)
	cert, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return &cert
}

// Hostile rewrites responses: fn returns a replacement response for a
// request, or nil to let it through to the real server. It records the
// paths requested.
type Hostile struct {
	base http.RoundTripper
	fn   func(*http.Request) *http.Response

	mu    sync.Mutex
	paths []string
}

func (h *Hostile) RoundTrip(req *http.Request) (*http.Response, error) {
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

// Paths returns the request paths seen so far.
func (h *Hostile) Paths() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.paths...)
}

// Requested reports whether any request path began with prefix.
func (h *Hostile) Requested(prefix string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.paths {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

// Intercept puts a hostile transport in front of the client *c.
func Intercept(c **http.Client, fn func(*http.Request) *http.Response) *Hostile {
	h := &Hostile{base: (*c).Transport, fn: fn}
	*c = &http.Client{Transport: h, Timeout: (*c).Timeout}
	return h
}

// Respond builds a response to req, for a Hostile transport.
func Respond(req *http.Request, code int, body []byte) *http.Response {
	return &http.Response{StatusCode: code, Status: http.StatusText(code), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: req}
}

// LogProof is the server's log proof answer for a published release of
// Product, as an offline bundle carries it.
func (e *Env) LogProof(version string) []byte {
	e.t.Helper()
	return e.Call(e.Pool, "GET", "/api/v1/log/proof/"+Product+"/"+version+"/fw.img", "", nil, 200)
}

// WriteBundle writes an offline bundle of a published release of Product
// to path, carrying proof as its log proof (none when nil: a format 1
// bundle).
func (e *Env) WriteBundle(path, version string, proof []byte) {
	e.t.Helper()
	p, err := e.Repo.FindPublished(Product + "/" + version)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.Repo.BundleContents(p)
	if err != nil {
		e.t.Fatal(err)
	}
	c.LogProof = proof
	img, err := os.Open(p.ImagePath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer img.Close()
	if err := atomicfile.Write(path, 0o644, func(w io.Writer) error { return bundle.Write(w, c, img) }); err != nil {
		e.t.Fatal(err)
	}
}
