package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// deviceOnly lists what only the device links to fetch and install
// updates: the device's refresh of both repositories and its checkpoint
// storage (uptane, with go-tuf's updater, its fetcher and its config),
// the update state machine, the chunk installer and boot control. The
// operator CLI verifies bundles offline with internal/verify, the pure
// trust decision both share; it must not carry the device's network
// client (docs/architecture.md).
var deviceOnly = []string{
	"github.com/rampartfw/rampart/internal/uptane",
	"github.com/rampartfw/rampart/internal/agent",
	"github.com/rampartfw/rampart/internal/install",
	"github.com/rampartfw/rampart/internal/bootloader",
	"github.com/rampartfw/rampart/internal/bootenv",
	"github.com/theupdateframework/go-tuf/v2/metadata/updater",
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher",
	"github.com/theupdateframework/go-tuf/v2/metadata/config",
}

// simulator is the one package through which rampart links the device's
// code: `rampart sim` runs real agents, so it must. Every other command
// (verify, bundle, repo, the operator API) is checked without it.
const simulator = "github.com/rampartfw/rampart/internal/sim"

// demoPkg is `rampart demo`, which reaches the device's code through the
// simulator: its other imports are checked like rampart's.
const demoPkg = "github.com/rampartfw/rampart/internal/demo"

// TestImportGraph fails when the device's fetch code enters rampart's
// import graph other than through the simulator. Like the agent's
// footprint test, it proves it can fail: the agent links every package
// on the list, and so does the simulator.
func TestImportGraph(t *testing.T) {
	var direct []string
	for _, p := range list(t, "-f", "{{join .Imports \"\\n\"}}", ".") {
		if p != simulator && p != demoPkg {
			direct = append(direct, p)
		}
	}
	// The demo runs simulated devices too, through the simulator only.
	for _, p := range list(t, "-f", "{{join .Imports \"\\n\"}}", demoPkg) {
		if p != simulator {
			direct = append(direct, p)
		}
	}
	if len(direct) < 10 {
		t.Fatalf("rampart imports only %v; the check would prove nothing", direct)
	}
	for _, bad := range linked(t, direct...) {
		t.Errorf("rampart links %s other than through %s; trace it with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/rampart", bad, simulator)
	}
	if got := linked(t, "../rampart-agent"); len(got) != len(deviceOnly) {
		t.Errorf("the list finds only %v in rampart-agent; the check is broken", got)
	}
	if got := linked(t, simulator); len(got) == 0 {
		t.Errorf("the simulator links none of %v; the check is broken", deviceOnly)
	}
}

// list runs go list with cgo on (as CI builds) and returns its lines.
func list(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

// linked returns the packages of deviceOnly that pkgs link.
func linked(t *testing.T, pkgs ...string) []string {
	t.Helper()
	deps := list(t, append([]string{"-deps"}, pkgs...)...)
	if len(deps) < 50 {
		t.Fatalf("go list returned only %d packages; the check would prove nothing", len(deps))
	}
	var bad []string
	for _, d := range deps {
		for _, f := range deviceOnly {
			if d == f || strings.HasPrefix(d, f+"/") {
				bad = append(bad, d)
			}
		}
	}
	return bad
}

// TestNopkcs11Scope pins where -tags nopkcs11 changes the build, because
// make test runs the tests with the tag only there (internal/keys, and
// the scripts named pkcs11* here, the ones that test the pkcs11
// condition): a package whose files differ with the tag, or a script
// that tests the condition under another name, fails here until the
// Makefile covers it too.
func TestNopkcs11Scope(t *testing.T) {
	const f = "{{.ImportPath}} {{.GoFiles}} {{.CgoFiles}} {{.TestGoFiles}} {{.XTestGoFiles}}"
	list := func(tags ...string) []string {
		args := append(append([]string{"list"}, tags...), "-f", f, "../../...")
		out, err := exec.Command("go", args...).Output()
		if err != nil {
			t.Fatalf("go %v: %v", args, err)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	with, without := list("-tags", "nopkcs11"), list()
	if len(with) < 20 || len(with) != len(without) {
		t.Fatalf("go list found %d and %d packages; the check would prove nothing", len(with), len(without))
	}
	var changed []string
	for i := range with {
		if with[i] != without[i] {
			changed = append(changed, strings.Fields(with[i])[0])
		}
	}
	want := []string{"github.com/rampartfw/rampart/cmd/rampart", "github.com/rampartfw/rampart/internal/keys"}
	if !slices.Equal(changed, want) {
		t.Errorf("-tags nopkcs11 changes the files of %v, make test covers %v: update the Makefile's test target and this list", changed, want)
	}
	scripts, err := filepath.Glob(filepath.Join("testdata", "script", "*.txtar"))
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	cond := regexp.MustCompile(`(?m)^\s*\[!?pkcs11\]`)
	for _, s := range scripts {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if cond.Match(b) && !strings.HasPrefix(filepath.Base(s), "pkcs11") {
			t.Errorf("%s tests the pkcs11 condition but make test runs only pkcs11* scripts with -tags nopkcs11: rename it", s)
		}
	}
}
