package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// send posts a raw body, as a hostile client would write it.
func (e *tlsEnv) send(c *http.Client, method, path, token, body string) (int, []byte) {
	e.t.Helper()
	code, b, err := e.callRaw(c, method, path, token, []byte(body))
	if err != nil {
		e.t.Fatal(err)
	}
	return code, b
}

// refused checks a refusal precisely: status, code, and every part of
// the message.
func refused(t *testing.T, code int, body []byte, status int, wantCode string, msg ...string) {
	t.Helper()
	var out struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &out); err != nil || code != status || out.Error.Code != wantCode {
		t.Fatalf("got %d %s, want %d %s", code, body, status, wantCode)
	}
	for _, m := range msg {
		if !strings.Contains(out.Error.Message, m) {
			t.Fatalf("message %q does not say %q", out.Error.Message, m)
		}
	}
}

// Go's decoder takes the last of two equal keys and matches keys
// case-insensitively: either would let {"role":"auditor",...} create an
// admin token. Every JSON body is parsed strictly instead.
func TestJSONBodiesAreStrict(t *testing.T) {
	e := newTLSEnv(t)
	for _, c := range []struct{ body, msg string }{
		{`{"name":"x1","role":"auditor","role":"admin"}`, `member "role" appears twice`},
		{`{"name":"x2","role":"auditor","Role":"admin"}`, `unknown member "Role": member names are case-sensitive, the field is "role"`},
		{`{"name":"x3","ROLE":"admin","role":"auditor"}`, `unknown member "ROLE"`},
		{`{"name":"x4","r\u006fle":"admin","role":"auditor"}`, `member "role" appears twice`},
		{`{"name":"x5","role":"auditor","admin":true}`, `unknown member "admin"`},
		{`{"name":"x6","role":"auditor"} {"role":"admin"}`, `malformed JSON`},
	} {
		code, b := e.send(e.pool, "POST", "/api/v1/tokens", e.admin, c.body)
		refused(t, code, b, 400, "bad-json", c.msg)
	}
	if b := e.mustCall(e.pool, "GET", "/api/v1/tokens", e.admin, nil, 200); strings.Contains(string(b), `"name":"x`) {
		t.Fatalf("a refused body created a token: %s", b)
	}
	// Nested members too (a push's roles), and on every route.
	code, b := e.send(e.pool, "POST", "/api/v1/repo/push", e.admin, `{"roles":{"acme-gw":"AA==","acme-gw":"AQ=="}}`)
	refused(t, code, b, 400, "bad-json", `member "roles.acme-gw" appears twice`)
	code, b = e.send(e.pool, "POST", "/api/v1/tokens/admin/role", e.admin, `{"role":"admin","Role":"auditor"}`)
	refused(t, code, b, 400, "bad-json", `"Role"`)
	code, b = e.send(e.pool, "POST", "/api/v1/deploy", e.admin, `{"target":"acme-gw/1.0.0","hardware":"a","Hardware":"b"}`)
	refused(t, code, b, 400, "bad-json", `"Hardware"`)
	code, b = e.send(e.pool, "POST", "/api/v1/devices/tokens", e.admin, `{"hardware":"acme-gw-rev2","hardware":"other"}`)
	refused(t, code, b, 400, "bad-json", `"hardware" appears twice`)
	code, b = e.send(e.pool, "POST", "/api/v1/enroll", "", `{"token":"rmp_x","device_id":"gw-1","device_id":"gw-2","csr":""}`)
	refused(t, code, b, 400, "bad-json", `"device_id" appears twice`)
	code, b = e.send(e.pool, "POST", "/api/v1/director/root", e.admin, `{"roots":[],"Roots":["AA=="]}`)
	refused(t, code, b, 400, "bad-json", `"Roots"`)
}

// ttl_seconds is 1 to 2,592,000 when given; left out, it is 24 h.
func TestEnrollTokenTTL(t *testing.T) {
	e := newTLSEnv(t)
	for _, ttl := range []string{"0", "-1", "2592001", "9223372036854775807"} {
		code, b := e.send(e.pool, "POST", "/api/v1/devices/tokens", e.admin, `{"hardware":"acme-gw-rev2","ttl_seconds":`+ttl+`}`)
		refused(t, code, b, 400, "bad-ttl", "between 1 and 2592000, not "+ttl)
	}
	code, b := e.send(e.pool, "POST", "/api/v1/devices/tokens", e.admin, `{"hardware":"acme-gw-rev2","ttl_seconds":9223372036854775808}`)
	refused(t, code, b, 400, "bad-json", `member "ttl_seconds"`, "out of range")
	for ttl, want := range map[string]time.Duration{`,"ttl_seconds":1`: time.Second, `,"ttl_seconds":2592000`: 30 * 24 * time.Hour, ``: 24 * time.Hour} {
		code, b := e.send(e.pool, "POST", "/api/v1/devices/tokens", e.admin, `{"hardware":"acme-gw-rev2"`+ttl+`}`)
		var out struct{ Expires time.Time }
		if code != 201 || json.Unmarshal(b, &out) != nil || !out.Expires.Equal(e.now.Add(want)) {
			t.Fatalf("ttl %q: %d %s, want expiry in %v", ttl, code, b, want)
		}
	}
}

// A deployment names a release: PRODUCT/VERSION or the full target path.
// A bare product used to deploy whichever release was its only one.
func TestDeployNeedsAVersion(t *testing.T) {
	e := newTLSEnv(t)
	e.publish("acme-gw-rev2")
	for _, target := range []string{"acme-gw", "acme-gw/", "acme-gw/1.0.0/", "acme-gw/1.0.0/fw.img/x", "acme-gw/not-semver"} {
		code, b, _ := e.call(e.pool, "POST", "/api/v1/deploy", e.admin, map[string]string{"target": target, "hardware": "acme-gw-rev2"})
		refused(t, code, b, 400, "bad-target", fmt.Sprintf("%q is not PRODUCT/VERSION or PRODUCT/VERSION/FILE", target))
	}
	for _, target := range []string{"acme-gw/1.0.0", "acme-gw/1.0.0/fw.img"} {
		e.mustCall(e.pool, "POST", "/api/v1/deploy", e.admin, map[string]string{"target": target, "hardware": "acme-gw-rev2"}, 200)
	}
}

// Report numbers that the store cannot hold are refused naming the
// member, never a 500; a counter cannot jump so far that the device could
// never report again; an "installed" report must match a published
// release and is otherwise refused and counted as an anomaly.
func TestReportsAreCheckedAgainstTheServer(t *testing.T) {
	e := newTLSEnv(t)
	e.publish("acme-gw-rev2") // acme-gw 1.0.0, security version 1
	cert, code, b := e.enroll("gw-1", e.enrollToken("acme-gw-rev2", 600))
	if cert == nil {
		t.Fatalf("enroll: %d %s", code, b)
	}
	dev := e.client(cert)
	report := func(body string) (int, []byte) { return e.send(dev, "POST", "/api/v1/device/report", "", body) }
	for _, c := range []struct{ body, msg string }{
		{`{"counter":9223372036854775808,"status":"downloading"}`, `member "counter": number 9223372036854775808 does not fit`},
		{`{"counter":18446744073709551615,"status":"downloading"}`, `member "counter"`},
		{`{"counter":18446744073709551616,"status":"downloading"}`, `member "counter"`},
		{`{"counter":-1,"status":"downloading"}`, `member "counter": -1 is out of range (1 to 9223372036854775807)`},
		{`{"counter":0,"status":"downloading"}`, `member "counter": 0 is out of range`},
		{`{"counter":1.5,"status":"downloading"}`, `member "counter"`},
		{`{"counter":1,"status":"installed","version":"1.0.0","security_version":9223372036854775808}`, `member "security_version": number 9223372036854775808`},
		{`{"counter":1,"status":"installed","version":"1.0.0","security_version":-1}`, `member "security_version": -1 is out of range`},
		{`{"counter":1,"status":"downloading","counter":2}`, `member "counter" appears twice`},
		{`{"counter":1,"Status":"installed","status":"downloading"}`, `unknown member "Status"`},
	} {
		code, b := report(c.body)
		refused(t, code, b, 400, "bad-json", c.msg)
	}

	// A counter far above the last one would lock the device out.
	code, b = report(`{"counter":9223372036854775807,"status":"downloading"}`)
	refused(t, code, b, 409, "counter-jump", "more than 1048576 above the last accepted counter 0")
	code, b = report(`{"counter":1048577,"status":"downloading"}`)
	refused(t, code, b, 409, "counter-jump")
	if code, b := report(`{"counter":1048576,"status":"downloading"}`); code != 204 {
		t.Fatalf("a counter within the step: %d %s", code, b)
	}

	// Installed releases are checked against the repository.
	code, b = report(`{"counter":1048577,"status":"installed","version":"9.9.9","security_version":1}`)
	refused(t, code, b, 422, "unknown-installed-release", "no published release of version 9.9.9 is for hardware acme-gw-rev2")
	code, b = report(`{"counter":1048577,"status":"installed","version":"1.0.0","security_version":7}`)
	refused(t, code, b, 422, "wrong-security-version", "has security version [1], not 7")
	var d struct {
		Anomalies   int    `json:"anomalies"`
		LastAnomaly string `json:"last_anomaly"`
		Version     string `json:"version"`
	}
	json.Unmarshal(e.mustCall(e.pool, "GET", "/api/v1/devices/gw-1", e.admin, nil, 200), &d)
	if d.Anomalies != 2 || d.LastAnomaly != "wrong-security-version" || d.Version != "" {
		t.Fatalf("device after two impossible reports: %+v", d)
	}
	// Refused reports spend no counter; a true one is recorded.
	if code, b := report(`{"counter":1048577,"status":"installed","version":"1.0.0","security_version":1}`); code != 204 {
		t.Fatalf("a true report: %d %s", code, b)
	}
	json.Unmarshal(e.mustCall(e.pool, "GET", "/api/v1/devices/gw-1", e.admin, nil, 200), &d)
	if d.Version != "1.0.0" || d.Anomalies != 2 {
		t.Fatalf("%+v", d)
	}
	// A release for other hardware is no release for this device.
	cert2, _, _ := e.enroll("other-1", e.enrollToken("other-hw", 600))
	code, b = e.send(e.client(cert2), "POST", "/api/v1/device/report", "", `{"counter":1,"status":"installed","version":"1.0.0","security_version":1}`)
	refused(t, code, b, 422, "unknown-installed-release", "for hardware other-hw")

	var anomalies int
	for _, a := range e.audit() {
		if a.Action == "report" && a.Outcome == "refused" && (a.Detail["code"] == "unknown-installed-release" || a.Detail["code"] == "wrong-security-version") {
			anomalies++
		}
	}
	if anomalies != 3 {
		t.Fatalf("%d anomalies audited, want 3", anomalies)
	}
	b = e.mustCall(e.pool, "GET", "/metrics", e.admin, nil, 200)
	for _, m := range []string{`rampart_verification_refusals_total{reason="unknown-installed-release"} 2`, `rampart_verification_refusals_total{reason="wrong-security-version"} 1`, `rampart_verification_refusals_total{reason="counter-jump"} 2`} {
		if !bytes.Contains(b, []byte(m)) {
			t.Errorf("metrics lack %s", m)
		}
	}
}
