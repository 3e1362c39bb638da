package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func poolOf(cas ...*CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

// subCA makes an intermediate CA under a root that allows one.
func subCA(t *testing.T) (root, inter *CA) {
	t.Helper()
	mk := func(tmpl *x509.Certificate, parent *CA) *CA {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		tmpl.KeyUsage, tmpl.BasicConstraintsValid, tmpl.IsCA = x509.KeyUsageCertSign, true, true
		signer, parentCert := any(key), tmpl
		if parent != nil {
			signer, parentCert = parent.Key, parent.Cert
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return &CA{Cert: c, Key: key}
	}
	root = mk(&x509.Certificate{Subject: pkix.Name{CommonName: "factory root"}}, nil)
	inter = mk(&x509.Certificate{Subject: pkix.Name{CommonName: "factory line"}}, root)
	return root, inter
}

func TestVerifyManufacturerChain(t *testing.T) {
	factory := newTestCA(t, "factory")
	now := time.Now()
	key, _ := GenerateDeviceKey()
	leaf := func(subject pkix.Name, uris ...*url.URL) []byte {
		return craft(t, factory, &x509.Certificate{Subject: subject, URIs: uris, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, key.Public())
	}

	id, err := VerifyManufacturerChain([][]byte{leaf(pkix.Name{CommonName: "gw-1"}, HardwareURI("acme-gw-rev2"), &url.URL{Scheme: "https", Host: "acme.example", Path: "/device"})}, poolOf(factory), now)
	if err != nil || id.DeviceID != "gw-1" || id.HardwareID != "acme-gw-rev2" || !publicKeysEqual(id.Leaf.PublicKey, key.Public()) {
		t.Fatalf("%+v %v", id, err)
	}
	// The serialNumber attribute wins over the CommonName.
	id, err = VerifyManufacturerChain([][]byte{leaf(pkix.Name{CommonName: "Acme GW", SerialNumber: "gw-2"})}, poolOf(factory), now)
	if err != nil || id.DeviceID != "gw-2" || id.HardwareID != "" {
		t.Fatalf("%+v %v", id, err)
	}
	// Through an intermediate given in the chain.
	root, inter := subCA(t)
	viaInter := craft(t, inter, &x509.Certificate{Subject: pkix.Name{CommonName: "gw-3"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, key.Public())
	if id, err := VerifyManufacturerChain([][]byte{viaInter, inter.Cert.Raw}, poolOf(root), now); err != nil || id.DeviceID != "gw-3" {
		t.Fatalf("%+v %v", id, err)
	}

	for _, c := range []struct {
		name  string
		chain [][]byte
		roots *x509.CertPool
		at    time.Time
		want  error
	}{
		{"another ca", [][]byte{leaf(pkix.Name{CommonName: "gw-1"})}, poolOf(newTestCA(t, "factory")), now, ErrUnknownCA},
		{"no roots", [][]byte{leaf(pkix.Name{CommonName: "gw-1"})}, nil, now, ErrUnknownCA},
		{"intermediate missing", [][]byte{viaInter}, poolOf(root), now, ErrUnknownCA},
		{"expired", [][]byte{leaf(pkix.Name{CommonName: "gw-1"})}, poolOf(factory), now.Add(2 * time.Hour), ErrCertExpired},
		{"not yet valid", [][]byte{leaf(pkix.Name{CommonName: "gw-1"})}, poolOf(factory), now.Add(-2 * time.Hour), ErrCertExpired},
		{"empty", nil, poolOf(factory), now, ErrBadCertificate},
		{"too long", [][]byte{viaInter, inter.Cert.Raw, inter.Cert.Raw, inter.Cert.Raw, inter.Cert.Raw}, poolOf(root), now, ErrBadCertificate},
		{"garbage", [][]byte{[]byte("garbage")}, poolOf(factory), now, ErrBadCertificate},
		{"huge", [][]byte{make([]byte, maxCertDER+1)}, poolOf(factory), now, ErrBadCertificate},
		{"ca as leaf", [][]byte{inter.Cert.Raw}, poolOf(root), now, ErrBadCertificate},
		{"two hardware ids", [][]byte{leaf(pkix.Name{CommonName: "gw-1"}, HardwareURI("a"), HardwareURI("b"))}, poolOf(factory), now, ErrBadCertificate},
		{"empty hardware id", [][]byte{leaf(pkix.Name{CommonName: "gw-1"}, HardwareURI(""))}, poolOf(factory), now, ErrBadCertificate},
		{"decorated hardware uri", [][]byte{leaf(pkix.Name{CommonName: "gw-1"}, &url.URL{Scheme: "rampart", Opaque: "hardware:a", RawQuery: "x=1"})}, poolOf(factory), now, ErrBadCertificate},
	} {
		if _, err := VerifyManufacturerChain(c.chain, c.roots, c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestCheckCSRKey(t *testing.T) {
	key, _ := GenerateDeviceKey()
	other, _ := GenerateDeviceKey()
	csr, err := NewDeviceCSR(key, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckCSRKey(csr, key.Public()); err != nil {
		t.Fatal(err)
	}
	if err := CheckCSRKey(csr, other.Public()); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("other key: %v", err)
	}
	if err := CheckCSRKey([]byte("nope"), key.Public()); !errors.Is(err, ErrBadCSR) {
		t.Fatalf("garbage: %v", err)
	}
	// A CSR whose signature is not by the key it carries proves nothing.
	otherCSR, _ := NewDeviceCSR(other, "gw-1")
	spki, _ := x509.MarshalPKIXPublicKey(key.Public())
	if err := CheckCSRKey(spliceSPKI(t, otherCSR, spki), key.Public()); !errors.Is(err, ErrBadCSR) {
		t.Fatalf("spliced: %v", err)
	}
}

func TestLoadCABundle(t *testing.T) {
	dir := t.TempDir()
	a, b := newTestCA(t, "factory a"), newTestCA(t, "factory b")
	write := func(name string, data ...[]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Join(data, nil), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pool, certs, err := LoadCABundle(write("two.pem", CertPEM(a.Cert.Raw), CertPEM(b.Cert.Raw)))
	if err != nil || len(certs) != 2 || certs[1].Subject.CommonName != "factory b" {
		t.Fatalf("%v %v", certs, err)
	}
	key, _ := GenerateDeviceKey()
	leaf := craft(t, b, &x509.Certificate{Subject: pkix.Name{CommonName: "gw-1"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, key.Public())
	if _, err := VerifyManufacturerChain([][]byte{leaf}, pool, time.Now()); err != nil {
		t.Fatalf("a bundle's second ca is not trusted: %v", err)
	}
	keyPEM, _ := MarshalKeyPEM(key)
	for name, c := range map[string]struct {
		path string
		want error
	}{
		"leaf":     {write("leaf.pem", CertPEM(a.Cert.Raw), CertPEM(leaf)), ErrNotCA},
		"empty":    {write("empty.pem"), ErrBadPEM},
		"key":      {write("key.pem", CertPEM(a.Cert.Raw), keyPEM), ErrBadPEM},
		"trailing": {write("trailing.pem", CertPEM(a.Cert.Raw), []byte("junk")), ErrBadPEM},
		"missing":  {filepath.Join(dir, "missing.pem"), os.ErrNotExist},
	} {
		if _, _, err := LoadCABundle(c.path); !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: %v, want %v naming the file", name, err, c.want)
		}
	}
}
