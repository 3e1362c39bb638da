//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestGRUB runs the scenarios on the x86_64 machine: SeaBIOS, BIOS GRUB
// with the grub.cfg of docs/agent.md, Debian's kernel, the static agent.
// It runs beside TestUBoot, and the scenarios of both share the lanes.
func TestGRUB(t *testing.T) {
	t.Parallel()
	scenarios(t, buildMachine(t, "x86_64"))
}

// TestUBoot runs them on the arm64 machine: QEMU's virt board, U-Boot
// (u-boot-qemu's qemu_arm64) with the boot.cmd of docs/agent.md, the boot
// variables in a U-Boot environment on the disk, Debian's kernel.
func TestUBoot(t *testing.T) {
	t.Parallel()
	scenarios(t, buildMachine(t, "arm64"))
}

// The scenarios are independent devices, each on its own copy of the
// factory disk, and run in parallel: each takes a lane (see lanes) for as
// long as it runs. Their costs, in boots of the arm64 machine, order them.
func scenarios(t *testing.T, m *machine) {
	bundle := func(v string) string { return filepath.Join(m.dir, "bundle-"+v+".rbundle") }
	for _, p := range m.packages {
		figure("%s: %s", m.arch, p)
	}
	installStart := `RAMPART-E2E: install start`

	// Scenarios 1-3 follow one device through its life: commit, a
	// release whose health check fails, a release that cannot boot. Each
	// power-on's first boot, before its install, is the "next boot" of
	// the scenario before.
	lifecycle := false
	t.Run("Lifecycle", func(t *testing.T) {
		lifecycle = true
		t.Parallel()
		// The power cuts while writing wait for the install time.
		defer m.setInstallTook(0)
		lanes.lane(t, 11*m.weight)
		d := m.newDisk(t)
		t.Run("1-Commit", func(t *testing.T) {
			p := d.powerOn(t, bundle("2.0.0"), nil)
			// Factory boot of A, install of 2.0.0 into B, trial boot of B,
			// health check, commit.
			p.wantBoots(t, "A:1.0.0", "B:2.0.0")
			p.must(t, `^booted slot A`, `installed, rebooting into the trial" target=e2e/2\.0\.0/\S+ slot=B`,
				`health 2\.0\.0 exit 0`, `^committed e2e/2\.0\.0/\S+ slot B`)
			if a, ok := p.when(installStart); ok {
				if b, ok := p.when(`installed, rebooting into the trial`); ok {
					m.setInstallTook(b - a)
					figure("%s: install of a 40 MiB release from a bundle in the guest: %.1fs", m.arch, (b - a).Seconds())
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
		})
		if t.Failed() {
			return
		}
		t.Run("2-HealthCheckFails", func(t *testing.T) {
			p := d.powerOn(t, bundle("3.0.0"), nil)
			// The next boot after the commit is B, not on trial.
			next := p.until(installStart)
			next.wantBoots(t, "B:2.0.0")
			next.must(t, `^booted slot B`)
			next.mustNot(t, `^committed`, `^rolled-back`, `rolled back`)
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
		})
		if t.Failed() {
			return
		}
		t.Run("3-CannotBoot", func(t *testing.T) {
			p := d.powerOn(t, bundle("4.0.0"), nil)
			// The next boot after the rollback is B.
			p.until(installStart).wantBoots(t, "B:2.0.0")
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
			p = d.powerOn(t, "", nil)
			p.wantBoots(t, "B:2.0.0")
			p.mustNot(t, `no slot left to try`, `Kernel panic`)
			// The power-on left the boot variables as it found them, so
			// every later one boots B the same way.
			d.wantBoot(t, "B", full)
		})
	})
	if !lifecycle {
		m.setInstallTook(0)
	}

	t.Run("4-PowerCut", func(t *testing.T) {
		t.Parallel()
		t.Run("FirstBoot", func(t *testing.T) {
			t.Parallel()
			lanes.lane(t, float64(m.max+1)*m.weight)
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
			t.Parallel()
			<-m.installKnown
			lanes.lane(t, 9*m.weight)
			d := m.newDisk(t)
			// While the agent writes the inactive slot. The guest writes
			// dirty pages back within half a second (its init sets
			// vm.dirty_expire_centisecs) and unsynced ones die with the
			// power, so a cut leaves B empty, partly written or whole;
			// none of it may boot. Each power-on after a cut first boots
			// (what the cut left must boot a good slot), then resumes or
			// restarts the install.
			armed := false // the last cut came after the trial was armed
			after := func(i int, p *power) {
				t.Helper()
				bs := p.until(installStart).boots()
				if len(bs) == 0 {
					t.Fatalf("no boot after cut %d (log %s)", i, p.log)
				}
				for _, b := range bs {
					if !(b == boot{"A", "1.0.0"} || armed && b == boot{"B", "2.0.0"}) {
						t.Fatalf("after cut %d the device booted %v (log %s)", i, b, p.log)
					}
				}
			}
			for i, frac := range []float64{0.2, 0.5, 0.8} {
				delay := time.Duration(frac * float64(m.installTook))
				p := d.powerOn(t, bundle("2.0.0"), &cut{at: regexp.MustCompile(installStart), delay: delay, mayFinish: true})
				if i > 0 {
					after(i-1, p)
				}
				// The cut may land after the trial was armed and before
				// the agent's line saying so reached the console.
				armed = p.has(`installed, rebooting into the trial`) || d.trialArmed(t)
				t.Logf("cut %d (+%v) left slot B holding %s (trial armed: %v)", i, delay, d.slot(t, "B"), armed)
				if !armed {
					d.wantBoot(t, "A", full) // B not bootable
				}
				if got := d.slot(t, "A"); got != "1.0.0" {
					t.Fatalf("slot A holds %s after a cut while writing B", got)
				}
			}
			// A power-on with the bundle resumes or restarts the install
			// and commits (or finds it committed by a trial the last cut
			// had already armed).
			p := d.powerOn(t, bundle("2.0.0"), nil)
			after(2, p)
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
			t.Parallel()
			lanes.lane(t, 14*m.weight)
			// Every cut starts from the same disk: release 2.0.0 installed
			// into B and its trial armed, saved at the guest's reboot into
			// the trial (QEMU stopped at the reset).
			d := m.newDisk(t)
			p := d.powerOnUntilReset(t, bundle("2.0.0"))
			p.wantBoots(t, "A:1.0.0")
			p.must(t, `installed, rebooting into the trial" target=e2e/2\.0\.0/\S+ slot=B`)
			d.wantSlots(t, "1.0.0", "2.0.0")
			armedDisk := d.save(t)
			// The trial boot of 2.0.0 is cut after its health check
			// started (it takes 0.5 s), before, during and after the
			// commit's writes, until a cut leaves it committed. A cut
			// before the commit is a trial that never confirmed: the
			// bootloader falls back to A and the agent records the
			// rollback; a power-on with the bundle then installs and tries
			// again. A cut after it leaves 2.0.0 committed.
			committed := false
			var rolledBack *disk
			for i, delay := range []time.Duration{0, 450 * time.Millisecond, 550 * time.Millisecond, 650 * time.Millisecond, 800 * time.Millisecond, 1500 * time.Millisecond} {
				d := m.diskFrom(t, armedDisk, fmt.Sprintf("cut%d", i+1))
				d.powerOn(t, "", &cut{at: regexp.MustCompile(`RAMPART-E2E: health 2\.0\.0`), delay: delay, mayFinish: true})
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
					rolledBack = d
				default:
					t.Fatalf("after commit cut %d (+%v) the device booted %v with state %+v (log %s)", i, delay, bs, st, p.log)
				}
				if committed {
					break
				}
			}
			if rolledBack != nil {
				// After a rolled-back trial, the install starts over.
				d := rolledBack
				p := d.powerOn(t, bundle("2.0.0"), nil)
				p.must(t, `^committed e2e/2\.0\.0/\S+ slot B`)
				d.wantSlots(t, "1.0.0", "2.0.0")
				d.wantBoot(t, "B", full)
				if !committed {
					d.powerOn(t, "", nil).wantBoots(t, "B:2.0.0")
				}
			}
		})
	})

	t.Run("5-TamperedBundle", func(t *testing.T) {
		t.Parallel()
		lanes.lane(t, 1.5*m.weight)
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
