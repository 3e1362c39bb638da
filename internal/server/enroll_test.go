package server_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/pki"
)

// enrollAs enrolls with a token, naming the device's hardware id ("" for
// an agent that does not send it).
func (e *tlsEnv) enrollAs(id, token, hw string) (*tls.Certificate, int, []byte) {
	e.t.Helper()
	key, _ := pki.GenerateDeviceKey()
	csr, err := pki.NewDeviceCSR(key, id)
	if err != nil {
		e.t.Fatal(err)
	}
	req := map[string]any{"token": token, "device_id": id, "csr": csr}
	if hw != "" {
		req["hardware"] = hw
	}
	code, b, err := e.call(e.pool, "POST", "/api/v1/enroll", "", req)
	if err != nil || code != 201 {
		return nil, code, b
	}
	var out struct{ Certificate string }
	json.Unmarshal(b, &out)
	keyPEM, _ := pki.MarshalKeyPEM(key)
	cert, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return &cert, code, b
}

// Anyone can call the enrollment endpoint. Before a credential is
// accepted, refusals are counted (metrics) and logged at a bounded rate,
// never written to the audit log, and they do not tell whether a device
// id exists. No audit entry's actor is a name the client chose.
func TestEnrollmentRefusalsBeforeAuthentication(t *testing.T) {
	e := newTLSEnv(t)
	if c, code, b := e.enroll("gw-1", e.enrollToken("acme-gw-rev2", 600)); c == nil {
		t.Fatalf("enroll: %d %s", code, b)
	}
	used := e.enrollToken("acme-gw-rev2", 600)
	if c, code, b := e.enroll("gw-2", used); c == nil {
		t.Fatalf("enroll: %d %s", code, b)
	}
	before := e.audit()

	// A bad, a used token: the same answer for an enrolled id and for a
	// free one (before, an enrolled id answered 409 device-exists).
	for _, tok := range []string{"rmp_guess", used} {
		_, code1, b1 := e.enroll("gw-1", tok)
		_, code2, b2 := e.enroll("gw-free", tok)
		if code1 != 401 || code1 != code2 || !bytes.Equal(b1, b2) {
			t.Fatalf("token %s: enrolled id %d %s, free id %d %s", tok, code1, b1, code2, b2)
		}
	}
	// Attacker-chosen text and a flood of attempts.
	for i := range 50 {
		e.enroll("evil-"+strings.Repeat("x", i), "rmp_guess")
	}
	code, b := e.send(e.pool, "POST", "/api/v1/enroll", "", `{"token":"rmp_x","device_id":"admin\nroot","csr":""}`)
	refused(t, code, b, 400, "bad-device-id")
	code, b = e.send(e.pool, "POST", "/api/v1/enroll", "", `{"bogus":1}`)
	refused(t, code, b, 400, "bad-json")

	after := e.audit()
	if len(after) != len(before) {
		for _, a := range after[len(before):] {
			t.Logf("%+v", a)
		}
		t.Fatalf("%d audit entries from refused enrollments", len(after)-len(before))
	}
	b = e.mustCall(e.pool, "GET", "/metrics", e.admin, nil, 200)
	for _, m := range []string{`rampart_verification_refusals_total{reason="bad-token"} 52`, `rampart_verification_refusals_total{reason="token-used"} 2`, `rampart_verification_refusals_total{reason="bad-device-id"} 1`, `rampart_verification_refusals_total{reason="bad-json"} 1`} {
		if !bytes.Contains(b, []byte(m)) {
			t.Errorf("metrics lack %s:\n%s", m, grepLines(b, "reason="))
		}
	}
	// Accepted enrollments name the token, as its creation did.
	created := map[string]bool{}
	var enrolled []audit.Entry
	for _, a := range after {
		if a.Action == "create-enroll-token" {
			created[a.Detail["token_id"]] = true
		}
		if a.Action == "enroll" {
			enrolled = append(enrolled, a)
		}
	}
	if len(enrolled) != 2 {
		t.Fatalf("%d enrollments audited", len(enrolled))
	}
	for _, a := range enrolled {
		id, ok := strings.CutPrefix(a.Actor, "enroll-token:")
		if !ok || len(id) != 16 || !created[id] || a.Detail["token_id"] != id {
			t.Fatalf("enrollment audited with actor %q: %+v", a.Actor, a)
		}
	}
}

// The device says its hardware id when it enrolls: a token made for other
// hardware is refused before it is spent and before the device id is
// taken, so the device can enroll with the right token at once.
func TestEnrollmentChecksHardwareBeforeSpending(t *testing.T) {
	e := newTLSEnv(t)
	tok := e.enrollToken("acme-gw-rev2", 600)
	_, code, b := e.enrollAs("gw-1", tok, "acme-gw-rev3")
	refused(t, code, b, 422, "wrong-hardware", "this enrollment token is for hardware acme-gw-rev2, the device is acme-gw-rev3", "not spent")
	code, b, _ = e.call(e.pool, "GET", "/api/v1/devices/gw-1", e.admin, nil)
	refused(t, code, b, 404, "not-found")
	// The right token enrolls the same id; the first token is unspent.
	if c, code, b := e.enrollAs("gw-1", e.enrollToken("acme-gw-rev3", 600), "acme-gw-rev3"); c == nil {
		t.Fatalf("enroll with the right token: %d %s", code, b)
	}
	if c, code, b := e.enrollAs("gw-2", tok, "acme-gw-rev2"); c == nil {
		t.Fatalf("the refused token was spent: %d %s", code, b)
	}
	// An agent that does not send its hardware id still enrolls.
	if c, code, b := e.enrollAs("gw-3", e.enrollToken("acme-gw-rev2", 600), ""); c == nil {
		t.Fatalf("enroll without hardware: %d %s", code, b)
	}
	code, b = e.send(e.pool, "POST", "/api/v1/enroll", "", `{"token":"rmp_x","device_id":"gw-4","csr":"","hardware":"bad hw"}`)
	refused(t, code, b, 400, "bad-hardware")
	// The refusal after the token was accepted is audited, naming the token.
	var seen bool
	for _, a := range e.audit() {
		if a.Action == "enroll" && a.Outcome == "refused" {
			if a.Detail["code"] != "wrong-hardware" || !strings.HasPrefix(a.Actor, "enroll-token:") || a.Subject != "gw-1" {
				t.Fatalf("%+v", a)
			}
			seen = true
		}
	}
	if !seen {
		t.Fatal("the wrong-hardware refusal is not audited")
	}
}

// An operator can remove a device record: the device's certificate is
// refused from then on (at the handshake, and on a connection opened
// before), the removal is audited, and the id can enroll again.
func TestRemoveDevice(t *testing.T) {
	e := newTLSEnv(t)
	e.publish("acme-gw-rev2")
	cert, code, b := e.enroll("gw-1", e.enrollToken("acme-gw-rev2", 600))
	if cert == nil {
		t.Fatalf("enroll: %d %s", code, b)
	}
	dev := e.client(cert)
	e.mustCall(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"}, 204)
	ops, aud := e.token("ops", "operator"), e.token("aud", "auditor")
	e.mustCall(e.pool, "POST", "/api/v1/deploy", ops, map[string]string{"target": "acme-gw/1.0.0", "hardware": "acme-gw-rev2"}, 200)

	code, b, _ = e.call(e.pool, "DELETE", "/api/v1/devices/gw-1", aud, nil)
	refused(t, code, b, 403, "forbidden")
	code, b, _ = e.call(e.pool, "DELETE", "/api/v1/devices/nope", ops, nil)
	refused(t, code, b, 404, "not-found", "no device nope")
	e.mustCall(e.pool, "DELETE", "/api/v1/devices/gw-1", ops, nil, 204)
	code, b, _ = e.call(e.pool, "DELETE", "/api/v1/devices/gw-1", ops, nil)
	refused(t, code, b, 404, "not-found")
	code, b, _ = e.call(e.pool, "GET", "/api/v1/devices/gw-1", ops, nil)
	refused(t, code, b, 404, "not-found")

	// The connection opened before is refused at its next request, a new
	// one at the handshake.
	code, b, _ = e.call(dev, "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "downloading"})
	refused(t, code, b, 403, "device-revoked")
	if _, _, err := e.call(e.client(cert), "POST", "/api/v1/device/report", "", map[string]any{"counter": 3, "status": "downloading"}); err == nil {
		t.Fatal("a removed device's certificate was accepted")
	}

	// The id enrolls again, with nothing of the old record; the old
	// certificate stays refused, here and after a restart.
	cert2, code, b := e.enrollAs("gw-1", e.enrollToken("acme-gw-rev3", 600), "acme-gw-rev3")
	if cert2 == nil {
		t.Fatalf("re-enroll: %d %s", code, b)
	}
	e.mustCall(e.client(cert2), "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"}, 204)
	b = e.mustCall(e.pool, "GET", "/api/v1/devices/gw-1", ops, nil, 200)
	if !strings.Contains(string(b), `"hardware":"acme-gw-rev3"`) || !strings.Contains(string(b), `"assigned":""`) {
		t.Fatalf("re-enrolled: %s", b)
	}
	if _, _, err := e.call(e.client(cert), "POST", "/api/v1/device/report", "", map[string]any{"counter": 4, "status": "downloading"}); err == nil {
		t.Fatal("the removed certificate was accepted after re-enrollment")
	}
	e.close()
	e = openTLSEnv(t, e.dataDirPath, e.admin)
	t.Cleanup(e.close)
	if _, _, err := e.call(e.client(cert), "POST", "/api/v1/device/report", "", map[string]any{"counter": 5, "status": "downloading"}); err == nil {
		t.Fatal("the removed certificate was accepted after a restart")
	}
	e.mustCall(e.client(cert2), "POST", "/api/v1/device/report", "", map[string]any{"counter": 2, "status": "downloading"}, 204)

	var removal *audit.Entry
	for _, a := range e.audit() {
		if a.Action == "remove-device" && a.Outcome == "ok" {
			removal = &a
		}
	}
	if removal == nil || removal.Actor != "token:ops" || removal.Subject != "gw-1" || removal.Detail["hardware"] != "acme-gw-rev2" || removal.Detail["serial"] == "" {
		t.Fatalf("removal audited as %+v", removal)
	}
}

func grepLines(b []byte, sub string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
