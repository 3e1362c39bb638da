// Package sim is the fleet simulator behind rampart sim: it owns running N
// virtual devices in one process against a real rampart-server, each one
// the real device agent (package agent, driven through its exported API
// as a device's init and timer would drive it) on the simulated bootloader
// and an in-memory disk that can lose power (package powercut), enrolled
// through the real enrollment API with a certificate of its own; the fault
// knobs (failed health checks, power cuts, tampered and dropped
// transfers, clock skew); the bounded scheduler that polls them; and the
// report of what the fleet did.
//
// # Faults
//
// Each knob picks a disjoint set of devices, its percentage of the fleet
// rounded to the nearest device:
//
//   - fail-health: the health check of every new image fails, so each
//     trial boot rolls back and the device reports it.
//   - power-cut: the power is cut once, at a random operation of an install
//     (from the moment the slot is opened for writing) or of the reboot
//     that commits it. The disk comes back as the power-loss model says it
//     may (unsynced data dropped, kept, or torn), the device boots until it
//     settles, and the simulator checks that it boots a verified image.
//   - tamper: a hostile front end between the device and the server flips
//     one byte of the first image chunk it carries. The agent must refuse
//     it with the refusal class "mismatch" with its running slot untouched;
//     the next transfer is clean, so the device then converges.
//   - drop: the first two image transfers are cut halfway, as a reset
//     connection would; the agent retries and resumes.
//
// Clock skew sets each device's clock off by a random amount up to the
// given skew, either way.
//
// # Bounds
//
// A fixed pool of workers runs the devices' check-ins, each device due
// again after the poll interval with 10 % jitter; a device is on at most
// one worker at a time. A device's disk is held in memory: two slots of
// Config.SlotSize (twice each: the power-loss model keeps what is written
// and what is durable), its state and its boot record. Its keys,
// certificate and trusted TUF metadata are small files under Config.Dir.
// Latencies go to a fixed-size histogram.
package sim

import (
	"container/heap"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/release"
)

// Config is one simulation.
type Config struct {
	// Server is the server's https URL; CA the file holding its CA
	// certificate, the only TLS trust anchor.
	Server, CA string
	// Token is an operator token: it creates one one-time enrollment token
	// per device (enrollment tokens enroll exactly one device).
	Token    string
	Devices  int
	Hardware string
	// IDPrefix comes before each device's number (1 to Devices).
	IDPrefix string
	// FailHealth, PowerCut, Tamper and Drop are fractions of the fleet
	// (0 to 1, summing to at most 1).
	FailHealth, PowerCut, Tamper, Drop float64
	// Skew is the largest clock error of a device, either way.
	Skew time.Duration
	// Poll is the time between a device's check-ins.
	Poll time.Duration
	// Reconnect closes each device's connection after its turn, as a
	// device behind NAT or on a cellular link finds it closed by its next
	// check-in: every check-in then opens a TLS connection (a full
	// handshake with the device's certificate), and the server holds
	// connections only for the check-ins under way. Without it each
	// device keeps its connection alive between check-ins, one open file
	// per device on the server and in the simulator.
	Reconnect bool
	// Duration ends the run (0: until Stop or the context ends).
	Duration time.Duration
	// Workers is the number of check-ins run at once (0: DefaultWorkers).
	Workers int
	// SlotSize is the size of each of a device's two slots (0:
	// DefaultSlotSize); releases larger than it fail to install.
	SlotSize int64
	// Dir holds each device's key, certificate and TUF metadata.
	Dir  string
	Seed uint64
	// Live, when set, gets a one-line view redrawn every LiveEvery.
	Live      io.Writer
	LiveEvery time.Duration
	// HealthCheck, when set, is consulted by the health check of every
	// trial boot with the device's id and the version on trial: an error
	// fails it, so the trial boot rolls back and the device reports it
	// (rampart demo's release that fails on some devices). The
	// fail-health fault applies as well.
	HealthCheck func(id, version string) error
	// SlotWrite, when set, is consulted each time the agent opens a
	// slot to write an install, with the device's id: an error fails the
	// opening, so the install fails (reason "slot"), the agent reports
	// it, and the device's state is StateInstallFailed (a disk that
	// refuses its writes). The agent tries again at its next check-in.
	SlotWrite func(id string) error
}

// Defaults and limits.
const (
	DefaultWorkers  = 32
	DefaultSlotSize = 256 << 10
	DefaultPrefix   = "sim-"
	MaxDevices      = 1_000_000
	// MaxMemory bounds what the devices' disks may hold in all.
	MaxMemory = 8 << 30
	// memPerSlot: the power-loss model keeps a live and a durable copy.
	memPerSlot = 2
)

// ConfigError is a configuration that cannot run; the command line
// reports it as a usage error.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

// Check validates the configuration and fills its defaults.
func (c *Config) Check() error {
	bad := func(format string, args ...any) error { return &ConfigError{Msg: fmt.Sprintf(format, args...)} }
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.SlotSize == 0 {
		c.SlotSize = DefaultSlotSize
	}
	if c.IDPrefix == "" {
		c.IDPrefix = DefaultPrefix
	}
	if c.LiveEvery == 0 {
		c.LiveEvery = time.Second
	}
	switch {
	case c.Devices < 1 || c.Devices > MaxDevices:
		return bad("--devices %d is not between 1 and %d", c.Devices, MaxDevices)
	case c.Hardware == "":
		return bad("--hardware is required: the hardware id the devices carry")
	case c.Poll <= 0:
		return bad("--poll must be a positive duration such as 5s")
	case c.Duration < 0:
		return bad("--duration must not be negative")
	case c.Skew < 0:
		return bad("--skew must not be negative")
	case c.Workers < 1 || c.Workers > 4096:
		return bad("workers %d is not between 1 and 4096", c.Workers)
	case c.SlotSize < 4096 || c.SlotSize > 1<<30:
		return bad("--slot-size %d is not between 4 KiB and 1 GiB", c.SlotSize)
	case c.Dir == "":
		return bad("no directory for the devices' files")
	}
	if err := release.ValidateHardware(c.Hardware); err != nil {
		return bad("--hardware: %v", err)
	}
	for _, id := range []string{c.id(0), c.id(c.Devices - 1)} {
		if err := pki.ValidateDeviceID(id); err != nil {
			return bad("--id-prefix %q makes device id %q: %v", c.IDPrefix, id, err)
		}
	}
	sum := 0.0
	for _, f := range []float64{c.FailHealth, c.PowerCut, c.Tamper, c.Drop} {
		if f < 0 || f > 1 || math.IsNaN(f) {
			return bad("a fault percentage is outside 0%%..100%%")
		}
		sum += f
	}
	if sum > 1+1e-9 {
		return bad("--fail-health, --power-cut, --tamper and --drop add up to %s: each picks its own devices, so together they may not exceed 100%%", FormatPercent(sum))
	}
	if mem := int64(c.Devices) * 2 * memPerSlot * c.SlotSize; mem > MaxMemory {
		return bad("%d devices with --slot-size %d need %d MiB for their slots, more than the %d MiB the simulator allows: lower --slot-size (releases must fit in it) or --devices",
			c.Devices, c.SlotSize, mem>>20, int64(MaxMemory)>>20)
	}
	return nil
}

func (c *Config) id(i int) string { return c.IDPrefix + strconv.Itoa(i+1) }

// ParsePercent parses a fault percentage: a decimal number from 0 to 100
// followed by "%" ("2%", "0.5%", "100%"). Anything else is refused with a
// message saying why.
func ParsePercent(s string) (float64, error) {
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, fmt.Errorf("%q is not a percentage: write it with its %% sign, such as 5%%", s)
	}
	valid := num != "" && strings.Count(num, ".") <= 1 && num[0] != '.' && num[len(num)-1] != '.'
	for _, r := range num {
		if r != '.' && (r < '0' || r > '9') {
			valid = false
		}
	}
	if !valid {
		return 0, fmt.Errorf("%q is not a percentage: the number before %% must be plain decimal digits, such as 2.5%%", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v > 100 {
		return 0, fmt.Errorf("%q is not a percentage between 0%% and 100%%", s)
	}
	return v / 100, nil
}

// FormatPercent writes a fraction as ParsePercent reads it.
func FormatPercent(f float64) string {
	return strconv.FormatFloat(math.Round(f*1e8)/1e6, 'f', -1, 64) + "%"
}

// Sim is one run of the simulator. Its methods are safe for concurrent
// use: Snapshot and Stop may be called while Run runs.
type Sim struct {
	cfg Config

	api          *client.Client
	imageRoot    []byte
	directorRoot []byte
	logKey       note.Verifier
	factory      []byte

	devices []*device
	hist    histogram
	// installHist is the install part of check-ins that installed.
	installHist histogram
	start       time.Time // New's time: Elapsed counts from it

	checkins, errs, tamperRefusals, powerCuts, survived, drops, rolledBack atomic.Int64
	// estimates of the operations an install (from the slot's opening)
	// and a commit reboot make, learned from devices not cut
	estInstall, estCommit atomic.Int64

	mu         sync.Mutex // the devices' summaries, errSamples
	errSamples []string

	qmu   sync.Mutex
	queue schedule
	wake  chan struct{}

	stopOnce sync.Once
	stop     chan struct{}
}

// New checks cfg and prepares a simulation.
func New(cfg Config) (*Sim, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	s := &Sim{cfg: cfg, wake: make(chan struct{}, 1), stop: make(chan struct{}), start: time.Now()}
	s.factory = make([]byte, 2048)
	r := rand.New(rand.NewPCG(cfg.Seed, 0x666163746f7279))
	for i := range s.factory {
		s.factory[i] = byte(r.UintN(256))
	}
	faults := make([]Fault, cfg.Devices)
	perm := rand.New(rand.NewPCG(cfg.Seed, 0x6661756c7473)).Perm(cfg.Devices)
	next := 0
	for _, k := range []struct {
		f    Fault
		frac float64
	}{{FailHealth, cfg.FailHealth}, {PowerCut, cfg.PowerCut}, {Tamper, cfg.Tamper}, {Drop, cfg.Drop}} {
		n := int(math.Round(k.frac * float64(cfg.Devices)))
		for ; n > 0 && next < len(perm); n-- {
			faults[perm[next]] = k.f
			next++
		}
	}
	s.devices = make([]*device, cfg.Devices)
	for i := range s.devices {
		s.devices[i] = newDevice(s, i, faults[i])
	}
	s.estInstall.Store(30)
	s.estCommit.Store(15)
	return s, nil
}

// SetServer sets the server, its CA file and the operator token after New
// (the command line checks the rest of the configuration first). Call it
// before Run.
func (s *Sim) SetServer(url, caFile, token string) {
	s.cfg.Server, s.cfg.CA, s.cfg.Token = url, caFile, token
}

// Stop ends the run: no check-in starts after it, the ones under way
// finish, and Run returns the report.
func (s *Sim) Stop() { s.stopOnce.Do(func() { close(s.stop) }) }

// Run enrolls the devices and runs them until the duration is over, Stop
// is called or ctx ends, and returns the final report. An error means the
// simulation could not start (the server, the token, the trust roots).
func (s *Sim) Run(ctx context.Context) (*Report, error) {
	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	var end <-chan time.Time
	if s.cfg.Duration > 0 {
		t := time.NewTimer(s.cfg.Duration)
		defer t.Stop()
		end = t.C
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
		case <-s.stop:
		case <-end:
		}
	}()

	work := make(chan *device)
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				d.step(ctx)
				s.schedule(d, time.Now().Add(s.jitter(d)))
			}
		}()
	}
	live := s.startLive(done)
	s.dispatch(done, work)
	close(work)
	wg.Wait()
	live()
	return s.Snapshot(), nil
}

func (s *Sim) setup(ctx context.Context) error {
	c, err := client.New(s.cfg.Server, s.cfg.CA, s.cfg.Token)
	if err != nil {
		return err
	}
	s.api = c
	if s.imageRoot, err = c.Metadata(ctx, "1.root.json"); err != nil {
		return fmt.Errorf("fetching the image repository's first root: %w", err)
	}
	k, err := c.Keys(ctx)
	if err != nil {
		return fmt.Errorf("fetching the log key: %w", err)
	}
	if s.logKey, err = note.NewVerifier(strings.TrimSpace(k.LogKey)); err != nil {
		return fmt.Errorf("the server's log key %q: %w", k.LogKey, err)
	}
	if err := os.WriteFile(filepath.Join(s.cfg.Dir, "ca.pem"), mustRead(s.cfg.CA), 0o644); err != nil {
		return err
	}
	// The first device enrolls now: its certificate fetches the director
	// root every device starts from.
	d0 := s.devices[0]
	if err := d0.enroll(ctx); err != nil {
		return fmt.Errorf("enrolling %s: %w", d0.id, err)
	}
	if s.directorRoot, err = d0.get(ctx, "/director/1.root.json"); err != nil {
		return fmt.Errorf("fetching the director root as %s: %w", d0.id, err)
	}
	now := time.Now()
	for i, d := range s.devices {
		// The first check-ins are spread over one poll interval.
		due := now
		if i > 0 {
			due = now.Add(time.Duration(d.rng.Int64N(int64(s.cfg.Poll))))
		}
		heap.Push(&s.queue, item{due: due, d: d})
	}
	return nil
}

func mustRead(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// jitter is the time until a device's next check-in: the poll interval
// give or take 10 %.
func (s *Sim) jitter(d *device) time.Duration {
	p := float64(s.cfg.Poll)
	return time.Duration(p*0.9 + d.rng.Float64()*p*0.2)
}

// dispatch hands due devices to the workers until done; a device waits in
// the queue while every worker is busy.
func (s *Sim) dispatch(done <-chan struct{}, work chan<- *device) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.qmu.Lock()
		var d *device
		wait := time.Hour
		if len(s.queue) > 0 {
			if w := time.Until(s.queue[0].due); w <= 0 {
				d = heap.Pop(&s.queue).(item).d
			} else {
				wait = w
			}
		}
		s.qmu.Unlock()
		if d != nil {
			select {
			case work <- d:
				continue
			case <-done:
				return
			}
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-s.wake:
		case <-done:
			return
		}
	}
}

func (s *Sim) schedule(d *device, due time.Time) {
	s.qmu.Lock()
	heap.Push(&s.queue, item{due: due, d: d})
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// startLive redraws the live view until done; the func it returns waits
// for the last redraw and ends the line.
func (s *Sim) startLive(done <-chan struct{}) func() {
	if s.cfg.Live == nil {
		return func() {}
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(s.cfg.LiveEvery)
		defer t.Stop()
		last, lastT := int64(0), time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				r := s.Snapshot()
				ps := float64(r.Checkins-last) / now.Sub(lastT).Seconds()
				last, lastT = r.Checkins, now
				fmt.Fprint(s.cfg.Live, liveLine(r, ps))
			}
		}
	}()
	return func() {
		<-stopped
		fmt.Fprint(s.cfg.Live, "\r\033[K")
	}
}

// Snapshot reports the run so far.
func (s *Sim) Snapshot() *Report {
	q := s.hist.quantiles(0.5, 0.99)
	iq := s.installHist.quantiles(0.5, 0.99)
	r := &Report{Devices: len(s.devices), ByState: map[string]int{}, ByRelease: map[string]int{},
		Checkins: s.checkins.Load(), CheckinP50: q[0], CheckinP99: q[1],
		Installs: s.installHist.total(), InstallP50: iq[0], InstallP99: iq[1], Errors: s.errs.Load(),
		TamperRefusals: s.tamperRefusals.Load(), PowerCuts: s.powerCuts.Load(), PowerCutsSurvived: s.survived.Load(),
		Drops: s.drops.Load(), RolledBack: s.rolledBack.Load(), Elapsed: time.Since(s.start)}
	s.mu.Lock()
	defer s.mu.Unlock()
	r.ErrorSamples = append([]string(nil), s.errSamples...)
	r.PerDevice = make([]DeviceReport, len(s.devices))
	for i, d := range s.devices {
		r.ByState[d.sum.State]++
		r.ByRelease[d.sum.Release]++
		r.PerDevice[i] = d.sum
	}
	return r
}

// fail counts an error no fault explains and keeps a few distinct ones.
func (s *Sim) fail(d *device, what string, err error) {
	s.errs.Add(1)
	msg := fmt.Sprintf("%s: %s: %v", d.id, what, err)
	s.mu.Lock()
	defer s.mu.Unlock()
	d.sum.State, d.sum.Reason = StateError, what+": "+err.Error()
	if len(s.errSamples) < 8 {
		s.errSamples = append(s.errSamples, msg)
	}
}

// schedule is the queue of devices by the time of their next check-in.
type schedule []item

type item struct {
	due time.Time
	d   *device
}

func (q schedule) Len() int           { return len(q) }
func (q schedule) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q schedule) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *schedule) Push(x any)        { *q = append(*q, x.(item)) }
func (q *schedule) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}
