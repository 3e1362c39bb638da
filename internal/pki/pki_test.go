package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestCA(t *testing.T, cn string) *CA {
	t.Helper()
	ca, err := NewCA(cn, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	before := time.Now()
	ca := newTestCA(t, "rampart device ca")
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Error("not a CA")
	}
	if c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("MaxPathLen = %d (zero %v), want 0", c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("KeyUsage = %v", c.KeyUsage)
	}
	if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("SignatureAlgorithm = %v", c.SignatureAlgorithm)
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v not a positive 128-bit number", c.SerialNumber)
	}
	if !c.NotBefore.Before(before.Add(-time.Minute)) {
		t.Errorf("NotBefore %v not backdated for clock skew", c.NotBefore)
	}
	if c.Subject.CommonName != "rampart device ca" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	// Serials are random: two CAs never share one.
	if other := newTestCA(t, "x"); other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two CAs got the same serial")
	}
	if _, err := NewCA("x", 0); err == nil {
		t.Error("NewCA with zero validity succeeded")
	}
	if _, err := NewCA("", time.Hour); err == nil {
		t.Error("NewCA with empty name succeeded")
	}
}

func TestIssueServer(t *testing.T) {
	ca := newTestCA(t, "server ca")
	certPEM, keyPEM, err := ca.IssueServer([]string{"Update.Example.com", "127.0.0.1", "::1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyPEM(keyPEM); err != nil {
		t.Fatal(err)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ExtKeyUsage = %v, want server auth only", cert.ExtKeyUsage)
	}
	if cert.IsCA {
		t.Error("server certificate is a CA")
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "update.example.com" {
		t.Errorf("DNSNames = %v", cert.DNSNames)
	}
	if len(cert.IPAddresses) != 2 || !cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("IPAddresses = %v", cert.IPAddresses)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "update.example.com"}); err != nil {
		t.Errorf("verify: %v", err)
	}
	for _, bad := range [][]string{nil, {"bad host/name"}, {"-x.example"}, {""}} {
		if _, _, err := ca.IssueServer(bad, time.Hour); err == nil {
			t.Errorf("IssueServer(%q) succeeded", bad)
		}
	}
}

func TestValidateDeviceID(t *testing.T) {
	good := []string{"a", "gw-0001", "3f2a9c1e-0b4d-4c3e-9a55-1f0e7a6b8c2d", "acme.gw_7", strings.Repeat("a", MaxDeviceIDLen)}
	for _, id := range good {
		if err := ValidateDeviceID(id); err != nil {
			t.Errorf("ValidateDeviceID(%q) = %v", id, err)
		}
	}
	bad := []string{"", "GW-1", "-gw", ".gw", "_gw", "..", "a/b", "a b", "a:b", "a\x00", "é", "a%2f", strings.Repeat("a", MaxDeviceIDLen+1)}
	for _, id := range bad {
		if err := ValidateDeviceID(id); !errors.Is(err, ErrBadDeviceID) {
			t.Errorf("ValidateDeviceID(%q) = %v, want ErrBadDeviceID", id, err)
		}
	}
}

func TestDeviceURIRoundTrip(t *testing.T) {
	u := DeviceURI("gw-1")
	if u.String() != "rampart:device:gw-1" {
		t.Fatalf("DeviceURI = %q", u)
	}
	parsed, err := url.Parse(u.String())
	if err != nil {
		t.Fatal(err)
	}
	id, err := DeviceIDFromCert(&x509.Certificate{URIs: []*url.URL{parsed}})
	if err != nil || id != "gw-1" {
		t.Fatalf("DeviceIDFromCert = %q, %v", id, err)
	}
}

func TestDeviceIDFromCertRefuses(t *testing.T) {
	mustParse := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	cases := map[string][]*url.URL{
		"none":         nil,
		"two devices":  {DeviceURI("a"), DeviceURI("b")},
		"other scheme": {mustParse("spiffe://rampart/device/a")},
		"other kind":   {mustParse("rampart:operator:a")},
		"bad id":       {mustParse("rampart:device:A/../b")},
		"query":        {mustParse("rampart:device:a?x=1")},
		"fragment":     {mustParse("rampart:device:a#b")},
	}
	for name, uris := range cases {
		// The CN says "a" throughout: it must never be used as identity.
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: "a"}, URIs: uris}
		if id, err := DeviceIDFromCert(cert); !errors.Is(err, ErrNoDeviceID) {
			t.Errorf("%s: DeviceIDFromCert = %q, %v; want ErrNoDeviceID", name, id, err)
		}
	}
	if _, err := DeviceIDFromCert(nil); !errors.Is(err, ErrNoDeviceID) {
		t.Errorf("nil cert: %v", err)
	}
}

func TestIssueDevice(t *testing.T) {
	ca := newTestCA(t, "device ca")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"p256": ecKey, "ed25519": edKey} {
		t.Run(name, func(t *testing.T) {
			csr, err := NewDeviceCSR(key, "gw-1")
			if err != nil {
				t.Fatal(err)
			}
			der, serial, err := ca.IssueDevice(csr, "gw-1", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if cert.SerialNumber.Cmp(serial) != 0 {
				t.Errorf("returned serial %v, certificate has %v", serial, cert.SerialNumber)
			}
			if serial.Sign() <= 0 || serial.BitLen() > 128 {
				t.Errorf("serial %v", serial)
			}
			if !publicKeysEqual(cert.PublicKey, key.Public()) {
				t.Error("certificate is not for the CSR's key")
			}
			assertOnlyDeviceIdentity(t, cert, "gw-1")
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("verify: %v", err)
			}
			// Not usable as a server certificate.
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
				t.Error("device certificate verifies for server auth")
			}
		})
	}
}

// assertOnlyDeviceIdentity checks that cert names deviceID and nothing
// else, with client auth only, and is not a CA.
func assertOnlyDeviceIdentity(t *testing.T, cert *x509.Certificate, deviceID string) {
	t.Helper()
	if cert.Subject.String() != "CN="+deviceID {
		t.Errorf("subject = %q, want CN=%s only", cert.Subject, deviceID)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "rampart:device:"+deviceID {
		t.Errorf("URIs = %v", cert.URIs)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
		t.Errorf("extra SANs: %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(cert.UnknownExtKeyUsage) != 0 {
		t.Errorf("ExtKeyUsage = %v %v, want client auth only", cert.ExtKeyUsage, cert.UnknownExtKeyUsage)
	}
	if cert.IsCA || !cert.BasicConstraintsValid {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v", cert.IsCA, cert.BasicConstraintsValid)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v", cert.KeyUsage)
	}
	if id, err := DeviceIDFromCert(cert); err != nil || id != deviceID {
		t.Errorf("DeviceIDFromCert = %q, %v", id, err)
	}
}

func TestIssueDeviceIgnoresRequestedIdentity(t *testing.T) {
	ca := newTestCA(t, "device ca")
	key, _ := GenerateDeviceKey()
	// A greedy CSR: another device's id, an operator-looking CN, DNS, IP
	// and e-mail SANs, and a basic-constraints extension asking to be a CA.
	bc, err := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "admin", Organization: []string{"rampart operators"}},
		DNSNames:       []string{"update.example.com"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"root@example.com"},
		URIs:           []*url.URL{DeviceURI("victim-7"), {Scheme: "spiffe", Host: "x", Path: "/y"}},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
		},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	der, _, err := ca.IssueDevice(csr, "gw-2", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	assertOnlyDeviceIdentity(t, cert, "gw-2")
}

func TestIssueDeviceRefusesBadCSR(t *testing.T) {
	ca := newTestCA(t, "device ca")
	key, _ := GenerateDeviceKey()
	good, err := NewDeviceCSR(key, "gw-1")
	if err != nil {
		t.Fatal(err)
	}

	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-3] ^= 0xff // inside the signature value

	// The signature is valid, but by a different key than the one in the
	// CSR: the requester does not hold the key it wants certified.
	parsed, _ := x509.ParseCertificateRequest(good)
	otherKey, _ := GenerateDeviceKey()
	swapped, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: parsed.Subject}, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	swapped = spliceSPKI(t, swapped, parsed.RawSubjectPublicKeyInfo)

	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-1"}}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384CSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)
	if err != nil {
		t.Fatal(err)
	}

	cases := map[string][]byte{
		"garbage":         []byte("not a csr"),
		"empty":           nil,
		"bad signature":   badSig,
		"key not signer":  swapped,
		"rsa-1024":        rsaCSR,
		"ecdsa p-384":     p384CSR,
		"trailing data":   append(append([]byte(nil), good...), 0),
		"oversized input": make([]byte, maxCSR+1),
	}
	for name, csr := range cases {
		if _, _, err := ca.IssueDevice(csr, "gw-1", time.Hour); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: IssueDevice = %v, want ErrBadCSR", name, err)
		}
	}
	if _, _, err := ca.IssueDevice(good, "GW/1", time.Hour); !errors.Is(err, ErrBadDeviceID) {
		t.Errorf("bad device id: %v", err)
	}
	if _, _, err := ca.IssueDevice(good, "gw-1", 0); err == nil {
		t.Error("zero validity accepted")
	}
	if _, err := NewDeviceCSR(rsaKey, "gw-1"); err == nil {
		t.Error("NewDeviceCSR accepted an RSA key")
	}
	if _, err := NewDeviceCSR(key, "bad id"); !errors.Is(err, ErrBadDeviceID) {
		t.Errorf("NewDeviceCSR with bad id: %v", err)
	}
}

// spliceSPKI replaces the subject public key info inside a CSR without
// re-signing it.
func spliceSPKI(t *testing.T, csrDER, spki []byte) []byte {
	t.Helper()
	var csr struct {
		Info struct {
			Raw       asn1.RawContent
			Version   int
			Subject   asn1.RawValue
			PublicKey asn1.RawValue
			Attrs     asn1.RawValue `asn1:"tag:0"`
		}
		SigAlg asn1.RawValue
		Sig    asn1.BitString
	}
	if _, err := asn1.Unmarshal(csrDER, &csr); err != nil {
		t.Fatal(err)
	}
	csr.Info.Raw = nil
	csr.Info.PublicKey = asn1.RawValue{FullBytes: spki}
	out, err := asn1.Marshal(csr)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := x509.ParseCertificateRequest(out); err != nil {
		t.Fatalf("spliced CSR does not parse: %v", err)
	} else if p.CheckSignature() == nil {
		t.Fatal("spliced CSR still verifies; the test is broken")
	}
	return out
}

func TestIssueClampsToCAExpiry(t *testing.T) {
	ca := newTestCA(t, "device ca") // valid 24h
	key, _ := GenerateDeviceKey()
	csr, _ := NewDeviceCSR(key, "gw-1")
	der, _, err := ca.IssueDevice(csr, "gw-1", 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("device NotAfter %v after CA's %v", cert.NotAfter, ca.Cert.NotAfter)
	}
}

func TestSaveLoadCA(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	ca := newTestCA(t, "device ca")
	if err := ca.Save(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	keyPEM, _ := os.ReadFile(keyPath)
	if !strings.HasPrefix(string(keyPEM), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("key file is not PKCS#8 PEM: %.40q", keyPEM)
	}

	loaded, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("loaded certificate differs")
	}
	if !publicKeysEqual(loaded.Key.Public(), ca.Key.Public()) {
		t.Error("loaded key differs")
	}
	// The loaded CA issues certificates that chain to the original.
	dkey, _ := GenerateDeviceKey()
	csr, _ := NewDeviceCSR(dkey, "gw-1")
	der, _, err := loaded.IssueDevice(csr, "gw-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dcert, _ := x509.ParseCertificate(der)
	if err := dcert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Error(err)
	}

	// Save never replaces an existing CA.
	other := newTestCA(t, "other")
	if err := other.Save(certPath, filepath.Join(dir, "new.key")); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Save over existing cert: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("failed Save left a key file behind")
	}
	if err := other.Save(filepath.Join(dir, "new.pem"), keyPath); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Save over existing key: %v", err)
	}

	// Mismatched pair.
	otherCert, otherKey := filepath.Join(dir, "other.pem"), filepath.Join(dir, "other.key")
	if err := other.Save(otherCert, otherKey); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(certPath, otherKey); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("LoadCA mismatched: %v, want ErrKeyMismatch", err)
	}

	// A leaf certificate with its own key is not a CA.
	leafPEM, leafKey, err := ca.IssueServer([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lc, lk := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "leaf.key")
	os.WriteFile(lc, leafPEM, 0o644)
	os.WriteFile(lk, leafKey, 0o600)
	if _, err := LoadCA(lc, lk); !errors.Is(err, ErrNotCA) {
		t.Errorf("LoadCA leaf: %v, want ErrNotCA", err)
	}

	// Garbage and missing files.
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("junk"), 0o600)
	if _, err := LoadCA(junk, keyPath); !errors.Is(err, ErrBadPEM) {
		t.Errorf("LoadCA junk cert: %v", err)
	}
	if _, err := LoadCA(certPath, junk); !errors.Is(err, ErrBadPEM) {
		t.Errorf("LoadCA junk key: %v", err)
	}
	if _, err := LoadCA(filepath.Join(dir, "missing"), keyPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadCA missing: %v", err)
	}
}

func TestCertPoolFromPEM(t *testing.T) {
	a, b := newTestCA(t, "a"), newTestCA(t, "b")
	if _, err := CertPoolFromPEM(append(CertPEM(a.Cert.Raw), CertPEM(b.Cert.Raw)...)); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{
		"empty":    nil,
		"junk":     []byte("junk"),
		"trailing": append(CertPEM(a.Cert.Raw), "junk"...),
	} {
		if _, err := CertPoolFromPEM(in); !errors.Is(err, ErrBadPEM) {
			t.Errorf("%s: %v", name, err)
		}
	}
	keyPEM, _ := MarshalKeyPEM(a.Key)
	if _, err := CertPoolFromPEM(keyPEM); !errors.Is(err, ErrBadPEM) {
		t.Errorf("key as pool: %v", err)
	}
}

// craft signs an arbitrary template with ca, for certificates IssueDevice
// and IssueServer would never produce (expired, wrong usages). It is the
// real CA key: only the template differs.
func craft(t *testing.T, ca *CA, tmpl *x509.Certificate, pub crypto.PublicKey) []byte {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
