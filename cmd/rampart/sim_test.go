package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/server/servertest"
)

// Every refusal of sim_usage.txtar exits 2, the CLI's usage status.
func TestSimUsageExitStatus(t *testing.T) {
	for _, args := range [][]string{
		{"--hardware", "hw"},
		{"--devices", "-3", "--hardware", "hw"},
		{"--devices", "3", "--hardware", "hw", "--fail-health", "5"},
		{"--devices", "3", "--hardware", "hw", "--tamper", "150%"},
		{"--devices", "3", "--hardware", "hw", "--drop", "60%", "--power-cut", "60%"},
		{"--devices", "3", "--hardware", "hw", "--poll", "0s"},
		{"--devices", "3", "--hardware", "hw", "--id-prefix", "a/"},
		{"--devices", "3", "--hardware", "hw"}, // no server
		{"--devices", "3", "--hardware", "hw", "--server", "https://127.0.0.1:1", "--ca", "/nonexistent/ca.pem"},
	} {
		var out, errOut bytes.Buffer
		code := run(append([]string{"sim"}, args...), &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
		if code != exitInput || !strings.HasPrefix(errOut.String(), "rampart: error: ") || out.Len() != 0 {
			t.Errorf("sim %v: exit %d, stdout %q, stderr %q; want exit 2", args, code, out.String(), errOut.String())
		}
	}
}

// rampart sim against a real server: devices enroll under their prefix,
// rampart deploy assigns a release while they run, they install it, and
// --json prints exactly the documented members.
func TestSimJSON(t *testing.T) {
	// Parallel: one of the package's longest tests, and it shares no
	// process state (no chdir, no environment).
	t.Parallel()
	e := servertest.New(t)
	img := make([]byte, 5000)
	rand.Read(img)
	e.ReleaseImage("1.0.0", 1, img, "acme-gw-rev2")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, e.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--server", e.TS.URL, "--ca", ca, "--token", e.Admin}
	rampart := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(args, &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
		return code, out.String(), errOut.String()
	}

	// Deploy once all three devices exist: a deploy reaches the devices
	// enrolled when it is made, and the simulator enrolls them
	// concurrently, in no set order (waiting for lab-3 alone once left
	// lab-1 on its factory image).
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, id := range []string{"lab-1", "lab-2", "lab-3"} {
			for range 600 {
				if resp, err := e.Pool.Do(authed(t, e, "/api/v1/devices/"+id)); err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						break
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		if code, out, errOut := rampart(append([]string{"deploy", servertest.Product + "/1.0.0", "--hardware", "acme-gw-rev2"}, flags...)...); code != 0 {
			t.Errorf("deploy: exit %d\n%s%s", code, out, errOut)
		}
	}()
	code, out, errOut := rampart(append([]string{"sim", "--devices", "3", "--hardware", "acme-gw-rev2", "--id-prefix", "lab-",
		"--poll", "300ms", "--duration", "15s", "--slot-size", "16384", "--json"}, flags...)...)
	wg.Wait()
	if code != 0 || errOut != "" {
		t.Fatalf("sim: exit %d\n%s%s", code, out, errOut)
	}
	var j map[string]any
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var names []string
	for k := range j {
		names = append(names, k)
	}
	slices.Sort(names)
	if want := []string{"by_release", "by_state", "checkin_p50_ms", "checkin_p99_ms", "checkins", "devices", "errors", "install_p50_ms", "install_p99_ms", "installs", "power_cuts_survived", "tamper_refusals"}; !slices.Equal(names, want) {
		t.Fatalf("members %v, want %v", names, want)
	}
	if j["devices"] != 3.0 || j["errors"] != 0.0 || j["by_release"].(map[string]any)["1.0.0"] != 3.0 ||
		j["by_state"].(map[string]any)["up-to-date"] != 3.0 || j["checkins"].(float64) < 3 || j["checkin_p99_ms"].(float64) <= 0 ||
		j["installs"] != 3.0 || j["install_p99_ms"].(float64) <= 0 {
		t.Fatalf("report: %s", out)
	}
}

func authed(t *testing.T, e *servertest.Env, path string) *http.Request {
	req, err := http.NewRequest("GET", e.TS.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.Admin)
	return req
}
