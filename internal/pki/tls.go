package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"time"
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
// ClientAuth is VerifyClientCertIfGiven so that the enrollment endpoint
// (the device has no certificate yet) and operator endpoints (tokens) share
// the listener; a client certificate that is presented must be valid, and
// device handlers require one with DeviceFromRequest.
//
// A presented certificate is checked in VerifyConnection: it must chain to
// deviceCA for client authentication, carry a device id, and pass revoked.
// A failure aborts the handshake, so a revoked device never reaches a
// handler. VerifyConnection rather than VerifyPeerCertificate because the
// latter is not called on resumed sessions: a device that kept a session
// ticket from before its revocation would otherwise skip the check.
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
		ClientAuth:   tls.VerifyClientCertIfGiven,
		// ClientCAs makes crypto/tls verify a full handshake's client
		// chain and tells clients which CA to present a certificate from.
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
			return nil
		},
	}, nil
}

// verifyDevice verifies a presented chain against the device CA for client
// authentication and returns the device id and leaf serial. crypto/tls has
// already done the chain check on a full handshake; doing it again here
// costs one signature check and makes resumed sessions go through exactly
// the same checks, at the current time, whatever crypto/tls restores from
// the ticket.
func verifyDevice(certs []*x509.Certificate, roots *x509.CertPool, now time.Time) (string, *big.Int, error) {
	leaf := certs[0]
	if err := verifyChain(certs, roots, now, x509.ExtKeyUsageClientAuth); err != nil {
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

// DeviceFromRequest returns the device id of the client certificate the
// request's connection was authenticated with. ok is false for a request
// without a verified client certificate (plain HTTP, enrollment, operator
// clients); device endpoints answer 401 then. It reads only verified
// chains, never bare PeerCertificates, so it cannot be fooled by a
// configuration that stops verifying.
func DeviceFromRequest(r *http.Request) (deviceID string, ok bool) {
	if r == nil || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", false
	}
	id, err := DeviceIDFromCert(r.TLS.VerifiedChains[0][0])
	if err != nil {
		return "", false
	}
	return id, true
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
