package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/syncbuf"
)

// liveEnv is a server opened from a fresh data directory and served the
// way rampart-server serve does (Server.HTTPServer, ServeTLS: HTTP/1.1
// and HTTP/2), with its log captured.
type liveEnv struct {
	t     *testing.T
	addr  string
	dir   string
	admin string
	pool  *x509.CertPool
	logs  *syncbuf.Buffer
	srv   *server.Server
}

func newLive(t *testing.T, lim server.Limits, configure ...func(*server.Config)) *liveEnv {
	t.Helper()
	return serveLive(t, filepath.Join(t.TempDir(), "srv"), lim, configure...)
}

// serveLive initialises dir and serves it until the test ends.
func serveLive(t *testing.T, dir string, lim server.Limits, configure ...func(*server.Config)) *liveEnv {
	t.Helper()
	res, err := datadir.Init(dir, datadir.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := &liveEnv{t: t, dir: dir, admin: res.AdminToken, logs: &syncbuf.Buffer{}}
	c := server.Config{Limits: lim, Logger: slog.New(slog.NewJSONHandler(e.logs, nil))}
	for _, f := range configure {
		f(&c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in, err := datadir.Open(ctx, dir, c)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.srv = in.Server
	hs := in.Server.HTTPServer(in.TLS, log.New(io.Discard, "", 0))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { server.ServeTLS(hs, ln); close(done) }()
	t.Cleanup(func() { hs.Close(); <-done; cancel(); in.Close() })
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if e.pool, err = pki.CertPoolFromPEM(caPEM); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *liveEnv) url(path string) string { return "https://" + e.addr + path }

// client speaks HTTP/2 when h2, else HTTP/1.1, presenting cert if given.
func (e *liveEnv) client(cert *tls.Certificate, h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: pki.ClientTLSConfig(e.pool, cert), ForceAttemptHTTP2: h2}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// do sends a request and returns the response with its body read.
func (e *liveEnv) do(c *http.Client, method, path, token string, body io.Reader) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url(path), body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// enroll enrolls a device and returns its client certificate.
func (e *liveEnv) enroll(id string) *tls.Certificate {
	e.t.Helper()
	c := e.client(nil, false)
	resp, b := e.do(c, "POST", "/api/v1/devices/tokens", e.admin, strings.NewReader(`{"hardware":"acme-gw-rev2"}`))
	var tok struct{ Token string }
	if json.Unmarshal(b, &tok); resp.StatusCode != 201 {
		e.t.Fatalf("enrollment token: %d %s", resp.StatusCode, b)
	}
	key, _ := pki.GenerateDeviceKey()
	csr, err := pki.NewDeviceCSR(key, id)
	if err != nil {
		e.t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"token": tok.Token, "device_id": id, "csr": csr})
	resp, b = e.do(c, "POST", "/api/v1/enroll", "", bytes.NewReader(body))
	var out struct{ Certificate string }
	if json.Unmarshal(b, &out); resp.StatusCode != 201 {
		e.t.Fatalf("enroll: %d %s", resp.StatusCode, b)
	}
	keyPEM, _ := pki.MarshalKeyPEM(key)
	cert, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return &cert
}

// stall opens a TLS connection and sends an enrollment request's headers
// declaring a body of 60,000 bytes, and one byte of it. The returned
// channel yields how long the connection stayed open once the server
// closed it, and the first line of what the server answered.
func (e *liveEnv) stall() (<-chan stallResult, net.Conn) {
	e.t.Helper()
	conn, err := tls.Dial("tcp", e.addr, pki.ClientTLSConfig(e.pool, nil))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	start := time.Now()
	fmt.Fprintf(conn, "POST /api/v1/enroll HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{", e.addr)
	ch := make(chan stallResult, 1)
	go func() {
		conn.SetReadDeadline(time.Now().Add(time.Minute))
		br := bufio.NewReader(conn)
		line, _ := br.ReadString('\n')
		_, err := io.Copy(io.Discard, br)
		ch <- stallResult{open: time.Since(start), status: strings.TrimSpace(line), err: err}
	}()
	return ch, conn
}

type stallResult struct {
	open   time.Duration
	status string
	err    error
}

func wantAPIError(t *testing.T, resp *http.Response, b []byte, status int, code string) {
	t.Helper()
	var out struct {
		Error struct{ Code, Message string }
	}
	if resp.StatusCode != status || json.Unmarshal(b, &out) != nil || out.Error.Code != code || out.Error.Message == "" {
		t.Fatalf("%s: got %d %q (%s), want %d %s", resp.Request.URL.Path, resp.StatusCode, b, resp.Header.Get("Content-Type"), status, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
}

// The router's own refusals (no route, a method the route does not
// take) are JSON in the API's error shape, over HTTP/1.1 and HTTP/2.
func TestRouterRefusalsAreJSON(t *testing.T) {
	e := newLive(t, server.Limits{})
	for _, h2 := range []bool{false, true} {
		c := e.client(nil, h2)
		resp, b := e.do(c, "GET", "/no/such/thing", "", nil)
		wantAPIError(t, resp, b, 404, "not-found")
		resp, b = e.do(c, "DELETE", "/api/v1/keys", "", nil)
		wantAPIError(t, resp, b, 405, "method-not-allowed")
		if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "GET") {
			t.Fatalf("Allow: %q", allow)
		}
		resp, b = e.do(c, "POST", "/readyz", "", strings.NewReader("x"))
		wantAPIError(t, resp, b, 405, "method-not-allowed")
		if wantMajor := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != wantMajor {
			t.Fatalf("spoke HTTP/%d, want %d", resp.ProtoMajor, wantMajor)
		}
	}
}

// A Content-Length over the route's limit is refused with 413 before
// any of the body is read: the bodies here never send a byte, so a server
// that read them would not answer before its body deadline (30 s).
func TestDeclaredTooLargeRefusedBeforeTheBody(t *testing.T) {
	e := newLive(t, server.Limits{BodyTimeout: 30 * time.Second})
	digest := strings.Repeat("ab", 32)
	cases := []struct {
		method, path, token string
		length              int64
	}{
		{"POST", "/api/v1/enroll", "", 64<<10 + 1},
		{"POST", "/api/v1/device/report", "", 16<<10 + 1},
		{"POST", "/api/v1/tokens", e.admin, 4<<10 + 1},
		{"POST", "/api/v1/repo/push", e.admin, 32<<20 + 1},
		{"PUT", "/api/v1/blobs/" + digest + "?length=68719476737", e.admin, 64<<30 + 1},
		{"GET", "/api/v1/keys", "", 1},
	}
	for _, h2 := range []bool{false, true} {
		c := e.client(nil, h2)
		for _, tc := range cases {
			pr, pw := io.Pipe()
			req, _ := http.NewRequest(tc.method, e.url(tc.path), pr)
			req.ContentLength = tc.length
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			start := time.Now()
			// A client stays in Do while its body is being sent: end
			// the body if the server does not answer.
			giveUp := time.AfterFunc(5*time.Second, func() { pw.CloseWithError(errors.New("no answer in 5 s")) })
			resp, err := c.Do(req)
			took := time.Since(start)
			giveUp.Stop()
			pw.CloseWithError(io.ErrClosedPipe)
			if err != nil {
				t.Fatalf("h2=%v %s %s: %v after %s", h2, tc.method, tc.path, err, took)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantAPIError(t, resp, b, 413, "too-large")
			t.Logf("h2=%v %s %s: %d after %s", h2, tc.method, tc.path, resp.StatusCode, took.Round(time.Millisecond))
			if took > 2*time.Second || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
				t.Fatalf("h2=%v %s %s: HTTP/%d, answered after %s", h2, tc.method, tc.path, resp.ProtoMajor, took)
			}
		}
	}
	// At the limit, the body is read (and found not to be JSON).
	resp, b := e.do(e.client(nil, false), "POST", "/api/v1/enroll", "", strings.NewReader(strings.Repeat(" ", 64<<10)))
	wantAPIError(t, resp, b, 400, "bad-json")
}

// A body that stops arriving is cut at BodyTimeout: the server answers
// and closes the connection instead of waiting for the rest.
func TestStalledBodyIsCut(t *testing.T) {
	e := newLive(t, server.Limits{BodyTimeout: time.Second})
	ch, _ := e.stall()
	r := <-ch
	if r.open < time.Second || r.open > 4*time.Second || !strings.HasPrefix(r.status, "HTTP/1.1 4") {
		t.Fatalf("HTTP/1.1: connection open %s, answer %q, %v", r.open, r.status, r.err)
	}
	t.Logf("HTTP/1.1 stalled body: %q, connection closed after %s", r.status, r.open.Round(time.Millisecond))

	// HTTP/2: the stream is answered; the connection serves on.
	c := e.client(nil, true)
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", e.url("/api/v1/enroll"), pr)
	req.ContentLength = 60000
	go pw.Write([]byte("{"))
	time.AfterFunc(10*time.Second, func() { pw.CloseWithError(errors.New("no answer in 10 s")) })
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if took := time.Since(start); took < time.Second || took > 4*time.Second || resp.StatusCode != 408 || !bytes.Contains(b, []byte(`"code":"timeout"`)) || resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/2: %d %s after %s", resp.StatusCode, b, took)
	}
	t.Logf("HTTP/2 stalled body: %d %s", resp.StatusCode, bytes.TrimSpace(b))
	resp, b = e.do(c, "GET", "/healthz", "", nil)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if !strings.Contains(e.metrics(), "rampart_http_body_timeouts_total 2") {
		t.Fatalf("body timeouts not counted:\n%s", e.metrics())
	}
}

func (e *liveEnv) metrics() string {
	resp, b := e.do(e.client(nil, false), "GET", "/metrics", e.admin, nil)
	if resp.StatusCode != 200 {
		e.t.Fatalf("metrics: %d", resp.StatusCode)
	}
	return string(b)
}

// pacedReader yields its data in pieces, one every interval, and then
// stalls for ever (until closed) if stallAfter is reached first.
type pacedReader struct {
	data       []byte
	piece      int
	interval   time.Duration
	stallAfter int
	done       chan struct{}
	once       sync.Once
}

func newPaced(data []byte, piece int, interval time.Duration, stallAfter int) *pacedReader {
	p := &pacedReader{data: data, piece: piece, interval: interval, stallAfter: stallAfter, done: make(chan struct{})}
	// A client stays in Do while its body is being sent: end a stalled
	// body if the server does not.
	time.AfterFunc(20*time.Second, p.stop)
	return p
}

func (p *pacedReader) stop() { p.once.Do(func() { close(p.done) }) }

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, io.EOF
	}
	if p.stallAfter <= 0 {
		<-p.done
		return 0, io.ErrClosedPipe
	}
	time.Sleep(p.interval)
	n := copy(b[:min(len(b), p.piece)], p.data)
	p.data = p.data[n:]
	p.stallAfter -= n
	return n, nil
}

// Blob uploads are held to a minimum rate, not to BodyTimeout: one that
// takes many times BodyTimeout but keeps moving completes; one that stops
// is cut, stores nothing, and leaves no temporary file.
func TestUploadMinimumRate(t *testing.T) {
	// Mostly idle waiting: run it beside TestDownloadMinimumRate (parallel
	// tests overlap only each other, after the sequential ones).
	t.Parallel()
	// Steps of 64 KiB, each to arrive within 2 s. (Windows of seconds,
	// not less, so that a loaded machine does not starve the client for
	// one.)
	lim := server.Limits{BodyTimeout: 2 * time.Second, MinRate: 32 << 10}
	e := newLive(t, lim)
	for _, h2 := range []bool{false, true} {
		c := e.client(nil, h2)
		data := make([]byte, 768<<10)
		rand.Read(data)
		sum := sha256.Sum256(data)
		path := fmt.Sprintf("/api/v1/blobs/%s?length=%d", hex.EncodeToString(sum[:]), len(data))
		// 16 KiB every 62.5 ms: 256 KiB/s, 8 times the minimum rate;
		// about 3 s, 1.5 times BodyTimeout.
		slow := newPaced(data, 16<<10, 62500*time.Microsecond, len(data))
		start := time.Now()
		req, _ := http.NewRequest("PUT", e.url(path), slow)
		req.ContentLength = int64(len(data))
		req.Header.Set("Authorization", "Bearer "+e.admin)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("h2=%v slow upload: %v", h2, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != 201 || took < 5*lim.BodyTimeout/4 {
			t.Fatalf("h2=%v slow upload: %d %s after %s", h2, resp.StatusCode, b, took)
		}
		t.Logf("h2=%v: 768 KiB at 256 KiB/s uploaded in %s (BodyTimeout %s, MinRate 32 KiB/s)", h2, took.Round(time.Millisecond), lim.BodyTimeout)

		rand.Read(data)
		sum = sha256.Sum256(data)
		digest := hex.EncodeToString(sum[:])
		stalled := newPaced(data, 32<<10, time.Millisecond, 256<<10)
		req, _ = http.NewRequest("PUT", e.url(fmt.Sprintf("/api/v1/blobs/%s?length=%d", digest, len(data))), stalled)
		req.ContentLength = int64(len(data))
		req.Header.Set("Authorization", "Bearer "+e.admin)
		start = time.Now()
		resp, err = c.Do(req)
		took = time.Since(start)
		stalled.stop()
		if err == nil {
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 408 {
				t.Fatalf("h2=%v stalled upload: %d %s", h2, resp.StatusCode, b)
			}
		}
		if took > 3*lim.BodyTimeout {
			t.Fatalf("h2=%v stalled upload cut after %s", h2, took)
		}
		t.Logf("h2=%v: stalled upload cut after %s (%v)", h2, took.Round(time.Millisecond), errOrStatus(err, resp))
		resp, _ = e.do(c, "HEAD", "/api/v1/blobs/"+digest, e.admin, nil)
		if resp.StatusCode != 404 {
			t.Fatalf("the stalled blob was stored: %d", resp.StatusCode)
		}
	}
	if left, _ := os.ReadDir(filepath.Join(e.dir, "blobs", "tmp")); len(left) != 0 {
		t.Fatalf("%d temporary files left", len(left))
	}
}

func errOrStatus(err error, resp *http.Response) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// publish pushes a release of size random bytes and returns its payload's
// URL path and content.
func (e *liveEnv) publish(size int) (string, []byte) {
	t := e.t
	pub := func(name string) []crypto.PublicKey {
		p, err := keys.ReadPublicFile(filepath.Join(e.dir, "online", name))
		if err != nil {
			t.Fatal(err)
		}
		return []crypto.PublicKey{p}
	}
	k := func() keys.Signer {
		s, _ := keys.Generate(keys.Ed25519)
		return keys.InMemory(s)
	}
	root, targets, rel := k(), k(), k()
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{root.Public()}, RootThreshold: 1, TargetsKeys: []crypto.PublicKey{targets.Public()}, TargetsThreshold: 1,
		SnapshotKeys: pub("snapshot.pub"), TimestampKeys: pub("timestamp.pub")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Sign("root", root)
	r.Delegate("acme-gw", []crypto.PublicKey{rel.Public()}, 1)
	r.Sign("targets", targets)
	data := make([]byte, size)
	rand.Read(data)
	img := filepath.Join(t.TempDir(), "fw.img")
	os.WriteFile(img, data, 0o644)
	if _, err := r.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: "acme-gw", Version: "1.0.0", SecurityVersion: 1, Hardware: []string{"acme-gw-rev2"}}); err != nil {
		t.Fatal(err)
	}
	r.Sign("acme-gw", rel)
	c := e.client(nil, false)
	entries, _ := os.ReadDir(filepath.Join(dir, "staged", "blobs"))
	for _, en := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, "staged", "blobs", en.Name()))
		sum := sha256.Sum256(b)
		if resp, body := e.do(c, "PUT", fmt.Sprintf("/api/v1/blobs/%x?length=%d", sum, len(b)), e.admin, bytes.NewReader(b)); resp.StatusCode != 201 {
			t.Fatalf("upload: %d %s", resp.StatusCode, body)
		}
	}
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "staged", n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	body, _ := json.Marshal(map[string]any{"roots": [][]byte{read("root.json")}, "targets": read("targets.json"), "roles": map[string][]byte{"acme-gw": read("roles/acme-gw.json")}})
	if resp, b := e.do(c, "POST", "/api/v1/repo/push", e.admin, bytes.NewReader(body)); resp.StatusCode != 200 {
		t.Fatalf("push: %d %s", resp.StatusCode, b)
	}
	sum := sha256.Sum256(data)
	return fmt.Sprintf("/repo/targets/acme-gw/1.0.0/%x.fw.img", sum), data
}

// smallReceiveBuffer dials with a small socket receive buffer, so that a
// client that stops reading stops the server's writes soon.
func smallReceiveBuffer(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32<<10)
	})
	if err != nil {
		return err
	}
	return serr
}

// Answers are held to the minimum rate too: a download that keeps moving
// completes however long it takes; one whose client stops reading is cut.
func TestDownloadMinimumRate(t *testing.T) {
	// Mostly idle waiting: run it beside the package's other tests.
	t.Parallel()
	// Steps of 96 KiB, each to be taken within 8 s: the client below
	// reads up to 170 times faster, so only a stall of seconds (or a
	// server that cuts a progressing download) fails it. With 3 s to
	// take each step, a machine at load 17 (-race, other test binaries,
	// parallel builds) once starved the reader that long.
	lim := server.Limits{BodyTimeout: 8 * time.Second, MinRate: 12 << 10}
	e := newLive(t, lim)
	path, data := e.publish(16 << 20)
	dial := func() *http.Client {
		d := &net.Dialer{Control: smallReceiveBuffer}
		tr := &http.Transport{TLSClientConfig: pki.ClientTLSConfig(e.pool, nil), DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	// 64 KiB every 32 ms: up to 2 MiB/s, 170 times the minimum rate;
	// 8 to 12 s for 16 MiB, 1 to 1.5 times BodyTimeout, so the download
	// outlives one deadline only because each step moves it.
	resp, err := dial().Get(e.url(path))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var got bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		time.Sleep(32 * time.Millisecond)
		n, err := io.ReadFull(resp.Body, buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("slow download: got %d of %d bytes", got.Len(), len(data))
	}
	t.Logf("16 MiB read, paced at up to 2 MiB/s, in %s (BodyTimeout %s, MinRate 12 KiB/s)", time.Since(start).Round(time.Millisecond), lim.BodyTimeout)

	// Read 1 MiB, stop reading for 12 s, then read on: the server gave
	// up while the client was not reading, so the rest never comes.
	resp, err = dial().Get(e.url(path))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.CopyN(io.Discard, resp.Body, 1<<20)
	time.Sleep(12 * time.Second)
	m, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil || n+m >= int64(len(data)) {
		t.Fatalf("a client that stopped reading got %d of %d bytes, err %v", n+m, len(data), err)
	}
	t.Logf("a client that stopped reading after 1 MiB got %d bytes in all: %v", n+m, err)
}

// Requests without credentials are bounded: beyond MaxUnauthenticated in
// flight they are refused at once with 503 and Retry-After, while
// operators, devices and health checks are served.
func TestUnauthenticatedBudget(t *testing.T) {
	// Mostly idle waiting: run it beside TestDownloadMinimumRate (parallel
	// tests overlap only each other, after the sequential ones).
	t.Parallel()
	e := newLive(t, server.Limits{MaxUnauthenticated: 3, BodyTimeout: 8 * time.Second})
	device := e.enroll("gw-1")
	var held []<-chan stallResult
	for range 3 {
		ch, _ := e.stall()
		held = append(held, ch)
	}
	waitFor(t, func() bool { return strings.Contains(e.metrics(), "rampart_http_unauthenticated_in_flight 3") })
	for _, h2 := range []bool{false, true} {
		anon, dev := e.client(nil, h2), e.client(device, h2)
		start := time.Now()
		resp, b := e.do(anon, "POST", "/api/v1/enroll", "", strings.NewReader(`{}`))
		wantAPIError(t, resp, b, 503, "busy")
		if resp.Header.Get("Retry-After") == "" || time.Since(start) > time.Second {
			t.Fatalf("busy refusal: Retry-After %q, after %s", resp.Header.Get("Retry-After"), time.Since(start))
		}
		resp, b = e.do(anon, "GET", "/repo/timestamp.json", "", nil)
		wantAPIError(t, resp, b, 503, "busy")
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			tok := map[bool]string{true: e.admin}[p == "/metrics"]
			if resp, b := e.do(anon, "GET", p, tok, nil); resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", p, resp.StatusCode, b)
			}
		}
		if resp, b := e.do(anon, "GET", "/api/v1/tokens", e.admin, nil); resp.StatusCode != 200 {
			t.Fatalf("operator: %d %s", resp.StatusCode, b)
		}
		// A device is not counted, on public routes either.
		if resp, b := e.do(dev, "GET", "/api/v1/keys", "", nil); resp.StatusCode != 200 {
			t.Fatalf("device on a public route: %d %s", resp.StatusCode, b)
		}
		if resp, b := e.do(dev, "POST", "/api/v1/device/report", "", strings.NewReader(`{"counter":`+fmt.Sprint(map[bool]int{false: 1, true: 2}[h2])+`,"status":"downloading"}`)); resp.StatusCode != 204 {
			t.Fatalf("device report: %d %s", resp.StatusCode, b)
		}
	}
	if !strings.Contains(e.metrics(), "rampart_http_busy_refusals_total 4") {
		t.Fatalf("busy refusals not counted:\n%s", e.metrics())
	}
	for _, ch := range held {
		if r := <-ch; r.open > 11*time.Second {
			t.Fatalf("a stalled request held its connection for %s", r.open)
		}
	}
	// Their budget is back.
	resp, b := e.do(e.client(nil, false), "POST", "/api/v1/enroll", "", strings.NewReader(`{}`))
	if resp.StatusCode == 503 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in 10 s")
}
