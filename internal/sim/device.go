package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/powercut"
	"github.com/rampartfw/rampart/internal/verify"
)

// Device states, as Report.ByState counts them: what the device's last
// check-in (or boot) came to.
const (
	StateEnrolling  = "enrolling"
	StateIdle       = "idle"        // nothing assigned
	StateUpToDate   = "up-to-date"  // running its assigned release
	StateRolledBack = "rolled-back" // the assigned release failed and is not retried
	StateRefused    = "refused"     // the last check-in refused what it was sent
	StateRetrying   = "retrying"    // a transfer was cut; the next check-in resumes
	// StateInstallFailed: Config.SlotWrite failed the install's slot
	// write; the agent reported it and tries again at its next check-in.
	StateInstallFailed = "install-failed"
	StateUnreachable   = "unreachable" // the server could not be reached
	StateError         = "error"       // something no fault knob explains
)

// Where things are on a simulated device's disk (a powercut.Model).
const (
	slotA    = "/dev/slot-a"
	slotB    = "/dev/slot-b"
	bootRec  = "/boot/rampart-sim.json"
	stateDir = "/var/lib/rampart"
)

// maxBoots bounds the boots a device takes to settle after a reboot.
const maxBoots = 8

// device is one simulated device. Only the worker running it touches its
// fields, except sum, which is guarded by Sim.mu.
type device struct {
	s     *Sim
	i     int
	id    string
	fault Fault
	rng   *rand.Rand
	skew  time.Duration
	dir   string // its files on the real disk

	cfg    *agent.Config
	http   *http.Client
	front  *front
	fs     *cutFS
	bl     *bootloader.Sim
	a      *agent.Agent
	booted bootloader.Slot

	// cutStage is where a power-cut device's cut is due: "install",
	// "commit", or "" once made (or for other devices).
	cutStage string
	// recovering is set from a power cut until the device settles.
	recovering bool
	// hookFailed is set when Config.HealthCheck failed the trial boot
	// under way, whose rollback is then expected.
	hookFailed bool

	sum DeviceReport
}

func newDevice(s *Sim, i int, f Fault) *device {
	d := &device{s: s, i: i, id: s.cfg.id(i), fault: f, rng: rand.New(rand.NewPCG(s.cfg.Seed, uint64(i)+1))}
	d.dir = filepath.Join(s.cfg.Dir, d.id)
	if s.cfg.Skew > 0 {
		d.skew = time.Duration(d.rng.Int64N(2*int64(s.cfg.Skew)+1)) - s.cfg.Skew
	}
	if f == PowerCut {
		d.cutStage = "install"
		if d.rng.IntN(2) == 0 {
			d.cutStage = "commit"
		}
	}
	d.sum = DeviceReport{ID: d.id, Fault: f, State: StateEnrolling, Release: "factory"}
	return d
}

// enroll makes the device's key and gets its certificate through the real
// enrollment API (agent.Enroll), with a one-time token made for it.
func (d *device) enroll(ctx context.Context) error {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return err
	}
	text := fmt.Sprintf(`
[server]
url = %q
ca = %q
[device]
id = %q
hardware_id = %q
key = %q
certificate = %q
[trust]
image_root = "unused"
director_root = "unused"
log_key = "unused"
[slots]
a = %q
b = %q
[bootloader]
backend = "sim"
env = %q
[health]
command = ["health"]
timeout = "10s"
[reboot]
command = ["reboot"]
[state]
dir = %q
[download]
workers = 1
retries = 2
timeout = "1m"
`, d.s.cfg.Server, filepath.Join(d.s.cfg.Dir, "ca.pem"), d.id, d.s.cfg.Hardware,
		filepath.Join(d.dir, "device.key"), filepath.Join(d.dir, "device.crt"), slotA, slotB, bootRec, stateDir)
	cfg, err := agent.ParseConfig([]byte(text))
	if err != nil {
		return err
	}
	d.cfg = cfg
	if _, err := os.Stat(cfg.Device.Certificate); err != nil {
		tok, _, err := d.s.api.EnrollToken(ctx, d.s.cfg.Hardware, time.Hour)
		if err != nil {
			return fmt.Errorf("creating its enrollment token: %w", err)
		}
		if _, err := agent.Enroll(ctx, cfg, agent.Credential{Token: tok}); err != nil {
			return err
		}
	}
	c, err := agent.NewHTTPClient(cfg)
	if err != nil {
		return err
	}
	d.front = newFront(c.Transport, d.fault)
	c.Transport = d.front
	d.http = c
	return nil
}

// get fetches a path of the server with the device's certificate.
func (d *device) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.s.cfg.Server+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, nil
}

// provision makes the device's factory disk (the factory image in slot A,
// slot B empty) and boots it the first time.
func (d *device) provision(ctx context.Context) error {
	size := d.s.cfg.SlotSize
	m := powercut.New()
	a := make([]byte, size)
	copy(a, d.s.factory)
	m.Put(slotA, a)
	m.Put(slotB, make([]byte, size))
	if err := m.MkdirAll("/boot", 0o755); err != nil {
		return err
	}
	d.fs = &cutFS{Model: m, slots: [2]string{slotA, slotB}, opsAt: -1}
	d.newAgent()
	d.fs.refuse = d.slotWrite()
	_, err := d.reboot(ctx)
	return err
}

// newAgent wires the real agent to the device's current disk.
func (d *device) newAgent() {
	bl, err := bootloader.OpenSimFS(d.fs, bootRec, 0)
	if err != nil {
		panic(err) // only for an empty path or a bad MaxAttempts
	}
	d.bl = bl
	d.a = &agent.Agent{
		Config: d.cfg, FS: d.fs, TUFDir: filepath.Join(d.dir, "tuf"), Bootloader: bl, HTTP: d.http,
		BootedSlot: func() (bootloader.Slot, error) { return d.booted, nil },
		Exec:       d.exec,
		Now:        func() time.Time { return time.Now().Add(d.skew) },
		Log:        slog.New(slog.DiscardHandler),
		ImageRoot:  d.s.imageRoot, DirectorRoot: d.s.directorRoot,
		LogOrigin: d.s.logKey.Name(), LogKey: d.s.logKey,
	}
}

// exec stands in for the health check and the reboot command.
func (d *device) exec(_ context.Context, argv []string, _ time.Duration) error {
	switch argv[0] {
	case "health":
		// A fail-health device's new images never come up healthy; the
		// factory image, always in slot A until an install commits, does.
		if d.fault == FailHealth && d.booted == bootloader.B {
			return errors.New("simulated health check failure")
		}
		if hc := d.s.cfg.HealthCheck; hc != nil {
			if st, err := d.a.Status(); err == nil && st.Pending != nil && st.Pending.Slot == string(d.booted) {
				if err := hc(d.id, st.Pending.Version); err != nil {
					d.hookFailed = true
					return err
				}
			}
		}
		return nil
	case "reboot":
		return nil // the simulator reboots when the agent's outcome asks
	}
	return fmt.Errorf("unexpected command %q", argv[0])
}

// reboot powers the device on and runs the agent's boot step until it
// settles (no further reboot asked), returning every outcome on the way.
func (d *device) reboot(ctx context.Context) ([]*agent.Outcome, error) {
	var outs []*agent.Outcome
	for range maxBoots {
		b, err := d.bl.Boot()
		if errors.Is(err, bootloader.ErrNoBootableSlot) {
			b, err = d.bl.Boot() // the reset restored the attempts
		}
		if err != nil {
			return outs, fmt.Errorf("simulated boot: %w", err)
		}
		d.booted = b
		out, err := d.a.Boot(ctx)
		if err != nil {
			return outs, fmt.Errorf("agent boot: %w", err)
		}
		outs = append(outs, out)
		if !out.Reboot {
			return outs, nil
		}
	}
	return outs, fmt.Errorf("the device did not settle in %d boots", maxBoots)
}

// slotWrite is the device's Config.SlotWrite, or nil.
func (d *device) slotWrite() func() error {
	if d.s.cfg.SlotWrite == nil {
		return nil
	}
	return func() error { return d.s.cfg.SlotWrite(d.id) }
}

// step is one turn of the device on a worker: enroll and boot it the first
// time, otherwise one check-in and whatever reboots it asks for.
func (d *device) step(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	if d.http == nil {
		if err := d.enroll(ctx); err != nil {
			d.failed(ctx, "enroll", err)
			return
		}
	}
	if d.a == nil {
		if err := d.provision(ctx); err != nil {
			d.failed(ctx, "first boot", err)
			return
		}
		d.settle(StateIdle, "")
		return
	}
	d.checkin(ctx)
	if d.s.cfg.Reconnect {
		d.http.CloseIdleConnections()
	}
}

func (d *device) failed(ctx context.Context, what string, err error) {
	if ctx.Err() != nil {
		return // the run is ending; not the device's fault
	}
	d.recovering = false
	d.s.fail(d, what, err)
}

func (d *device) checkin(ctx context.Context) {
	s := d.s
	armed := d.fault == PowerCut && d.cutStage == "install"
	if armed {
		d.fs.arm(pick(d.rng, int(s.estInstall.Load())))
	} else {
		d.fs.arm(0)
	}
	refused0 := d.fs.refused.Load()
	t0 := time.Now()
	out, err := d.a.Run(ctx)
	lat := time.Since(t0)
	ops := d.fs.disarm()
	s.checkins.Add(1)
	if out != nil && out.InstallTime > 0 {
		s.hist.add(lat - out.InstallTime)
		s.installHist.add(out.InstallTime)
	} else {
		s.hist.add(lat)
	}
	tampered, dropped := d.front.take()
	s.drops.Add(int64(dropped))
	if d.fs.Cut() {
		d.cutStage = ""
		d.powerLost(ctx)
		return
	}
	if armed && ops >= 0 {
		d.cutStage = "commit" // the install was shorter than the cut: cut its commit
	}
	if !armed && ops > 0 && err == nil {
		atomicMax(&s.estInstall, int64(ops))
	}
	if tampered > 0 {
		d.tamperChecked(ctx, err)
		return
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
		case d.fs.refused.Load() > refused0 && errors.Is(err, agent.ErrInstall):
			d.settle(StateInstallFailed, "slot")
		case dropped > 0 && (errors.Is(err, agent.ErrInstall) || errors.Is(err, agent.ErrUnavailable)):
			d.settle(StateRetrying, "dropped connection")
		case errors.Is(err, agent.ErrUnavailable):
			d.s.fail(d, "check-in", err)
			d.setState(StateUnreachable, err.Error())
		default:
			d.failed(ctx, "check-in", err)
		}
		return
	}
	switch out.Action {
	case "nothing":
		d.settle(StateIdle, "")
	case "up-to-date":
		d.settle(StateUpToDate, "")
	case "not-retried":
		d.settle(StateRolledBack, out.Reason)
	case "installed-pending-reboot":
		d.rebootIntoTrial(ctx)
	default:
		d.failed(ctx, "check-in", fmt.Errorf("unexpected outcome %q", out.Action))
	}
}

// rebootIntoTrial reboots after an install: the trial boot commits or
// rolls back. A power-cut device may lose power during it.
func (d *device) rebootIntoTrial(ctx context.Context) {
	s := d.s
	ops0 := d.fs.Ops()
	d.hookFailed = false
	armed := d.fault == PowerCut && d.cutStage == "commit"
	if armed {
		d.fs.CutAt(ops0 + pick(d.rng, int(s.estCommit.Load())))
	}
	outs, err := d.reboot(ctx)
	if d.fs.Cut() {
		d.cutStage = ""
		d.powerLost(ctx)
		return
	}
	d.fs.CutAt(0)
	if armed {
		d.cutStage = "" // the commit was shorter than the cut: no cut
	} else if err == nil {
		atomicMax(&s.estCommit, int64(d.fs.Ops()-ops0))
	}
	if err != nil {
		d.failed(ctx, "trial boot", err)
		return
	}
	for _, o := range outs {
		switch o.Action {
		case "committed":
			d.settle(StateUpToDate, "")
			return
		case "rolled-back":
			s.rolledBack.Add(1)
			if d.fault != FailHealth && !d.recovering && !d.hookFailed {
				d.failed(ctx, "trial boot", fmt.Errorf("rolled back: %s", o.Reason))
				return
			}
			d.settle(StateRolledBack, o.Reason)
			return
		}
	}
	d.failed(ctx, "trial boot", fmt.Errorf("neither committed nor rolled back: %+v", outs))
}

// powerLost brings the device back after its power cut: the disk as the
// power-loss model says it may survive (one of its three outcomes, at
// random), a fresh agent, boots until it settles, and a check that the
// slot it booted holds a verified image.
func (d *device) powerLost(ctx context.Context) {
	d.s.powerCuts.Add(1)
	d.s.mu.Lock()
	d.sum.PowerCuts++
	d.s.mu.Unlock()
	modes := []powercut.Mode{powercut.DropUnsynced, powercut.KeepAll, powercut.Torn}
	m := d.fs.Restart(modes[d.rng.IntN(len(modes))], d.rng.Int64())
	d.fs = &cutFS{Model: m, slots: d.fs.slots, opsAt: -1, refuse: d.slotWrite()}
	d.newAgent()
	d.recovering = true
	if _, err := d.reboot(ctx); err != nil {
		d.failed(ctx, "boot after the power cut", err)
		return
	}
	if err := d.bootedVerified(); err != nil {
		d.failed(ctx, "boot after the power cut", err)
		return
	}
	d.setState(StateRetrying, "power cut")
}

// tamperChecked judges a check-in during which the front end tampered
// with a chunk: it must be refused as a mismatch, with the slot the
// device runs untouched and still the one the bootloader boots.
func (d *device) tamperChecked(ctx context.Context, err error) {
	var ve *verify.Error
	switch {
	case ctx.Err() != nil:
		return
	case err == nil:
		d.failed(ctx, "tampered chunk", errors.New("accepted"))
		return
	case !errors.As(err, &ve) || ve.Class != verify.Mismatch:
		d.failed(ctx, "tampered chunk", fmt.Errorf("not refused as %q: %w", verify.Mismatch, err))
		return
	}
	if err := d.bootedVerified(); err != nil {
		d.failed(ctx, "tampered chunk", err)
		return
	}
	if p, err := d.bl.Primary(); err != nil || p != d.booted {
		d.failed(ctx, "tampered chunk", fmt.Errorf("after the refusal the bootloader boots %s, the device runs %s (%v)", p, d.booted, err))
		return
	}
	d.s.tamperRefusals.Add(1)
	d.s.mu.Lock()
	d.sum.TamperRefusals++
	d.s.mu.Unlock()
	d.settle(StateRefused, string(ve.Class))
}

// bootedVerified checks that the booted slot holds what the agent says it
// does: the factory image or a release it verified, byte for byte.
func (d *device) bootedVerified() error {
	st, err := d.a.Status()
	if err != nil {
		return fmt.Errorf("agent state: %w", err)
	}
	var rel *agent.Release
	switch {
	case st.Pending != nil && st.Pending.Slot == string(d.booted):
		rel = &st.Pending.Release
	case st.CommittedSlot == string(d.booted):
		rel = st.Running
	default:
		rel = st.Other
		if rel == nil {
			return fmt.Errorf("booted slot %s, which holds no release the agent knows", d.booted)
		}
	}
	path := slotA
	if d.booted == bootloader.B {
		path = slotB
	}
	b, err := d.fs.Get(path)
	if err != nil {
		return err
	}
	if rel == nil {
		if !bytes.HasPrefix(b, d.s.factory) {
			return fmt.Errorf("booted slot %s does not hold the factory image", d.booted)
		}
		return nil
	}
	if int64(len(b)) < rel.Length {
		return fmt.Errorf("booted slot %s is shorter than %s", d.booted, rel.Target)
	}
	sum := sha256.Sum256(b[:rel.Length])
	if hex.EncodeToString(sum[:]) != rel.SHA256 {
		return fmt.Errorf("booted slot %s does not hold %s", d.booted, rel.Target)
	}
	return nil
}

// settle records a state the device reached as expected; a device that
// was recovering from a power cut has survived it once it settles.
func (d *device) settle(state, reason string) {
	if d.recovering && (state == StateUpToDate || state == StateRolledBack || state == StateIdle) {
		d.recovering = false
		d.s.survived.Add(1)
		d.s.mu.Lock()
		d.sum.Survived = true
		d.s.mu.Unlock()
	}
	d.setState(state, reason)
}

func (d *device) setState(state, reason string) {
	version := "factory"
	if st, err := d.a.Status(); err == nil && st.Running != nil {
		version = st.Running.Version
	}
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	d.sum.State, d.sum.Reason, d.sum.Release = state, reason, version
}

func atomicMax(v interface {
	Load() int64
	CompareAndSwap(old, new int64) bool
}, n int64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}
