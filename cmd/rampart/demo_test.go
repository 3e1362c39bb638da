package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// rampart demo, in this process, with a fleet of 10 (the smallest it takes): it exits 0 and
// narrates every step, each of which checks its own outcome.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server and a simulated fleet for about 20 s")
	}
	// Parallel: one of the package's longest tests, and it shares no
	// process state (no chdir, no environment).
	t.Parallel()
	var out, errOut bytes.Buffer
	code := run([]string{"demo", "--devices", "10"}, &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
	if code != 0 || errOut.Len() != 0 {
		t.Fatalf("demo: exit %d\nstderr:\n%s\nstdout:\n%s", code, errOut.String(), out.String())
	}
	for _, want := range []string{
		`(?m)^\[1/8\] Offline key ceremony$`,
		`Image repository \(repo/\): root signed by root-a and root-b \(2 of 2\); acme-gw delegated to rel-a, rel-b, rel-c \(2 of 3\)\.`,
		`Director root \(director/\): names the server's director keys; one signature was not enough, two are\.`,
		`(?m)^\[2/8\] rampart-server on loopback, with mTLS$`,
		`rampart-server listens on https://127\.0\.0\.1:\d+: TLS with its own CA`,
		`A request to a device route without a device certificate: 401 Unauthorized\.`,
		`(?m)^\[3/8\] A fleet of simulated devices on release 1\.0\.0$`,
		`All 10 devices enrolled and run 1\.0\.0`,
		`(?m)^\[4/8\] Release 1\.1\.0, rolled out in phases$`,
		`Phase 1 of 3 \(2\) started`, `Phase 2 of 3 \(50%\) started`, `Phase 3 of 3 \(100%\) started`,
		`Rollout completed: all 10 devices run 1\.1\.0`,
		`(?m)^\[5/8\] A man-in-the-middle alters a chunk in transit$`,
		`mitm-1 refused the chunk before writing a byte of it`,
		`The server recorded the detection: mitm-1 reported verification-refused \(mismatch\)`,
		`The next transfer, untouched, installed 1\.1\.0`,
		`(?m)^\[6/8\] Release 1\.2\.0 fails its health check on some devices$`,
		`The gate paused the rollout automatically in phase 1: gate: failure rate`,
		`reported rolled-back,\n  reason "health-check-failed"`,
		`Three soaks later it is still paused in phase 1: the other 8 devices of the fleet never saw 1\.2\.0 and run 1\.1\.0\.`,
		`(?m)^\[7/8\] Key revocation drill: a release signer leaks$`,
		`Release 1\.1\.1: \d+ bytes in \d+ chunks, signed by rel-a and rel-b`,
		`Phase 1 done: 2 devices run 1\.1\.1`,
		`rampart incident revoke-key [0-9a-f]{64} --reason "demo drill: rel-b's laptop was reported stolen"`,
		`revoked: acme-gw/1\.1\.1/fw\.img is marked and refused from now on\.`,
		`Rollout ro-[0-9a-f]+ halted for good: aborted`,
		`Affected devices \(2, running 1\.1\.1\): sim-\d+, sim-\d+\.`,
		`1\. rampart repo rotate repo acme-gw --remove-key [0-9a-f]{64} --add-key`,
		`A new rollout of 1\.1\.1 is refused: 422 revoked-release\.`,
		`Redeploy assigned the last known-good release, 1\.1\.0 .*, to 2 devices\.`,
		`Every affected device confirmed its boot of 1\.1\.0 again: recovered `,
		`(?m)^\[8/8\] Summary, from the server's fleet statistics$`,
		`(?m)^  1\.1\.0 +10$`, `(?m)^  1\.2\.0 +1$`,
		`(?m)^  1\.2\.0 +ro-[0-9a-f]+ +paused +1 +1 +50\.0%`,
		`(?m)^  1\.1\.1 +ro-[0-9a-f]+ +aborted +2 +0 +100\.0%`,
		`(?m)^  devices +11$`,
		`update success rate +9\d\.\d% `,
		`time to install +p50 \S+, p95 \S+ `,
		`time to recover \(MTTR\) +\S+ mean per device; the drill's 2 affected devices all back in `,
		`tamper detections +mismatch 1 `,
		`(?m)^Every step behaved as narrated, in `,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("the narration lacks %s", want)
		}
	}
	dir := regexp.MustCompile(`working in (\S+)`).FindStringSubmatch(out.String())
	if dir == nil {
		t.Fatalf("no work directory named:\n%s", out.String())
	}
	if _, err := os.Stat(dir[1]); !os.IsNotExist(err) {
		t.Errorf("the work directory %s is still there (%v)", dir[1], err)
	}
	if t.Failed() {
		t.Logf("narration:\n%s", out.String())
	}
}

// Every refusal of demo_usage.txtar exits 2, the CLI's usage status.
func TestDemoUsageExitStatus(t *testing.T) {
	for _, args := range [][]string{{"--devices", "5"}, {"--devices", "2001"}, {"--devices", "many"}, {"--bogus"}, {"now"}} {
		var out, errOut bytes.Buffer
		code := run(append([]string{"demo"}, args...), &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
		if code != exitInput || out.Len() != 0 {
			t.Errorf("demo %v: exit %d, stdout %q, stderr %q; want exit 2", args, code, out.String(), errOut.String())
		}
	}
}

// Every rampart command of the README's quickstart block is run by
// testdata/script/quickstart.txtar, so the README cannot drift.
func TestReadmeQuickstart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("testdata/script/quickstart.txtar")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "## Quickstart")
	if ok {
		_, block, ok = strings.Cut(block, "```sh\n")
	}
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok {
		t.Fatal("README.md has no quickstart ```sh block")
	}
	block = strings.ReplaceAll(block, "\\\n", " ")
	n := 0
	for _, line := range strings.Split(block, "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.Join(strings.Fields(line), " ")
		if !strings.HasPrefix(line, "rampart ") {
			continue
		}
		n++
		if !strings.Contains(string(script), "\nexec "+line+"\n") {
			t.Errorf("quickstart.txtar does not run the README's %q", line)
		}
	}
	if n < 15 {
		t.Fatalf("found %d rampart commands in the README's quickstart block", n)
	}
}
