package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoScript runs the README's main job: the signing-core acceptance
// sequence, verbatim, with a freshly built binary and the production scrypt
// cost.
func TestDemoScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds rampart and hashes a 64 MiB image")
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", filepath.Join("..", "..", "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "RAMPART_DEMO_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{"verified acme-gw/2.4.1/fw.img", "published repo/public: root 1, targets 1, snapshot 1, timestamp 1"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
}
