package pki

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"
)

// The CA certificates are fixed per fuzzing process, so a mutated input
// means the same thing on every run of it.
var fuzzCA, fuzzDeviceCA *CA

func fuzzCAs(f *testing.F) (manufacturer, device *CA) {
	if fuzzCA == nil {
		var err error
		if fuzzCA, err = NewCA("fuzz factory", 24*time.Hour); err != nil {
			f.Fatal(err)
		}
		if fuzzDeviceCA, err = NewCA("fuzz device ca", 24*time.Hour); err != nil {
			f.Fatal(err)
		}
	}
	return fuzzCA, fuzzDeviceCA
}

// FuzzVerifyManufacturerChain: an enrolling device's certificate chain is
// untrusted input. Whatever the bytes, no panic, and an accepted chain's
// leaf chains to the manufacturer CA and names the device it says.
func FuzzVerifyManufacturerChain(f *testing.F) {
	ca, _ := fuzzCAs(f)
	now := time.Now()
	key, _ := GenerateDeviceKey()
	t := &testing.T{}
	good := craft(t, ca, &x509.Certificate{Subject: pkix.Name{SerialNumber: "gw-1", CommonName: "Gateway"}, URIs: []*url.URL{HardwareURI("acme-gw-rev2")},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, key.Public())
	plain := craft(t, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "gw-2"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, key.Public())
	f.Add(good, []byte(nil), 0)
	f.Add(plain, ca.Cert.Raw, 2)
	f.Add(good[:len(good)/2], good[len(good)/2:], 1)
	f.Add([]byte{0x30, 0x82, 0xff, 0xff}, []byte{}, 2)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	f.Fuzz(func(t *testing.T, leaf, extra []byte, n int) {
		chain := [][]byte{leaf}
		switch n % 4 {
		case 1:
			chain = append(chain, extra)
		case 2:
			chain = append(chain, extra, extra)
		case 3:
			chain = nil
		}
		id, err := VerifyManufacturerChain(chain, pool, now)
		if err != nil {
			return
		}
		if id.Leaf == nil || !bytes.Equal(id.Leaf.Raw, leaf) {
			t.Fatal("accepted identity is not the leaf")
		}
		if id.DeviceID != id.Leaf.Subject.SerialNumber && id.DeviceID != id.Leaf.Subject.CommonName {
			t.Fatalf("device id %q is not from the subject %v", id.DeviceID, id.Leaf.Subject)
		}
		if err := id.Leaf.CheckSignatureFrom(ca.Cert); err != nil && len(chain) == 1 {
			t.Fatalf("accepted a leaf the ca did not sign: %v", err)
		}
	})
}

// FuzzIssueDevice: an enrollment CSR is untrusted input. No panic, and a
// certificate is issued only for a CSR whose signature verifies, carrying
// the CSR's key and the device id the server chose, never the CSR's
// subject.
func FuzzIssueDevice(f *testing.F) {
	_, ca := fuzzCAs(f)
	key, _ := GenerateDeviceKey()
	csr, err := NewDeviceCSR(key, "gw-1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(csr, "gw-1")
	f.Add(csr, "other-device")
	f.Add(csr[:len(csr)-3], "gw-1")
	f.Add([]byte{0x30, 0x00}, "x")
	f.Fuzz(func(t *testing.T, csrDER []byte, id string) {
		der, _, err := ca.IssueDevice(csrDER, id, time.Hour)
		if err != nil {
			return
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("issued an unparsable certificate: %v", err)
		}
		got, err := DeviceIDFromCert(cert)
		if err != nil || got != id {
			t.Fatalf("certificate names %q (%v), want %q", got, err, id)
		}
		req, err := x509.ParseCertificateRequest(csrDER)
		if err != nil || req.CheckSignature() != nil {
			t.Fatal("issued for a csr that does not verify")
		}
		if !publicKeysEqual(cert.PublicKey, req.PublicKey) {
			t.Fatal("the certificate's key is not the csr's")
		}
		if err := CheckCSRKey(csrDER, cert.PublicKey); err != nil {
			t.Fatalf("CheckCSRKey disagrees with IssueDevice: %v", err)
		}
	})
}
