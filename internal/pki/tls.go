package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"runtime"
	"sync"
	"time"
	"weak"
)

// RevocationFunc decides whether a device certificate may still be used.
// It returns nil to accept, or an error (ErrRevoked, or a store error) to
// refuse. It is called during every TLS handshake that presents a client
// certificate, so it must be fast (an indexed lookup or an in-memory set).
type RevocationFunc func(serial *big.Int, deviceID string) error

// ServerTLSConfig returns the TLS configuration of the server's listener.
//
// TLS 1.3 only: every peer is ours, so there is no old client to support,
// and 1.3 encrypts the client certificate (the device id is not visible on
// the wire).
//
// A client certificate is requested, not required, so that the enrollment
// endpoint (the device has no certificate yet) and operator endpoints
// (tokens) share the listener; device handlers require one with
// DeviceFromRequest.
//
// crypto/tls is not asked to verify it (ClientAuth is RequestClientCert,
// not VerifyClientCertIfGiven): its verifier builds chains through every
// intermediate the client sends, and a client that sends a hundred
// intermediates named like the device CA, with 8192-bit RSA keys, made
// one handshake cost a quarter of a CPU-second. Devices present a leaf
// issued directly by the device CA, so VerifyConnection verifies exactly
// that (verifyDevice): the leaf alone, against deviceCA, with no
// intermediate taken from the client; a client that sends more than
// maxClientCerts certificates, or a leaf larger than maxCertDER, is
// refused before any signature is checked. crypto/tls has bounded what
// it parsed (a certificate message of at most 256 KiB, RSA keys of at
// most 8192 bits).
//
// The leaf must carry a device id and pass revoked. A failure aborts the
// handshake, so a revoked device never reaches a handler.
// VerifyConnection rather than VerifyPeerCertificate because the latter is
// not called on resumed sessions: a device that kept a session ticket
// from before its revocation would otherwise skip the check. In TLS 1.3
// it runs before the client's CertificateVerify is checked, so a refused
// leaf costs no signature check with its key either.
//
// It returns an error for unusable arguments, including a nil revoked:
// omitting revocation must be a visible decision, not a default.
func ServerTLSConfig(certPEM, keyPEM []byte, deviceCA *x509.Certificate, revoked RevocationFunc) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("server tls config: %w", err)
	}
	if deviceCA == nil {
		return nil, errors.New("server tls config: no device ca")
	}
	if revoked == nil {
		return nil, errors.New("server tls config: no revocation check")
	}
	pool := x509.NewCertPool()
	pool.AddCert(deviceCA)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		// With RequestClientCert, ClientCAs only tells clients which CA
		// to present a certificate from; it verifies nothing.
		ClientCAs: pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // enrollment or operator request
			}
			id, serial, err := verifyDevice(cs.PeerCertificates, pool, time.Now())
			if err != nil {
				return err
			}
			if err := revoked(serial, id); err != nil {
				return fmt.Errorf("device %s certificate %s: %w", id, serial.Text(16), err)
			}
			markVerified(cs.PeerCertificates[0], id)
			return nil
		},
	}, nil
}

// maxClientCerts bounds the certificates a client may present. A device
// sends its leaf alone; the rest is room for a client that appends its
// issuer, which is ignored. (The leaf's size is bounded by maxCertDER, as
// in manufacturer chains: a device certificate is under 1 KiB.)
const maxClientCerts = 4

// ErrClientChain: a client presented more certificates than a device
// does, or a certificate larger than any device certificate.
var ErrClientChain = errors.New("client certificate chain too long or too large")

// verifyDevice verifies a presented leaf against the device CA for client
// authentication and returns the device id and leaf serial. Only certs[0]
// is used: intermediates sent by the client are ignored, so chain
// building costs one signature check whatever the client sends. Doing it
// in VerifyConnection makes resumed sessions go through exactly the same
// checks, at the current time, whatever crypto/tls restores from the
// ticket. The key type and size of the leaf are checked before its
// signature, so a leaf that could never have been issued costs nothing.
func verifyDevice(certs []*x509.Certificate, roots *x509.CertPool, now time.Time) (string, *big.Int, error) {
	if len(certs) > maxClientCerts {
		return "", nil, fmt.Errorf("client certificate: %w: %d certificates, a device presents its leaf (at most %d)", ErrClientChain, len(certs), maxClientCerts)
	}
	leaf := certs[0]
	if len(leaf.Raw) > maxCertDER {
		return "", nil, fmt.Errorf("client certificate: %w: %d bytes, limit %d", ErrClientChain, len(leaf.Raw), maxCertDER)
	}
	if err := checkDeviceKey(leaf.PublicKey); err != nil {
		return "", nil, fmt.Errorf("client certificate: %w", err)
	}
	if err := verifyChain(certs[:1], roots, now, x509.ExtKeyUsageClientAuth); err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return "", nil, fmt.Errorf("client certificate: %w: %w", ErrUnknownCA, err)
		}
		return "", nil, fmt.Errorf("client certificate: %w", err)
	}
	id, err := DeviceIDFromCert(leaf)
	if err != nil {
		return "", nil, fmt.Errorf("client certificate: %w", err)
	}
	return id, leaf.SerialNumber, nil
}

// verifyChain verifies certs[0] against roots at now for usage, with
// certs[1:] as the intermediates it may use.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, now time.Time, usage x509.ExtKeyUsage) error {
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	return err
}

// verifiedLeaves holds the client certificates that a ServerTLSConfig's
// VerifyConnection accepted, by weak pointer, with their device ids.
// crypto/tls keeps no verified chain when it does not verify, and a
// connection's ConnectionState hands every request the same parsed leaf,
// so this is how DeviceFromRequest knows that a request's certificate was
// verified by this package: a certificate that did not pass
// verifyDevice is never in it. An entry goes when its connection's
// certificate is garbage collected.
var verifiedLeaves sync.Map // weak.Pointer[x509.Certificate] -> string

func markVerified(leaf *x509.Certificate, id string) {
	wp := weak.Make(leaf)
	if _, loaded := verifiedLeaves.LoadOrStore(wp, id); !loaded {
		runtime.AddCleanup(leaf, func(wp weak.Pointer[x509.Certificate]) { verifiedLeaves.Delete(wp) }, wp)
	}
}

// DeviceFromRequest returns the device id of the client certificate the
// request's connection was authenticated with. ok is false for a request
// without a client certificate that a ServerTLSConfig verified (plain
// HTTP, enrollment, operator clients); device endpoints answer 401 then.
// It reads only leaves that verifyDevice accepted, never bare
// PeerCertificates, so it cannot be fooled by a configuration that stops
// verifying.
func DeviceFromRequest(r *http.Request) (deviceID string, ok bool) {
	if r == nil || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", false
	}
	v, ok := verifiedLeaves.Load(weak.Make(r.TLS.PeerCertificates[0]))
	if !ok {
		return "", false
	}
	return v.(string), true
}

// ClientTLSConfig returns the TLS configuration of the agent and the CLI.
//
// Server certificates are verified against serverCA only, never against
// the system roots: any public CA could otherwise impersonate the update
// server. A nil serverCA yields an empty pool, which refuses every server,
// rather than crypto/tls's default of the system roots.
//
// clientCert is the device certificate, or nil (enrollment, operators). It
// is sent whenever the server asks, even if its issuer is not among the
// CAs the server lists: a mismatch then fails loudly at the server instead
// of silently turning into an anonymous connection.
func ClientTLSConfig(serverCA *x509.CertPool, clientCert *tls.Certificate) *tls.Config {
	if serverCA == nil {
		serverCA = x509.NewCertPool()
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    serverCA,
	}
	if clientCert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return clientCert, nil
		}
	}
	return cfg
}
