// Package pkitest forges the hostile certificates and CSRs that tests of
// the server's unauthenticated cost send: objects a real CA or device
// would never make, built cheaply (no large key is ever generated; an
// RSA "key" here is a random odd modulus that nobody holds the factors
// of, which is all a verifier's cost depends on).
package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/rampartfw/rampart/internal/pki"
)

var (
	oidRSA       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA256RSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
)

// RSAModulus returns a random odd modulus of exactly bits bits with
// exponent 65537: a public key whose signature checks cost what a real
// key of that size costs.
func RSAModulus(bits int) *big.Int {
	b := make([]byte, (bits+7)/8)
	rand.Read(b)
	if r := bits % 8; r != 0 {
		b[0] &= byte(1<<r - 1)
	}
	b[0] |= byte(1 << ((bits - 1) % 8))
	b[len(b)-1] |= 1
	return new(big.Int).SetBytes(b)
}

// rsaSPKI is a SubjectPublicKeyInfo of an RSA key with modulus n.
func rsaSPKI(n *big.Int) ([]byte, error) {
	key, err := asn1.Marshal(struct {
		N *big.Int
		E int
	}{n, 65537})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}{pkix.AlgorithmIdentifier{Algorithm: oidRSA, Parameters: asn1.NullRawValue}, asn1.BitString{Bytes: key, BitLength: 8 * len(key)}})
}

// HugeRSACSR returns a CSR for device id whose key is an RSA modulus of
// bits bits and whose signature is random bytes of the modulus's size:
// verifying it would cost a modular exponentiation with that modulus, and
// it never verifies.
func HugeRSACSR(bits int, id string) ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, k)
	if err != nil {
		return nil, err
	}
	var csr struct {
		Info   asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &csr); err != nil {
		return nil, err
	}
	var info struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}
	if _, err := asn1.Unmarshal(csr.Info.FullBytes, &info); err != nil {
		return nil, err
	}
	spki, err := rsaSPKI(RSAModulus(bits))
	if err != nil {
		return nil, err
	}
	info.PublicKey = asn1.RawValue{FullBytes: spki}
	infoDER, err := asn1.Marshal(info)
	if err != nil {
		return nil, err
	}
	sig := make([]byte, (bits+7)/8)
	rand.Read(sig)
	csr.Info = asn1.RawValue{FullBytes: infoDER}
	csr.SigAlg = pkix.AlgorithmIdentifier{Algorithm: oidSHA256RSA, Parameters: asn1.NullRawValue}
	csr.Sig = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	return asn1.Marshal(csr)
}

// tbsCertificate is the part of a certificate its signature covers, with
// the fields this package rewrites decoded.
type tbsCertificate struct {
	Version            int `asn1:"optional,explicit,default:0,tag:0"`
	SerialNumber       *big.Int
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Issuer             asn1.RawValue
	Validity           asn1.RawValue
	Subject            asn1.RawValue
	PublicKey          asn1.RawValue
	Extensions         []pkix.Extension `asn1:"omitempty,optional,explicit,tag:3"`
}

type certificate struct {
	TBS    asn1.RawValue
	SigAlg pkix.AlgorithmIdentifier
	Sig    asn1.BitString
}

// rewrite re-encodes a certificate with another public key (when spki is
// not nil) and, when sigBytes > 0, an RSA signature of that many random
// bytes in place of its own.
func rewrite(der, spki []byte, sigBytes int) ([]byte, error) {
	var c certificate
	if _, err := asn1.Unmarshal(der, &c); err != nil {
		return nil, err
	}
	var tbs tbsCertificate
	if _, err := asn1.Unmarshal(c.TBS.FullBytes, &tbs); err != nil {
		return nil, err
	}
	if spki != nil {
		tbs.PublicKey = asn1.RawValue{FullBytes: spki}
	}
	if sigBytes > 0 {
		alg := pkix.AlgorithmIdentifier{Algorithm: oidSHA256RSA, Parameters: asn1.NullRawValue}
		tbs.SignatureAlgorithm, c.SigAlg = alg, alg
		sig := make([]byte, sigBytes)
		rand.Read(sig)
		c.Sig = asn1.BitString{Bytes: sig, BitLength: 8 * sigBytes}
	}
	tbsDER, err := asn1.Marshal(tbs)
	if err != nil {
		return nil, err
	}
	c.TBS = asn1.RawValue{FullBytes: tbsDER}
	return asn1.Marshal(c)
}

// HostileChain returns a client certificate for a TLS handshake that
// attacks chain building against ca: a device leaf whose issuer name is
// ca's, signed (it claims) with RSA by a key of bits bits, followed by n
// intermediates that are all named like ca, issued by that name and carry
// random RSA moduli of bits bits. A verifier that takes intermediates from
// the client tries each of them as the leaf's issuer, one RSA signature
// check apiece, and each of them again as an issuer of the others. The
// private key is a fresh P-256 key, so the client side of the handshake
// works as far as the server lets it.
func HostileChain(ca *x509.Certificate, n, bits int, deviceID string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	parent := &x509.Certificate{Subject: ca.Subject, SubjectKeyId: ca.SubjectKeyId, PublicKey: signer.Public()}
	now := time.Now()
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: deviceID},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	leafTmpl.URIs = []*url.URL{pki.DeviceURI(deviceID)}
	leaf, err := x509.CreateCertificate(rand.Reader, leafTmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("leaf: %w", err)
	}
	if leaf, err = rewrite(leaf, nil, (bits+7)/8); err != nil {
		return nil, fmt.Errorf("leaf: %w", err)
	}
	chain := [][]byte{leaf}
	for i := range n {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: ca.Subject,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, signer.Public(), signer)
		if err != nil {
			return nil, fmt.Errorf("intermediate %d: %w", i, err)
		}
		spki, err := rsaSPKI(RSAModulus(bits))
		if err != nil {
			return nil, err
		}
		// Signed (it claims) with RSA too, so that each intermediate is
		// also tried as the issuer of every other.
		if der, err = rewrite(der, spki, (bits+7)/8); err != nil {
			return nil, fmt.Errorf("intermediate %d: %w", i, err)
		}
		chain = append(chain, der)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: crypto.Signer(key)}, nil
}
