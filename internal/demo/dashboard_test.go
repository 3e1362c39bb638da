package demo

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/sim"
)

// chromiumPath is Debian's chromium, which scripts/test-deps.sh installs.
const chromiumPath = "/usr/bin/chromium"

// TestDashboardBrowser drives the dashboard (/ui/) in headless chromium
// against a real rampart-server with simulated devices running the real
// agent: an admin logs in, watches a rollout progress, pauses it from
// the button (the server's state changes), sees a tamper detection
// appear on the overview; an auditor sees no action button and the API
// refuses the auditor's action anyway. It saves a screenshot of every
// page in $RAMPART_SCREENSHOTS (docs/images to refresh the committed
// ones), else in a temporary directory.
func TestDashboardBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server, a simulated fleet and chromium")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the dashboard's browser tests need %s: run scripts/test-deps.sh (it installs Debian's chromium)", chromiumPath)
	}
	shots := os.Getenv("RAMPART_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cfg := Config{Devices: 10, Out: io.Discard, Soak: 3 * time.Second}
	if testing.Verbose() {
		cfg.Out = os.Stderr
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	d := &Demo{cfg: cfg, dir: t.TempDir(), started: time.Now(), signers: map[string]keys.Signer{}, simsDone: map[*sim.Sim]chan struct{}{}, failReady: make(chan struct{})}
	defer d.stop()
	for _, step := range []func(context.Context, *Demo) error{ceremony, startServer, fleetOn100} {
		if err := step(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	auditorToken, err := d.api.CreateToken(ctx, "auditor-ui", "auditor")
	if err != nil {
		t.Fatal(err)
	}
	auditor, err := client.New(d.url, d.caFile, auditorToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.release(ctx, "1.1.0", 48<<10); err != nil {
		t.Fatal(err)
	}
	// The test pauses the rollout from its page while it is open, so it
	// must not complete before the browser gets there, however slow the
	// machine: it holds after its first phase until a second operator
	// approves it (below), not for a soak long enough (30 s soaks made
	// this the longest test of make test's race run; 10 s ones once
	// completed first under -race at load 8).
	ro, err := d.api.CreateRollout(ctx, api.RolloutRequest{Release: Product + "/1.1.0", Select: fleetSelector, Phases: "2,50%,100%",
		Soak: "3s", MaxFailureRate: "10%", ApproveAfter: "2"})
	if err != nil {
		t.Fatal(err)
	}
	secondToken, err := d.api.CreateToken(ctx, "second-operator", "operator")
	if err != nil {
		t.Fatal(err)
	}
	second, err := client.New(d.url, d.caFile, secondToken)
	if err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("ignore-certificate-errors", true), // the server's own CA
		chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	shot := func(name string) {
		t.Helper()
		run("settling before "+name, chromedp.Sleep(400*time.Millisecond))
		if _, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.scrollTo(0, 0), 0`)); err != nil {
			t.Fatal(err)
		}
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// waitJS polls a JavaScript condition in the page.
	waitJS := func(what, expr string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool](expr))
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				body, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.body.innerText`))
				t.Fatalf("%s: not within %s; the page reads:\n%s", what, within, body)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	login := func(token string) {
		t.Helper()
		run("login", chromedp.Navigate(d.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.ID("login-submit")),
			chromedp.WaitVisible(chromedp.ID("role")))
	}

	// The security headers of the dashboard's files.
	ca, err := os.ReadFile(d.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pki.CertPoolFromPEM(ca)
	if err != nil {
		t.Fatal(err)
	}
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, nil)}, Timeout: 10 * time.Second}
	resp, err := plain.Get(d.url + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("/ui/ headers: %v", resp.Header)
	}

	// The login page, then a wrong token, then the admin's.
	run("login page", chromedp.Navigate(d.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")))
	shot("login")
	run("wrong token", chromedp.SendKeys(chromedp.ID("token"), "rmp_not-a-token"), chromedp.Click(chromedp.ID("login-submit")))
	waitJS("the wrong token refused", `!document.getElementById("login-error").classList.contains("hidden")`, 10*time.Second)
	login(d.admin)
	text := func(what, id string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	count := func(what, expr string) int {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[int](expr))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	role := text("role", "role")
	if role != "admin" {
		t.Errorf("the dashboard shows role %q, want admin", role)
	}

	// Watch the rollout progress while the devices update.
	run("rollout page", chromedp.Navigate(d.url+"/ui/#/rollouts/"+ro.ID), chromedp.WaitVisible(chromedp.CSS(`[data-phase="1"]`)))
	waitJS("the first phase's progress bar filling", `(() => { const e = document.querySelector('[data-phase="1"] .phase-count');
		return !!e && (parseInt(e.textContent, 10) >= 1 || e.textContent === "passed"); })()`, 90*time.Second)
	shot("rollout-progress")

	// Pause it from the button (running, or waiting for the approval);
	// the server's state changed.
	waitJS("the pause button", `!!document.getElementById("action-pause")`, 30*time.Second)
	run("pause", chromedp.Click(chromedp.ID("action-pause")))
	waitJS("the pause answered", `(document.getElementById("action-result")||{}).textContent === "Done: the rollout is paused."`, 15*time.Second)
	if r, err := d.api.Rollout(ctx, ro.ID); err != nil || r.State != api.RolloutPaused {
		t.Fatalf("after the pause button the server says %q (%v), want paused", r.State, err)
	}
	shot("rollout-paused")
	run("resume", chromedp.Click(chromedp.ID("action-resume")))
	waitJS("the resume answered", `["Done: the rollout is running.", "Done: the rollout is waiting-approval."].includes((document.getElementById("action-result")||{}).textContent)`, 15*time.Second)
	// The page offers the approval; the second operator gives it.
	waitJS("the approve button", `!!document.getElementById("action-approve")`, 90*time.Second)
	if _, err := second.RolloutAction(ctx, ro.ID, "approve", "dashboard test"); err != nil {
		t.Fatalf("the second operator's approval: %v", err)
	}
	waitJS("the rollout completing on the page", `!!document.querySelector(".gate.completed")`, 120*time.Second)
	shot("rollout")

	// A man-in-the-middle alters a chunk: the detection appears on the
	// overview.
	run("overview", chromedp.Navigate(d.url+"/ui/#/overview"), chromedp.WaitVisible(chromedp.ID("kpi-tamper")))
	if err := mitm(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitJS("the tamper detection on the overview", `(() => { const v = document.querySelector("#kpi-tamper .value");
		return !!v && parseInt(v.textContent, 10) >= 1 && !!document.getElementById("tamper-classes"); })()`, 30*time.Second)
	time.Sleep(3 * time.Second) // one more sample on the tamper chart
	shot("overview")

	// Every other page.
	devs, err := d.devices(ctx)
	if err != nil || len(devs) == 0 {
		t.Fatal(devs, err)
	}
	for _, p := range []struct{ name, hash, ready string }{
		{"devices", "#/devices", "table"},
		{"device", "#/devices/mitm-1", "table"},
		{"releases", "#/releases", "table"},
		{"rollouts", "#/rollouts", ".rollout-row"},
		{"keys", "#/keys", "table"},
		{"audit", "#/audit", "table"},
	} {
		run(p.name, chromedp.Navigate(d.url+"/ui/"+p.hash), chromedp.WaitVisible(chromedp.CSS(p.ready)))
		shot(p.name)
	}
	// Every release's log proof verifies (the server checks it as a
	// device would), and the page says so on every row.
	run("releases", chromedp.Navigate(d.url+"/ui/#/releases"), chromedp.WaitVisible(chromedp.CSS("table")))
	waitJS("every release's log proof verifying", `(() => { const rows = document.querySelectorAll("tbody tr");
		return rows.length >= 2 && [...rows].every((r) => r.textContent.includes("verifies")); })()`, 15*time.Second)
	// A selector filters the devices; a bad one is explained.
	run("filter", chromedp.Navigate(d.url+"/ui/#/devices"), chromedp.WaitVisible(chromedp.CSS("table")),
		chromedp.SendKeys(chromedp.ID("selector"), `id.startsWith("mitm-")`), chromedp.Click(chromedp.ID("apply-selector")))
	waitJS("the filtered list", `document.querySelectorAll("tbody tr").length === 1`, 15*time.Second)
	run("bad filter", chromedp.SetValue(chromedp.ID("selector"), `id ==`), chromedp.Click(chromedp.ID("apply-selector")))
	waitJS("the selector error", `!!document.getElementById("selector-error")`, 15*time.Second)
	// Revoking a key asks for confirmation first.
	run("keys", chromedp.Navigate(d.url+"/ui/#/keys"), chromedp.WaitVisible(chromedp.CSS(".revoke-key")),
		chromedp.Click(chromedp.CSS(".revoke-key")), chromedp.WaitVisible(chromedp.ID("confirm-box")))
	shot("keys-confirm")

	// The phone layout of the overview.
	run("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile), chromedp.Navigate(d.url+"/ui/#/overview"),
		chromedp.WaitVisible(chromedp.ID("kpi-tamper")))
	waitJS("the overview on a phone", `!!document.getElementById("tamper-classes")`, 15*time.Second)
	shot("overview-phone")
	run("phone rollout", chromedp.Navigate(d.url+"/ui/#/rollouts/"+ro.ID), chromedp.WaitVisible(chromedp.CSS(`[data-phase="1"]`)))
	shot("rollout-phone")
	run("laptop", chromedp.EmulateViewport(1280, 900))

	// An auditor: no action buttons, and the API refuses the action.
	ro2, err := d.api.CreateRollout(ctx, api.RolloutRequest{Release: Product + "/1.0.0", Select: `id == "nobody"`, Phases: "100%", Critical: true})
	if err != nil {
		t.Fatal(err)
	}
	run("logout", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	login(auditorToken)
	role = text("role", "role")
	if role != "auditor" {
		t.Errorf("the dashboard shows role %q, want auditor", role)
	}
	for _, id := range []string{ro.ID, ro2.ID} {
		run("auditor's rollout page", chromedp.Navigate(d.url+"/ui/#/rollouts/"+id), chromedp.WaitVisible(chromedp.CSS(`[data-phase="1"]`)))
		buttons := count("buttons", `document.querySelectorAll('[id^="action-"], #main button').length`)
		if buttons != 0 {
			t.Errorf("the auditor sees %d buttons on rollout %s", buttons, id)
		}
	}
	shot("rollout-auditor")
	run("auditor's keys page", chromedp.Navigate(d.url+"/ui/#/keys"), chromedp.WaitVisible(chromedp.CSS("table")))
	revokes := count("revoke buttons", `document.querySelectorAll('#main button, #key-id').length`)
	if revokes != 0 {
		t.Errorf("the auditor sees %d buttons on the keys page", revokes)
	}
	for _, action := range []string{"approve", "abort", "pause"} {
		_, err := auditor.RolloutAction(ctx, ro2.ID, action, "")
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
			t.Errorf("the auditor's %s: %v, want 403", action, err)
		}
	}
	if r, err := d.api.Rollout(ctx, ro2.ID); err != nil || r.State != api.RolloutWaitingApproval {
		t.Errorf("after the auditor's refused actions the rollout is %q (%v)", r.State, err)
	}
	run("audit as auditor", chromedp.Navigate(d.url+"/ui/#/audit"), chromedp.WaitVisible(chromedp.CSS("table")),
		chromedp.SetValue(chromedp.ID("audit-outcome"), "denied"))
	count("filter change", `document.getElementById("audit-outcome").dispatchEvent(new Event("change")) ? 1 : 0`)
	waitJS("the auditor's denials in the audit log", `document.querySelectorAll("tbody tr").length >= 3`, 15*time.Second)
	shot("audit-denied")
}
