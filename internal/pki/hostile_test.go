package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/pki/pkitest"
	"github.com/rampartfw/rampart/internal/race"
)

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// handshake runs one TLS handshake between cfg (the server) and a client
// presenting cert over an in-memory connection, and returns the server's
// error and the CPU time both sides used.
func handshake(t *testing.T, cfg *tls.Config, pool *x509.CertPool, cert *tls.Certificate) (time.Duration, error) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	srv := tls.Server(s, cfg)
	cl := tls.Client(c, &tls.Config{ServerName: "localhost", RootCAs: pool, MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		}})
	start := cpuTime(t)
	done := make(chan error, 1)
	go func() {
		err := cl.Handshake()
		if err == nil {
			// TLS 1.3 clients learn of a refused certificate on the
			// first read.
			cl.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = cl.Read(make([]byte, 1))
		}
		done <- err
	}()
	srv.SetDeadline(time.Now().Add(60 * time.Second))
	err := srv.Handshake()
	s.Close()
	<-done
	return cpuTime(t) - start, err
}

func hostileFixture(t *testing.T) (*pki.CA, *tls.Config, *x509.CertPool) {
	t.Helper()
	serverCA, err := pki.NewCA("rampart server ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	deviceCA, err := pki.NewCA("rampart device ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := serverCA.IssueServer([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pki.ServerTLSConfig(certPEM, keyPEM, deviceCA.Cert, func(*big.Int, string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(serverCA.Cert)
	return deviceCA, cfg, pool
}

// TestHostileClientChainCostsOneSignatureCheck: a client certificate named
// as issued by the device CA, sent with 100 intermediates of the device
// CA's name carrying 8192-bit RSA keys, made crypto/tls's own verifier try
// each of them (a quarter of a CPU-second per handshake). The server
// verifies the leaf alone against the device CA, and refuses a chain of
// more than 4 certificates before looking at it: the hostile handshake
// costs about what an anonymous one does.
func TestHostileClientChainCostsOneSignatureCheck(t *testing.T) {
	deviceCA, cfg, pool := hostileFixture(t)
	const n = 100
	hostile, err := pkitest.HostileChain(deviceCA.Cert, n, 8192, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	few, err := pkitest.HostileChain(deviceCA.Cert, 3, 8192, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, c := range hostile.Certificate {
		size += len(c)
	}

	// Best of a few, so that a scheduler's hiccup does not decide.
	best := func(cert *tls.Certificate) (time.Duration, error) {
		var lastErr error
		low := time.Hour
		for range 5 {
			// Collect first: the process's CPU time counts the
			// garbage collector's workers, and a cycle that the
			// previous 225 KiB handshake owed would land in this one.
			runtime.GC()
			d, err := handshake(t, cfg, pool, cert)
			lastErr, low = err, min(low, d)
		}
		return low, lastErr
	}
	if _, err := handshake(t, cfg, pool, nil); err != nil {
		t.Fatalf("anonymous handshake: %v", err)
	}
	anonymous, _ := best(nil)
	many, err := best(hostile)
	if !errors.Is(err, pki.ErrClientChain) {
		t.Fatalf("%d intermediates: %v, want pki.ErrClientChain", n, err)
	}
	three, err := best(few)
	var ua x509.UnknownAuthorityError
	if !errors.Is(err, pki.ErrUnknownCA) || !errors.As(err, &ua) {
		t.Fatalf("3 intermediates: %v, want pki.ErrUnknownCA (the leaf alone does not verify)", err)
	}

	// The same chain against crypto/tls's own verifier, once, to show
	// what the attack costs there.
	old := cfg.Clone()
	old.ClientAuth, old.VerifyConnection = tls.VerifyClientCertIfGiven, nil
	oldCost, oldErr := handshake(t, old, pool, hostile)
	t.Logf("%d intermediates (%d KiB): %s CPU per handshake; 3: %s; anonymous handshake %s; crypto/tls's chain builder: %s (%v)",
		n, size>>10, many, three, anonymous, oldCost, oldErr)
	if race.Enabled {
		return
	}
	// Both ends of the handshake are in this process, and most of the
	// hostile handshake's cost is moving and parsing 225 KiB, which the
	// client pays too: the server's own cost is asserted against the
	// real binary (cmd/rampart-server).
	for _, c := range []struct {
		name string
		d    time.Duration
	}{{"100 intermediates", many}, {"3 intermediates", three}} {
		if c.d > 10*anonymous {
			t.Errorf("a handshake with %s cost %s of CPU, more than 10 × an anonymous handshake's %s", c.name, c.d, anonymous)
		}
	}
}

// TestDeviceLeafMustBeADeviceKey: a leaf with an RSA key is refused
// before its signature is checked.
func TestDeviceLeafMustBeADeviceKey(t *testing.T) {
	deviceCA, cfg, pool := hostileFixture(t)
	cert, err := pkitest.HostileChain(deviceCA.Cert, 0, 2048, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	// The leaf's own key is P-256: it is refused as not issued by the
	// device CA.
	if _, err := handshake(t, cfg, pool, cert); !errors.Is(err, pki.ErrUnknownCA) {
		t.Fatalf("forged leaf: %v, want pki.ErrUnknownCA", err)
	}
}

// TestHugeRSACSRRefusedBeforeItsSignature: a CSR carrying a 60,000-bit RSA
// key with a wrong signature is refused for its key type, which costs
// nothing, not after checking its signature, which costs 0.1 s.
func TestHugeRSACSRRefusedBeforeItsSignature(t *testing.T) {
	csrDER, err := pkitest.HugeRSACSR(60000, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	start := cpuTime(t)
	const n = 20
	for range n {
		_, err = pki.ParseDeviceCSR(csrDER)
	}
	per := (cpuTime(t) - start) / n
	if !errors.Is(err, pki.ErrBadCSR) || !errors.Is(err, pki.ErrUnsupportedKey) {
		t.Fatalf("%v, want ErrBadCSR and ErrUnsupportedKey", err)
	}
	csr, perr := x509.ParseCertificateRequest(csrDER)
	if perr != nil {
		t.Fatal(perr)
	}
	start = cpuTime(t)
	serr := csr.CheckSignature()
	verify := cpuTime(t) - start
	t.Logf("%d-byte CSR refused in %s of CPU (%v); checking its signature would cost %s (%v)", len(csrDER), per, err, verify, serr)
	if !race.Enabled && per > 2*time.Millisecond {
		t.Errorf("refusing the CSR cost %s of CPU, want under 2 ms", per)
	}
	ca, err := pki.NewCA("device ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.IssueDevice(csrDER, "gw-1", time.Hour); !errors.Is(err, pki.ErrUnsupportedKey) {
		t.Fatalf("IssueDevice: %v", err)
	}
	key, _ := pki.GenerateDeviceKey()
	if err := pki.CheckCSRKey(csrDER, key.Public()); !errors.Is(err, pki.ErrKeyMismatch) {
		t.Fatalf("CheckCSRKey: %v, want ErrKeyMismatch before any signature check", err)
	}
}

// TestManufacturerChainKeysBounded: intermediates with keys over 4096 bits
// are refused before the chain is built.
func TestManufacturerChainKeysBounded(t *testing.T) {
	mca, err := pki.NewCA("acme factory ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(mca.Cert)
	chain, err := pkitest.HostileChain(mca.Cert, 3, 8192, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = pki.VerifyManufacturerChain(chain.Certificate, pool, time.Now())
	if !errors.Is(err, pki.ErrBadCertificate) || !errors.Is(err, pki.ErrUnsupportedKey) {
		t.Fatalf("%v, want ErrBadCertificate and ErrUnsupportedKey", err)
	}
	t.Logf("refused in %s: %v", time.Since(start), err)
	long, err := pkitest.HostileChain(mca.Cert, 10, 2048, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.VerifyManufacturerChain(long.Certificate, pool, time.Now()); !errors.Is(err, pki.ErrBadCertificate) {
		t.Fatalf("11 certificates: %v", err)
	}
}
