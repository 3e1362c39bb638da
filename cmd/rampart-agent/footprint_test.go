package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/testbin"
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
	"github.com/rampartfw/rampart/internal/pushaccept",
	"github.com/rampartfw/rampart/internal/onlineroles",
	"github.com/rampartfw/rampart/internal/offlinerepo",
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
	bin := buildAgent(t)
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rampart-agent: %.1f MiB stripped (CGO_ENABLED=0, -trimpath -ldflags='-s -w')", float64(fi.Size())/(1<<20))
	if fi.Size() > 24<<20 {
		t.Errorf("rampart-agent is %d bytes; over the 24 MiB budget", fi.Size())
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildAgent builds the agent as it ships: pure Go, stripped.
func buildAgent(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rampart-agent-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "rampart-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", builtBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", testbin.CompilerGOGC)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("CGO_ENABLED=0 go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// TestIdleRSS runs the shipped binary as a daemon against a real server
// and measures its resident memory after the first check-in, while it waits
// for the next poll.
func TestIdleRSS(t *testing.T) {
	bin := buildAgent(t)
	e := servertest.New(t)
	dir := t.TempDir()
	tsDir := filepath.Join(dir, "dev")
	mkdeviceFiles(t, e, tsDir, "gw-rss")
	var tok struct{ Token string }
	json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/devices/tokens", e.Admin, map[string]any{"hardware": hw, "ttl_seconds": 600}, 201), &tok)
	cfg := filepath.Join(tsDir, "agent.toml")
	if out, err := exec.Command(bin, "enroll", "--config", cfg, "--token", tok.Token).CombinedOutput(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Dir = tsDir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// A check-in that never ends must fail the test, not hang the suite.
	stuck := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	stuck.Stop()
	if err != nil || strings.TrimSpace(line) != "nothing" {
		t.Fatalf("first check-in printed %q, %v", line, err)
	}
	time.Sleep(time.Second)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var rssKB int
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &rssKB)
		}
	}
	t.Logf("rampart-agent idle RSS after a check-in: %.1f MiB", float64(rssKB)/1024)
	if rssKB == 0 || rssKB > 32<<10 {
		t.Errorf("idle RSS %d kB; the budget is 32 MiB", rssKB)
	}
}
