package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// forbidden lists what must never be linked into the device agent: the
// server and its storage, policy and web code, the signing backends (keys,
// PKCS#11), the offline repository, and anything needing cgo.
var forbidden = []string{
	"github.com/rampartfw/rampart/internal/server",
	"github.com/rampartfw/rampart/internal/store",
	"github.com/rampartfw/rampart/internal/blob",
	"github.com/rampartfw/rampart/internal/tlog",
	"github.com/rampartfw/rampart/internal/audit",
	"github.com/rampartfw/rampart/internal/director",
	"github.com/rampartfw/rampart/internal/imagerepo",
	"github.com/rampartfw/rampart/internal/snapshot",
	"github.com/rampartfw/rampart/internal/repo",
	"github.com/rampartfw/rampart/internal/keys",
	"github.com/rampartfw/rampart/internal/client",
	"github.com/rampartfw/rampart/internal/rollout",
	"github.com/rampartfw/rampart/internal/policy",
	"github.com/rampartfw/rampart/internal/dashboard",
	"github.com/miekg/pkcs11",
	"github.com/ThalesGroup/crypto11",
	"modernc.org/sqlite",
	"github.com/jackc/pgx",
	"github.com/transparency-dev/tessera",
	"github.com/prometheus/",
	"github.com/google/cel-go",
	"filippo.io/age",
	"html/template",
	"net/http/pprof",
}

// TestImportGraph fails when a forbidden package enters the agent's import
// graph, with cgo on (as CI builds) so a cgo-only dependency shows too.
func TestImportGraph(t *testing.T) {
	for _, bad := range forbiddenDeps(t, ".") {
		t.Errorf("rampart-agent links %s; trace it with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/rampart-agent", bad)
	}
	// The check itself must be able to fail: the server links most of
	// the list.
	if got := forbiddenDeps(t, "../rampart-server"); len(got) < 5 {
		t.Errorf("the forbidden list finds only %v in rampart-server; the check is broken", got)
	}
}

func forbiddenDeps(t *testing.T, pkg string) []string {
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
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") || strings.HasSuffix(f, "/") && strings.HasPrefix(d, f) {
				bad = append(bad, d)
			}
		}
	}
	return bad
}

// TestPureGo builds the agent with cgo off: it must run on devices without
// a C toolchain or libc of the build host. It also reports the binary size.
func TestPureGo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "rampart-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rampart-agent: %.1f MiB stripped (CGO_ENABLED=0, -trimpath -ldflags='-s -w')", float64(fi.Size())/(1<<20))
	if fi.Size() > 24<<20 {
		t.Errorf("rampart-agent is %d bytes; over the 24 MiB budget", fi.Size())
	}
}
