package bootloader_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/rampartfw/rampart/internal/bootloader"
)

// TestEachTransitionWritesOneCopy compares the redundant image before and
// after every transition: exactly one of the two copies changes, and it is
// the one that was not current, so the previous state stays on the medium.
func TestEachTransitionWritesOneCopy(t *testing.T) {
	f := newUBootFixture(t, true)
	steps := []struct {
		name string
		do   func() error
	}{
		{"Provision", f.bl.Provision},
		{"boot", func() error { _, err := f.bl.SimulateBoot(); return err }},
		{"MarkGood(A)", func() error { return f.bl.MarkGood(bootloader.A) }},
		{"SetTrial(B, 1)", func() error { return f.bl.SetTrial(bootloader.B, 1) }},
		{"boot", func() error { _, err := f.bl.SimulateBoot(); return err }},
		{"MarkGood(B)", func() error { return f.bl.MarkGood(bootloader.B) }},
		{"SetTrial(A, 1)", func() error { return f.bl.SetTrial(bootloader.A, 1) }},
		{"MarkBad(A)", func() error { return f.bl.MarkBad(bootloader.A) }},
		{"refused MarkBad(B)", func() error { return f.bl.MarkBad(bootloader.B) }},
		{"State", func() error { _, err := f.bl.State(); return err }},
	}
	for _, s := range steps {
		before, _ := os.ReadFile(f.image)
		cur := f.load(t).Copy
		err := s.do()
		after, _ := os.ReadFile(f.image)
		changed := [2]bool{
			!bytes.Equal(before[:envSize], after[:envSize]),
			!bytes.Equal(before[envSize:], after[envSize:]),
		}
		refused := err != nil || s.name == "State"
		switch {
		case refused && (changed[0] || changed[1]):
			t.Fatalf("%s (err %v) changed the image", s.name, err)
		case !refused && (changed[cur] || !changed[1-cur]):
			t.Fatalf("%s: copies changed %v, want only copy %d (copy %d is current)", s.name, changed, 1-cur, cur)
		}
	}
}

// TestTornTrialWrite cuts the power while SetTrial writes the inactive copy
// of a redundant environment: the copy holds a prefix of the new bytes and
// then the stale bytes it held before, or garbage, or the file ends early.
// Every such image must read back as the complete previous state, fw_printenv
// must agree, and the boot script must boot the old slot.
func TestTornTrialWrite(t *testing.T) {
	for _, extra := range []int{0, 1} { // put the trial's write in either copy
		f := newUBootFixture(t, true)
		must(t, f.bl.Provision())
		for i := 0; i < extra; i++ {
			must(t, f.bl.Provision())
		}
		if s, err := f.bl.SimulateBoot(); err != nil || s != bootloader.A {
			t.Fatalf("boot: %q, %v", s, err)
		}
		must(t, f.bl.MarkGood(bootloader.A))
		old, _ := os.ReadFile(f.image)
		prev, err := f.bl.State()
		must(t, err)
		must(t, f.bl.SetTrial(bootloader.B, 1))
		full, _ := os.ReadFile(f.image)
		c := f.load(t).Copy // the copy the trial went to
		start := c * envSize

		type tear struct {
			name  string
			image []byte
		}
		// A write is torn only while some byte it changes is still old;
		// past the last changed byte the copy is complete and valid.
		last := 0
		for i := 0; i < envSize; i++ {
			if old[start+i] != full[start+i] {
				last = i
			}
		}
		var tears []tear
		for _, k := range []int{0, 1, 3, 4, 5, 6, last / 2, last} {
			img := bytes.Clone(old)
			copy(img[start:start+k], full[start:start+k])
			tears = append(tears, tear{fmt.Sprintf("copy %d, %d new bytes then stale", c, k), img})

			img = bytes.Clone(full)
			r := rand.New(rand.NewPCG(uint64(k), 1))
			for i := start + k; i < start+envSize; i++ {
				img[i] = byte(r.Uint32())
			}
			tears = append(tears, tear{fmt.Sprintf("copy %d, %d new bytes then garbage", c, k), img})

			if c == 1 {
				tears = append(tears, tear{fmt.Sprintf("copy 1 truncated after %d bytes", k), bytes.Clone(full[:start+k])})
			}
		}
		for _, k := range []int{last + 1, envSize / 2, envSize - 1} {
			img := bytes.Clone(full)
			r := rand.New(rand.NewPCG(uint64(k), 2))
			for i := start + k; i < start+envSize; i++ {
				img[i] = byte(r.Uint32())
			}
			tears = append(tears, tear{fmt.Sprintf("copy %d, %d new bytes then garbage", c, k), img})
		}
		for _, tr := range tears {
			t.Run(tr.name, func(t *testing.T) {
				must(t, os.WriteFile(f.image, tr.image, 0o644))
				st, err := f.bl.State()
				if err != nil || !st.Equal(prev) {
					t.Fatalf("State after the tear = %v, %v; want the previous %v", st, err, prev)
				}
				if snap := f.load(t); snap.Copy == c {
					t.Fatalf("read the torn copy %d", c)
				}
				// libubootenv refuses a file shorter than fw_env.config says
				// (exit 243); a block device cannot shrink, so only the
				// in-place tears are compared with it.
				if len(tr.image) == len(full) {
					got := f.printenv(t)
					if got["BOOT_ORDER"] != "A" || got["BOOT_A_LEFT"] != "3" || got["BOOT_B_LEFT"] != "0" {
						t.Fatalf("fw_printenv after the tear: %v", got)
					}
				}
				if s, err := f.bl.SimulateBoot(); err != nil || s != bootloader.A {
					t.Fatalf("boot after the tear: %q, %v; want A", s, err)
				}
				// The agent, back on A, asks again and this time it sticks.
				must(t, f.bl.MarkGood(bootloader.A))
				must(t, f.bl.SetTrial(bootloader.B, 1))
				if s, err := f.bl.SimulateBoot(); err != nil || s != bootloader.B {
					t.Fatalf("boot after the retried trial: %q, %v; want B", s, err)
				}
			})
		}
	}
}

// TestSimPersistsAcrossRestarts reopens a file-backed Sim as a simulated
// device does after a reboot of the simulator process.
func TestSimPersistsAcrossRestarts(t *testing.T) {
	path := t.TempDir() + "/boot.json"
	open := func() *bootloader.Sim {
		s, err := bootloader.OpenSim(path, 0)
		must(t, err)
		return s
	}
	s := open()
	if slot, err := s.Boot(); err != nil || slot != bootloader.A {
		t.Fatalf("boot: %q, %v", slot, err)
	}
	must(t, s.MarkGood(bootloader.A))
	must(t, s.SetTrial(bootloader.B, 1))
	s = open()
	if slot, err := s.Boot(); err != nil || slot != bootloader.B {
		t.Fatalf("boot after reopening: %q, %v", slot, err)
	}
	s = open()
	if slot, err := s.Boot(); err != nil || slot != bootloader.A {
		t.Fatalf("fallback after reopening: %q, %v", slot, err)
	}
	mustState(t, open(), "order=[B:0 A:2] max=3")
}
