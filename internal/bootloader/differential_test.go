package bootloader_test

import (
	"fmt"
	"testing"

	"github.com/rampartfw/rampart/internal/bootloader/bootloadertest"
)

// TestDifferential drives the simulator and a real-environment backend
// through the same pseudo-random operations, mistakes included, and
// requires the same outcome and State after every step. The simulator
// implements the model directly; the backends go through their variables
// and their boot scripts' logic.
func TestDifferential(t *testing.T) {
	backends := []struct {
		name string
		max  int
		new  func(t *testing.T) bootloadertest.Target
	}{
		{"UBootSingle", 3, func(t *testing.T) bootloadertest.Target { return ubootTarget(t, false) }},
		{"UBootRedundant", 3, func(t *testing.T) bootloadertest.Target { return ubootTarget(t, true) }},
		{"GRUB", 1, grubTarget},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 25; seed++ {
				sim := simTarget(t, newSim(t, b.max))
				real := b.new(t)
				for i, op := range bootloadertest.RandomOps(seed, 150, b.max) {
					want := bootloadertest.Apply(sim, op)
					got := bootloadertest.Apply(real, op)
					if got != want {
						t.Fatalf("seed %d step %d %s:\n %s: %s\n Sim: %s", seed, i, fmt.Sprint(op), b.name, got, want)
					}
				}
			}
		})
	}
}
