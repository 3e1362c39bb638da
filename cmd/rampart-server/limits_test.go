package main

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/syncbuf"
	"github.com/rampartfw/rampart/internal/testbin"
)

// buildServer returns the path of this command built without -race (the
// tests time and kill it as a process), built once for the run
// (internal/testbin).
func buildServer(t *testing.T) string {
	t.Helper()
	bin, err := testbin.Program("rampart-server")
	if err != nil {
		t.Fatalf("building rampart-server: %v", err)
	}
	return bin
}

// initBinary runs "rampart-server init" and returns the admin token.
func initBinary(t *testing.T, bin, data string) string {
	t.Helper()
	out, err := exec.Command(bin, "init", "--data", data).Output()
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	return regexp.MustCompile(`rmp_[A-Za-z0-9_-]+`).FindString(string(out))
}

// server is a rampart-server process.
type serverProcess struct {
	cmd  *exec.Cmd
	addr string
	logs *syncbuf.Buffer
}

// startBinary starts the server (argv[0] may be a wrapper such as
// prlimit) and waits until it serves; it is stopped when the test ends.
func startBinary(t *testing.T, argv ...string) *serverProcess {
	t.Helper()
	p := &serverProcess{cmd: exec.Command(argv[0], argv[1:]...), logs: &syncbuf.Buffer{}}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGTERM); p.cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.logs.Write(append(sc.Bytes(), '\n'))
			var m struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg == "serving" {
				found <- m.Addr
			}
		}
	}()
	select {
	case p.addr = <-found:
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not start: %s", p.logs.String())
	}
	return p
}

// directorRoot makes and pushes the offline director root naming the
// server's director keys, so that devices can check in.
func pushDirectorRoot(t *testing.T, data, addr, admin string, hc *http.Client) {
	t.Helper()
	pub := func(name string) []crypto.PublicKey {
		p, err := keys.ReadPublicFile(filepath.Join(data, "online", name))
		if err != nil {
			t.Fatal(err)
		}
		return []crypto.PublicKey{p}
	}
	rk, _ := keys.Generate(keys.Ed25519)
	dir := filepath.Join(t.TempDir(), "director")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{rk.Public()}, RootThreshold: 1,
		TargetsKeys: pub("director-targets.pub"), TargetsThreshold: 1,
		SnapshotKeys: pub("director-snapshot.pub"), TimestampKeys: pub("director-timestamp.pub")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Sign("root", keys.InMemory(rk)); err != nil {
		t.Fatal(err)
	}
	root, _ := os.ReadFile(filepath.Join(dir, "staged", "root.json"))
	body, _ := json.Marshal(map[string]any{"roots": [][]byte{root}})
	if code, b := post(t, hc, "https://"+addr+"/api/v1/director/root", admin, body); code != 200 {
		t.Fatalf("director root: %d %s", code, b)
	}
}

func post(t *testing.T, hc *http.Client, url, token string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// enrollDevice enrolls a device and returns its client certificate.
func enrollDevice(t *testing.T, hc *http.Client, addr, admin, id string) *tls.Certificate {
	t.Helper()
	code, b := post(t, hc, "https://"+addr+"/api/v1/devices/tokens", admin, []byte(`{"hardware":"acme-gw-rev2"}`))
	var tok struct{ Token string }
	if json.Unmarshal(b, &tok); code != 201 {
		t.Fatalf("enrollment token: %d %s", code, b)
	}
	key, _ := pki.GenerateDeviceKey()
	csr, _ := pki.NewDeviceCSR(key, id)
	body, _ := json.Marshal(map[string]any{"token": tok.Token, "device_id": id, "csr": csr})
	code, b = post(t, hc, "https://"+addr+"/api/v1/enroll", "", body)
	var out struct{ Certificate string }
	if json.Unmarshal(b, &out); code != 201 {
		t.Fatalf("enroll: %d %s", code, b)
	}
	keyPEM, _ := pki.MarshalKeyPEM(key)
	cert, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

// TestStalledConnectionsDoNotStarveTheServer runs the real server with a
// limit of 1,024 open files and opens 1,100 TLS connections that each
// send an enrollment request's headers declaring a 60,000-byte body, one
// byte of it, and then nothing. While they are open, /readyz and an
// enrolled device's check-in (its director timestamp, on a new connection
// each time) must keep answering within a second, and the server must
// close every stalled connection within 60 s (its body deadline is 10 s
// here).
func TestStalledConnectionsDoNotStarveTheServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server with 1,100 connections")
	}
	const stalled, fdLimit = 1100, 1024
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("needs prlimit (util-linux) to give the server a limit of open files")
	}
	// This process holds the other end of every connection.
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if want := uint64(stalled + 500); rl.Cur < want {
		rl.Cur = min(rl.Max, want)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < want {
			t.Skipf("cannot raise this process's open-file limit to %d (hard limit %d): %v", want, rl.Max, err)
		}
	}

	bin := buildServer(t)
	data := filepath.Join(t.TempDir(), "srv")
	admin := initBinary(t, bin, data)
	cfg := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfg, []byte(`{"body_timeout": "10s"}`), 0o644)
	srv := startBinary(t, prlimit, fmt.Sprintf("--nofile=%d:%d", fdLimit, fdLimit), bin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--config", cfg)
	if !strings.Contains(srv.logs.String(), `"msg":"limits","body_timeout":"10s","response_timeout":"2m0s","min_transfer_rate":1024,"max_unauthenticated":256`) {
		t.Fatalf("limits not as configured:\n%s", srv.logs.String())
	}
	caPEM, _ := os.ReadFile(filepath.Join(data, "ca.pem"))
	pool, _ := pki.CertPoolFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, nil)}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	pushDirectorRoot(t, data, srv.addr, admin, hc)
	cert := enrollDevice(t, hc, srv.addr, admin, "gw-1")

	// One request on a new connection, as a device checking in or a
	// probe would make it; its latency or an error.
	probe := func(path string, cert *tls.Certificate) (time.Duration, error) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, cert), DisableKeepAlives: true}, Timeout: 5 * time.Second}
		start := time.Now()
		resp, err := c.Get("https://" + srv.addr + path)
		if err != nil {
			return time.Since(start), err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return time.Since(start), fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
		}
		return time.Since(start), nil
	}
	for _, p := range []struct {
		path string
		cert *tls.Certificate
	}{{"/readyz", nil}, {"/director/timestamp.json", cert}} {
		d, err := probe(p.path, p.cert)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("before: %s in %s", p.path, d.Round(time.Microsecond))
	}

	// The flood.
	type result struct {
		opened, closed time.Time
		status         string
		err            error
	}
	results := make([]result, stalled)
	var wg sync.WaitGroup
	conns := make(chan int)
	var mu sync.Mutex
	var open []*tls.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range open {
			c.Close()
		}
	})
	floodStart := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range conns {
				d := &tlsDialer{pool: pool}
				c, err := d.dial(srv.addr)
				if err != nil {
					results[i] = result{err: err}
					continue
				}
				mu.Lock()
				open = append(open, c)
				mu.Unlock()
				results[i].opened = time.Now()
				fmt.Fprintf(c, "POST /api/v1/enroll HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{", srv.addr)
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.SetReadDeadline(time.Now().Add(90 * time.Second))
					br := bufio.NewReader(c)
					line, _ := br.ReadString('\n')
					_, err := io.Copy(io.Discard, br)
					results[i].closed, results[i].status, results[i].err = time.Now(), strings.TrimSpace(line), err
				}()
			}
		}()
	}
	for i := range stalled {
		conns <- i
	}
	close(conns)
	floodSent := time.Since(floodStart)

	// Probe until every stalled connection is closed (at most 60 s).
	var readyz, checkin []time.Duration
	var probeErrs []string
	allClosed := make(chan struct{})
	go func() { wg.Wait(); close(allClosed) }()
	var inFlight int
	deadline := time.After(60 * time.Second)
loop:
	for {
		for _, p := range []struct {
			path string
			cert *tls.Certificate
			into *[]time.Duration
		}{{"/readyz", nil, &readyz}, {"/director/timestamp.json", cert, &checkin}} {
			d, err := probe(p.path, p.cert)
			*p.into = append(*p.into, d)
			if err != nil {
				probeErrs = append(probeErrs, err.Error())
			}
		}
		if m := regexp.MustCompile(`rampart_http_unauthenticated_in_flight (\d+)`).FindStringSubmatch(metricsText(hc, srv.addr, admin)); m != nil {
			var n int
			fmt.Sscan(m[1], &n)
			inFlight = max(inFlight, n)
		}
		select {
		case <-allClosed:
			break loop
		case <-deadline:
			t.Error("the stalled connections were not all closed within 60 s")
			break loop
		case <-time.After(200 * time.Millisecond):
		}
	}

	statuses := map[string]int{}
	var longest time.Duration
	failedToOpen := 0
	for _, r := range results {
		if r.opened.IsZero() {
			failedToOpen++
			continue
		}
		statuses[r.status]++
		if !r.closed.IsZero() {
			longest = max(longest, r.closed.Sub(r.opened))
		}
	}
	m := metricsText(hc, srv.addr, admin)
	t.Logf("%d stalled connections opened in %s (%d failed to open), server open-file limit %d", stalled-failedToOpen, floodSent.Round(time.Millisecond), failedToOpen, fdLimit)
	t.Logf("held in handlers at once (peak sampled): %d; answers: %v", inFlight, statuses)
	t.Logf("longest a stalled connection stayed open: %s", longest.Round(time.Millisecond))
	t.Logf("/readyz under load: %s", summary(readyz))
	t.Logf("device check-in under load: %s", summary(checkin))
	t.Logf("%s; %s", grepMetric(m, "rampart_http_busy_refusals_total"), grepMetric(m, "rampart_http_body_timeouts_total"))
	if failedToOpen > 0 {
		for _, r := range results {
			if r.opened.IsZero() {
				t.Errorf("%d stalled connections could not be opened; first: %v", failedToOpen, r.err)
				break
			}
		}
	}
	if len(probeErrs) > 0 {
		t.Errorf("%d probes failed under load, first: %s", len(probeErrs), probeErrs[0])
	}
	for _, d := range append(append([]time.Duration{}, readyz...), checkin...) {
		if d >= time.Second {
			t.Errorf("a probe took %s under load; readyz %s; check-in %s", d, summary(readyz), summary(checkin))
			break
		}
	}
	if longest > 60*time.Second {
		t.Errorf("a stalled connection stayed open %s", longest)
	}
}

type tlsDialer struct{ pool *x509.CertPool }

func (d *tlsDialer) dial(addr string) (*tls.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", addr, pki.ClientTLSConfig(d.pool, nil))
}

func metricsText(hc *http.Client, addr, token string) string {
	req, _ := http.NewRequest("GET", "https://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepMetric(text, name string) string {
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return line
		}
	}
	return name + " missing"
}

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("%d probes, median %s, p90 %s, max %s", len(s), s[len(s)/2].Round(time.Microsecond), s[len(s)*9/10].Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
}
