package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Manufacturer certificates: a device that left the factory with a key and
// a certificate from its manufacturer's CA (an IEEE 802.1AR IDevID, say)
// can enroll with that certificate instead of a one-time token. The
// server trusts a configured bundle of manufacturer CAs for this one
// purpose: such a certificate is never accepted as a device's TLS client
// certificate, which only the device CA issues.
//
// What a manufacturer certificate says:
//
//   - the device id is the subject's serialNumber attribute (OID 2.5.4.5,
//     where IEEE 802.1AR puts the device serial) when the subject has one,
//     otherwise its CommonName; it must equal the enrolling device id
//     exactly;
//   - the hardware id, optionally, is a URI SAN rampart:hardware:<id>; a
//     certificate without one leaves the hardware id to the request.

// More errors returned by this package, wrapped with detail.
var (
	// ErrCertExpired: a certificate in a chain is expired or not yet
	// valid.
	ErrCertExpired = errors.New("certificate expired or not yet valid")
	// ErrBadCertificate: a certificate or chain is malformed, too large,
	// or unusable for the purpose (a CA as a leaf, two hardware ids, ...).
	ErrBadCertificate = errors.New("bad certificate")
)

const (
	hardwarePrefix = "hardware:"
	// maxChain bounds a manufacturer chain (leaf and intermediates) and
	// maxCertDER each certificate in it; real ones are 1-3 certificates
	// of under 2 KiB.
	maxChain   = 4
	maxCertDER = 16 << 10
	// maxRSABits bounds the RSA keys of a manufacturer chain's
	// intermediates: verifying a signature costs time that grows with the
	// key, and no manufacturer CA needs more than 4096 bits.
	maxRSABits = 4096
	minRSABits = 2048
	// maxBundle bounds the CAs of a bundle file.
	maxBundle = 64
)

// HardwareURI returns the URI SAN that carries a hardware id in a
// manufacturer certificate: rampart:hardware:<id>.
func HardwareURI(hardwareID string) *url.URL {
	return &url.URL{Scheme: deviceScheme, Opaque: hardwarePrefix + hardwareID}
}

// ManufacturerIdentity is what a verified manufacturer certificate says
// about its device.
type ManufacturerIdentity struct {
	// DeviceID is the subject's serialNumber, or its CommonName when it
	// has none. It is not validated: compare it with the device id.
	DeviceID string
	// HardwareID is the rampart:hardware: URI SAN's id, "" when absent.
	HardwareID string
	// Leaf is the manufacturer certificate itself.
	Leaf *x509.Certificate
}

// VerifyManufacturerChain verifies a DER certificate chain, leaf first and
// then any intermediates, against the manufacturer CAs in roots at time
// now, and returns what the leaf says about its device. Errors wrap
// ErrUnknownCA (no chain to roots), ErrCertExpired (a certificate of the
// chain is outside its validity) or ErrBadCertificate (anything else; with
// ErrUnsupportedKey for a key of the wrong type or size).
//
// Anyone can send a chain, so everything that costs nothing is checked
// before any signature: the number and size of the certificates, that
// they parse, that the leaf's key is a device key (P-256 or Ed25519: it
// is the key the device certificate will certify) and that every
// intermediate's key is one checkChainKey accepts. Only then is the chain
// built, and a client's intermediates are at most maxChain-1 certificates
// of bounded keys.
//
// The leaf's extended key usage may be anything: the certificate is used
// only to prove which device is enrolling, never for TLS. Possession of
// its key is proven separately (CheckCSRKey).
func VerifyManufacturerChain(chain [][]byte, roots *x509.CertPool, now time.Time) (*ManufacturerIdentity, error) {
	if roots == nil {
		return nil, fmt.Errorf("manufacturer certificate: %w: no manufacturer ca", ErrUnknownCA)
	}
	if len(chain) == 0 || len(chain) > maxChain {
		return nil, fmt.Errorf("manufacturer certificate: %w: %d certificates, want 1 to %d (leaf first)", ErrBadCertificate, len(chain), maxChain)
	}
	for i, der := range chain {
		if len(der) > maxCertDER {
			return nil, fmt.Errorf("manufacturer certificate %d: %w: %d bytes, limit %d", i, ErrBadCertificate, len(der), maxCertDER)
		}
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("manufacturer certificate %d: %w: %w", i, ErrBadCertificate, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	if leaf.IsCA {
		return nil, fmt.Errorf("manufacturer certificate: %w: the leaf %q is a ca certificate", ErrBadCertificate, leaf.Subject)
	}
	if err := checkDeviceKey(leaf.PublicKey); err != nil {
		return nil, fmt.Errorf("manufacturer certificate: %w: the leaf's key: %w", ErrBadCertificate, err)
	}
	for i, c := range certs[1:] {
		if err := checkChainKey(c.PublicKey); err != nil {
			return nil, fmt.Errorf("manufacturer certificate %d: %w: %w", i+1, ErrBadCertificate, err)
		}
	}
	if err := verifyChain(certs, roots, now, x509.ExtKeyUsageAny); err != nil {
		var ua x509.UnknownAuthorityError
		var ci x509.CertificateInvalidError
		switch {
		case errors.As(err, &ua):
			return nil, fmt.Errorf("manufacturer certificate %q: %w: %w", leaf.Subject, ErrUnknownCA, err)
		case errors.As(err, &ci) && ci.Reason == x509.Expired:
			return nil, fmt.Errorf("manufacturer certificate %q: %w: %w", leaf.Subject, ErrCertExpired, err)
		}
		return nil, fmt.Errorf("manufacturer certificate %q: %w: %w", leaf.Subject, ErrBadCertificate, err)
	}
	id := &ManufacturerIdentity{DeviceID: leaf.Subject.SerialNumber, Leaf: leaf}
	if id.DeviceID == "" {
		id.DeviceID = leaf.Subject.CommonName
	}
	for _, u := range leaf.URIs {
		hw, ok := strings.CutPrefix(u.Opaque, hardwarePrefix)
		if u.Scheme != deviceScheme || !ok {
			continue
		}
		if id.HardwareID != "" {
			return nil, fmt.Errorf("manufacturer certificate: %w: more than one %s:%s uri san", ErrBadCertificate, deviceScheme, hardwarePrefix)
		}
		if hw == "" || u.String() != HardwareURI(hw).String() {
			return nil, fmt.Errorf("manufacturer certificate: %w: uri san %q is not %s:%s<id>", ErrBadCertificate, u, deviceScheme, hardwarePrefix)
		}
		id.HardwareID = hw
	}
	return id, nil
}

// CheckCSRKey checks that a CSR is well formed, that its key is pub and
// an accepted device key, and that it is signed by that key: then whoever
// made the CSR holds pub's private key. The signature is checked last, so
// a CSR that could not be accepted costs no signature verification.
// Errors wrap ErrBadCSR (with ErrUnsupportedKey for a key of the wrong
// type) or ErrKeyMismatch.
func CheckCSRKey(csrDER []byte, pub crypto.PublicKey) error {
	if len(csrDER) > maxCSR {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBadCSR, len(csrDER), maxCSR)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if !publicKeysEqual(pub, csr.PublicKey) {
		return fmt.Errorf("%w: the csr's key is not the certificate's", ErrKeyMismatch)
	}
	if err := checkDeviceKey(csr.PublicKey); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	return nil
}

// checkChainKey bounds the keys of certificates a client sends as
// intermediates: RSA of 2048 to 4096 bits, ECDSA on P-256 or P-384, or
// Ed25519. Each costs well under a millisecond to verify a signature with.
// Errors wrap ErrUnsupportedKey.
func checkChainKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits || n > maxRSABits {
			return fmt.Errorf("%w: rsa key of %d bits, want %d to %d", ErrUnsupportedKey, n, minRSABits, maxRSABits)
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ecdsa key on curve %s, want P-256 or P-384", ErrUnsupportedKey, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%w: public key type %T", ErrUnsupportedKey, pub)
	}
	return nil
}

// LoadCABundle reads a PEM file of one or more CA certificates (a
// manufacturer CA bundle) and returns them as a pool and a list. Every
// certificate must be a CA: a leaf among trust anchors is a configuration
// mistake, not a CA.
func LoadCABundle(path string) (*x509.CertPool, []*x509.Certificate, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load ca bundle: %w", err)
	}
	certs, err := ParseCertsPEM(data)
	if err != nil {
		return nil, nil, fmt.Errorf("load ca bundle %s: %w", path, err)
	}
	if len(certs) > maxBundle {
		return nil, nil, fmt.Errorf("load ca bundle %s: more than %d certificates", path, maxBundle)
	}
	pool := x509.NewCertPool()
	for i, c := range certs {
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, nil, fmt.Errorf("load ca bundle %s: certificate %d (%s): %w", path, i+1, c.Subject, ErrNotCA)
		}
		pool.AddCert(c)
	}
	return pool, certs, nil
}
