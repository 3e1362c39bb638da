package server_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/api"
)

func (e *fleetEnv) roleToken(name, role string) string {
	var out api.TokenCreated
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/tokens", e.Admin, api.TokenRequest{Name: name, Role: role}, 201), &out)
	return out.Token
}

func (e *fleetEnv) tag(id string, set map[string]string) {
	e.t.Helper()
	e.Call(e.Pool, "POST", "/api/v1/devices/"+id+"/tags", e.Admin, api.TagsRequest{Set: set}, 200)
}

// hoursFromNow is a daily window that opens from hours from now on the
// test clock, for an hour.
func (e *fleetEnv) hoursFromNow(hours int) string {
	h := (e.clk.Now().Hour() + hours) % 24
	return fmt.Sprintf("daily %02d:00-%02d:00 UTC", h, (h+1)%24)
}

// A rollout's window holds its phase until it opens; a critical rollout
// bypasses it (after a second operator's approval).
func TestRolloutWindowHoldsPhase(t *testing.T) {
	e := newFleetEnv(t)
	e.enroll(ids("gw", 4)...)
	c := e.create(e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "1,100%", Soak: "0s", Window: e.hoursFromNow(2)})
	r := e.show(c.ID)
	if r.WindowOpen || r.WindowOpens == nil || r.Window == "" {
		t.Fatalf("window state %+v", r)
	}
	for _, id := range ids("gw", 4) {
		if got := e.checkIn(id); got != "" {
			t.Fatalf("%s offered %q outside the window", id, got)
		}
	}
	e.step()
	if r := e.show(c.ID); r.Phase != 1 || r.Counts.Downloading != 0 {
		t.Fatalf("promoted or offered outside the window: %+v", r)
	}
	// The window opens: the first phase's device is offered the release.
	e.clk.Add(r.WindowOpens.Sub(e.clk.Now()) + time.Minute)
	if r := e.show(c.ID); !r.WindowOpen {
		t.Fatalf("window not open at %s: %+v", e.clk.Now(), r)
	}
	offered := ""
	for _, id := range ids("gw", 4) {
		if e.checkIn(id) != "" {
			offered = id
		}
	}
	if offered == "" {
		t.Fatal("nothing offered inside the window")
	}
	e.install(offered)
	// The window closes with the phase's gate passed: the phase holds.
	e.clk.Add(time.Hour)
	e.step()
	if r := e.show(c.ID); r.Phase != 1 || r.WindowOpen {
		t.Fatalf("promoted outside the window: %+v", r)
	}
	e.clk.Add(23 * time.Hour)
	e.step()
	if r := e.show(c.ID); r.Phase != 2 {
		t.Fatalf("not promoted inside the window: %+v", r)
	}
}

func TestCriticalRolloutBypassesWindows(t *testing.T) {
	e := newFleetEnv(t)
	e.enroll("gw-1", "gw-2")
	e.tag("gw-2", map[string]string{"window": e.hoursFromNow(5)})
	alice, bob := e.token("alice"), e.token("bob")
	c := e.create(alice, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", Soak: "0s", Critical: true, Window: e.hoursFromNow(3)})
	if r := e.show(c.ID); r.State != "waiting-approval" || !r.WindowOpen {
		t.Fatalf("%+v", r)
	}
	e.Call(e.Pool, "POST", "/api/v1/rollouts/"+c.ID+"/approve", alice, nil, 403)
	e.Call(e.Pool, "POST", "/api/v1/rollouts/"+c.ID+"/approve", bob, nil, 200)
	for _, id := range []string{"gw-1", "gw-2"} {
		if got := e.checkIn(id); got == "" {
			t.Errorf("critical rollout not offered to %s outside the windows", id)
		}
	}
}

// A device's own window (its tag "window") holds it; a bad window tag is
// refused.
func TestDeviceWindowTag(t *testing.T) {
	e := newFleetEnv(t)
	e.enroll("gw-1", "gw-2")
	e.tag("gw-2", map[string]string{"window": e.hoursFromNow(1)})
	b := e.Call(e.Pool, "POST", "/api/v1/devices/gw-1/tags", e.Admin, api.TagsRequest{Set: map[string]string{"window": "Mon 01:00-01:00 UTC"}}, 400)
	if !strings.Contains(string(b), `"code":"bad-tag"`) || !strings.Contains(string(b), "never opens") {
		t.Errorf("%s", b)
	}
	e.create(e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%"})
	if got := e.checkIn("gw-1"); got == "" {
		t.Error("gw-1 (no window) not offered")
	}
	if got := e.checkIn("gw-2"); got != "" {
		t.Errorf("gw-2 offered %q outside its window", got)
	}
	e.clk.Add(time.Hour - time.Duration(e.clk.Now().Minute())*time.Minute + time.Minute)
	if got := e.checkIn("gw-2"); got == "" {
		t.Error("gw-2 not offered inside its window")
	}
}

func TestRolloutWindowBadInput(t *testing.T) {
	e := newFleetEnv(t)
	e.enroll("gw-1")
	for _, c := range []struct{ window, text string }{
		{"Mon-Fri 01:00-01:00 Europe/Berlin", "never opens"},
		{"Mon-Fri 01:00-05:00 Europe/Berln", `unknown time zone \"Europe/Berln\"`},
		{"Mon-Fry 01:00-05:00 UTC", `\"Fry\" is not a day`},
		{"Mon-Fri 01:00-25:00 UTC", `the end \"25:00\" is not a time`},
	} {
		b := e.Call(e.Pool, "POST", "/api/v1/rollouts", e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", Window: c.window}, 400)
		if !strings.Contains(string(b), `"code":"bad-window"`) || !strings.Contains(string(b), c.text) {
			t.Errorf("%q: %s, want %s", c.window, b, c.text)
		}
	}
}

func TestPolicyAPI(t *testing.T) {
	e := newFleetEnv(t)
	e.enroll("gw-lab", "gw-risk", "gw-plain")
	e.tag("gw-lab", map[string]string{"site": "lab", "risk": "high"})
	e.tag("gw-risk", map[string]string{"risk": "high"})
	op := e.roleToken("olga", "operator")
	aud := e.roleToken("ada", "auditor")

	// Nothing set yet: version 0, no rules.
	var p api.Policy
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/policy", aud, nil, 200), &p)
	if p.Version != 0 || len(p.Rules) != 0 || p.Default != "allow" {
		t.Fatalf("%+v", p)
	}
	// A rule naming an unknown field is refused with its line and column.
	bad, _ := os.ReadFile("../fleet/testdata/policy/unknown-field.yaml")
	b := e.Call(e.Pool, "POST", "/api/v1/policy", op, api.PolicySet{Source: string(bad)}, 400)
	if !strings.Contains(string(b), `"code":"bad-policy"`) || !strings.Contains(string(b), "policy 3:17: rule typo: undeclared reference to 'device.hardwre'") {
		t.Fatalf("%s", b)
	}
	// An auditor may not set it.
	e.Call(e.Pool, "POST", "/api/v1/policy", aud, api.PolicySet{Source: "rules: []\n"}, 403)
	// Unknown members and oversized bodies are refused.
	e.Call(e.Pool, "POST", "/api/v1/policy", op, map[string]string{"source": "", "sauce": ""}, 400)
	b = e.Call(e.Pool, "POST", "/api/v1/policy", op, api.PolicySet{Source: strings.Repeat("#", 70<<10)}, 400)
	if !strings.Contains(string(b), "more than 65536") {
		t.Errorf("%s", b)
	}

	src, err := os.ReadFile("../fleet/testdata/policy/examples.yaml")
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/policy", op, api.PolicySet{Source: string(src)}, 200), &p)
	if p.Version != 1 || len(p.Rules) != 3 || p.SetBy != "token:olga" || p.Rules[1].Name != "high-risk-needs-three-signers" || p.Rules[1].Effect != "deny" {
		t.Fatalf("%+v", p)
	}
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/policy", aud, nil, 200), &p)
	if p.Version != 1 || p.Source != string(src) {
		t.Fatalf("%+v", p)
	}

	explain := func(dev, rel string, want int) api.PolicyExplanation {
		t.Helper()
		var x api.PolicyExplanation
		json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/policy/explain?device="+dev+"&release="+rel, aud, nil, want), &x)
		return x
	}
	// The test repository's product role has fewer than three signers.
	x := explain("gw-risk", "acme-gw/2.0.0", 200)
	if x.Allowed || x.Decision != "deny" || x.Rule != "high-risk-needs-three-signers" || !strings.Contains(x.Reason, "line 9") ||
		len(x.Trace) != 2 || x.Input["device.risk"] != "high" || x.PolicyVersion != 1 || x.Release != "acme-gw/2.0.0/fw.img" {
		t.Errorf("%+v", x)
	}
	if x := explain("gw-lab", "acme-gw/2.0.0", 200); !x.Allowed || x.Rule != "lab-takes-anything" {
		t.Errorf("%+v", x)
	}
	if x := explain("gw-plain", "acme-gw/2.0.0", 200); !x.Allowed || x.Rule != "" || !strings.Contains(x.Reason, "default (allow)") {
		t.Errorf("%+v", x)
	}
	if b := e.Call(e.Pool, "GET", "/api/v1/policy/explain?device=nope&release=acme-gw/2.0.0", aud, nil, 404); !strings.Contains(string(b), "no device nope") {
		t.Errorf("%s", b)
	}
	if b := e.Call(e.Pool, "GET", "/api/v1/policy/explain?device=gw-lab&release=acme-gw/9.9.9", aud, nil, 404); !strings.Contains(string(b), "unknown-release") {
		t.Errorf("%s", b)
	}
	e.Call(e.Pool, "GET", "/api/v1/policy/explain?device=gw-lab", aud, nil, 400)
	e.Call(e.Pool, "GET", "/api/v1/policy/explain?device=gw-lab&release=acme-gw/2.0.0&critical=maybe", aud, nil, 400)

	// A rollout does not offer the release to the device the policy
	// denies, and counts it.
	c := e.create(op, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%"})
	for id, offered := range map[string]bool{"gw-lab": true, "gw-risk": false, "gw-plain": true} {
		if got := e.checkIn(id); (got != "") != offered {
			t.Errorf("%s: assigned %q, want offered %v", id, got, offered)
		}
	}
	r := e.show(c.ID)
	if r.Counts.PolicyDenied != 1 || r.Counts.Downloading != 2 || r.Counts.Pending != 0 || len(r.FailureReasons) != 0 {
		t.Errorf("%+v", r.Counts)
	}
	// A new policy without the rule lets it through at its next check-in.
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/policy", op, api.PolicySet{Source: ""}, 200), &p)
	if p.Version != 2 || len(p.Rules) != 0 {
		t.Fatalf("%+v", p)
	}
	if got := e.checkIn("gw-risk"); got == "" {
		t.Error("not offered after the policy was cleared")
	}
	// Both changes and the refusal are audited.
	audit := string(e.Call(e.Pool, "GET", "/api/v1/audit", e.Admin, nil, 200))
	if strings.Count(audit, `"action":"set-policy"`) != 4 || !strings.Contains(audit, `"outcome":"refused"`) {
		t.Errorf("audit: %s", audit)
	}
}
