package main

import (
	"os"
	"os/exec"
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

// TestImportGraph fails when the device's fetch code enters rampart's
// import graph. Like the agent's footprint test, it proves it can fail:
// the agent links every package on the list.
func TestImportGraph(t *testing.T) {
	for _, bad := range linked(t, ".") {
		t.Errorf("rampart links %s; trace it with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/rampart", bad)
	}
	if got := linked(t, "../rampart-agent"); len(got) != len(deviceOnly) {
		t.Errorf("the list finds only %v in rampart-agent; the check is broken", got)
	}
}

// linked returns the packages of deviceOnly that pkg links, with cgo on
// (as CI builds).
func linked(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	deps := strings.Fields(string(out))
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
