package server_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// clock is the injectable clock of the rollout tests: they move it
// instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fleetEnv is a real server with enrolled devices that speak the
// device protocol: check in (fetch their director metadata), report.
type fleetEnv struct {
	*servertest.Env
	t       *testing.T
	clk     *clock
	devs    map[string]*http.Client
	counter map[string]int
}

const rolloutHW = "acme-gw-rev2"

func newFleetEnv(t *testing.T) *fleetEnv {
	clk := &clock{t: time.Now().UTC()}
	e := &fleetEnv{Env: servertest.New(t, servertest.WithNow(clk.Now)), t: t, clk: clk, devs: map[string]*http.Client{}, counter: map[string]int{}}
	e.Release("1.0.0", 1, rolloutHW)
	e.Release("2.0.0", 2, rolloutHW)
	return e
}

func (e *fleetEnv) enroll(ids ...string) {
	for _, id := range ids {
		var cert *tls.Certificate = e.Enroll(id, rolloutHW)
		e.devs[id] = e.Client(cert)
	}
}

// checkIn fetches the device's director targets (which decides its
// assignment) and returns what it is assigned.
func (e *fleetEnv) checkIn(id string) string {
	e.t.Helper()
	e.Call(e.devs[id], "GET", "/director/timestamp.json", "", nil, 200)
	var d api.Device
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/devices/"+id, e.Admin, nil, 200), &d)
	return d.Assigned
}

func (e *fleetEnv) report(id string, st api.ReportStatus, reason, version string, sv int64) {
	e.t.Helper()
	e.counter[id]++
	e.Call(e.devs[id], "POST", "/api/v1/device/report", "", api.ReportRequest{Counter: int64(e.counter[id]), Status: st, Reason: reason, Version: version, SecurityVersion: sv}, 204)
}

// install is what the agent reports for a good update: progress, then
// the confirmed boot.
func (e *fleetEnv) install(id string) {
	e.report(id, api.Downloading, "", "", 0)
	e.report(id, api.Installing, "", "", 0)
	e.report(id, api.Installed, "", "2.0.0", 2)
}

func (e *fleetEnv) create(token string, req api.RolloutRequest) api.RolloutCreated {
	e.t.Helper()
	var out api.RolloutCreated
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/rollouts", token, req, 201), &out)
	return out
}

func (e *fleetEnv) show(id string) api.Rollout {
	e.t.Helper()
	var out api.Rollout
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/rollouts/"+id, e.Admin, nil, 200), &out)
	return out
}

func (e *fleetEnv) step() {
	e.t.Helper()
	if err := e.Server.StepRollouts(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// A rollout through all its phases: each phase hands the release to the
// devices whose bucket it reaches (and only those), is held for its soak
// and promoted when its installs are confirmed; devices enrolled
// mid-rollout are picked up; installed counts only confirmed boots.
func TestRolloutThroughAllPhases(t *testing.T) {
	e := newFleetEnv(t)
	first := ids("gw", 60)
	e.enroll(first...)
	c := e.create(e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Select: `hardware == "` + rolloutHW + `"`, Phases: "10%,50%,100%", Soak: "30m", MinSuccess: 2, MaxFailureRate: "10%"})
	if c.Matched != 60 || c.BelowSecurityVersion != 0 || c.Note != "" {
		t.Fatalf("%+v", c)
	}
	all := first
	for phase, pct := range []int{10, 50, 100} {
		if phase == 1 {
			late := ids("late", 20) // enrolled mid-rollout
			e.enroll(late...)
			all = append(all, late...)
		}
		var in []string
		for _, id := range all {
			got := e.checkIn(id)
			want := fleet.Bucket(c.ID, id) < pct*fleet.Buckets/100
			if (got != "") != want {
				t.Fatalf("phase %d: %s (bucket %d) assigned %q", phase+1, id, fleet.Bucket(c.ID, id), got)
			}
			if want {
				in = append(in, id)
			}
		}
		r := e.show(c.ID)
		if r.Phase != phase+1 || r.State != "running" || r.Counts.Installed != 0 && phase == 0 {
			t.Fatalf("%+v", r)
		}
		// In flight from the moment the release was handed out.
		if inflight := r.Counts.Downloading; inflight+r.Counts.Installed != len(in) {
			t.Fatalf("phase %d: %d downloading + %d installed, want %d", phase+1, inflight, r.Counts.Installed, len(in))
		}
		for _, id := range in {
			if e.counter[id] == 0 {
				e.report(id, api.Downloading, "", "", 0)
				e.report(id, api.InstalledPendingReboot, "", "", 0)
			}
		}
		// Not installed until the confirmed boot.
		if r := e.show(c.ID); r.Counts.Installed != 0 && phase == 0 {
			t.Fatalf("installed before the confirmed boot: %+v", r.Counts)
		}
		for _, id := range in {
			if e.counter[id] == 2 {
				e.report(id, api.Installed, "", "2.0.0", 2)
			}
		}
		e.step() // the soak is not over
		if r := e.show(c.ID); r.Phase != phase+1 {
			t.Fatalf("promoted before the soak: %+v", r)
		}
		e.clk.Add(31 * time.Minute)
		e.step()
	}
	r := e.show(c.ID)
	if r.State != "completed" || r.Counts.Installed != 80 || r.Counts.Pending != 0 || r.Phases[2] != "100%" {
		t.Fatalf("%+v", r)
	}
}

// A release whose health check fails on 30% of the first phase's
// devices: the gate pauses the rollout with the reason, the failed
// devices are left on what they run (assignment cleared) and reported
// with their reason, and the next phase never starts.
func TestRolloutFailureRatePausesAtFirstGate(t *testing.T) {
	e := newFleetEnv(t)
	e.enroll(ids("gw", 60)...)
	c := e.create(e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Select: "", Phases: "50%,100%", Soak: "10m", MinSuccess: 10, MaxFailureRate: "2%"})
	var in []string
	for _, id := range ids("gw", 60) {
		if e.checkIn(id) != "" {
			in = append(in, id)
		}
	}
	failed := 0
	for i, id := range in {
		if i%10 < 3 {
			e.report(id, api.RolledBack, "health-check-failed", "", 0)
			failed++
		} else {
			e.install(id)
		}
	}
	e.step()
	r := e.show(c.ID)
	if r.State != "paused" || r.Phase != 1 || !strings.Contains(r.PausedReason, "gate: failure rate") || r.FailureReasons["health-check-failed"] != failed || r.Counts.RolledBack != failed {
		t.Fatalf("%+v", r)
	}
	// Reported with the reason, assignment cleared: they stay on what
	// they run.
	var d api.Device
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/devices/"+in[0], e.Admin, nil, 200), &d)
	if d.Assigned != "" || d.Reports[0].Reason != "health-check-failed" {
		t.Fatalf("%+v", r)
	}
	e.clk.Add(time.Hour)
	e.step()
	if r := e.show(c.ID); r.Phase != 1 || r.State != "paused" {
		t.Fatalf("a paused rollout moved: %+v", r)
	}
	// Nothing is offered while paused.
	for _, id := range ids("gw", 60) {
		if fleet.Bucket(c.ID, id) >= fleet.Buckets/2 {
			if got := e.checkIn(id); got != "" {
				t.Fatalf("%s offered %q by a paused rollout", id, got)
			}
		}
	}
	// Prometheus shows the open rollout, labelled by its id only (no
	// device), and forgets it once it is aborted.
	m := string(e.Call(e.Pool, "GET", "/metrics", e.Admin, nil, 200))
	for _, want := range []string{
		`rampart_rollout_info{release="acme-gw/2.0.0/fw.img",rollout="` + c.ID + `",state="paused"} 1`,
		`rampart_rollout_phase{rollout="` + c.ID + `"} 1`,
		fmt.Sprintf(`rampart_rollout_devices{rollout=%q,status="rolled-back"} %d`, c.ID, failed),
		fmt.Sprintf(`rampart_rollout_devices{rollout=%q,status="installed"} %d`, c.ID, len(in)-failed),
		`rampart_rollout_tamper_detections{class="mismatch",rollout="` + c.ID + `"} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s in\n%s", want, regexp.MustCompile(`(?m)^rampart_rollout_info.*$`).FindString(m))
		}
	}
	if !regexp.MustCompile(`rampart_rollout_update_success_ratio\{rollout="` + c.ID + `"\} 0\.`).MatchString(m) {
		t.Errorf("/metrics lacks the rollout's success ratio")
	}
	if regexp.MustCompile(`rampart_rollout_[a-z_]+\{[^}]*gw-`).MatchString(m) {
		t.Errorf("a device id in a rollout metric's labels")
	}
	e.Call(e.Pool, "POST", "/api/v1/rollouts/"+c.ID+"/abort", e.Admin, api.RolloutAction{Reason: "test"}, 200)
	e.clk.Add(time.Minute) // past the statistics' cache
	if m := string(e.Call(e.Pool, "GET", "/metrics", e.Admin, nil, 200)); strings.Contains(m, c.ID) {
		t.Errorf("the aborted rollout is still in /metrics")
	}
}

// Four eyes: a critical rollout waits for approval; its creator's is
// refused (403 self-approval, audited), another operator's is accepted.
// Promotion beyond --approve-after waits the same way.
func TestRolloutApprovals(t *testing.T) {
	e := newFleetEnv(t)
	e.enroll(ids("gw", 10)...)
	alice := e.token("alice")
	bob := e.token("bob")
	c := e.create(alice, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", Soak: "0s", Critical: true})
	if r := e.show(c.ID); r.State != "waiting-approval" || r.CreatedBy != "token:alice" {
		t.Fatalf("%+v", r)
	}
	if got := e.checkIn("gw-000"); got != "" {
		t.Fatalf("offered %q before approval", got)
	}
	b := e.Call(e.Pool, "POST", "/api/v1/rollouts/"+c.ID+"/approve", alice, nil, 403)
	if !strings.Contains(string(b), `"code":"self-approval"`) {
		t.Fatalf("%s", b)
	}
	var r api.Rollout
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/rollouts/"+c.ID+"/approve", bob, nil, 200), &r)
	if r.State != "running" || r.ApprovedBy != "token:bob" {
		t.Fatalf("%+v", r)
	}
	if got := e.checkIn("gw-000"); got == "" {
		t.Fatal("not offered after approval")
	}

	d := e.create(alice, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "1,100%", Soak: "0s", ApproveAfter: "1", MinSuccess: 1})
	for _, id := range ids("gw", 10) {
		if e.checkIn(id) != "" && e.counter[id] == 0 {
			e.install(id)
		}
	}
	e.step()
	if r := e.show(d.ID); r.State != "waiting-approval" || r.Phase != 1 || !strings.Contains(r.PausedReason, "needs the approval") {
		t.Fatalf("%+v", r)
	}
	e.Call(e.Pool, "POST", "/api/v1/rollouts/"+d.ID+"/approve", bob, nil, 200)
	e.step()
	if r := e.show(d.ID); r.Phase != 2 || r.State != "running" {
		t.Fatalf("%+v", r)
	}
}

func (e *fleetEnv) token(name string) string {
	var out api.TokenCreated
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/tokens", e.Admin, api.TokenRequest{Name: name, Role: "operator"}, 201), &out)
	return out.Token
}

// The concurrency limit counts a device from the hand-out to its final
// report; a device that failed twice cools down and holds no slot.
func TestRolloutConcurrencyAndCooldown(t *testing.T) {
	e := newFleetEnv(t)
	devs := ids("gw", 8)
	e.enroll(devs...)
	c := e.create(e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", MaxConcurrent: 2, MaxFailureRate: "100%"})
	var offered []string
	for _, id := range devs {
		if e.checkIn(id) != "" {
			offered = append(offered, id)
		}
	}
	if len(offered) != 2 || e.show(c.ID).Counts.Downloading != 2 {
		t.Fatalf("offered to %v with a limit of 2", offered)
	}
	bad := offered[0]
	// Fails once: offered again (a failed device is not dropped).
	e.report(bad, api.Failed, "write-error", "", 0)
	if got := e.checkIn(bad); got == "" {
		t.Fatal("a device that failed once is not offered the release again")
	}
	// Fails twice: cooling down, no slot held.
	e.report(bad, api.Failed, "write-error", "", 0)
	if got := e.checkIn(bad); got != "" {
		t.Fatalf("a device that failed twice is offered %q during its cool-down", got)
	}
	if r := e.show(c.ID); r.Counts.Downloading != 1 || r.Counts.Failed != 1 {
		t.Fatalf("%+v", r.Counts)
	}
	// Its slot went to another device.
	n := 0
	for _, id := range devs {
		if id != bad && id != offered[1] && e.checkIn(id) != "" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d devices took the freed slot", n)
	}
	// After the cool-down it is offered again (when a slot is free).
	e.clk.Add(fleet.Cooldown + time.Minute)
	e.install(offered[1])
	if got := e.checkIn(bad); got == "" {
		t.Fatal("not offered again after the cool-down")
	}
}

// A device that rolled back the release is not offered it again: its
// agent keeps the image as failed and would decline it without a
// report, so the device would count as in flight for ever and hold a
// concurrency slot.
func TestRolloutRolledBackNotReoffered(t *testing.T) {
	e := newFleetEnv(t)
	devs := ids("gw", 3)
	e.enroll(devs...)
	c := e.create(e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", MaxConcurrent: 1, MaxFailureRate: "100%"})
	var first string
	for _, id := range devs {
		if e.checkIn(id) != "" {
			first = id
		}
	}
	e.report(first, api.Downloading, "", "", 0)
	e.report(first, api.RolledBack, "health-check-failed", "", 0)
	if got := e.checkIn(first); got != "" {
		t.Fatalf("offered %q again after its rollback", got)
	}
	if r := e.show(c.ID); r.Counts.RolledBack != 1 || r.Counts.Downloading != 0 {
		t.Fatalf("%+v", r.Counts)
	}
	// The slot went to another device.
	n := 0
	for _, id := range devs {
		if id != first && e.checkIn(id) != "" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d devices took the freed slot", n)
	}
}

// Devices checking in at once are decided at once (the director
// handler runs per connection): the rollout's release hardware, read
// once and kept, is shared between them (a data race under -race before
// it was guarded).
func TestRolloutConcurrentDecisions(t *testing.T) {
	e := newFleetEnv(t)
	devs := ids("gw", 8)
	e.enroll(devs...)
	e.create(e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%"})
	var wg sync.WaitGroup
	for _, id := range devs {
		wg.Add(1)
		go func(c *http.Client) {
			defer wg.Done()
			resp, err := c.Get(e.TS.URL + "/director/timestamp.json")
			if err == nil {
				resp.Body.Close()
			}
		}(e.devs[id])
	}
	wg.Wait()
	for _, id := range devs {
		if got := e.checkIn(id); got == "" {
			t.Errorf("%s not offered", id)
		}
	}
}

// Bad input: each a precise 4xx.
func TestRolloutBadInput(t *testing.T) {
	e := newFleetEnv(t)
	e.enroll("gw-1")
	for _, c := range []struct {
		req        api.RolloutRequest
		status     int
		code, text string
	}{
		{api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "10%,5%,100%"}, 400, "bad-phases", "phase 2 (5%) is not above"},
		{api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "10%,50%"}, 400, "bad-phases", "the last phase must be 100%"},
		{api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "ten"}, 400, "bad-phases", "neither a percentage"},
		{api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", Select: `tags.site ==`}, 400, "bad-selector", "selector 1:13:"},
		{api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", Soak: "forever"}, 400, "bad-rollout", "soak"},
		{api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", MaxFailureRate: "2"}, 400, "bad-rollout", "max_failure_rate"},
		{api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "10%,100%", ApproveAfter: "20%"}, 400, "bad-rollout", "approve_after"},
		{api.RolloutRequest{Release: "acme-gw/9.9.9", Phases: "100%"}, 404, "unknown-release", "no published release"},
	} {
		b := e.Call(e.Pool, "POST", "/api/v1/rollouts", e.Admin, c.req, c.status)
		if !strings.Contains(string(b), `"code":"`+c.code+`"`) || !strings.Contains(string(b), c.text) {
			t.Errorf("%+v: %s, want %s %q", c.req, b, c.code, c.text)
		}
	}
	// A release below every matching device's security version.
	e.report("gw-1", api.Installed, "", "2.0.0", 2)
	b := e.Call(e.Pool, "POST", "/api/v1/rollouts", e.Admin, api.RolloutRequest{Release: "acme-gw/1.0.0", Phases: "100%"}, 422)
	if !strings.Contains(string(b), `"code":"below-security-version"`) || !strings.Contains(string(b), "all 1 devices") {
		t.Errorf("%s", b)
	}
	// A selector matching no device: accepted, said plainly.
	c := e.create(e.Admin, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", Select: `tags.site == "mars"`})
	if c.Matched != 0 || !strings.Contains(c.Note, "picks no device") {
		t.Errorf("%+v", c)
	}
	e.Call(e.Pool, "POST", "/api/v1/rollouts/"+c.ID+"/abort", e.Admin, api.RolloutAction{Reason: "test"}, 200)
	b = e.Call(e.Pool, "POST", "/api/v1/rollouts/"+c.ID+"/resume", e.Admin, nil, 409)
	if !strings.Contains(string(b), `"code":"rollout-state"`) || !strings.Contains(string(b), "aborted") {
		t.Errorf("%s", b)
	}
	b = e.Call(e.Pool, "POST", "/api/v1/rollouts/ro-nope/pause", e.Admin, nil, 404)
	if !strings.Contains(string(b), "no rollout ro-nope") {
		t.Errorf("%s", b)
	}
	e.Call(e.Pool, "GET", "/api/v1/rollouts/ro-nope", e.Admin, nil, 404)
	e.Call(e.Pool, "POST", "/api/v1/rollouts/"+c.ID+"/explode", e.Admin, nil, 404)
	var l api.RolloutList
	json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/rollouts", e.Admin, nil, 200), &l)
	if len(l.Rollouts) != 1 || l.Rollouts[0].State != "aborted" {
		t.Errorf("%+v", l)
	}
}
