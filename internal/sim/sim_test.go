package sim_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/sim"
	"github.com/rampartfw/rampart/internal/syncbuf"
)

const hw = "acme-gw-rev2"

// waitFor polls the simulation until cond holds, failing the test after
// the timeout with the last report.
func waitFor(t *testing.T, s *sim.Sim, runErr <-chan error, what string, timeout time.Duration, cond func(*sim.Report) bool) *sim.Report {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-runErr:
			t.Fatalf("%s: the simulation did not start: %v", what, err)
		default:
		}
		r := s.Snapshot()
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			var b bytes.Buffer
			r.WriteText(&b)
			for _, d := range r.PerDevice {
				b.WriteString(strings.Join([]string{d.ID, d.Fault.String(), d.State, d.Release, d.Reason}, " ") + "\n")
			}
			t.Fatalf("%s: not reached in %s:\n%s", what, timeout, b.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// publishedServer starts a server whose image repository is published
// (root and the product's delegation, as an operator does before any
// device exists), and writes its CA certificate for the simulator.
func publishedServer(t *testing.T) (e *servertest.Env, caFile string) {
	t.Helper()
	e = servertest.New(t)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, e.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Repo.Sign(servertest.Product, e.Rel); err != nil {
		t.Fatal(err)
	}
	if err := e.PushStaged(nil); err != nil {
		t.Fatal(err)
	}
	return e, caFile
}

// runSim runs s until the test ends; the channel gets Run's error if it
// fails to start.
func runSim(t *testing.T, s *sim.Sim) <-chan error {
	failed := make(chan error, 1)
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		if _, err := s.Run(context.Background()); err != nil {
			failed <- err
		}
	}()
	// Wait for Run to return: the check-ins under way at Stop still write
	// in the devices' directories, and t.TempDir's removal, which runs
	// after this cleanup, failed on a directory one of them had just
	// written to ("directory not empty").
	t.Cleanup(func() { s.Stop(); <-returned })
	return failed
}

// A fleet of 50 simulated devices, each the real agent enrolled with its
// own certificate against a real server over TLS, converges to a deployed
// release, and each fault knob has its effect: fail-health devices roll
// back and say why, power-cut devices come back booting a verified image
// and finish, tampered devices refuse the chunk as a mismatch with their
// running slot untouched and then converge, dropped transfers are retried.
func TestFleetConvergesUnderFaults(t *testing.T) {
	e, ca := publishedServer(t)
	const n = 50
	live := &syncbuf.Buffer{}
	s, err := sim.New(sim.Config{
		Server: e.TS.URL, CA: ca, Token: e.Admin, Devices: n, Hardware: hw,
		FailHealth: 0.1, PowerCut: 0.1, Tamper: 0.1, Drop: 0.1, Skew: time.Minute,
		Poll: 300 * time.Millisecond, Workers: 8, SlotSize: 64 << 10, Dir: t.TempDir(), Seed: 7,
		Live: live, LiveEvery: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *sim.Report, 1)
	failed := make(chan error, 1)
	go func() {
		r, err := s.Run(ctx)
		if err != nil {
			failed <- err
		}
		done <- r
	}()
	waitFor(t, s, failed, "every device enrolled and checking in", 3*time.Minute, func(r *sim.Report) bool {
		return r.ByState[sim.StateIdle] == n
	})

	// One chunk (the default chunk size is 1 MiB): small, as the slots.
	img := make([]byte, 40<<10+3)
	rand.Read(img)
	e.ReleaseImage("1.0.0", 1, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)

	faulty := func(r *sim.Report, f sim.Fault) []sim.DeviceReport {
		var out []sim.DeviceReport
		for _, d := range r.PerDevice {
			if d.Fault == f {
				out = append(out, d)
			}
		}
		return out
	}
	r := waitFor(t, s, failed, "every device settled on the release or rolled back", 5*time.Minute, func(r *sim.Report) bool {
		if r.Errors > 0 {
			return true
		}
		for _, d := range r.PerDevice {
			switch {
			case d.Fault == sim.FailHealth && d.State != sim.StateRolledBack:
				return false
			case d.Fault == sim.PowerCut && !d.Survived:
				return false
			case d.Fault != sim.FailHealth && d.Fault != sim.PowerCut && d.State != sim.StateUpToDate:
				return false
			}
		}
		return true
	})
	s.Stop()
	final := <-done
	if r.Errors > 0 || final.Errors > 0 {
		t.Fatalf("errors: %v", final.ErrorSamples)
	}
	r = final

	if got := faulty(r, sim.FailHealth); len(got) != 5 {
		t.Fatalf("%d fail-health devices, want 5", len(got))
	}
	for _, d := range faulty(r, sim.FailHealth) {
		if d.State != sim.StateRolledBack || d.Release != "factory" || d.Reason != "health-check-failed" {
			t.Errorf("fail-health %s: %s on %s (%s); want rolled back to the factory image for health-check-failed", d.ID, d.State, d.Release, d.Reason)
		}
	}
	if r.RolledBack != 5 {
		t.Errorf("%d rollbacks, want 5", r.RolledBack)
	}

	cut := faulty(r, sim.PowerCut)
	if len(cut) != 5 || r.PowerCuts != 5 || r.PowerCutsSurvived != 5 {
		t.Errorf("power cuts: %d devices, %d cuts, %d survived; want 5 each", len(cut), r.PowerCuts, r.PowerCutsSurvived)
	}
	converged := 0
	for _, d := range cut {
		switch {
		case d.PowerCuts != 1 || !d.Survived:
			t.Errorf("power-cut %s: %d cuts, survived %v", d.ID, d.PowerCuts, d.Survived)
		case d.State == sim.StateUpToDate && d.Release == "1.0.0":
			converged++
		case d.State == sim.StateRolledBack && d.Reason == "trial-boot-failed":
			// The cut hit the trial boot before its commit reached the
			// bootloader: indistinguishable from an image that hangs,
			// the bootloader fell back (see agent.TestPowerLoss).
		default:
			t.Errorf("power-cut %s ended %s on %s (%s)", d.ID, d.State, d.Release, d.Reason)
		}
	}
	if converged == 0 {
		t.Error("no power-cut device converged")
	}

	tampered := faulty(r, sim.Tamper)
	if r.TamperRefusals != int64(len(tampered)) || len(tampered) != 5 {
		t.Errorf("%d tamper refusals from %d tampered devices, want 5", r.TamperRefusals, len(tampered))
	}
	for _, d := range tampered {
		if d.TamperRefusals != 1 || d.State != sim.StateUpToDate || d.Release != "1.0.0" {
			t.Errorf("tampered %s: %d refusals, %s on %s", d.ID, d.TamperRefusals, d.State, d.Release)
		}
	}
	if r.Drops != 10 {
		t.Errorf("%d transfers dropped, want 2 for each of 5 devices", r.Drops)
	}
	for _, d := range append(faulty(r, sim.Drop), faulty(r, sim.NoFault)...) {
		if d.State != sim.StateUpToDate || d.Release != "1.0.0" {
			t.Errorf("%s (%s): %s on %s", d.ID, d.Fault, d.State, d.Release)
		}
	}
	if want := n - 5 - (5 - converged); r.ByRelease["1.0.0"] != want || r.ByRelease["factory"] != n-want {
		t.Errorf("by release %v, want %d on 1.0.0", r.ByRelease, want)
	}
	if r.Checkins < n || r.CheckinP50 <= 0 || r.CheckinP99 < r.CheckinP50 {
		t.Errorf("check-ins %d, p50 %s, p99 %s", r.Checkins, r.CheckinP50, r.CheckinP99)
	}

	// The server heard it from the devices: refusals with their class,
	// rollbacks with their reason, installs.
	reported := func(id, status, reason string) bool {
		var dev struct {
			Version string
			Reports []struct{ Status, Reason string }
		}
		if err := json.Unmarshal(e.Call(e.Pool, "GET", "/api/v1/devices/"+id, e.Admin, nil, 200), &dev); err != nil {
			t.Fatal(err)
		}
		for _, rp := range dev.Reports {
			if rp.Status == status && rp.Reason == reason {
				return true
			}
		}
		return false
	}
	for _, d := range tampered {
		if !reported(d.ID, "verification-refused", "mismatch") || !reported(d.ID, "installed", "") {
			t.Errorf("the server has no mismatch refusal and install from tampered %s", d.ID)
		}
	}
	for _, d := range faulty(r, sim.FailHealth) {
		if !reported(d.ID, "rolled-back", "health-check-failed") {
			t.Errorf("the server has no health-check-failed rollback from %s", d.ID)
		}
	}

	// --json: exactly the documented members.
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	if err := json.Unmarshal(b.Bytes(), &j); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range j {
		names = append(names, k)
	}
	slices.Sort(names)
	want := []string{"by_release", "by_state", "checkin_p50_ms", "checkin_p99_ms", "checkins", "devices", "errors", "install_p50_ms", "install_p99_ms", "installs", "power_cuts_survived", "tamper_refusals"}
	if !slices.Equal(names, want) {
		t.Fatalf("--json members %v, want %v", names, want)
	}
	if j["devices"] != float64(n) || j["tamper_refusals"] != float64(5) || j["power_cuts_survived"] != float64(5) || j["errors"] != float64(0) ||
		j["by_release"].(map[string]any)["1.0.0"] != float64(r.ByRelease["1.0.0"]) || j["by_state"].(map[string]any)[sim.StateUpToDate] != float64(r.ByState[sim.StateUpToDate]) {
		t.Fatalf("--json: %s", b.String())
	}
	// The live view: one line redrawn in place, cleared at the end.
	view := live.String()
	if !strings.Contains(view, "up-to-date ") || !strings.Contains(view, " check-ins/s | p50 ") || !strings.HasSuffix(view, "errors 0\r\033[K") {
		t.Errorf("live view: %q", view[max(0, len(view)-300):])
	}
	var text bytes.Buffer
	r.WriteText(&text)
	t.Logf("\n%s", text.String())
}

func TestParsePercent(t *testing.T) {
	for in, want := range map[string]float64{"0%": 0, "5%": 0.05, "2.5%": 0.025, "100%": 1, "0.01%": 0.0001} {
		got, err := sim.ParsePercent(in)
		if err != nil || got != want {
			t.Errorf("ParsePercent(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"5":      "write it with its % sign",
		"":       "write it with its % sign",
		"%":      "plain decimal digits",
		"-1%":    "plain decimal digits",
		"+5%":    "plain decimal digits",
		"1e1%":   "plain decimal digits",
		"5 %":    "plain decimal digits",
		".5%":    "plain decimal digits",
		"5.%":    "plain decimal digits",
		"1.2.3%": "plain decimal digits",
		"NaN%":   "plain decimal digits",
		"101%":   "between 0% and 100%",
		"5%%":    "plain decimal digits",
	} {
		if _, err := sim.ParsePercent(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParsePercent(%q): %v, want an error saying %q", in, err, msg)
		}
	}
}

func TestConfigRefusals(t *testing.T) {
	base := func() sim.Config {
		return sim.Config{Server: "https://x", Devices: 10, Hardware: hw, Poll: time.Second, Dir: t.TempDir()}
	}
	for _, c := range []struct {
		edit func(*sim.Config)
		msg  string
	}{
		{func(c *sim.Config) { c.Devices = 0 }, "--devices 0 is not between 1 and"},
		{func(c *sim.Config) { c.Hardware = "" }, "--hardware is required"},
		{func(c *sim.Config) { c.Hardware = "a b" }, "--hardware:"},
		{func(c *sim.Config) { c.Poll = 0 }, "--poll must be a positive duration"},
		{func(c *sim.Config) { c.FailHealth, c.Tamper = 0.6, 0.5 }, "add up to 110%"},
		{func(c *sim.Config) { c.IDPrefix = "bad id/" }, "--id-prefix"},
		{func(c *sim.Config) { c.Devices, c.SlotSize = 100000, 64<<20 }, "lower --slot-size"},
	} {
		cfg := base()
		c.edit(&cfg)
		_, err := sim.New(cfg)
		var ce *sim.ConfigError
		if err == nil || !strings.Contains(err.Error(), c.msg) || !errors.As(err, &ce) {
			t.Errorf("%+v: %v, want a ConfigError saying %q", cfg, err, c.msg)
		}
	}
}

// Config.HealthCheck fails the trial boots it names: those devices roll
// back and report why, the others commit, and neither counts as an error.
func TestHealthCheckHook(t *testing.T) {
	e, ca := publishedServer(t)
	const n = 4
	s, err := sim.New(sim.Config{
		Server: e.TS.URL, CA: ca, Token: e.Admin, Devices: n, Hardware: hw, IDPrefix: "hc-",
		Poll: 200 * time.Millisecond, SlotSize: 64 << 10, Dir: t.TempDir(), Seed: 3,
		HealthCheck: func(id, version string) error {
			if id == "hc-2" && version == "1.0.0" {
				return errors.New("no")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	failed := runSim(t, s)
	waitFor(t, s, failed, "every device enrolled", 2*time.Minute, func(r *sim.Report) bool { return r.ByState[sim.StateIdle] == n })
	img := make([]byte, 20<<10)
	rand.Read(img)
	e.ReleaseImage("1.0.0", 1, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	r := waitFor(t, s, failed, "three devices on 1.0.0, hc-2 rolled back", 2*time.Minute, func(r *sim.Report) bool {
		return r.Errors > 0 || r.ByState[sim.StateUpToDate] == n-1 && r.ByState[sim.StateRolledBack] == 1
	})
	if r.Errors > 0 {
		t.Fatalf("errors: %v", r.ErrorSamples)
	}
	for _, d := range r.PerDevice {
		if (d.ID == "hc-2") != (d.State == sim.StateRolledBack) || d.ID == "hc-2" && d.Reason != "health-check-failed" {
			t.Errorf("%s: %s %q", d.ID, d.State, d.Reason)
		}
	}
}

// countingProxy forwards TCP connections to addr and counts them: TLS
// runs end to end through it, so it sees how often devices connect.
func countingProxy(t *testing.T, addr string) (url string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { io.Copy(s, c); s.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, s)
			}()
		}
	}()
	return "https://" + ln.Addr().String(), accepted
}

// Config.Reconnect: each check-in opens a connection of its own; without
// it a device's connection carries all its check-ins.
func TestReconnect(t *testing.T) {
	e, ca := publishedServer(t)
	const n = 4
	for _, reconnect := range []bool{false, true} {
		t.Run(fmt.Sprintf("reconnect=%v", reconnect), func(t *testing.T) {
			url, accepted := countingProxy(t, e.TS.Listener.Addr().String())
			s, err := sim.New(sim.Config{
				Server: url, CA: ca, Token: e.Admin, Devices: n, Hardware: hw, IDPrefix: fmt.Sprintf("rc%v-", reconnect),
				Poll: 100 * time.Millisecond, Reconnect: reconnect, Workers: n, SlotSize: 64 << 10, Dir: t.TempDir(), Seed: 3,
			})
			if err != nil {
				t.Fatal(err)
			}
			failed := runSim(t, s)
			r0 := waitFor(t, s, failed, "every device enrolled", 2*time.Minute, func(r *sim.Report) bool { return r.ByState[sim.StateIdle] == n })
			conns0 := accepted.Load()
			r1 := waitFor(t, s, failed, "30 more check-ins", 2*time.Minute, func(r *sim.Report) bool { return r.Checkins >= r0.Checkins+30 })
			conns := accepted.Load() - conns0
			checkins := r1.Checkins - r0.Checkins
			if r1.Errors > 0 {
				t.Fatalf("errors: %v", r1.ErrorSamples)
			}
			// At the two snapshots up to n check-ins may be under way.
			if reconnect && conns < checkins-n {
				t.Errorf("%d connections for %d check-ins with Reconnect: connections were kept", conns, checkins)
			}
			if !reconnect && conns > n {
				t.Errorf("%d connections for %d check-ins of %d devices without Reconnect: connections were not kept", conns, checkins, n)
			}
			t.Logf("%d check-ins, %d connections", checkins, conns)
		})
	}
}
