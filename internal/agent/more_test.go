package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootenv"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/verify"
)

// commit installs version and commits it through a trial boot.
func (d *device) commit(version string) *agent.Outcome {
	d.t.Helper()
	out, err := d.run()
	if err != nil {
		d.t.Fatalf("installing %s: %v", version, err)
	}
	if out.Action != "installed-pending-reboot" {
		d.t.Fatalf("installing %s: %+v", version, out)
	}
	d.powerCycle()
	if b := d.boot(); b.Action != "committed" {
		d.t.Fatalf("committing %s: %+v", version, b)
	}
	return out
}

// With 5% of the chunks changed relative to the running image, the agent
// downloads at most 10% of the image: the rest is copied from the running
// slot after verification.
func TestChunkReuse(t *testing.T) {
	t.Parallel()
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	for _, s := range []string{d.cfg.Slots.A, d.cfg.Slots.B} {
		if err := os.Truncate(s, 48<<20); err != nil { // partitions for a 40 MiB image
			t.Fatal(err)
		}
	}
	d.firstBoot()
	const chunks = 40
	img1 := make([]byte, chunks<<20)
	rand.Read(img1)
	e.ReleaseImage("1.0.0", 2, img1, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	if in := d.commit("1.0.0").Install; in.BytesDownloaded != int64(len(img1)) {
		t.Fatalf("first install downloaded %d of %d bytes", in.BytesDownloaded, len(img1))
	}

	img2 := bytes.Clone(img1)
	for _, c := range []int{7, 29} { // 2 of 40 chunks = 5%
		rand.Read(img2[c<<20 : c<<20+4096])
	}
	e.ReleaseImage("1.1.0", 3, img2, hw)
	e.Deploy(servertest.Product+"/1.1.0", hw)
	in := d.commit("1.1.0").Install
	t.Logf("second install: downloaded %d of %d bytes (%.1f%%), reused %d", in.BytesDownloaded, in.ImageSize, 100*float64(in.BytesDownloaded)/float64(in.ImageSize), in.BytesReused)
	if in.BytesDownloaded > in.ImageSize/10 {
		t.Fatalf("downloaded %d of %d bytes with 5%% of chunks changed", in.BytesDownloaded, in.ImageSize)
	}
	if in.Reused != chunks-2 || in.Fetched != 2 {
		t.Fatalf("reused %d, fetched %d chunks", in.Reused, in.Fetched)
	}
	if !d.slotHas(bootloader.A, img2) {
		t.Fatal("slot A does not hold the new image")
	}
	if st := d.status(); st.SecurityCounter != 3 || st.Running.Version != "1.1.0" || st.Other == nil || st.Other.Version != "1.0.0" {
		t.Fatalf("status: %+v", st)
	}
}

// fullDisk is the real filesystem with a slot device that runs out of space
// after limit bytes, failing writes with ENOSPC as the kernel does.
type fullDisk struct {
	fsys.FS
	slot  string
	limit int64
}

func (f *fullDisk) OpenFile(name string, flag int, perm fs.FileMode) (fsys.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || name != f.slot {
		return file, err
	}
	return &limitedFile{File: file, limit: f.limit, name: name}, nil
}

type limitedFile struct {
	fsys.File
	name  string
	limit int64
}

func (l *limitedFile) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > l.limit {
		return 0, &fs.PathError{Op: "write", Path: l.name, Err: syscall.ENOSPC}
	}
	return l.File.WriteAt(p, off)
}

func TestFullDisk(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	img := make([]byte, 4<<20)
	rand.Read(img)
	e.ReleaseImage("1.0.0", 2, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	d.a.FS = &fullDisk{FS: fsys.OS, slot: d.cfg.Slots.B, limit: 2 << 20}
	_, err := d.run()
	if !errors.Is(err, agent.ErrInstall) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("got %v, want an install failure with ENOSPC", err)
	}
	if srv := d.server(); srv["last_status"] != "failed" {
		t.Fatalf("server record: %v", srv)
	}
	d.assertUntouched()
	// With space again, the install completes.
	d.a.FS = fsys.OS
	d.booted = bootloader.A
	d.commit("1.0.0")
}

func TestOfflineBundleBelowCounter(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Release("2.0.0", 5, hw)
	e.Deploy(servertest.Product+"/2.0.0", hw)
	d.commit("2.0.0")
	old := bundleOf(t, e, "1.0.0")
	before := d.slotDigest(bootloader.A)
	_, err := d.a.InstallBundle(context.Background(), old)
	wantClass(t, err, verify.Downgrade)
	if d.slotDigest(bootloader.A) != before {
		t.Fatal("the inactive slot was written for a refused bundle")
	}
	if st, _ := d.sim.State(); st.InOrder(bootloader.A) {
		t.Fatalf("boot state after the refusal: %v", st)
	}
}

// An offline bundle must prove its release is in the log, as an online
// update does: without a proof, or with the proof of another release, it
// is refused as not-logged before anything is written. A fleet without a
// log can turn the requirement off.
func TestOfflineBundleLog(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Release("2.0.0", 3, hw)
	// Online first, so the device holds a checkpoint, of the size the
	// bundle's proof has: the proof must then be for the very same tree.
	e.Deploy(servertest.Product+"/1.0.0", hw)
	d.commit("1.0.0")
	if _, err := os.Stat(filepath.Join(d.a.TUFDir, "log", "checkpoint")); err != nil {
		t.Fatalf("no stored checkpoint: %v", err)
	}
	running := d.slotDigest(bootloader.B)

	for name, b := range map[string]string{
		"no proof":                  bundleWithProof(t, e, "2.0.0", nil),
		"another release's proof":   bundleWithProof(t, e, "2.0.0", e.LogProof("1.0.0")),
		"empty proof member":        bundleWithProof(t, e, "2.0.0", []byte{}),
		"proof that is not a proof": bundleWithProof(t, e, "2.0.0", []byte(`{"statement":"x","proof":{}}`)),
	} {
		_, err := d.a.InstallBundle(context.Background(), b)
		var ve *verify.Error
		if !errors.As(err, &ve) || (ve.Class != verify.NotLogged && ve.Class != verify.Malformed) {
			t.Fatalf("%s: got %v, want a not-logged or malformed refusal", name, err)
		}
		if name == "no proof" && (ve.Class != verify.NotLogged || !strings.Contains(err.Error(), "rampart bundle --server")) {
			t.Errorf("no proof: %v", err)
		}
		if name == "another release's proof" && ve.Class != verify.NotLogged {
			t.Errorf("another release's proof: %v", err)
		}
		if d.slotDigest(bootloader.B) != running {
			t.Fatalf("%s: the running slot changed", name)
		}
		if st, _ := d.sim.State(); st.InOrder(bootloader.A) {
			t.Fatalf("%s: the inactive slot is bootable after a refusal: %v", name, st)
		}
	}

	out, err := d.a.InstallBundle(context.Background(), bundleOf(t, e, "2.0.0"))
	if err != nil || out.Action != "installed-pending-reboot" {
		t.Fatalf("a bundle with its proof: %+v, %v", out, err)
	}

	// Without a log requirement a format 1 bundle installs.
	d2 := newDevice(t, e, "gw-2")
	d2.firstBoot()
	off := false
	d2.a.Config.Offline.RequireLog = &off
	if out, err := d2.a.InstallBundle(context.Background(), bundleWithProof(t, e, "2.0.0", nil)); err != nil || out.Action != "installed-pending-reboot" {
		t.Fatalf("offline.require_log = false: %+v, %v", out, err)
	}
}

// The agent on a U-Boot board with a redundant environment, one copy of
// which is corrupt (a torn write by someone else): it works from the good
// copy, and fw_printenv reads what it wrote.
func TestUBootRedundantWithCorruptCopy(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	const size = 0x4000
	env0, env1 := filepath.Join(d.dir, "env0"), filepath.Join(d.dir, "env1")
	good, err := bootenv.MarshalUBoot(bootenv.Env{"bootcmd": "run rauc", "BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}, size, true, 1)
	if err != nil {
		t.Fatal(err)
	}
	torn := bytes.Clone(good)
	torn[100] ^= 0xff
	os.WriteFile(env0, good, 0o644)
	os.WriteFile(env1, torn, 0o644)
	config := filepath.Join(d.dir, "fw_env.config")
	os.WriteFile(config, []byte(env0+" 0x0 0x4000\n"+env1+" 0x0 0x4000\n"), 0o644)
	d.cfg.Bootloader = agent.BootloaderConfig{Backend: "uboot", FWEnvConfig: config, EnvSize: size}
	bl, err := agent.OpenBootloader(d.cfg, fsys.OS)
	if err != nil {
		t.Fatal(err)
	}
	ub := bl.(*bootloader.UBoot)
	d.a.Bootloader = ub
	boot := func() bootloader.Slot {
		s, err := ub.SimulateBoot()
		if err != nil {
			t.Fatal(err)
		}
		d.booted = s
		return s
	}
	if boot() != bootloader.A {
		t.Fatal("factory boot did not start A")
	}
	d.boot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	if _, err := d.run(); err != nil {
		t.Fatal(err)
	}
	if boot() != bootloader.B {
		t.Fatal("trial boot did not start B")
	}
	if out := d.boot(); out.Action != "committed" {
		t.Fatalf("boot: %+v", out)
	}
	if _, err := exec.LookPath("fw_printenv"); err != nil {
		t.Fatal("fw_printenv not found (Debian package libubootenv-tool); make test installs it")
	}
	out, err := exec.Command("fw_printenv", "-c", config).CombinedOutput()
	if err != nil {
		t.Fatalf("fw_printenv: %v\n%s", err, out)
	}
	for _, want := range []string{"BOOT_ORDER=B\n", "BOOT_B_LEFT=3\n", "bootcmd=run rauc\n"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("fw_printenv after commit lacks %q:\n%s", want, out)
		}
	}
}

// bundleOf writes an offline bundle of a published release, with its log
// proof from the server.
func bundleOf(t *testing.T, e *servertest.Env, version string) string {
	t.Helper()
	return bundleWithProof(t, e, version, e.LogProof(version))
}

// bundleWithProof writes an offline bundle of a published release that
// carries proof as its log proof (none when nil: a format 1 bundle).
func bundleWithProof(t *testing.T, e *servertest.Env, version string, proof []byte) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), version+".rbundle")
	e.WriteBundle(out, version, proof)
	return out
}

// A frozen repository (metadata past its expiry, e.g. a mirror replaying
// yesterday's files) is refused before anything is downloaded, reported
// with its class, and the slots are untouched.
func TestFrozenMetadataRefused(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	later := time.Now().Add(40 * 24 * time.Hour)
	d.a.Now = func() time.Time { return later }
	_, err := d.run()
	wantClass(t, err, verify.Expired)
	if srv := d.server(); srv["last_status"] != "verification-refused" {
		t.Fatalf("server record: %v", srv)
	}
	if st := d.status(); st.LastError == nil || st.LastError.Class != "expired" {
		t.Fatalf("status: %+v", st.LastError)
	}
	d.assertUntouched()
}
