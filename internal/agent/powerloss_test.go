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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/powercut"
	"github.com/rampartfw/rampart/internal/race"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// TestPowerLoss cuts the power at every write, fsync and rename the agent
// (and the simulated bootloader) performs during an install, a commit and a
// rollback, restarts the device from what the power-loss model says
// survived (three models: only synced data, everything, torn sectors and
// a prefix of directory operations), boots it until it settles, and checks:
//
//   - every boot starts a slot holding a verified image (the factory image
//     or the new release), never a partial or unverified one;
//   - the agent's state always loads, and its security counter never goes
//     down;
//   - "installed" is reported only from a boot of the new image whose
//     health check passed;
//   - the device ends where an uninterrupted run ends: the new release
//     committed (or, when the new image is unhealthy, rolled back with the
//     factory image running and the release not retried).
func TestPowerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of simulated power cuts")
	}
	e := servertest.New(t)
	// The scenarios are independent devices of one server, enrolled before
	// the deployment reaches their hardware id.
	certs := map[string]*tls.Certificate{}
	for _, name := range []string{"commit", "rollback", "commit-over-fallback"} {
		certs[name] = e.Enroll("gw-pl-"+name, hw)
	}
	img := make([]byte, 2<<20+4321) // three chunks
	rand.Read(img)
	e.ReleaseImage("1.0.0", 2, img, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	factory := make([]byte, 1<<20+99)
	rand.Read(factory)

	for _, sc := range []struct {
		name     string
		healthy  bool
		fallback bool
	}{{"commit", true, false}, {"rollback", false, false}, {"commit-over-fallback", true, true}} {
		cert := certs[sc.name]
		t.Run(sc.name, func(t *testing.T) {
			// The suite's longest test: its scenarios run side by side.
			t.Parallel()
			h := &harness{t: t, e: e, id: "gw-pl-" + sc.name, cert: e.Client(cert), img: img, factory: factory, healthy: sc.healthy, fallback: sc.fallback}
			total := h.countOps()
			if total < 20 {
				t.Fatalf("the scenario performs only %d operations; the harness is not attached", total)
			}
			restarts := 0
			for k := 1; k <= total; k++ {
				if race.Enabled && !racePoint(k, total) {
					continue
				}
				for i, mode := range []powercut.Mode{powercut.DropUnsynced, powercut.KeepAll, powercut.Torn} {
					if race.Enabled && i != k%3 {
						continue // under -race, one survival model per point, in turn
					}
					h.trial(k, mode)
					restarts++
				}
			}
			t.Logf("%s: %d crash points (every write, fsync, rename, removal and mkdir), %d restarts (race sampling: %v), every one recovered; %d ended in a fallback because the cut hit the trial boot",
				sc.name, total, restarts, race.Enabled, h.fellBack)
		})
	}
}

// racePoint picks the crash points the race detector runs: the first and
// last few (start-up and commit, where the state machine turns) and every
// fifth in between, each under one survival model in turn, so every phase
// is still cut under -race. The exhaustive run without -race, in
// `make test`, cuts every point under every model.
func racePoint(k, total int) bool {
	return k <= 6 || k > total-6 || k%5 == 0
}

const (
	slotA    = "/dev/slot-a"
	slotB    = "/dev/slot-b"
	bootRec  = "/boot/rampart-sim.json"
	stateDir = "/var/lib/rampart"
)

type harness struct {
	t       *testing.T
	e       *servertest.Env
	id      string // the device id
	cert    *http.Client
	img     []byte
	factory []byte
	healthy bool // whether the new image passes its health check
	// fallback starts with the factory image in both slots, known to the
	// agent, so slot B is the bootloader's fallback when the install
	// starts overwriting it.
	fallback bool
	fellBack int
	// The initial contents of slot B, made once.
	slotsOnce               sync.Once
	emptySlot, fallbackSlot []byte
}

// sim is one power-on of the simulated device on a model.
type sim struct {
	h       *harness
	m       *powercut.Model
	a       *agent.Agent
	bl      *bootloader.Sim
	booted  bootloader.Slot
	reports *reportLog
	tufDir  string
	counter uint64 // highest security counter seen
	// stage is the part of the scenario running: install, trial (the
	// first boot of the new slot until it is committed) or after.
	stage string
	// lastRun is the outcome of the last Run.
	lastRun *agent.Outcome
}

type reportLog struct {
	mu   sync.Mutex
	sent []agent.Report
	// okToInstall is set while a boot of the new image passed its health
	// check: the only time an "installed" report may leave the device.
	okToInstall bool
	bad         []string
}

type recorder struct {
	base http.RoundTripper
	log  *reportLog
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/device/report") && req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		var rep agent.Report
		json.Unmarshal(b, &rep)
		r.log.mu.Lock()
		r.log.sent = append(r.log.sent, rep)
		if rep.Status == "installed" && !r.log.okToInstall {
			r.log.bad = append(r.log.bad, fmt.Sprintf("installed reported (counter %d) without a healthy boot of the new image", rep.Counter))
		}
		r.log.mu.Unlock()
	}
	return r.base.RoundTrip(req)
}

func (h *harness) newSim(m *powercut.Model, tufDir string, reports *reportLog) *sim {
	cfgText := fmt.Sprintf(`
[server]
url = %q
ca = "/etc/ca.pem"
[device]
id = %q
hardware_id = %q
key = "/etc/device.key"
certificate = "/etc/device.crt"
[trust]
image_root = "/etc/image-root.json"
director_root = "/etc/director-root.json"
log_key = "/etc/log.pub"
[slots]
a = %q
b = %q
[bootloader]
backend = "sim"
env = %q
[health]
command = ["health"]
[reboot]
command = ["reboot"]
[state]
dir = %q
[download]
workers = 2
retries = 0
`, h.e.TS.URL, h.id, hw, slotA, slotB, bootRec, stateDir)
	cfg, err := agent.ParseConfig([]byte(cfgText))
	if err != nil {
		h.t.Fatal(err)
	}
	bl, err := bootloader.OpenSimFS(m, bootRec, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	s := &sim{h: h, m: m, bl: bl, reports: reports, tufDir: tufDir}
	s.a = &agent.Agent{
		Config: cfg, FS: m, TUFDir: tufDir, Bootloader: bl,
		HTTP:       &http.Client{Transport: &recorder{base: h.cert.Transport, log: reports}, Timeout: 30 * time.Second},
		BootedSlot: func() (bootloader.Slot, error) { return s.booted, nil },
		Exec:       s.exec,
		ImageRoot:  h.e.ImageRoot, DirectorRoot: h.e.DirectorRoot,
		LogOrigin: servertest.LogOrigin, LogKey: h.e.LogKey,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	return s
}

// holds reports what a slot holds: "factory", "new" or "garbage".
func (s *sim) holds(slot bootloader.Slot) string {
	p := slotA
	if slot == bootloader.B {
		p = slotB
	}
	held := "garbage"
	// Inspect, not Get: this runs several times in each of the
	// thousands of trials, and a copy of the slot was most of the
	// package's allocation.
	_ = s.m.Inspect(p, func(b []byte) {
		switch {
		case bytes.HasPrefix(b, s.h.img):
			held = "new"
		case bytes.HasPrefix(b, s.h.factory):
			held = "factory"
		}
	})
	return held
}

func (s *sim) exec(ctx context.Context, argv []string, _ time.Duration) error {
	switch argv[0] {
	case "reboot":
		return nil
	case "health":
		held := s.holds(s.booted)
		if held == "new" && !s.h.healthy {
			return errors.New("the new image is unhealthy")
		}
		s.reports.mu.Lock()
		s.reports.okToInstall = held == "new"
		s.reports.mu.Unlock()
		return nil
	}
	return fmt.Errorf("unexpected command %v", argv)
}

// powerOn boots the simulated device: the bootloader picks the slot.
func (s *sim) powerOn() error {
	s.reports.mu.Lock()
	s.reports.okToInstall = false
	s.reports.mu.Unlock()
	b, err := s.bl.Boot()
	if errors.Is(err, bootloader.ErrNoBootableSlot) {
		b, err = s.bl.Boot() // the reset restored the attempts
	}
	if err != nil {
		return err
	}
	s.booted = b
	return nil
}

// factoryDevice is a device whose first boot was confirmed, ready for the
// scenario; returns the model and the operation count at that point.
func (h *harness) factoryDevice() (*sim, int) {
	m := powercut.New()
	// PutShared: thousands of trials start from the same slot images,
	// which the model copies only when the agent first writes them.
	m.PutShared(slotA, h.factory)
	// Slot B is a file the size of its partition: exactly the new image's
	// (the size it grew to before slots had to fit their image).
	h.slotsOnce.Do(func() {
		h.emptySlot = make([]byte, len(h.img))
		h.fallbackSlot = make([]byte, len(h.img))
		copy(h.fallbackSlot, h.factory)
	})
	m.PutShared(slotB, h.emptySlot)
	if h.fallback {
		m.PutShared(slotB, h.fallbackSlot)
		sum := sha256.Sum256(h.factory)
		rel := agent.Release{Target: "factory", Version: "0.0.1", Length: int64(len(h.factory)), SHA256: hex.EncodeToString(sum[:])}
		b, _ := json.Marshal(agent.State{Format: 1, Slot: "A", Running: &rel, Other: &rel})
		m.Put(stateDir+"/state.json", b)
	}
	if err := m.MkdirAll("/boot", 0o755); err != nil {
		h.t.Fatal(err)
	}
	s := h.newSim(m, h.t.TempDir(), &reportLog{})
	if err := s.powerOn(); err != nil {
		h.t.Fatal(err)
	}
	if _, err := s.a.Boot(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	return s, m.Ops()
}

// scenario is the uninterrupted sequence: install, reboot, trial boot
// (commit or roll back), reboot, normal boot. It stops at the first error,
// which is the power cut when one is set.
func (s *sim) scenario() error {
	ctx := context.Background()
	s.stage = "install"
	if _, err := s.a.Run(ctx); err != nil {
		return err
	}
	for _, stage := range []string{"trial", "after"} {
		s.stage = stage
		if err := s.powerOn(); err != nil {
			return err
		}
		if _, err := s.a.Boot(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) countOps() int {
	s, base := h.factoryDevice()
	if err := s.scenario(); err != nil {
		h.t.Fatalf("uninterrupted scenario: %v", err)
	}
	h.final(s, "uninterrupted")
	// The log checkpoint the install committed to is written through the
	// model too (uptane.Config.FS), so its writes are among the points cut.
	if _, err := s.m.Get(s.tufDir + "/log/checkpoint"); err != nil {
		h.t.Fatalf("the log checkpoint is not on the power-loss model: %v", err)
	}
	return s.m.Ops() - base
}

func (h *harness) trial(k int, mode powercut.Mode) {
	t := h.t
	s, base := h.factoryDevice()
	s.m.CutAt(base + k)
	err := s.scenario()
	where := fmt.Sprintf("cut at operation %d (%s)", k, mode)
	if !s.m.Cut() {
		t.Fatalf("%s: the power was never cut (scenario ended with %v)", where, err)
	}
	// Power comes back with what survived.
	m2 := s.m.Restart(mode, int64(k))
	s2 := h.newSim(m2, s.tufDir, s.reports)
	ctx := context.Background()
	for i := 0; ; i++ {
		if i == 8 {
			t.Fatalf("%s: the device did not settle in 8 boots", where)
		}
		if err := s2.powerOn(); err != nil {
			t.Fatalf("%s: boot %d: %v", where, i, err)
		}
		if held := s2.holds(s2.booted); held == "garbage" {
			t.Fatalf("%s: boot %d started slot %s, which holds neither verified image", where, i, s2.booted)
		}
		h.fallbackVerified(s2, fmt.Sprintf("%s, boot %d", where, i))
		out, err := s2.a.Boot(ctx)
		if err != nil {
			t.Fatalf("%s: boot %d: agent boot: %v", where, i, err)
		}
		s2.checkState(where)
		if out.Reboot {
			continue
		}
		out, err = s2.a.Run(ctx)
		if err != nil {
			t.Fatalf("%s: boot %d: agent run: %v", where, i, err)
		}
		s2.checkState(where)
		if out.Reboot {
			continue
		}
		if out.Action != "up-to-date" && out.Action != "not-retried" {
			t.Fatalf("%s: boot %d: run ended with %+v", where, i, out)
		}
		s2.lastRun = out
		break
	}
	// A cut during the trial boot, before the commit reached the
	// bootloader, is indistinguishable from a new image that hangs: the
	// bootloader falls back and the release counts as failed. That is the
	// one place where the device may end on the old image.
	if h.healthy && s.stage == "trial" && s2.lastRun.Action == "not-retried" && s2.lastRun.Reason == "trial-boot-failed" {
		h.rolledBack(s2, where)
		h.fellBack++
	} else {
		h.final(s2, where)
	}
	s2.reports.mu.Lock()
	defer s2.reports.mu.Unlock()
	if len(s2.reports.bad) > 0 {
		t.Fatalf("%s: %s", where, s2.reports.bad[0])
	}
}

// checkState: the state loads and the counter never goes down.
func (s *sim) checkState(where string) {
	st, err := s.a.Status()
	if err != nil {
		s.h.t.Fatalf("%s: agent state: %v", where, err)
	}
	if st.SecurityCounter < s.counter {
		s.h.t.Fatalf("%s: security counter went down from %d to %d", where, s.counter, st.SecurityCounter)
	}
	s.counter = st.SecurityCounter
}

func (h *harness) rolledBack(s *sim, where string) {
	st, err := s.a.Status()
	if err != nil {
		h.t.Fatalf("%s: %v", where, err)
	}
	if st.Pending != nil || st.SecurityCounter != 0 || st.Running != nil && st.Running.Target != "factory" || s.holds(s.booted) != "factory" {
		h.t.Fatalf("%s: after a failed trial: pending %+v, counter %d, running %+v, booted %s", where, st.Pending, st.SecurityCounter, st.Running, s.holds(s.booted))
	}
	h.fallbackVerified(s, where)
}

func (h *harness) final(s *sim, where string) {
	st, err := s.a.Status()
	if err != nil {
		h.t.Fatalf("%s: %v", where, err)
	}
	if st.Pending != nil {
		h.t.Fatalf("%s: settled with a pending update %+v", where, st.Pending)
	}
	if h.healthy {
		if st.SecurityCounter != 2 || st.Running == nil || st.Running.Version != "1.0.0" || s.holds(s.booted) != "new" {
			h.t.Fatalf("%s: ended with counter %d, running %+v, booted %s holding %s; want 1.0.0 committed", where, st.SecurityCounter, st.Running, s.booted, s.holds(s.booted))
		}
	} else {
		if st.SecurityCounter != 0 || st.Running != nil && st.Running.Target != "factory" || s.holds(s.booted) != "factory" {
			h.t.Fatalf("%s: ended with counter %d, running %+v, booted %s holding %s; want the factory image after a rollback", where, st.SecurityCounter, st.Running, s.booted, s.holds(s.booted))
		}
	}
	h.fallbackVerified(s, where)
}

// fallbackVerified: every slot the bootloader may boot holds a verified image.
func (h *harness) fallbackVerified(s *sim, where string) {
	bs, _ := s.bl.State()
	for _, sl := range bs.Order {
		if s.holds(sl) == "garbage" {
			h.t.Fatalf("%s: slot %s is in the boot order %v but holds no verified image", where, sl, bs)
		}
	}
}
