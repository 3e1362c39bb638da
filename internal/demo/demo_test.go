package demo

import (
	"context"
	"errors"
	"os"
	"testing"
)

// A fleet too small or too large is refused before anything is made.
func TestConfigRefused(t *testing.T) {
	for _, n := range []int{-1, 9, MaxDevices + 1} {
		dir := t.TempDir()
		err := Run(context.Background(), Config{Devices: n, TempDir: dir})
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("--devices %d: %v, want a ConfigError", n, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("--devices %d left %d entries in the temporary directory", n, len(ents))
		}
	}
}

// The story's acts, in order.
func TestSteps(t *testing.T) {
	want := []string{"Offline key ceremony", "rampart-server on loopback, with mTLS", "A fleet of simulated devices on release 1.0.0",
		"Release 1.1.0, rolled out in phases", "A man-in-the-middle alters a chunk in transit",
		"Release 1.2.0 fails its health check on some devices", "Key revocation drill: a release signer leaks",
		"Summary, from the server's fleet statistics"}
	steps := Steps()
	if len(steps) != len(want) {
		t.Fatalf("%d steps, want %d", len(steps), len(want))
	}
	for i, s := range steps {
		if s.Title != want[i] || s.Run == nil {
			t.Errorf("step %d is %q, want %q", i+1, s.Title, want[i])
		}
	}
}
