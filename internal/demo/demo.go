// Package demo is rampart demo: the whole story of Rampart told in one
// command, in a new temporary directory, with nothing to set up. It runs
// an offline key ceremony, a real rampart-server on loopback with mTLS,
// a fleet of simulated devices (package sim: the real agent on the
// simulated bootloader), a phased rollout, a man-in-the-middle, a release
// that fails its health check and is paused at its first gate, a key
// revocation drill (revoke-key, redeploy, recovery), and a closing
// summary read from the server's fleet statistics.
//
// The demo is a list of steps (Steps). Each step narrates what it does in
// plain words, checks that what it narrates happened, and returns an
// error naming what did not; Run stops at the first failing step. So a
// run that returns nil is also an end-to-end test of the product.
//
// Everything runs in this process and calls the packages the commands
// use (keys, offlinerepo, datadir, server, client, sim); nothing is
// shelled out. Waits poll the server's API with a deadline and show a
// progress line, redrawn in place on a terminal.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/sim"
	"github.com/rampartfw/rampart/internal/termsafe"
)

// Config is one run of the demo.
type Config struct {
	// Out gets the narration.
	Out io.Writer
	// Live redraws progress lines in place (Out is a terminal);
	// otherwise a progress line is printed only when it says something
	// new, at most every few seconds.
	Live bool
	// Devices is the size of the simulated fleet (0: DefaultDevices).
	Devices int
	// Keep leaves the work directory in place at the end.
	Keep bool
	// Serve keeps the server running after the story, printing its URL,
	// CA file and an admin token, until ctx ends.
	Serve bool
	// TempDir is where the work directory is made ("": the system's).
	TempDir string
	// Poll is the time between a simulated device's check-ins (0:
	// DefaultPoll); Soak each rollout phase's soak time (0: DefaultSoak).
	Poll, Soak time.Duration
	// Timeout bounds each wait for the fleet (0: DefaultTimeout).
	Timeout time.Duration
}

// Defaults and limits.
const (
	DefaultDevices = 100
	MaxDevices     = 2000
	DefaultPoll    = time.Second
	DefaultSoak    = time.Second
	DefaultTimeout = 90 * time.Second
	// Hardware is the fleet's hardware id; Product its product line.
	Hardware = "acme-gw-rev2"
	Product  = "acme-gw"
)

// ConfigError is a configuration the demo cannot run (a usage error).
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

func (c *Config) check() error {
	if c.Devices == 0 {
		c.Devices = DefaultDevices
	}
	if c.Poll == 0 {
		c.Poll = DefaultPoll
	}
	if c.Soak == 0 {
		c.Soak = DefaultSoak
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Devices < 10 || c.Devices > MaxDevices {
		return &ConfigError{Msg: fmt.Sprintf("--devices %d is not between 10 and %d", c.Devices, MaxDevices)}
	}
	return nil
}

// Step is one act of the story. Run narrates through d and returns an
// error naming what did not happen as narrated.
type Step struct {
	Title string
	Run   func(ctx context.Context, d *Demo) error
}

// Steps are the acts of the demo, in order.
func Steps() []Step {
	return []Step{
		{"Offline key ceremony", ceremony},
		{"rampart-server on loopback, with mTLS", startServer},
		{"A fleet of simulated devices on release 1.0.0", fleetOn100},
		{"Release 1.1.0, rolled out in phases", rollout110},
		{"A man-in-the-middle alters a chunk in transit", mitm},
		{"Release 1.2.0 fails its health check on some devices", failing120},
		{"Key revocation drill: a release signer leaks", revocationDrill},
		{"Summary, from the server's fleet statistics", summary},
	}
}

// Demo is the state the steps share.
type Demo struct {
	cfg     Config
	dir     string
	started time.Time

	// The ceremony's keys, by name, and where things live.
	signers              map[string]keys.Signer
	repoDir, directorDir string
	srvDir, admin        string

	// The running server.
	url, caFile string
	api         *client.Client
	stopServer  func()

	// The simulated fleet and the man-in-the-middle's device.
	fleet, mitmSim *sim.Sim
	simsDone       map[*sim.Sim]chan struct{}

	// Release 1.2.0's health check: the devices it fails on, decided
	// once its rollout exists (failReady closed).
	failMu    sync.Mutex
	failing   map[string]bool
	failReady chan struct{}

	// What the summary reports: the rollouts, and the key revocation
	// drill's time to recover (revocation to the last affected device's
	// confirmed boot of the known-good release) and affected devices.
	rollouts      []rolloutRun
	drillRecover  time.Duration
	drillAffected int

	lastProgress     string
	lastProgressTime time.Time
}

// rolloutRun is a rollout the demo made.
type rolloutRun struct {
	release, id string
	took        time.Duration
}

// Run tells the whole story: every step in order, stopping at the first
// that did not behave as narrated. The work directory is removed at the
// end unless cfg.Keep.
func Run(ctx context.Context, cfg Config) (err error) {
	if err := cfg.check(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(cfg.TempDir, "rampart-demo-")
	if err != nil {
		return err
	}
	d := &Demo{cfg: cfg, dir: dir, started: time.Now(), signers: map[string]keys.Signer{}, simsDone: map[*sim.Sim]chan struct{}{}, failReady: make(chan struct{})}
	defer func() {
		d.stop()
		if cfg.Keep {
			fmt.Fprintf(cfg.Out, "\nThe demo's files are kept in %s\n", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = rerr
		}
	}()
	fmt.Fprintf(cfg.Out, "Rampart demo: %d simulated devices, working in %s\n", cfg.Devices, dir)
	steps := Steps()
	for i, s := range steps {
		fmt.Fprintf(cfg.Out, "\n[%d/%d] %s\n", i+1, len(steps), s.Title)
		if err := s.Run(ctx, d); err != nil {
			d.endProgress()
			if ctx.Err() != nil {
				return fmt.Errorf("step %d (%s): interrupted", i+1, s.Title)
			}
			return &StepError{N: i + 1, Title: s.Title, Err: err}
		}
	}
	fmt.Fprintf(cfg.Out, "\nEvery step behaved as narrated, in %s.\n", time.Since(d.started).Round(100*time.Millisecond))
	if cfg.Serve {
		d.stopSims()
		fmt.Fprintf(cfg.Out, "\nThe server keeps running until Ctrl-C (the simulated devices are stopped; the server keeps their records):\n")
		fmt.Fprintf(cfg.Out, "  URL          %s\n  CA           %s\n  admin token  %s\n", d.url, d.caFile, d.admin)
		fmt.Fprintf(cfg.Out, "For example:  rampart device list --server %s --ca %s --token %s\n", d.url, d.caFile, d.admin)
		<-ctx.Done()
		fmt.Fprintln(cfg.Out, "\nStopping the server.")
	}
	return nil
}

// StepError is a step that did not behave as narrated.
type StepError struct {
	N     int
	Title string
	Err   error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("demo step %d (%s) did not behave as narrated: %v", e.N, e.Title, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// stop ends the simulators and the server.
func (d *Demo) stop() {
	d.stopSims()
	if d.stopServer != nil {
		d.stopServer()
		d.stopServer = nil
	}
}

func (d *Demo) stopSims() {
	for s := range d.simsDone {
		d.stopSim(s)
	}
}

// stopSim stops one simulator and waits for its end.
func (d *Demo) stopSim(s *sim.Sim) {
	if done, ok := d.simsDone[s]; ok {
		s.Stop()
		<-done
		delete(d.simsDone, s)
	}
}

// say narrates one line.
func (d *Demo) say(format string, args ...any) {
	d.endProgress()
	fmt.Fprintf(d.cfg.Out, "  "+format+"\n", args...)
}

// progress shows where a long wait is: redrawn in place on a terminal,
// otherwise printed when it changed and a few seconds have passed.
func (d *Demo) progress(line string) {
	line = termsafe.Bounded(line, 200)
	if d.cfg.Live {
		fmt.Fprintf(d.cfg.Out, "\r\033[K  … %s", line)
		d.lastProgress = line
		return
	}
	if line != d.lastProgress && time.Since(d.lastProgressTime) >= 3*time.Second {
		fmt.Fprintf(d.cfg.Out, "  … %s\n", line)
		d.lastProgress, d.lastProgressTime = line, time.Now()
	}
}

func (d *Demo) endProgress() {
	if d.cfg.Live && d.lastProgress != "" {
		fmt.Fprint(d.cfg.Out, "\r\033[K")
	}
	d.lastProgress = ""
}

// errTimeout ends a wait that ran out of time.
var errTimeout = errors.New("timed out")

// waitFor polls check until it reports done, showing its progress line,
// for at most the configured timeout. check's error ends the wait.
func (d *Demo) waitFor(ctx context.Context, what string, check func(ctx context.Context) (line string, done bool, err error)) error {
	deadline := time.Now().Add(d.cfg.Timeout)
	d.lastProgressTime = time.Now()
	var line string
	for {
		l, done, err := check(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		line = l
		if done {
			d.endProgress()
			return nil
		}
		d.progress(line)
		if time.Now().After(deadline) {
			d.endProgress()
			return fmt.Errorf("%s: %w after %s (last seen: %s)", what, errTimeout, d.cfg.Timeout, line)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// path is a path inside the work directory.
func (d *Demo) path(elem ...string) string { return filepath.Join(append([]string{d.dir}, elem...)...) }

// rel is a path inside the work directory as the narration shows it.
func (d *Demo) rel(p string) string {
	if r, err := filepath.Rel(d.dir, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}
