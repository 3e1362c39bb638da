package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/syncbuf"
)

// fixture is a running server with its two CAs, a handler that reports
// the device it sees, and a revocation list.
type fixture struct {
	serverCA, deviceCA *CA
	srv                *httptest.Server
	calls              atomic.Int32 // handler invocations
	resumed            atomic.Int32 // handler invocations on resumed sessions
	log                *syncBuffer  // the server's error log

	mu          sync.Mutex
	revokedIDs  map[string]bool
	checked     []string // device ids the revocation callback saw
	lastSerial  *big.Int
	revokeCalls int
}

// syncBuffer is the server's error log, watched while it is written.
type syncBuffer struct{ syncbuf.Buffer }

// waitFor polls the server log for substr: the server logs a failed
// handshake after sending its alert, so the client may see the error
// first.
func (s *syncBuffer) waitFor(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(s.String(), substr) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("server log lacks %q; log:\n%s", substr, s.String())
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWithServerCA(t, newTestCA(t, "rampart server ca"))
}

func newFixtureWithServerCA(t *testing.T, serverCA *CA) *fixture {
	t.Helper()
	f := &fixture{
		serverCA:   serverCA,
		deviceCA:   newTestCA(t, "rampart device ca"),
		log:        &syncBuffer{},
		revokedIDs: map[string]bool{},
	}
	certPEM, keyPEM, err := f.serverCA.IssueServer([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerTLSConfig(certPEM, keyPEM, f.deviceCA.Cert, f.revoked)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		if r.TLS != nil && r.TLS.DidResume {
			f.resumed.Add(1)
		}
		if id, ok := DeviceFromRequest(r); ok {
			fmt.Fprintf(w, "device %s", id)
			return
		}
		fmt.Fprint(w, "anonymous")
	}))
	f.srv.TLS = cfg
	f.srv.Config.ErrorLog = log.New(f.log, "", 0)
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) revoked(serial *big.Int, deviceID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revokeCalls++
	f.checked = append(f.checked, deviceID)
	f.lastSerial = serial
	if f.revokedIDs[deviceID] {
		return ErrRevoked
	}
	return nil
}

func (f *fixture) revocationChecks() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.revokeCalls
}

func (f *fixture) revoke(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revokedIDs[id] = true
}

func (f *fixture) serverPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(f.serverCA.Cert)
	return pool
}

// enroll runs the agent's side of enrollment against ca: a local key, a
// CSR, and the certificate the CA issues for it.
func enroll(t *testing.T, ca *CA, deviceID string) (*tls.Certificate, *big.Int) {
	t.Helper()
	key, err := GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewDeviceCSR(key, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	der, serial, err := ca.IssueDevice(csr, deviceID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tlsCert(t, der, key), serial
}

func tlsCert(t *testing.T, der []byte, key crypto.Signer) *tls.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// client returns an HTTP client using cfg; each request gets a fresh
// connection, so each one is a handshake.
func client(t *testing.T, cfg *tls.Config) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(c *http.Client, u string) (string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// assertRefused checks that the server refuses a device presenting cfg
// during the handshake, with an alert, and that no handler runs. It
// returns the state of the refused handshake.
//
// In TLS 1.3 the client's handshake is over before the server has
// checked its certificate, so the refusal reaches the client only after
// that. An HTTP client that writes its request in the meantime may see
// the server's reset ("broken pipe", "connection reset") instead of the
// alert, depending on timing. So the alert itself is asserted on a bare
// connection that only reads; the HTTP request shows the handler is not
// reached even by a client that goes ahead and sends one.
func (f *fixture) assertRefused(t *testing.T, cfg *tls.Config) tls.ConnectionState {
	t.Helper()
	before := f.calls.Load()

	conn, err := tls.Dial("tcp", f.srv.Listener.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var state tls.ConnectionState
	if err = conn.Handshake(); err == nil {
		state = conn.ConnectionState()
		_, err = conn.Read(make([]byte, 1))
	}
	if err == nil || !strings.Contains(err.Error(), "remote error: tls:") {
		t.Errorf("client error %v is not a TLS alert from the server", err)
	}

	body, err := get(client(t, cfg), f.srv.URL)
	if err == nil {
		t.Fatalf("request succeeded: %q", body)
	}
	if !strings.Contains(err.Error(), "remote error: tls:") && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("request error %v is neither the server's alert nor its reset", err)
	}
	if n := f.calls.Load(); n != before {
		t.Errorf("handler ran %d times for a refused handshake", n-before)
	}
	return state
}

func TestEnrollmentFlow(t *testing.T) {
	f := newFixture(t)
	cert, serial := enroll(t, f.deviceCA, "gw-0001")
	body, err := get(client(t, ClientTLSConfig(f.serverPool(), cert)), f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if body != "device gw-0001" {
		t.Errorf("handler saw %q", body)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lastSerial == nil || f.lastSerial.Cmp(serial) != 0 {
		t.Errorf("revocation callback got serial %v, issued %v", f.lastSerial, serial)
	}
	if len(f.checked) != 1 || f.checked[0] != "gw-0001" {
		t.Errorf("revocation callback saw %v", f.checked)
	}
}

func TestNoClientCertificateIsAnonymous(t *testing.T) {
	f := newFixture(t)
	body, err := get(client(t, ClientTLSConfig(f.serverPool(), nil)), f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if body != "anonymous" {
		t.Errorf("handler saw %q, want no device", body)
	}
	if f.revocationChecks() != 0 {
		t.Error("revocation callback ran without a client certificate")
	}
	if id, ok := DeviceFromRequest(httptest.NewRequest("GET", "/", nil)); ok {
		t.Errorf("plain request has device %q", id)
	}
}

func TestForeignCAWithSameDeviceIDRefused(t *testing.T) {
	f := newFixture(t)
	attacker := newTestCA(t, "rampart device ca") // same name, different key
	cert, _ := enroll(t, attacker, "gw-0001")
	f.assertRefused(t, ClientTLSConfig(f.serverPool(), cert))
	f.log.waitFor(t, "unknown authority")
	if f.revocationChecks() != 0 {
		t.Error("revocation callback ran for an unverified certificate")
	}
}

func TestRevokedDeviceRefusedAtHandshake(t *testing.T) {
	f := newFixture(t)
	bad, _ := enroll(t, f.deviceCA, "gw-bad")
	good, _ := enroll(t, f.deviceCA, "gw-good")
	f.revoke("gw-bad")

	f.assertRefused(t, ClientTLSConfig(f.serverPool(), bad))
	f.log.waitFor(t, "device gw-bad certificate")
	f.log.waitFor(t, ErrRevoked.Error())

	body, err := get(client(t, ClientTLSConfig(f.serverPool(), good)), f.srv.URL)
	if err != nil || body != "device gw-good" {
		t.Errorf("other device: %q, %v", body, err)
	}
}

// TestRevokedDeviceRefusedOnResumption is why revocation sits in
// VerifyConnection: a device that resumes a session established before
// its revocation must still be refused.
func TestRevokedDeviceRefusedOnResumption(t *testing.T) {
	f := newFixture(t)
	cert, _ := enroll(t, f.deviceCA, "gw-1")
	cfg := ClientTLSConfig(f.serverPool(), cert)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	c := client(t, cfg)

	for i := 0; i < 2; i++ {
		if body, err := get(c, f.srv.URL); err != nil || body != "device gw-1" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
	}
	if f.resumed.Load() == 0 {
		t.Fatal("second connection did not resume; the test proves nothing")
	}
	if calls := f.revocationChecks(); calls != 2 {
		t.Errorf("revocation callback ran %d times for 2 handshakes (one resumed), want 2", calls)
	}

	f.revoke("gw-1")
	if state := f.assertRefused(t, cfg); !state.DidResume {
		t.Error("the refused connection did not resume; the test proves nothing")
	}
	f.log.waitFor(t, ErrRevoked.Error())
}

func TestServerNotFromPinnedCARefused(t *testing.T) {
	f := newFixture(t)
	// The client pins some other server CA.
	other := newTestCA(t, "rampart server ca")
	pool := x509.NewCertPool()
	pool.AddCert(other.Cert)
	_, err := get(client(t, ClientTLSConfig(pool, nil)), f.srv.URL)
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Errorf("error %v, want x509.UnknownAuthorityError", err)
	}
	if f.calls.Load() != 0 {
		t.Error("handler ran")
	}
	// A nil pool must mean "trust nothing", not "trust the system".
	if cfg := ClientTLSConfig(nil, nil); cfg.RootCAs == nil {
		t.Error("ClientTLSConfig(nil) leaves RootCAs nil (system roots)")
	}
	if _, err := get(client(t, ClientTLSConfig(nil, nil)), f.srv.URL); !errors.As(err, &ua) {
		t.Errorf("nil pool: error %v, want x509.UnknownAuthorityError", err)
	}
}

// systemRootCA is the CA TestNoFallbackToSystemRoots installs as the
// process's system roots. crypto/x509 loads the system roots once per
// process, so it must be the same CA on every run (go test -count=N).
var systemRootCA = sync.OnceValues(func() (*CA, error) { return NewCA("system root", 24*time.Hour) })

// TestNoFallbackToSystemRoots puts the server's CA into the system roots
// (SSL_CERT_FILE) and checks that a client pinned to another CA still
// refuses, while a default tls.Config, the control, accepts.
func TestNoFallbackToSystemRoots(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SSL_CERT_FILE selects system roots on Linux")
	}
	rootCA, err := systemRootCA()
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureWithServerCA(t, rootCA)
	caFile := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(caFile, CertPEM(rootCA.Cert.Raw), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", caFile)
	t.Setenv("SSL_CERT_DIR", t.TempDir())

	if _, err := get(client(t, &tls.Config{}), f.srv.URL); err != nil {
		t.Fatalf("control: a default config does not trust the system roots set up here "+
			"(were they loaded earlier in this process?): %v", err)
	}
	other := newTestCA(t, "pinned")
	pool := x509.NewCertPool()
	pool.AddCert(other.Cert)
	for name, cfg := range map[string]*tls.Config{"pinned other": ClientTLSConfig(pool, nil), "nil pool": ClientTLSConfig(nil, nil)} {
		var ua x509.UnknownAuthorityError
		if _, err := get(client(t, cfg), f.srv.URL); !errors.As(err, &ua) {
			t.Errorf("%s: error %v, want x509.UnknownAuthorityError", name, err)
		}
	}
}

func TestExpiredDeviceCertRefused(t *testing.T) {
	f := newFixture(t)
	key, _ := GenerateDeviceKey()
	der := craft(t, f.deviceCA, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "gw-old"},
		URIs:        []*url.URL{DeviceURI("gw-old")},
		NotBefore:   time.Now().Add(-48 * time.Hour),
		NotAfter:    time.Now().Add(-time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public())
	f.assertRefused(t, ClientTLSConfig(f.serverPool(), tlsCert(t, der, key)))
	f.log.waitFor(t, "expired")
}

func TestDeviceCAClientCertWithoutDeviceIDRefused(t *testing.T) {
	f := newFixture(t)
	key, _ := GenerateDeviceKey()
	der := craft(t, f.deviceCA, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "gw-1"}, // a CN is not an identity
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public())
	f.assertRefused(t, ClientTLSConfig(f.serverPool(), tlsCert(t, der, key)))
	f.log.waitFor(t, ErrNoDeviceID.Error())
}

func TestServerCertAsClientCertRefused(t *testing.T) {
	f := newFixture(t)
	// Issued by the device CA itself, so only the EKU is wrong.
	certPEM, keyPEM, err := f.deviceCA.IssueServer([]string{"gw-1.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	f.assertRefused(t, ClientTLSConfig(f.serverPool(), &pair))
	f.log.waitFor(t, "incompatible key usage")
}

func TestDeviceCertAsServerCertRefused(t *testing.T) {
	ca := newTestCA(t, "ca")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	key, _ := GenerateDeviceKey()

	// A certificate a device could hold: client auth only. It even names
	// 127.0.0.1, so the EKU is the only thing wrong with it as a serving
	// certificate.
	crafted := tlsCert(t, craft(t, ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "gw-1"},
		URIs:        []*url.URL{DeviceURI("gw-1")},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public()), key)
	issued, _ := enroll(t, ca, "gw-2")

	for name, cert := range map[string]*tls.Certificate{"client-auth with ip san": crafted, "issued device cert": issued} {
		t.Run(name, func(t *testing.T) {
			var called atomic.Bool
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) }))
			srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert}}
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.StartTLS()
			defer srv.Close()
			_, err := get(client(t, ClientTLSConfig(pool, nil)), srv.URL)
			if err == nil {
				t.Fatal("client accepted a device certificate as the server's")
			}
			var inv x509.CertificateInvalidError
			if name == "client-auth with ip san" && (!errors.As(err, &inv) || inv.Reason != x509.IncompatibleUsage) {
				t.Errorf("error %v, want x509 incompatible usage", err)
			}
			if called.Load() {
				t.Error("handler ran")
			}
		})
	}
}

func TestServerRefusesOldTLS(t *testing.T) {
	f := newFixture(t)
	cfg := ClientTLSConfig(f.serverPool(), nil)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if _, err := get(client(t, cfg), f.srv.URL); err == nil {
		t.Error("TLS 1.2 client accepted")
	}
}

func TestServerTLSConfigArguments(t *testing.T) {
	ca := newTestCA(t, "ca")
	certPEM, keyPEM, err := ca.IssueServer([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(*big.Int, string) error { return nil }
	if _, err := ServerTLSConfig(certPEM, keyPEM, ca.Cert, nil); err == nil {
		t.Error("nil revocation callback accepted")
	}
	if _, err := ServerTLSConfig(certPEM, keyPEM, nil, ok); err == nil {
		t.Error("nil device CA accepted")
	}
	_, otherKey, _ := ca.IssueServer([]string{"localhost"}, time.Hour)
	if _, err := ServerTLSConfig(certPEM, otherKey, ca.Cert, ok); err == nil {
		t.Error("mismatched serving key accepted")
	}
	cfg, err := ServerTLSConfig(certPEM, keyPEM, ca.Cert, ok)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ClientAuth != tls.RequestClientCert || cfg.VerifyConnection == nil {
		t.Errorf("config: min %x, client auth %v", cfg.MinVersion, cfg.ClientAuth)
	}
}
