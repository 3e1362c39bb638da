package server_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server"
)

// factory is a manufacturer's CA, made with crypto/x509 as a
// manufacturer's own tooling would.
type factory struct {
	t    *testing.T
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	return n.Add(n, big.NewInt(1))
}

func newFactory(t *testing.T, name string) *factory {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(), Subject: pkix.Name{Organization: []string{"Acme Devices"}, CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(20 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &factory{t: t, cert: cert, key: key}
}

// intermediate returns a sub-CA of f.
func (f *factory) intermediate(name string) *factory {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.cert, key.Public(), f.key)
	if err != nil {
		f.t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &factory{t: f.t, cert: cert, key: key}
}

// device issues a device certificate for key's public key.
func (f *factory) device(key crypto.Signer, subject pkix.Name, hardware string, notAfter time.Time) []byte {
	// Valid from an hour ago at the latest: the test server's clock is
	// frozen when it starts, and a NotBefore of "now" (truncated to the
	// second in the certificate) could lie after it.
	notBefore := notAfter.Add(-365 * 24 * time.Hour)
	if hourAgo := time.Now().Add(-time.Hour); notBefore.After(hourAgo) {
		notBefore = hourAgo
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(), Subject: subject,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if hardware != "" {
		tmpl.URIs = []*url.URL{pki.HardwareURI(hardware)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.cert, key.Public(), f.key)
	if err != nil {
		f.t.Fatal(err)
	}
	return der
}

func (f *factory) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.cert)
	return p
}

func (e *tlsEnv) enrollManufacturer(req map[string]any) (int, []byte) {
	code, b, err := e.call(e.pool, "POST", "/api/v1/enroll", "", req)
	if err != nil {
		e.t.Fatal(err)
	}
	return code, b
}

func TestManufacturerEnrollment(t *testing.T) {
	acme := newFactory(t, "Acme Devices Root CA")
	e := newTLSEnv(t, func(c *server.Config) { c.ManufacturerCAs = acme.pool() })
	year := time.Now().Add(365 * 24 * time.Hour)

	// A device whose factory certificate names it in the CommonName and
	// carries its hardware id enrolls with no token. Its CSR is signed
	// with the factory key, which the device certificate then certifies.
	key, _ := pkiKey(t)
	leaf := acme.device(key, pkix.Name{CommonName: "gw-0001"}, "acme-gw-rev2", year)
	code, b := e.enrollManufacturer(map[string]any{"device_id": "gw-0001", "csr": csrFor(t, key, "gw-0001"), "manufacturer_certificates": [][]byte{leaf}})
	if code != 201 || !strings.Contains(string(b), `"hardware":"acme-gw-rev2"`) {
		t.Fatalf("enroll: %d %s", code, b)
	}
	var out struct{ Certificate string }
	json.Unmarshal(b, &out)
	keyPEM, _ := pki.MarshalKeyPEM(key)
	cert, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	e.mustCall(e.client(&cert), "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"}, 204)
	if b := e.mustCall(e.pool, "GET", "/api/v1/devices/gw-0001", e.admin, nil, 200); !strings.Contains(string(b), `"hardware":"acme-gw-rev2"`) {
		t.Fatalf("%s", b)
	}
	// Once only.
	code, b = e.enrollManufacturer(map[string]any{"device_id": "gw-0001", "csr": csrFor(t, key, "gw-0001"), "manufacturer_certificates": [][]byte{leaf}})
	wantCode(t, code, b, 409, "device-exists")
	// The factory certificate is no device certificate: as a TLS client
	// certificate it is refused at the handshake.
	factoryCert := tls.Certificate{Certificate: [][]byte{leaf}, PrivateKey: key}
	if _, _, err := e.call(e.client(&factoryCert), "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "downloading"}); err == nil {
		t.Fatal("a manufacturer certificate was accepted as a device certificate")
	}

	// Through an intermediate, named by the subject's serialNumber (IEEE
	// 802.1AR), with the hardware id in the request.
	line := acme.intermediate("Acme Line 3 CA")
	key2, _ := pkiKey(t)
	leaf2 := line.device(key2, pkix.Name{CommonName: "Acme Gateway", SerialNumber: "gw-0002"}, "", year)
	code, b = e.enrollManufacturer(map[string]any{"device_id": "gw-0002", "csr": csrFor(t, key2, "gw-0002"), "manufacturer_certificates": [][]byte{leaf2, line.cert.Raw}, "hardware": "acme-gw-rev3"})
	if code != 201 || !strings.Contains(string(b), `"hardware":"acme-gw-rev3"`) {
		t.Fatalf("enroll via intermediate: %d %s", code, b)
	}

	// Refusals, each with its code; none enrolls anything.
	refuse := func(id string, key crypto.Signer, chain [][]byte, extra map[string]any, status int, want string) {
		t.Helper()
		req := map[string]any{"device_id": id, "csr": csrFor(t, key, id), "manufacturer_certificates": chain}
		for k, v := range extra {
			req[k] = v
		}
		code, b := e.enrollManufacturer(req)
		wantCode(t, code, b, status, want)
		code, b, _ = e.call(e.pool, "GET", "/api/v1/devices/"+id, e.admin, nil)
		wantCode(t, code, b, 404, "not-found")
	}
	k, _ := pkiKey(t)
	// Not from the manufacturer CA: another CA with the very same name.
	forger := newFactory(t, "Acme Devices Root CA")
	refuse("gw-0003", k, [][]byte{forger.device(k, pkix.Name{CommonName: "gw-0003"}, "acme-gw-rev2", year)}, nil, 401, "manufacturer-unknown-ca")
	// The intermediate left out.
	refuse("gw-0003", k, [][]byte{line.device(k, pkix.Name{CommonName: "gw-0003"}, "acme-gw-rev2", year)}, nil, 401, "manufacturer-unknown-ca")
	// Expired.
	refuse("gw-0003", k, [][]byte{acme.device(k, pkix.Name{CommonName: "gw-0003"}, "acme-gw-rev2", time.Now().Add(-time.Hour))}, nil, 401, "manufacturer-cert-expired")
	// Names another device.
	refuse("gw-0003", k, [][]byte{acme.device(k, pkix.Name{CommonName: "gw-0004"}, "acme-gw-rev2", year)}, nil, 403, "device-id-mismatch")
	refuse("gw-0003", k, [][]byte{acme.device(k, pkix.Name{CommonName: "gw-0003", SerialNumber: "gw-0004"}, "acme-gw-rev2", year)}, nil, 403, "device-id-mismatch")
	// A genuine certificate copied by someone without its key.
	other, _ := pkiKey(t)
	refuse("gw-0003", other, [][]byte{acme.device(k, pkix.Name{CommonName: "gw-0003"}, "acme-gw-rev2", year)}, nil, 401, "manufacturer-key-mismatch")
	// Hardware ids that disagree, or none at all.
	refuse("gw-0003", k, [][]byte{acme.device(k, pkix.Name{CommonName: "gw-0003"}, "acme-gw-rev2", year)}, map[string]any{"hardware": "acme-gw-rev9"}, 403, "hardware-mismatch")
	refuse("gw-0003", k, [][]byte{acme.device(k, pkix.Name{CommonName: "gw-0003"}, "", year)}, nil, 400, "bad-hardware")
	// Malformed chains, a token as well, a CA as the leaf.
	refuse("gw-0003", k, [][]byte{[]byte("not a certificate")}, nil, 400, "bad-manufacturer-cert")
	refuse("gw-0003", k, [][]byte{}, nil, 400, "bad-manufacturer-cert")
	refuse("gw-0003", k, [][]byte{line.cert.Raw}, nil, 400, "bad-manufacturer-cert")
	refuse("gw-0003", k, [][]byte{acme.device(k, pkix.Name{CommonName: "gw-0003"}, "acme-gw-rev2", year)}, map[string]any{"token": e.enrollToken("acme-gw-rev2", 60)}, 400, "bad-enrollment")

	// Accepted enrollments are audited, and refusals once the
	// certificate chain and key were accepted (device-exists,
	// hardware-mismatch, bad-hardware), with the manufacturer certificate
	// as the actor; refusals before that are only counted.
	var ok, refused int
	for _, a := range e.audit() {
		if a.Action != "enroll" {
			continue
		}
		if !strings.HasPrefix(a.Actor, "manufacturer-cert:") {
			t.Errorf("enrollment audited with actor %q", a.Actor)
		}
		switch {
		case a.Outcome == "ok" && a.Detail["method"] == "manufacturer-ca" && a.Detail["manufacturer_issuer"] != "" && a.Detail["serial"] != "":
			ok++
		case a.Outcome == "refused" && a.Detail["code"] != "":
			refused++
		}
	}
	if ok != 2 || refused != 3 {
		t.Fatalf("audited %d manufacturer enrollments and %d refusals, want 2 and 3", ok, refused)
	}
}

func TestManufacturerEnrollmentNotConfigured(t *testing.T) {
	acme := newFactory(t, "Acme Devices Root CA")
	e := newTLSEnv(t)
	key, _ := pkiKey(t)
	leaf := acme.device(key, pkix.Name{CommonName: "gw-0001"}, "acme-gw-rev2", time.Now().Add(time.Hour))
	code, b := e.enrollManufacturer(map[string]any{"device_id": "gw-0001", "csr": csrFor(t, key, "gw-0001"), "manufacturer_certificates": [][]byte{leaf}})
	wantCode(t, code, b, 403, "no-manufacturer-ca")
	// Token enrollment is unaffected; a hardware id given with a token is
	// the device's, and must be the token's.
	code, b = e.enrollManufacturer(map[string]any{"device_id": "gw-0001", "csr": csrFor(t, key, "gw-0001"), "token": e.enrollToken("acme-gw-rev2", 60), "hardware": "other"})
	wantCode(t, code, b, 422, "wrong-hardware")
	if c, code, b := e.enroll("gw-0001", e.enrollToken("acme-gw-rev2", 60)); c == nil {
		t.Fatalf("%d %s", code, b)
	}
}
