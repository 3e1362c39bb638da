// Package attacktest loads the real rampart-server binary as an attacker
// would, with an honest device checking in beside each attack, and
// measures what the server spends: its CPU time and resident memory (from
// /proc), the logical size of its database, and the honest device's
// check-in latency. The tests of cmd/rampart-server assert bounds with it;
// bench/attack prints the figures of docs/performance.md with it.
//
// Linux only (/proc). Every attack is a function that runs until its
// context ends and returns what the server answered.
package attacktest

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	_ "modernc.org/sqlite" // read-only look at the server's database

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/pki/pkitest"
	"github.com/rampartfw/rampart/internal/syncbuf"
)

// Build builds rampart-server from the module at root into dir.
func Build(root, dir string) (string, error) {
	bin := filepath.Join(dir, "rampart-server")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/rampart-server")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building rampart-server: %v\n%s", err, out)
	}
	return bin, nil
}

// Server is a running rampart-server process.
type Server struct {
	Data, Addr, MetricsAddr, Admin string
	Pool                           *x509.CertPool
	DeviceCA                       *x509.Certificate
	cmd                            *exec.Cmd
	logs                           *syncbuf.Buffer
	admin                          *http.Client
	bin, cfgPath                   string
}

// Start initialises a data directory in dir, writes config (JSON members
// of rampart-server's config file) and serves it on a free loopback port
// until Stop. The director root is pushed, so devices can check in.
func Start(bin, dir string, config map[string]any) (*Server, error) {
	data := filepath.Join(dir, "srv")
	cfgPath := filepath.Join(dir, "config.json")
	cfg, _ := json.Marshal(config)
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		return nil, err
	}
	// init reads the same file: a "store" there gets the admin token.
	out, err := exec.Command(bin, "init", "--data", data, "--config", cfgPath).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("init: %w", err)
	}
	s := &Server{Data: data, Admin: regexp.MustCompile(`rmp_[A-Za-z0-9_-]+`).FindString(string(out)), logs: &syncbuf.Buffer{}, bin: bin, cfgPath: cfgPath}
	if err := s.serve(); err != nil {
		return nil, err
	}
	if err := s.pushDirectorRoot(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Replica starts another rampart-server serving s's data directory with
// s's configuration (with a "store" and a shared "log_dir", a replica of
// s), until its Stop or Kill.
func (s *Server) Replica() (*Server, error) {
	r := &Server{Data: s.Data, Admin: s.Admin, logs: &syncbuf.Buffer{}, bin: s.bin, cfgPath: s.cfgPath}
	if err := r.serve(); err != nil {
		return nil, err
	}
	return r, nil
}

// Kill kills the server with SIGKILL: no graceful stop, nothing released.
func (s *Server) Kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// serve starts rampart-server serve on s's data directory and waits
// until it serves.
func (s *Server) serve() error {
	data := s.Data
	s.cmd = exec.Command(s.bin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--config", s.cfgPath)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	found := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			s.logs.Write(append(sc.Bytes(), '\n'))
			var m struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				switch m.Msg {
				case "serving metrics":
					s.MetricsAddr = m.Addr
				case "serving":
					s.Addr = m.Addr
					found <- struct{}{}
				}
			}
		}
	}()
	select {
	case <-found:
	case <-time.After(60 * time.Second):
		s.Stop()
		return fmt.Errorf("the server did not start:\n%s", s.logs.String())
	}
	caPEM, err := os.ReadFile(filepath.Join(data, "ca.pem"))
	if err != nil {
		return err
	}
	if s.Pool, err = pki.CertPoolFromPEM(caPEM); err != nil {
		return err
	}
	dcaPEM, err := os.ReadFile(filepath.Join(data, "device-ca.pem"))
	if err != nil {
		return err
	}
	if s.DeviceCA, err = pki.ParseCertPEM(dcaPEM); err != nil {
		return err
	}
	s.admin = s.Client(nil, true)
	return nil
}

// Stop stops the server.
func (s *Server) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
}

// Logs returns what the server logged.
func (s *Server) Logs() string { return s.logs.String() }

// Client is an HTTPS client that pins the server CA and presents cert
// (nil for none), keeping its connection alive or not.
func (s *Server) Client(cert *tls.Certificate, keepAlive bool) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(s.Pool, cert), DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 64},
		Timeout: 60 * time.Second}
}

// Call makes a request with an operator token ("" for none) and returns
// the status and body.
func (s *Server) Call(c *http.Client, method, path, token string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, "https://"+s.Addr+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body == nil {
		req.Body = http.NoBody
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, b, err
}

func (s *Server) mustCall(method, path string, body any, want int) ([]byte, error) {
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	default:
		raw, _ = json.Marshal(b)
	}
	code, b, err := s.Call(s.admin, method, path, s.Admin, raw)
	if err != nil {
		return nil, err
	}
	if code != want {
		return b, fmt.Errorf("%s %s: %d %s, want %d", method, path, code, b, want)
	}
	return b, nil
}

func (s *Server) pushDirectorRoot() error {
	pub := func(name string) ([]crypto.PublicKey, error) {
		p, err := keys.ReadPublicFile(filepath.Join(s.Data, "online", name))
		return []crypto.PublicKey{p}, err
	}
	rk, err := keys.Generate(keys.Ed25519)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rampart-director-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var o offlinerepo.InitOptions
	o.RootKeys, o.RootThreshold, o.TargetsThreshold = []crypto.PublicKey{rk.Public()}, 1, 1
	if o.TargetsKeys, err = pub("director-targets.pub"); err != nil {
		return err
	}
	if o.SnapshotKeys, err = pub("director-snapshot.pub"); err != nil {
		return err
	}
	if o.TimestampKeys, err = pub("director-timestamp.pub"); err != nil {
		return err
	}
	r, err := offlinerepo.Init(filepath.Join(dir, "d"), o)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := r.Sign("root", keys.InMemory(rk)); err != nil {
		return err
	}
	root, err := os.ReadFile(filepath.Join(dir, "d", "staged", "root.json"))
	if err != nil {
		return err
	}
	_, err = s.mustCall("POST", "/api/v1/director/root", api.DirectorRootRequest{Roots: [][]byte{root}}, 200)
	return err
}

// EnrollToken creates a one-time enrollment token for hardware hw.
func (s *Server) EnrollToken(hw string) (string, error) {
	b, err := s.mustCall("POST", "/api/v1/devices/tokens", map[string]any{"hardware": hw, "ttl_seconds": 86400}, 201)
	if err != nil {
		return "", err
	}
	var tok struct{ Token string }
	return tok.Token, json.Unmarshal(b, &tok)
}

// Enroll enrolls device id and returns its client certificate.
func (s *Server) Enroll(id, hw string) (*tls.Certificate, error) {
	certPEM, keyPEM, err := s.EnrollPEM(id, hw)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	return &cert, err
}

// EnrollPEM enrolls device id and returns its certificate and key in
// PEM, for a device that runs in a process of its own.
func (s *Server) EnrollPEM(id, hw string) (certPEM, keyPEM []byte, err error) {
	tok, err := s.EnrollToken(hw)
	if err != nil {
		return nil, nil, err
	}
	key, err := pki.GenerateDeviceKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := pki.NewDeviceCSR(key, id)
	if err != nil {
		return nil, nil, err
	}
	body, _ := json.Marshal(map[string]any{"token": tok, "device_id": id, "csr": csr})
	code, b, err := s.Call(s.admin, "POST", "/api/v1/enroll", "", body)
	if err != nil {
		return nil, nil, err
	}
	if code != 201 {
		return nil, nil, fmt.Errorf("enroll %s: %d %s", id, code, b)
	}
	var out struct{ Certificate string }
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, nil, err
	}
	keyPEM, err = pki.MarshalKeyPEM(key)
	return []byte(out.Certificate), keyPEM, err
}

// Metrics returns the server's metrics, read with the admin token.
func (s *Server) Metrics() (string, error) {
	b, err := s.mustCall("GET", "/metrics", nil, 200)
	return string(b), err
}

// proc reads a file of the server's /proc directory.
func (s *Server) proc(name string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", s.cmd.Process.Pid, name))
	return string(b), err
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux system Go runs on.
const clockTick = 100

// CPU is the CPU time (user and system) the server has used.
func (s *Server) CPU() (time.Duration, error) {
	st, err := s.proc("stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after its ')'.
	f := strings.Fields(st[strings.LastIndexByte(st, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat: %q", st)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+stime) * time.Second / clockTick, nil
}

// RSS is the server's resident memory in bytes.
func (s *Server) RSS() (int64, error) {
	st, err := s.proc("status")
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB`).FindStringSubmatch(st)
	if m == nil {
		return 0, errors.New("no VmRSS")
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	return n << 10, err
}

// DBBytes is the logical size of the server's database (its pages,
// those still in the write-ahead log included), read through a read-only
// connection of its own.
func (s *Server) DBBytes() (int64, error) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.Data, "rampart.db")+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var pages, size, free int64
	if err := db.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		return 0, err
	}
	if err := db.QueryRow(`PRAGMA page_size`).Scan(&size); err != nil {
		return 0, err
	}
	if err := db.QueryRow(`PRAGMA freelist_count`).Scan(&free); err != nil {
		return 0, err
	}
	return (pages - free) * size, nil
}

// Checkin is one device check-in: its director timestamp.
func (s *Server) Checkin(c *http.Client) (time.Duration, error) {
	start := time.Now()
	code, b, err := s.Call(c, "GET", "/director/timestamp.json", "", nil)
	d := time.Since(start)
	if err == nil && code != 200 {
		err = fmt.Errorf("check-in: %d %s", code, b)
	}
	return d, err
}

// Prober is an honest device checking in every interval on its own kept
// connection, as a device does between attacks.
type Prober struct {
	s        *Server
	c        *http.Client
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	lat      []time.Duration
	errs     []error
}

// NewProber starts an honest device cert checking in every interval.
func (s *Server) NewProber(cert *tls.Certificate, interval time.Duration) *Prober {
	p := &Prober{s: s, c: s.Client(cert, true), interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			d, err := s.Checkin(p.c)
			p.mu.Lock()
			if err != nil {
				p.errs = append(p.errs, err)
			} else {
				p.lat = append(p.lat, d)
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// Take returns the latencies and errors since the last Take.
func (p *Prober) Take() ([]time.Duration, []error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, e := p.lat, p.errs
	p.lat, p.errs = nil, nil
	return l, e
}

// Stop stops the prober.
func (p *Prober) Stop() { close(p.stop); <-p.done }

// Median of ds (0 for none).
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// Result is what an attack's requests were answered.
type Result struct {
	Requests int64
	// Statuses counts HTTP statuses; 0 counts transport errors (a
	// refused handshake).
	Statuses map[int]int64
	// Codes counts the API error codes of the refusals.
	Codes map[string]int64
	// FirstError is one transport error, for the record.
	FirstError error
}

func (r Result) String() string {
	var parts []string
	for code, n := range r.Statuses {
		parts = append(parts, fmt.Sprintf("%d×%d", n, code))
	}
	for c, n := range r.Codes {
		parts = append(parts, fmt.Sprintf("%d×%s", n, c))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d requests (%s)", r.Requests, strings.Join(parts, ", "))
}

// flood runs req on workers goroutines until ctx ends or max requests
// (0: no bound) were made.
func flood(ctx context.Context, workers int, max int64, req func(i int64) (int, []byte, error)) Result {
	var n atomic.Int64
	var mu sync.Mutex
	res := Result{Statuses: map[int]int64{}, Codes: map[string]int64{}}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := n.Add(1)
				if max > 0 && i > max {
					return
				}
				code, b, err := req(i)
				var e struct{ Error struct{ Code string } }
				json.Unmarshal(b, &e)
				mu.Lock()
				res.Statuses[code]++
				if e.Error.Code != "" {
					res.Codes[e.Error.Code]++
				}
				if err != nil && res.FirstError == nil && ctx.Err() == nil {
					res.FirstError = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, v := range res.Statuses {
		res.Requests += v
	}
	return res
}

// HugeCSR floods enrollment with a CSR carrying a 60,000-bit RSA key and
// a wrong signature, with token (a valid one shows that the credential
// does not buy a signature check; "" sends a made-up one).
func (s *Server) HugeCSR(ctx context.Context, workers int, max int64, token string) (Result, error) {
	csr, err := pkitest.HugeRSACSR(60000, "gw-evil")
	if err != nil {
		return Result{}, err
	}
	if token == "" {
		token = "rmp_" + strings.Repeat("A", 43)
	}
	body, _ := json.Marshal(map[string]any{"token": token, "device_id": "gw-evil", "csr": csr})
	c := s.Client(nil, true)
	defer c.CloseIdleConnections()
	return flood(ctx, workers, max, func(int64) (int, []byte, error) { return s.Call(c, "POST", "/api/v1/enroll", "", body) }), nil
}

// RefusedEnrollments floods enrollment with made-up tokens, each request
// naming a new device id.
func (s *Server) RefusedEnrollments(ctx context.Context, workers int, max int64) (Result, error) {
	key, err := pki.GenerateDeviceKey()
	if err != nil {
		return Result{}, err
	}
	csr, err := pki.NewDeviceCSR(key, "gw-x")
	if err != nil {
		return Result{}, err
	}
	c := s.Client(nil, true)
	defer c.CloseIdleConnections()
	return flood(ctx, workers, max, func(i int64) (int, []byte, error) {
		b := make([]byte, 32)
		rand.Read(b)
		body, _ := json.Marshal(map[string]any{"token": "rmp_" + hex.EncodeToString(b), "device_id": fmt.Sprintf("evil-%d", i), "csr": csr})
		return s.Call(c, "POST", "/api/v1/enroll", "", body)
	}), nil
}

// HostileHandshakes opens new TLS connections presenting a client
// certificate named as issued by the device CA with n intermediates of
// the device CA's name carrying 8192-bit RSA keys.
func (s *Server) HostileHandshakes(ctx context.Context, workers int, max int64, n int) (Result, error) {
	cert, err := pkitest.HostileChain(s.DeviceCA, n, 8192, "gw-evil")
	if err != nil {
		return Result{}, err
	}
	return s.Handshakes(ctx, workers, max, cert), nil
}

// Handshakes opens new TLS connections presenting cert (nil for none)
// and sends one request on each: /readyz.
func (s *Server) Handshakes(ctx context.Context, workers int, max int64, cert *tls.Certificate) Result {
	return flood(ctx, workers, max, func(int64) (int, []byte, error) {
		c := s.Client(cert, false)
		defer c.CloseIdleConnections()
		return s.Call(c, "GET", "/readyz", "", nil)
	})
}

// Reports floods reports from the device cert, with counters from start
// on, each with a unique reason of reasonBytes bytes; status alternates
// between the statuses given, so every accepted report changes state.
func (s *Server) Reports(ctx context.Context, workers int, limit int64, cert *tls.Certificate, start int64, reasonBytes int, statuses ...string) Result {
	c := s.Client(cert, true)
	defer c.CloseIdleConnections()
	return flood(ctx, workers, limit, func(i int64) (int, []byte, error) {
		reason := fmt.Sprintf("%d-%s", i, strings.Repeat("r", max(0, reasonBytes-20)))
		st := statuses[int(i)%len(statuses)]
		body, _ := json.Marshal(map[string]any{"counter": start + i, "status": st, "reason": reason})
		return s.Call(c, "POST", "/api/v1/device/report", "", body)
	})
}

// Replays floods reports from the device cert that all carry counter 1.
func (s *Server) Replays(ctx context.Context, workers int, max int64, cert *tls.Certificate) Result {
	c := s.Client(cert, true)
	defer c.CloseIdleConnections()
	body := []byte(`{"counter":1,"status":"downloading"}`)
	return flood(ctx, workers, max, func(int64) (int, []byte, error) {
		return s.Call(c, "POST", "/api/v1/device/report", "", body)
	})
}

// AuditPages reads full audit pages with the admin token.
func (s *Server) AuditPages(ctx context.Context, workers int, max int64) Result {
	c := s.Client(nil, true)
	defer c.CloseIdleConnections()
	return flood(ctx, workers, max, func(int64) (int, []byte, error) {
		code, b, err := s.Call(c, "GET", "/api/v1/audit?after=0&limit=10000", s.Admin, nil)
		if code == 200 {
			b = nil // not an error body
		}
		return code, b, err
	})
}

// Uploads floods blob uploads of size bytes, each new, with the admin
// token.
func (s *Server) Uploads(ctx context.Context, workers int, max int64, size int) Result {
	c := s.Client(nil, true)
	defer c.CloseIdleConnections()
	return flood(ctx, workers, max, func(int64) (int, []byte, error) {
		b := make([]byte, size)
		rand.Read(b)
		sum := sha256.Sum256(b)
		return s.Call(c, "PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", hex.EncodeToString(sum[:]), size), s.Admin, b)
	})
}

// Dial opens a TLS connection to the server presenting cert (nil for
// none).
func (s *Server) Dial(cert *tls.Certificate) (*tls.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", s.Addr, pki.ClientTLSConfig(s.Pool, cert))
}
