// Package pki owns Rampart's X.509 material and the TLS configuration of the
// device channel:
//
//   - the two certificate authorities: the server CA, which signs the
//     server's TLS serving certificate and which devices and operators pin
//     (srv/ca.pem), and the device CA, which signs device client
//     certificates at enrollment;
//   - the device identity: a device id, its strict syntax, and how it is
//     carried in a certificate (a URI SAN, see DeviceURI);
//   - issuing: serving certificates from hosts, device certificates from a
//     CSR whose requested identity is ignored (the server decides who the
//     device is, from its enrollment token);
//   - the mutually authenticated TLS 1.3 configurations of the server
//     (ServerTLSConfig) and of the agent and CLI (ClientTLSConfig);
//   - manufacturer certificates: verifying a chain from a configured
//     manufacturer CA bundle that a device presents at enrollment instead
//     of a token, and what it says about the device (manufacturer.go).
//
// It does not own revocation state, enrollment tokens or the device
// registry: those live in the store, and the server passes a revocation
// callback to ServerTLSConfig so that a revoked device is refused during the
// TLS handshake itself.
//
// Only the standard library is used: crypto/x509 and crypto/tls already do
// chain building, name and EKU checks, and nothing here needs more.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/atomicfile"
)

// Errors returned by this package, wrapped with detail; test with errors.Is.
var (
	// ErrBadCSR: a certificate signing request is malformed, not signed by
	// the key it carries, or carries a key type we do not issue for.
	ErrBadCSR = errors.New("bad certificate signing request")
	// ErrBadDeviceID: a device id does not match the allowed syntax.
	ErrBadDeviceID = errors.New("bad device id")
	// ErrNoDeviceID: a certificate does not carry exactly one valid device
	// identity URI.
	ErrNoDeviceID = errors.New("certificate carries no device id")
	// ErrRevoked is what a revocation callback returns for a revoked device
	// or certificate.
	ErrRevoked = errors.New("revoked")
	// ErrUnknownCA: a certificate does not chain to the CA expected here.
	ErrUnknownCA = errors.New("certificate not issued by the expected ca")
	// ErrKeyMismatch: a certificate and a key do not belong together (a
	// CA certificate and its private key, or a manufacturer certificate
	// and the key that signed a CSR).
	ErrKeyMismatch = errors.New("certificate and private key do not match")
	// ErrNotCA: a certificate loaded as a CA is not a CA certificate.
	ErrNotCA = errors.New("not a ca certificate")
	// ErrBadPEM: PEM input is missing, of the wrong type or has trailing
	// data.
	ErrBadPEM = errors.New("bad pem")
	// ErrUnsupportedKey: a public key is of a type or size this package
	// does not accept where it was found (a device key that is not P-256
	// or Ed25519, a manufacturer chain key outside the bounds of
	// checkChainKey). It is wrapped together with ErrBadCSR or
	// ErrBadCertificate.
	ErrUnsupportedKey = errors.New("unsupported public key")
)

const (
	// clockSkew backdates NotBefore so that a device whose clock runs a
	// little behind the server's does not reject a certificate issued a
	// moment ago as "not yet valid".
	clockSkew = 5 * time.Minute
	// maxCSR bounds the CSR we parse; a real P-256 CSR is a few hundred
	// bytes, and enrollment is an unauthenticated-ish endpoint.
	maxCSR = 16 << 10
	// maxPEM bounds PEM files and inputs we parse.
	maxPEM = 256 << 10

	pemCert = "CERTIFICATE"
	pemKey  = "PRIVATE KEY" // PKCS#8
)

// CA is a certificate authority: its self-signed certificate and its key.
// Key is a crypto.Signer so that an HSM-backed key can be used in place of
// a key loaded from a file.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed CA with a fresh ECDSA P-256 key, valid for
// validity from now (backdated by a few minutes for clock skew).
//
// MaxPathLen is 0: the CA signs leaf certificates only, so a leaked leaf
// key, or a leaf wrongly marked as a CA, can never mint further
// certificates that chain to it.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("new ca: empty common name")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("new ca: validity %v is not positive", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new ca: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SignatureAlgorithm:    x509.ECDSAWithSHA256,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Save writes the CA certificate (PEM) to certPath and the key (PEM,
// PKCS#8) to keyPath with mode 0600. It never replaces an existing file
// (the error wraps fs.ErrExist): overwriting a CA key by accident would
// orphan every certificate it issued. Each file is written atomically.
func (ca *CA) Save(certPath, keyPath string) error {
	keyPEM, err := MarshalKeyPEM(ca.Key)
	if err != nil {
		return fmt.Errorf("save ca: %w", err)
	}
	// Check both before writing either, so a clash does not leave half a
	// CA behind.
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("save ca: %s: %w", p, fs.ErrExist)
		}
	}
	if err := atomicfile.CreateNew(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("save ca key: %w", err)
	}
	if err := atomicfile.CreateNew(certPath, CertPEM(ca.Cert.Raw), 0o644); err != nil {
		// The key file is ours (CreateNew just made it); without its
		// certificate it is useless, so do not leave it lying around.
		os.Remove(keyPath)
		return fmt.Errorf("save ca certificate: %w", err)
	}
	return nil
}

// LoadCA reads a CA saved by Save. It refuses a certificate that is not a
// CA allowed to sign certificates, and a key that is not the certificate's.
func LoadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := readLimited(certPath)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	keyPEM, err := readLimited(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca %s: %w", certPath, err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca %s: %w", keyPath, err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load ca %s: %w", certPath, ErrNotCA)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("load ca %s, %s: %w", certPath, keyPath, ErrKeyMismatch)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// IssueServer issues a TLS serving certificate for hosts (DNS names and IP
// addresses) with a fresh ECDSA P-256 key. It returns the certificate and
// the key as PEM (PKCS#8), ready for ServerTLSConfig.
func (ca *CA) IssueServer(hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("issue server certificate: no hosts")
	}
	tmpl := &x509.Certificate{
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("issue server certificate: %q is neither an ip address nor a dns name", h)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, strings.ToLower(h))
	}
	// The CN is for people reading the certificate; clients match SANs.
	tmpl.Subject = pkix.Name{CommonName: hosts[0]}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue server certificate: %w", err)
	}
	der, err := ca.issue(tmpl, key.Public(), validity)
	if err != nil {
		return nil, nil, fmt.Errorf("issue server certificate: %w", err)
	}
	keyPEM, err = MarshalKeyPEM(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue server certificate: %w", err)
	}
	return CertPEM(der), keyPEM, nil
}

// IssueDevice issues a client certificate for deviceID from a CSR: it is
// ParseDeviceCSR followed by IssueDeviceKey.
func (ca *CA) IssueDevice(csrDER []byte, deviceID string, validity time.Duration) (certDER []byte, serial *big.Int, err error) {
	if err := ValidateDeviceID(deviceID); err != nil {
		return nil, nil, fmt.Errorf("issue device certificate: %w", err)
	}
	csr, err := ParseDeviceCSR(csrDER)
	if err != nil {
		return nil, nil, fmt.Errorf("issue device certificate: %w", err)
	}
	return ca.IssueDeviceKey(csr.PublicKey, deviceID, validity)
}

// ParseDeviceCSR checks an enrollment CSR, cheapest check first: its size,
// its DER, the type and size of its key (ECDSA P-256 or Ed25519), and only
// then its signature. The order matters because the endpoint is open to
// anyone who holds a token: verifying the signature of a CSR that carries
// a 60,000-bit RSA key costs about 0.1 s of CPU, while refusing the key
// type costs nothing. Errors wrap ErrBadCSR, and ErrUnsupportedKey for a
// key of the wrong type or size.
//
// The CSR only proves possession of the device's key and supplies the
// public key; what it asks for (subject, SANs, extensions) is ignored by
// IssueDeviceKey.
func ParseDeviceCSR(csrDER []byte) (*x509.CertificateRequest, error) {
	if len(csrDER) > maxCSR {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadCSR, len(csrDER), maxCSR)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := checkDeviceKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	return csr, nil
}

// IssueDeviceKey issues a client certificate for deviceID certifying pub,
// which must be ECDSA P-256 or Ed25519 and whose possession the caller has
// established (ParseDeviceCSR). The certificate carries exactly CN =
// deviceID, one URI SAN DeviceURI(deviceID) and ExtKeyUsageClientAuth: the
// identity comes from the server, which knows it from the enrollment
// credential. It returns the certificate (DER) and its serial number, which
// the server records so it can revoke this certificate.
func (ca *CA) IssueDeviceKey(pub crypto.PublicKey, deviceID string, validity time.Duration) (certDER []byte, serial *big.Int, err error) {
	if err := ValidateDeviceID(deviceID); err != nil {
		return nil, nil, fmt.Errorf("issue device certificate: %w", err)
	}
	if err := checkDeviceKey(pub); err != nil {
		return nil, nil, fmt.Errorf("issue device certificate: %w", err)
	}
	// Ed25519 keys only sign; ECDSA keys in TLS 1.3 only sign too, so
	// DigitalSignature is the only key usage a device needs.
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: deviceID},
		URIs:        []*url.URL{DeviceURI(deviceID)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := ca.issue(tmpl, pub, validity)
	if err != nil {
		return nil, nil, fmt.Errorf("issue device certificate: %w", err)
	}
	return der, tmpl.SerialNumber, nil
}

// issue fills in what every leaf shares (serial, validity, basic
// constraints) and signs tmpl with the CA key.
func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, validity time.Duration) ([]byte, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("ca has no certificate or key")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("validity %v is not positive", validity)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if !now.Before(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("ca %q expired at %s", ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(validity)
	// A certificate cannot be valid longer than its issuer; clamp rather
	// than hand out a certificate whose stated lifetime is a lie.
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
}

// NewDeviceCSR creates the CSR a device sends at enrollment, signed by its
// locally generated key (which never leaves the device). It asks for
// deviceID, but the server ignores what a CSR asks for and decides the
// identity itself; the request is there for logs and for people.
func NewDeviceCSR(key crypto.Signer, deviceID string) ([]byte, error) {
	if err := ValidateDeviceID(deviceID); err != nil {
		return nil, fmt.Errorf("new device csr: %w", err)
	}
	if key == nil {
		return nil, errors.New("new device csr: nil key")
	}
	// Fail here, on the device, rather than at the server with a less
	// helpful refusal.
	if err := checkDeviceKey(key.Public()); err != nil {
		return nil, fmt.Errorf("new device csr: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: deviceID},
		URIs:    []*url.URL{DeviceURI(deviceID)},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("new device csr: %w", err)
	}
	return der, nil
}

// GenerateDeviceKey creates a device key: ECDSA P-256, which every TLS 1.3
// peer supports and many secure elements and TPMs can hold.
func GenerateDeviceKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// checkDeviceKey accepts only ECDSA P-256 and Ed25519 public keys: both
// are strong at small sizes, fast on embedded CPUs and supported by TLS
// 1.3, and accepting nothing else keeps weak RSA keys out of the fleet,
// and expensive ones out of the server's signature checks. Errors wrap
// ErrUnsupportedKey.
func checkDeviceKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("%w: ecdsa key on curve %s, want P-256", ErrUnsupportedKey, k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: malformed ed25519 key", ErrUnsupportedKey)
		}
		return nil
	case *rsa.PublicKey:
		return fmt.Errorf("%w: rsa key of %d bits, want ecdsa P-256 or ed25519", ErrUnsupportedKey, k.N.BitLen())
	default:
		return fmt.Errorf("%w: public key type %T, want ecdsa P-256 or ed25519", ErrUnsupportedKey, pub)
	}
}

// newSerial returns a random positive 128-bit serial number. Randomness
// (not a counter) makes serials unpredictable, which is what defeated
// chosen-prefix collision attacks on certificate signatures, and needs no
// shared state between server replicas.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// publicKeysEqual compares public keys of the types the standard library
// produces; all of them implement Equal.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// validDNSName accepts host names made of LDH labels (and a leading "*."
// wildcard), the syntax x509 name matching understands.
func validDNSName(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// CertPEM encodes a DER certificate as PEM.
func CertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: der})
}

// ParseCertPEM parses exactly one PEM certificate. Trailing data is an
// error: a second certificate silently ignored is a configuration mistake
// nobody would notice.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != pemCert {
		return nil, fmt.Errorf("%w: want one %s block", ErrBadPEM, pemCert)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the certificate", ErrBadPEM)
	}
	return x509.ParseCertificate(block.Bytes)
}

// CertPoolFromPEM builds a pool from one or more PEM certificates, such as
// a pinned srv/ca.pem. An input without any certificate is an error rather
// than an empty pool that would refuse everything for no visible reason.
func CertPoolFromPEM(data []byte) (*x509.CertPool, error) {
	certs, err := ParseCertsPEM(data)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ParseCertsPEM parses one or more PEM certificates and nothing else (a CA
// bundle, a certificate chain). Another kind of block, text that is not
// PEM after the last certificate, or no certificate at all is an error
// wrapping ErrBadPEM.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != pemCert {
			return nil, fmt.Errorf("%w: a %q PEM block; it must hold certificates only", ErrBadPEM, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	switch {
	case len(certs) == 0:
		return nil, fmt.Errorf("%w: no PEM certificate in it", ErrBadPEM)
	case len(bytes.TrimSpace(data)) != 0:
		return nil, fmt.Errorf("%w: text after the last certificate is not PEM", ErrBadPEM)
	}
	return certs, nil
}

// MarshalKeyPEM encodes a private key as PKCS#8 PEM. It fails for keys
// that cannot be exported, such as HSM-backed signers.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemKey, Bytes: der}), nil
}

// ParseKeyPEM parses one PKCS#8 PEM private key.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != pemKey {
		return nil, fmt.Errorf("%w: want one %s block", ErrBadPEM, pemKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the private key", ErrBadPEM)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse private key: %T cannot sign", k)
	}
	return s, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEM+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxPEM {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, maxPEM)
	}
	return data, nil
}
