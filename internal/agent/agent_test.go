package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/verify"
)

const hw = "acme-gw-rev2"

// device is a simulated device: file-backed slots, the simulated bootloader
// persisted in a file, a configurable health check, and a reboot that only
// records that it was asked for. The agent on it talks to a real server.
type device struct {
	t      *testing.T
	e      *servertest.Env
	id     string
	dir    string
	cfg    *agent.Config
	a      *agent.Agent
	sim    *bootloader.Sim
	booted bootloader.Slot

	client    *http.Client
	cert      *tls.Certificate
	health    func() error
	rebooting atomic.Int32
	factory   []byte // the start of slot A at the factory; the rest is zeros
}

// slotSize is the size of each slot file of a test device: a file slot
// stands for a partition and is not grown.
const slotSize = 8 << 20

func newDevice(t *testing.T, e *servertest.Env, id string) *device {
	t.Helper()
	return newDeviceMax(t, e, id, 0)
}

// newDeviceMax is newDevice with the simulated bootloader's MaxAttempts:
// 1 is GRUB with RAUC's grub.conf (one try, then the fallback), 3 U-Boot's
// default, 0 the default.
func newDeviceMax(t *testing.T, e *servertest.Env, id string, maxAttempts int) *device {
	t.Helper()
	dir := t.TempDir()
	d := &device{t: t, e: e, id: id, dir: dir, booted: bootloader.A, health: func() error { return nil }}
	cfgText := fmt.Sprintf(`
[server]
url = %q
ca = "ca.pem"
[device]
id = %q
hardware_id = %q
key = "device.key"
certificate = "device.crt"
[trust]
image_root = "image-root.json"
director_root = "director-root.json"
log_key = "log.pub"
[slots]
a = "slot-a"
b = "slot-b"
[bootloader]
backend = "sim"
env = "boot.json"
max_attempts = %d
[health]
command = ["health"]
timeout = "2s"
[reboot]
command = ["reboot"]
[state]
dir = "state"
[download]
workers = 2
retries = 2
`, e.TS.URL, id, hw, maxAttempts)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("agent.toml", []byte(cfgText))
	write("ca.pem", e.CAPEM)
	write("image-root.json", e.ImageRoot)
	write("director-root.json", e.DirectorRoot)
	write("log.pub", e.Read("online/log.pub"))
	d.factory = make([]byte, 300<<10)
	rand.Read(d.factory)
	write("slot-a", d.factory)
	write("slot-b", nil)
	for _, s := range []string{"slot-a", "slot-b"} {
		if err := os.Truncate(filepath.Join(dir, s), slotSize); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := agent.LoadConfig(filepath.Join(dir, "agent.toml"))
	if err != nil {
		t.Fatal(err)
	}
	d.cfg = cfg
	cert := e.Enroll(id, hw)
	d.cert = cert
	d.sim, err = bootloader.OpenSim(cfg.Bootloader.Env, cfg.Bootloader.MaxAttempts)
	if err != nil {
		t.Fatal(err)
	}
	d.a = &agent.Agent{
		Config: cfg, FS: fsys.OS, TUFDir: filepath.Join(dir, "tuf"), Bootloader: d.sim,
		HTTP:       e.Client(cert),
		BootedSlot: func() (bootloader.Slot, error) { return d.booted, nil },
		Exec:       d.exec,
		ImageRoot:  e.ImageRoot, DirectorRoot: e.DirectorRoot,
		LogOrigin: servertest.LogOrigin, LogKey: e.LogKey,
		Log: testLogger(t),
	}
	d.client = d.a.HTTP
	return d
}

func (d *device) exec(ctx context.Context, argv []string, timeout time.Duration) error {
	switch argv[0] {
	case "health":
		return d.health()
	case "reboot":
		d.rebooting.Add(1)
		return nil
	}
	return agent.RunCommand(ctx, argv, timeout)
}

// powerCycle boots the simulated device: the bootloader picks the slot.
func (d *device) powerCycle() bootloader.Slot {
	d.t.Helper()
	s, err := d.sim.Boot()
	if err != nil {
		d.t.Fatalf("simulated boot: %v", err)
	}
	d.booted = s
	d.rebooting.Store(0)
	return s
}

func (d *device) boot() *agent.Outcome {
	d.t.Helper()
	out, err := d.a.Boot(context.Background())
	if err != nil {
		d.t.Fatalf("boot: %v", err)
	}
	return out
}

func (d *device) run() (*agent.Outcome, error) {
	return d.a.Run(context.Background())
}

// The slot checks below stream the slot file through one reused buffer
// rather than reading it whole: under -race each fresh multi-megabyte
// buffer has its shadow memory mapped anew and faulted in page by page,
// and reading 8 MiB slots that way was a quarter of this package's CPU.
var (
	slotBufMu sync.Mutex
	slotBuf   = make([]byte, 256<<10)
)

// eachPiece calls fn with slot s's bytes in order, piece by piece (p is
// valid only during the call), and returns the slot's size.
func (d *device) eachPiece(s bootloader.Slot, fn func(off int64, p []byte)) int64 {
	d.t.Helper()
	path := d.a.Config.Slots.A
	if s == bootloader.B {
		path = d.a.Config.Slots.B
	}
	f, err := os.Open(path)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	slotBufMu.Lock()
	defer slotBufMu.Unlock()
	var off int64
	for {
		n, err := io.ReadFull(f, slotBuf)
		if n > 0 {
			fn(off, slotBuf[:n])
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return off
		}
		if err != nil {
			d.t.Fatal(err)
		}
	}
}

// slotDigest is the SHA-256 of slot s: equal digests, equal slots.
func (d *device) slotDigest(s bootloader.Slot) [32]byte {
	d.t.Helper()
	h := sha256.New()
	d.eachPiece(s, func(_ int64, p []byte) { h.Write(p) })
	return [32]byte(h.Sum(nil))
}

// slotHas reports whether slot s starts with want.
func (d *device) slotHas(s bootloader.Slot, want []byte) bool {
	d.t.Helper()
	ok := true
	size := d.eachPiece(s, func(off int64, p []byte) {
		if off < int64(len(want)) {
			w := want[off:min(int64(len(want)), off+int64(len(p)))]
			ok = ok && bytes.Equal(p[:len(w)], w)
		}
	})
	return ok && size >= int64(len(want))
}

// slotZeroFrom reports whether every byte of slot s from offset from on
// is zero.
func (d *device) slotZeroFrom(s bootloader.Slot, from int64) bool {
	d.t.Helper()
	zero := true
	d.eachPiece(s, func(off int64, p []byte) {
		if skip := from - off; skip > 0 {
			p = p[min(skip, int64(len(p))):]
		}
		zero = zero && bytes.Count(p, []byte{0}) == len(p)
	})
	return zero
}

// slotContains reports whether needle occurs in slot s at or after
// offset from.
func (d *device) slotContains(s bootloader.Slot, from int64, needle []byte) bool {
	d.t.Helper()
	found := false
	var carry []byte // the previous piece's last len(needle)-1 bytes
	d.eachPiece(s, func(off int64, p []byte) {
		if skip := from - off; skip > 0 {
			p = p[min(skip, int64(len(p))):]
		}
		w := append(carry, p...)
		found = found || bytes.Contains(w, needle)
		carry = append([]byte(nil), w[max(0, len(w)-len(needle)+1):]...)
	})
	return found
}

// factorySlot reports whether slot s holds exactly what slot A held at the
// factory.
func (d *device) factorySlot(s bootloader.Slot) bool {
	d.t.Helper()
	size := d.eachPiece(s, func(int64, []byte) {})
	return size == slotSize && d.slotHas(s, d.factory) && d.slotZeroFrom(s, int64(len(d.factory)))
}

func (d *device) status() *agent.Status {
	d.t.Helper()
	s, err := d.a.Status()
	if err != nil {
		d.t.Fatal(err)
	}
	return s
}

// server returns the server's record of the device.
func (d *device) server() map[string]any {
	var m map[string]any
	json.Unmarshal(d.e.Call(d.e.Pool, "GET", "/api/v1/devices/"+d.id, d.e.Admin, nil, 200), &m)
	return m
}

func testLogger(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

// firstBoot brings a factory device to a confirmed boot of slot A.
func (d *device) firstBoot() {
	d.t.Helper()
	if s := d.powerCycle(); s != bootloader.A {
		d.t.Fatalf("factory boot started %s", s)
	}
	d.boot()
	st, _ := d.sim.State()
	if !st.InOrder(bootloader.A) || st.InOrder(bootloader.B) {
		// B holds nothing verified, so it must not be a fallback.
		d.t.Fatalf("after the first boot the boot state is %v, want only A", st)
	}
}

func TestUpdateCommit(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	img := e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)

	var seen []agent.InstallProgress
	d.a.OnProgress = func(p agent.InstallProgress) { seen = append(seen, p) }
	out, err := d.run()
	if err != nil {
		t.Fatal(err)
	}
	if out.Action != "installed-pending-reboot" || out.Slot != "B" || !out.Reboot || d.rebooting.Load() != 1 {
		t.Fatalf("run: %+v (reboots %d)", out, d.rebooting.Load())
	}
	// Progress: from nothing to every chunk, one more each call.
	if n := len(seen); n < 2 || seen[0].Done != 0 || seen[n-1].Done != seen[n-1].Chunks || seen[n-1].Bytes != int64(len(img)) ||
		seen[n-1].Source != "server" || seen[n-1].Target != servertest.Product+"/1.0.0/fw.img" {
		t.Fatalf("progress: %+v ... %+v", seen[0], seen[len(seen)-1])
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Done != seen[i-1].Done+1 || seen[i].Bytes <= seen[i-1].Bytes {
			t.Fatalf("progress step %d: %+v after %+v", i, seen[i], seen[i-1])
		}
	}
	if out.Install == nil || out.Install.Source != "server" {
		t.Fatalf("install outcome: %+v", out.Install)
	}
	if !d.slotHas(bootloader.B, img) {
		t.Fatal("slot B does not hold the image")
	}
	if !d.factorySlot(bootloader.A) {
		t.Fatal("the active slot changed")
	}
	// Not installed yet as far as the server knows.
	if v := d.server()["version"]; v != "" {
		t.Fatalf("server records version %v before the confirmed boot", v)
	}
	if st := d.status(); st.Pending == nil || st.Pending.Phase != agent.PhaseTrial || st.SecurityCounter != 0 {
		t.Fatalf("status before reboot: %+v", st)
	}

	if s := d.powerCycle(); s != bootloader.B {
		t.Fatalf("trial boot started %s", s)
	}
	out = d.boot()
	if out.Action != "committed" || out.Slot != "B" {
		t.Fatalf("boot: %+v", out)
	}
	st := d.status()
	if st.Pending != nil || st.SecurityCounter != 2 || st.Running == nil || st.Running.Version != "1.0.0" || st.CommittedSlot != "B" || st.QueuedReports != 0 {
		t.Fatalf("status after commit: %+v", st)
	}
	srv := d.server()
	if srv["version"] != "1.0.0" || srv["security_version"] != float64(2) || srv["last_status"] != "installed" {
		t.Fatalf("server record after commit: %v", srv)
	}
	// Committed: B boots from now on, with its full attempts.
	for range 5 {
		if s := d.powerCycle(); s != bootloader.B {
			t.Fatalf("after commit the device booted %s", s)
		}
		d.boot()
	}
	// Nothing to do the second time.
	if out, err := d.run(); err != nil || out.Action != "up-to-date" {
		t.Fatalf("second run: %+v %v", out, err)
	}
}

func TestRollbackWhenHealthCheckFails(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	if _, err := d.run(); err != nil {
		t.Fatal(err)
	}
	d.powerCycle()
	d.health = func() error { return errors.New("service foo did not start") }
	out := d.boot()
	if out.Action != "rolled-back" || out.Reason != "health-check-failed" || !out.Reboot || d.rebooting.Load() != 1 {
		t.Fatalf("boot: %+v", out)
	}
	d.health = func() error { return nil }
	if s := d.powerCycle(); s != bootloader.A {
		t.Fatalf("after the rollback the device booted %s", s)
	}
	if out := d.boot(); out.Action != "booted" {
		t.Fatalf("boot after rollback: %+v", out)
	}
	st := d.status()
	if st.SecurityCounter != 0 || st.Running != nil || st.Pending != nil || st.CommittedSlot != "A" {
		t.Fatalf("status after rollback: %+v", st)
	}
	if !d.factorySlot(bootloader.A) {
		t.Fatal("the factory slot changed")
	}
	srv := d.server()
	if srv["last_status"] != "rolled-back" || srv["version"] != "" {
		t.Fatalf("server record: %v", srv)
	}
	// The same release is not installed again in a loop.
	if out, err := d.run(); err != nil || out.Action != "not-retried" || out.Reason != "health-check-failed" {
		t.Fatalf("run after rollback: %+v %v", out, err)
	}
}

func TestRollbackWhenHealthCheckHangs(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	if _, err := d.run(); err != nil {
		t.Fatal(err)
	}
	d.powerCycle()
	// A real command that never finishes, under the real time limit.
	d.a.Config.Health = agent.CommandConfig{Command: []string{"sleep", "60"}, Timeout: agent.Duration{Duration: 300 * time.Millisecond}}
	d.a.Exec = func(ctx context.Context, argv []string, timeout time.Duration) error {
		if argv[0] == "reboot" {
			return nil
		}
		return agent.RunCommand(ctx, argv, timeout)
	}
	start := time.Now()
	out := d.boot()
	if out.Action != "rolled-back" || out.Reason != "health-check-timeout" {
		t.Fatalf("boot: %+v", out)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("a hung health check held the boot for %v", el)
	}
	if s := d.powerCycle(); s != bootloader.A {
		t.Fatalf("after the rollback the device booted %s", s)
	}
}

// TestTrialThatNeverComesUpFallsBack: the new image never starts the
// agent; the bootloader falls back by itself. The agent on the old slot
// records the rollback and confirms the slot it runs on, so that the
// following power-ons boot it too: with GRUB's one try (max 1), a slot left
// unconfirmed after the fallback has no attempt left for the next power-on.
func TestTrialThatNeverComesUpFallsBack(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		max  int
	}{{"GRUB", 1}, {"UBoot", 3}} {
		t.Run(c.name, func(t *testing.T) {
			e := servertest.New(t)
			d := newDeviceMax(t, e, "gw-1", c.max)
			d.firstBoot()
			e.Release("1.0.0", 2, hw)
			e.Deploy(servertest.Product+"/1.0.0", hw)
			if _, err := d.run(); err != nil {
				t.Fatal(err)
			}
			// The new kernel hangs before the agent runs: no Boot call. The
			// bootloader's counter brings the old slot back on its own.
			if s := d.powerCycle(); s != bootloader.B {
				t.Fatalf("trial boot started %s", s)
			}
			if s := d.powerCycle(); s != bootloader.A {
				t.Fatalf("after a hung trial the bootloader booted %s", s)
			}
			out := d.boot()
			if out.Action != "rolled-back" || out.Reason != "trial-boot-failed" || out.Slot != "A" {
				t.Fatalf("boot: %+v", out)
			}
			if srv := d.server(); srv["last_status"] != "rolled-back" {
				t.Fatalf("server record: %v", srv)
			}
			st, _ := d.sim.State()
			if st.InOrder(bootloader.B) {
				t.Fatalf("the failed slot is still in the boot order: %v", st)
			}
			if !st.Bootable(bootloader.A) || st.Attempts[bootloader.A] != st.MaxAttempts {
				t.Fatalf("the running slot was not confirmed after the rollback: %v", st)
			}
			// Power on again, several times: A every time, confirmed.
			for i := 0; i < 3; i++ {
				if s := d.powerCycle(); s != bootloader.A {
					t.Fatalf("power-on %d after the rollback booted %s", i, s)
				}
				if out := d.boot(); out.Action != "booted" || out.Slot != "A" {
					t.Fatalf("boot %d after the rollback: %+v", i, out)
				}
			}
			if s := d.status(); s.Pending != nil || s.SecurityCounter != 0 {
				t.Fatalf("status: %+v", s)
			}
		})
	}
}

// TestFallbackOntoUnhealthySlot: after the bootloader fell back, the old
// slot fails its health check too. The rollback is recorded all the same;
// the slot stays unconfirmed, as any committed slot whose check fails.
func TestFallbackOntoUnhealthySlot(t *testing.T) {
	e := servertest.New(t)
	d := newDeviceMax(t, e, "gw-1", 1)
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	if _, err := d.run(); err != nil {
		t.Fatal(err)
	}
	d.powerCycle() // B hangs
	if s := d.powerCycle(); s != bootloader.A {
		t.Fatalf("fallback booted %s", s)
	}
	d.health = func() error { return errors.New("sick") }
	out, err := d.a.Boot(context.Background())
	if err == nil || out == nil || out.Action != "unhealthy" || !strings.Contains(out.Reason, "trial-boot-failed") {
		t.Fatalf("boot: %+v, %v", out, err)
	}
	if s := d.status(); s.Pending != nil {
		t.Fatalf("the rollback was not recorded: %+v", s.Pending)
	}
	if st, _ := d.sim.State(); st.InOrder(bootloader.B) || st.Bootable(bootloader.A) {
		t.Fatalf("boot state %v: want B out, A unconfirmed", st)
	}
}

// TestFirstBootPowerCut: the power is cut during the first boots of a
// factory device, before the agent runs. Slot B holds nothing, so the
// bootloader must never start it; the agent then confirms A as usual.
func TestFirstBootPowerCut(t *testing.T) {
	e := servertest.New(t)
	for _, max := range []int{1, 3} {
		t.Run(fmt.Sprint("max", max), func(t *testing.T) {
			d := newDeviceMax(t, e, fmt.Sprint("gw-cut-", max), max)
			// max cut boots use up A's attempts; the next power-on resets them.
			for i := 0; i < max+1; i++ {
				s, err := d.sim.Boot()
				if errors.Is(err, bootloader.ErrNoBootableSlot) {
					continue // the bootloader resets A's attempts
				}
				if err != nil || s != bootloader.A {
					t.Fatalf("power-on %d (cut before the agent ran) booted %q, %v", i, s, err)
				}
			}
			if st, _ := d.sim.State(); st.InOrder(bootloader.B) {
				t.Fatalf("factory boot state %v lists the empty slot B", st)
			}
			d.firstBoot()
		})
	}
}

// tamper rewrites responses from the real server.
type tamper struct {
	base http.RoundTripper
	fn   func(req *http.Request, resp *http.Response) *http.Response
}

func (tp *tamper) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := tp.base.RoundTrip(req)
	if err != nil || tp.fn == nil {
		return resp, err
	}
	return tp.fn(req, resp), nil
}

func (d *device) tamper(fn func(req *http.Request, resp *http.Response) *http.Response) {
	d.a.HTTP = &http.Client{Transport: &tamper{base: d.a.HTTP.Transport, fn: fn}, Timeout: d.a.HTTP.Timeout}
}

func replaceBody(resp *http.Response, b []byte) *http.Response {
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	return resp
}

// assertUntouched checks the refusal left the running slot as it was and
// the target slot unbootable.
func (d *device) assertUntouched() {
	d.t.Helper()
	if !d.factorySlot(bootloader.A) {
		d.t.Fatal("the active slot changed")
	}
	st, _ := d.sim.State()
	if st.InOrder(bootloader.B) {
		d.t.Fatalf("the inactive slot is bootable after a refusal: %v", st)
	}
	if s := d.powerCycle(); s != bootloader.A {
		d.t.Fatalf("after the refusal the device booted %s", s)
	}
}

func wantClass(t *testing.T, err error, c verify.Class) {
	t.Helper()
	var ve *verify.Error
	if !errors.As(err, &ve) || ve.Class != c {
		t.Fatalf("got %v, want a %s refusal", err, c)
	}
}

func TestSwappedChunkIsNeverWritten(t *testing.T) {
	t.Parallel()
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	img := make([]byte, 3<<20+5)
	rand.Read(img)
	e.ReleaseImage("1.0.0", 2, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	var swapped atomic.Int32
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		// Every chunk but the first comes back with one byte flipped.
		if resp.StatusCode == http.StatusPartialContent && !strings.HasPrefix(req.Header.Get("Range"), "bytes=0-") {
			b, _ := io.ReadAll(resp.Body)
			b[len(b)/2] ^= 1
			swapped.Add(1)
			return replaceBody(resp, b)
		}
		return resp
	})
	_, err := d.run()
	wantClass(t, err, verify.Mismatch)
	if swapped.Load() == 0 {
		t.Fatal("no chunk was swapped; the test did not attack anything")
	}
	// Nothing of the swapped chunk reached the slot: beyond the first
	// chunk, slot B holds no byte of the image.
	if d.slotContains(bootloader.B, 1<<20, img[1<<20:1<<20+64]) {
		t.Fatal("bytes of the swapped chunk were written")
	}
	st := d.status()
	if st.LastError == nil || st.LastError.Class != string(verify.Mismatch) {
		t.Fatalf("last error: %+v", st.LastError)
	}
	if srv := d.server(); srv["last_status"] != "verification-refused" {
		t.Fatalf("server record: %v", srv)
	}
	d.assertUntouched()
}

func TestIndexNotMatchingSignedHash(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		if strings.HasSuffix(req.URL.Path, ".rpidx") {
			b, _ := io.ReadAll(resp.Body)
			b[len(b)-1] ^= 1
			return replaceBody(resp, b)
		}
		return resp
	})
	_, err := d.run()
	wantClass(t, err, verify.Mismatch)
	d.assertUntouched()
}

// TestIndexNotDescribingSignedImage stands in for release signers (or a
// stolen threshold of their keys) who sign image hash X, which is what the
// transparency log shows, together with a chunk index whose chunks are
// another image Y and whose own image hash field says X. Every chunk of Y
// then verifies; only the whole-image read-back can tell. The device must
// refuse it as a mismatch, report it, and never make the slot bootable.
func TestIndexNotDescribingSignedImage(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()

	logged := make([]byte, 3<<20+5)
	rand.Read(logged)
	served := bytes.Clone(logged)
	served[len(served)/2] ^= 1
	ix, err := chunkindex.Build(bytes.NewReader(served), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ix.ImageHash = sha256.Sum256(logged)
	ixBytes, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ixSum := sha256.Sum256(ixBytes)
	res := &verify.Result{
		Target: servertest.Product + "/9.0.0/fw.img", Role: servertest.Product,
		File: &metadata.TargetFiles{Length: int64(len(logged)), Hashes: metadata.Hashes{"sha256": ix.ImageHash[:]}},
		Release: &release.Meta{Product: servertest.Product, Version: "9.0.0", SecurityVersion: 2, HardwareIDs: []string{hw},
			Index: release.IndexRef{Length: int64(len(ixBytes)), SHA256: hex.EncodeToString(ixSum[:]), ChunkSize: 1 << 20}},
	}
	var fetched atomic.Int64
	src := chunkSource(func(c chunkindex.Chunk, buf []byte) []byte {
		fetched.Add(1)
		return buf[:copy(buf, served[c.Offset:c.Offset+c.Length])]
	})

	_, err = d.a.InstallVerified(context.Background(), res, ixBytes, src)
	wantClass(t, err, verify.Mismatch)
	if !errors.Is(err, chunkindex.ErrImageHash) {
		t.Errorf("err = %v, want chunkindex.ErrImageHash", err)
	}
	if n := fetched.Load(); n != int64(len(ix.Chunks)) {
		t.Errorf("%d of %d chunks fetched: every chunk should have passed its own check", n, len(ix.Chunks))
	}
	d.assertUntouched()
	if srv := d.server(); srv["last_status"] != "verification-refused" {
		t.Errorf("server saw %v, want verification-refused", srv["last_status"])
	}
}

// chunkSource is an install.Source answering every chunk with fn.
type chunkSource func(c chunkindex.Chunk, buf []byte) []byte

func (f chunkSource) ReadChunk(_ context.Context, _ int, c chunkindex.Chunk, buf []byte) ([]byte, error) {
	return f(c, buf), nil
}

func TestEndlessIndexIsCutOff(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	var read atomic.Int64
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		if strings.HasSuffix(req.URL.Path, ".rpidx") {
			resp.Body.Close()
			resp.Body = io.NopCloser(&endless{n: &read})
			resp.ContentLength = -1
		}
		return resp
	})
	_, err := d.run()
	wantClass(t, err, verify.EndlessData)
	if read.Load() > 1<<20 {
		t.Fatalf("read %d bytes of an endless index", read.Load())
	}
	d.assertUntouched()
}

type endless struct{ n *atomic.Int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	e.n.Add(int64(len(p)))
	return len(p), nil
}

func TestServerNotFromPinnedCA(t *testing.T) {
	e := servertest.New(t)
	other := servertest.New(t) // a server with its own CA
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	d.a.Config.Server.URL = other.TS.URL
	_, err := d.run()
	var ve *verify.Error
	if err == nil || errors.As(err, &ve) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("got %v, want a TLS certificate error", err)
	}
	d.assertUntouched()
}

func TestResumeAfterDroppedConnection(t *testing.T) {
	t.Parallel()
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	d.firstBoot()
	img := make([]byte, 5<<20+123)
	rand.Read(img)
	e.ReleaseImage("1.0.0", 2, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	var mu sync.Mutex
	ranged := 0
	d.a.Config.Download.Retries = 0 // one failure ends the attempt
	d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		if req.Header.Get("Range") == "" {
			return resp
		}
		mu.Lock()
		defer mu.Unlock()
		ranged++
		if ranged > 3 {
			resp.Body.Close()
			return &http.Response{StatusCode: 503, Status: "503", Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: req}
		}
		return resp
	})
	if _, err := d.run(); !errors.Is(err, agent.ErrInstall) {
		t.Fatalf("first attempt: %v", err)
	}
	d.assertUntouched()
	d.a.HTTP = d.client // the connection is back
	var first *agent.InstallProgress
	d.a.OnProgress = func(p agent.InstallProgress) {
		if first == nil {
			first = &p
		}
	}
	out, err := d.run()
	if err != nil {
		t.Fatal(err)
	}
	if out.Install.Skipped == 0 || out.Install.Skipped+out.Install.Fetched != out.Install.Chunks {
		t.Fatalf("the second attempt did not resume: %+v", out.Install)
	}
	// Its progress starts from what the first attempt wrote.
	if first == nil || first.Resumed != out.Install.Skipped || first.Done != first.Resumed || first.Bytes == 0 {
		t.Fatalf("first progress of the resumed attempt: %+v (skipped %d)", first, out.Install.Skipped)
	}
	if !d.slotHas(bootloader.B, img) {
		t.Fatal("slot B does not hold the image")
	}
	d.powerCycle()
	if out := d.boot(); out.Action != "committed" {
		t.Fatalf("boot: %+v", out)
	}
}

// Endless data on any URL the agent fetches (both repositories' metadata,
// the log's checkpoint and proofs, the index, the image) is cut off at a
// bound, refused as endless-data, reported as such, and ends the update
// with the slots untouched. Each URL is first
// seen in an untampered run, so the test cannot pass by tampering with a
// path the agent never asks for.
func TestEndlessDataOnEveryURL(t *testing.T) {
	t.Parallel()
	e := servertest.New(t)
	seen := map[string]bool{}
	probe := newDevice(t, e, "gw-probe")
	probe.firstBoot()
	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	var mu sync.Mutex
	probe.tamper(func(req *http.Request, resp *http.Response) *http.Response {
		mu.Lock()
		seen[urlClass(req.URL.Path)] = true
		mu.Unlock()
		return resp
	})
	if _, err := probe.run(); err != nil {
		t.Fatal(err)
	}
	// The log's checkpoint comes inside the proof response; the root
	// requests are for the next root version, which does not exist.
	classes := []string{"director root", "director timestamp", "director snapshot", "director targets", "image root",
		"image timestamp", "image snapshot", "image targets", "image product role", "log proof", "index", "image"}
	for _, c := range classes {
		if !seen[c] {
			t.Fatalf("the agent never fetched a %s; saw %v", c, seen)
		}
	}
	for i, c := range classes {
		t.Run(strings.ReplaceAll(c, " ", "-"), func(t *testing.T) {
			d := newDevice(t, e, fmt.Sprintf("gw-endless-%d", i))
			d.firstBoot()
			e.Deploy(servertest.Product+"/1.0.0", hw) // the new device too
			var read atomic.Int64
			d.tamper(func(req *http.Request, resp *http.Response) *http.Response {
				if urlClass(req.URL.Path) == c {
					// A 200 even where the server said 404 (the next
					// root), or the client would rightly stop there.
					resp.Body.Close()
					resp.Body = io.NopCloser(&endless{n: &read})
					resp.ContentLength = -1
					if resp.StatusCode == http.StatusNotFound {
						resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
					}
				}
				return resp
			})
			done := make(chan error, 1)
			go func() { _, err := d.run(); done <- err }()
			select {
			case err := <-done:
				// Refused as endless data, whatever the bound it went
				// past: a signed length, or a fixed one.
				wantClass(t, err, verify.EndlessData)
				if st := d.status(); st.LastError == nil || st.LastError.Class != string(verify.EndlessData) {
					t.Fatalf("status: last error %+v", st.LastError)
				}
				if srv := d.server(); srv["last_status"] != "verification-refused" {
					t.Fatalf("server record: %v", srv)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the agent is still reading an endless body after 60 s")
			}
			// The largest bound is go-tuf's for targets metadata (5 MB)
			// and one chunk (1 MiB) per retry.
			if n := read.Load(); n > 16<<20 {
				t.Fatalf("read %d bytes of an endless body", n)
			}
			d.assertUntouched()
		})
	}
}

// urlClass names what a request path fetches.
func urlClass(p string) string {
	file := p[strings.LastIndex(p, "/")+1:]
	role := func(prefix string) string {
		for _, r := range []string{"timestamp", "snapshot", "targets", "root"} {
			if file == r+".json" || strings.HasSuffix(file, "."+r+".json") {
				return prefix + " " + r
			}
		}
		return prefix + " product role"
	}
	switch {
	case strings.HasPrefix(p, "/director/"):
		return role("director")
	case strings.HasPrefix(p, "/repo/targets/") && strings.HasSuffix(p, ".rpidx"):
		return "index"
	case strings.HasPrefix(p, "/repo/targets/"):
		return "image"
	case strings.HasPrefix(p, "/repo/"):
		return role("image")
	case strings.HasPrefix(p, "/api/v1/log/proof/"):
		return "log proof"
	case strings.HasPrefix(p, "/api/v1/log/consistency"):
		return "log consistency"
	}
	return p
}
