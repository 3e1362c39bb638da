//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// installTook is how long the guest took to write and verify release 2
// (measured by the commit scenario); the power-cut scenario cuts at
// fractions of it.
var installTook = 8 * time.Second

// TestGRUB runs the scenarios on the x86_64 machine: SeaBIOS, BIOS GRUB
// with the grub.cfg of docs/agent.md, Debian's kernel, the static agent.
func TestGRUB(t *testing.T) { scenarios(t, buildMachine(t, "x86_64")) }

// TestUBoot runs them on the arm64 machine: QEMU's virt board, U-Boot
// (u-boot-qemu's qemu_arm64) with the boot.cmd of docs/agent.md, the boot
// variables in a U-Boot environment on the disk, Debian's kernel.
func TestUBoot(t *testing.T) { scenarios(t, buildMachine(t, "arm64")) }

func scenarios(t *testing.T, m *machine) {
	bundle := func(v string) string { return filepath.Join(m.dir, "bundle-"+v+".rbundle") }
	for _, p := range m.packages {
		figure("%s: %s", m.arch, p)
	}

	// Scenarios 1-3 follow one device through its life: commit, a
	// release whose health check fails, a release that cannot boot.
	t.Run("Lifecycle", func(t *testing.T) {
		d := m.newDisk(t)
		t.Run("1-Commit", func(t *testing.T) {
			p := d.powerOn(t, bundle("2.0.0"), nil)
			// Factory boot of A, install of 2.0.0 into B, trial boot of B,
			// health check, commit.
			p.wantBoots(t, "A:1.0.0", "B:2.0.0")
			p.must(t, `^booted slot A`, `installed, rebooting into the trial" target=e2e/2\.0\.0/\S+ slot=B`,
				`health 2\.0\.0 exit 0`, `^committed e2e/2\.0\.0/\S+ slot B`)
			if a, ok := p.when(`install start`); ok {
				if b, ok := p.when(`installed, rebooting into the trial`); ok {
					installTook = b - a
					figure("%s: install of a 40 MiB release from a bundle in the guest: %.1fs", m.arch, installTook.Seconds())
				}
			}
			d.wantSlots(t, "1.0.0", "2.0.0")
			// The factory image in A is no verified release: not a fallback.
			d.wantBoot(t, "B", full)
			st := d.state(t)
			if st.Slot != "B" || st.running() != "2.0.0" || st.Pending != nil || st.SecurityCounter != 1 ||
				!st.reported("installed", "", "2.0.0") {
				t.Fatalf("state after the commit: %+v", st)
			}
			// The next boot is B, not on trial.
			p = d.powerOn(t, "", nil)
			p.wantBoots(t, "B:2.0.0")
			p.must(t, `^booted slot B`)
			p.mustNot(t, `^committed`, `^rolled-back`, `rolled back`)
			d.wantBoot(t, "B", full)
		})
		if t.Failed() {
			return
		}
		t.Run("2-HealthCheckFails", func(t *testing.T) {
			p := d.powerOn(t, bundle("3.0.0"), nil)
			// 3.0.0 goes into A; its trial boot fails the health check,
			// the agent rolls back and reboots into B.
			p.wantBoots(t, "B:2.0.0", "A:3.0.0", "B:2.0.0")
			p.must(t, `installed, rebooting into the trial" target=e2e/3\.0\.0/\S+ slot=A`, `health 3\.0\.0 exit 1`,
				`msg="rolled back" target=e2e/3\.0\.0/\S+ reason=health-check-failed`)
			d.wantSlots(t, "3.0.0", "2.0.0")
			d.wantBoot(t, "B", full)
			st := d.state(t)
			if st.Slot != "B" || st.running() != "2.0.0" || st.Pending != nil ||
				!st.reported("rolled-back", "health-check-failed", "3.0.0") || len(st.Failed) != 1 {
				t.Fatalf("state after the rollback: %+v", st)
			}
			p = d.powerOn(t, "", nil)
			p.wantBoots(t, "B:2.0.0")
		})
		if t.Failed() {
			return
		}
		t.Run("3-CannotBoot", func(t *testing.T) {
			p := d.powerOn(t, bundle("4.0.0"), nil)
			// 4.0.0's init exits: the kernel panics, panic=1 resets, GRUB
			// finds A tried and boots B; the agent records the rollback
			// and confirms B.
			p.wantBoots(t, "B:2.0.0", "B:2.0.0")
			p.must(t, `installed, rebooting into the trial" target=e2e/4\.0\.0/\S+ slot=A`, `init of this release exits`,
				`Kernel panic`, `msg="rolled back" target=e2e/4\.0\.0/\S+ reason=trial-boot-failed`,
				`^rolled-back e2e/4\.0\.0/\S+ slot B \(trial-boot-failed\)`)
			d.wantSlots(t, "4.0.0", "2.0.0")
			// B confirmed after the rollback (GRUB: B_TRY=0): the next
			// power-on boots it at once. Before the fix B_TRY stayed 1 and
			// GRUB found no slot to boot.
			d.wantBoot(t, "B", full)
			st := d.state(t)
			if st.Slot != "B" || st.running() != "2.0.0" || st.Pending != nil ||
				!st.reported("rolled-back", "trial-boot-failed", "4.0.0") {
				t.Fatalf("state after the fallback: %+v", st)
			}
			for i := 0; i < 2; i++ {
				p = d.powerOn(t, "", nil)
				p.wantBoots(t, "B:2.0.0")
				p.mustNot(t, `no slot left to try`, `Kernel panic`)
			}
		})
	})

	t.Run("4-PowerCut", func(t *testing.T) {
		t.Run("FirstBoot", func(t *testing.T) {
			// Cut during each of the first boots, before the agent ran,
			// until slot A is out of attempts: the empty slot B must never
			// boot; the bootloader restores A's attempts and boots A.
			d := m.newDisk(t)
			for i := 0; i < m.max; i++ {
				d.powerOn(t, "", &cut{at: regexp.MustCompile(`RAMPART-E2E: booted slot=A`)})
			}
			p := d.powerOn(t, "", nil)
			p.wantBoots(t, "A:1.0.0")
			p.must(t, `no slot left to try`)
			p.mustNot(t, `unknown filesystem`, `slot B`)
			d.wantBoot(t, "A", full)
		})
		t.Run("Writing", func(t *testing.T) {
			d := m.newDisk(t)
			// While the agent writes the inactive slot. The guest writes
			// dirty pages back within half a second (its init sets
			// vm.dirty_expire_centisecs) and unsynced ones die with the
			// power, so a cut leaves B empty, partly written or whole;
			// none of it may boot.
			for i, frac := range []float64{0.2, 0.5, 0.8} {
				delay := time.Duration(frac * float64(installTook))
				p := d.powerOn(t, bundle("2.0.0"), &cut{at: regexp.MustCompile(`RAMPART-E2E: install start`), delay: delay, mayFinish: true})
				armed := p.has(`installed, rebooting into the trial`)
				t.Logf("cut %d (+%v) left slot B holding %s (trial armed: %v)", i, delay, d.slot(t, "B"), armed)
				if !armed {
					d.wantBoot(t, "A", full) // B not bootable
				}
				p = d.powerOn(t, "", nil)
				// Whatever the cut left, every boot is a good slot.
				bs := p.boots()
				if len(bs) == 0 {
					t.Fatalf("no boot after cut %d (log %s)", i, p.log)
				}
				for _, b := range bs {
					if !(b == boot{"A", "1.0.0"} || armed && b == boot{"B", "2.0.0"}) {
						t.Fatalf("after cut %d the device booted %v (log %s)", i, b, p.log)
					}
				}
				if got := d.slot(t, "A"); got != "1.0.0" {
					t.Fatalf("slot A holds %s after a cut while writing B", got)
				}
			}
			// A power-on with the bundle resumes or restarts the install
			// and commits (or finds it committed by a trial the last cut
			// had already armed).
			p := d.powerOn(t, bundle("2.0.0"), nil)
			if !p.has(`^committed e2e/2\.0\.0/\S+ slot B`) {
				p.must(t, `^up-to-date e2e/2\.0\.0/`)
			}
			if l, ok := p.line(`installed, rebooting into the trial`); ok {
				t.Logf("the last install: %s", l)
			}
			d.wantSlots(t, "1.0.0", "2.0.0")
			d.wantBoot(t, "B", full)
			d.powerOn(t, "", nil).wantBoots(t, "B:2.0.0")
		})
		t.Run("Committing", func(t *testing.T) {
			d := m.newDisk(t)
			// The trial boot of 2.0.0 is cut after its health check
			// started (it takes 0.5 s), before, during and after the
			// commit's writes. A cut before the commit is a trial that
			// never confirmed: the bootloader falls back to A and the
			// agent records the rollback; the next power-on with the
			// bundle installs and tries again. A cut after it leaves 2.0.0
			// committed.
			committed := false
			for i, delay := range []time.Duration{0, 450 * time.Millisecond, 550 * time.Millisecond, 650 * time.Millisecond, 800 * time.Millisecond, 1500 * time.Millisecond} {
				d.powerOn(t, bundle("2.0.0"), &cut{at: regexp.MustCompile(`RAMPART-E2E: health 2\.0\.0`), delay: delay, mayFinish: true})
				p := d.powerOn(t, "", nil)
				bs := p.boots()
				if len(bs) == 0 {
					t.Fatalf("no boot after commit cut %d (log %s)", i, p.log)
				}
				last := bs[len(bs)-1]
				st := d.state(t)
				if st.hasReason("committed-slot-failed") {
					// The bootloader booted A after the agent had committed B.
					t.Fatalf("after commit cut %d (+%v) the committed slot did not boot: boots %v, state %+v (log %s)", i, delay, bs, st, p.log)
				}
				switch {
				case last == boot{"B", "2.0.0"} && st.Slot == "B" && st.running() == "2.0.0" && st.Pending == nil:
					committed = true
					t.Logf("commit cut %d (+%v): committed", i, delay)
					d.wantBoot(t, "B", full)
				case last == boot{"A", "1.0.0"} && st.Slot == "A" && st.running() == "factory" && st.Pending == nil &&
					st.reported("rolled-back", "trial-boot-failed", "2.0.0"):
					t.Logf("commit cut %d (+%v): rolled back", i, delay)
					d.wantBoot(t, "A", full)
				default:
					t.Fatalf("after commit cut %d (+%v) the device booted %v with state %+v (log %s)", i, delay, bs, st, p.log)
				}
				if committed {
					break
				}
			}
			if !committed {
				p := d.powerOn(t, bundle("2.0.0"), nil)
				p.must(t, `^committed e2e/2\.0\.0/\S+ slot B`)
			}
			d.wantSlots(t, "1.0.0", "2.0.0")
			d.powerOn(t, "", nil).wantBoots(t, "B:2.0.0")
		})
	})

	t.Run("5-TamperedBundle", func(t *testing.T) {
		d := m.newDisk(t)
		bad := filepath.Join(t.TempDir(), "tampered-2.0.0.rbundle")
		run(t, "cp", bundle("2.0.0"), bad)
		// One byte of the signed metadata at the start of the bundle.
		run(t, "sh", "-c", fmt.Sprintf("printf x | dd of=%s bs=1 seek=6000 conv=notrunc 2>/dev/null", bad))
		before := d.slot(t, "B")
		p := d.powerOn(t, bad, nil)
		p.wantBoots(t, "A:1.0.0")
		p.must(t, `refused as`)
		p.mustNot(t, `installed, rebooting into the trial`)
		if got := d.slot(t, "B"); got != before || got != "empty" {
			t.Fatalf("slot B holds %s after a refused bundle, held %s", got, before)
		}
		d.wantBoot(t, "A", full)
		st := d.state(t)
		if st.Pending != nil || st.running() != "factory" {
			t.Fatalf("state after the refusal: %+v", st)
		}
	})
}
