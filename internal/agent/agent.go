// Package agent is the device side of Rampart: the update state machine that
// runs on every device (docs/agent.md). The files are its jobs: check-in
// (checkin.go), install (install.go) and its progress (progress.go), boot
// (boot.go), commit (commit.go), rollback (rollback.go), reporting
// (report.go), offline bundles (offline.go), enrollment (enroll.go) and
// the persisted state (state.go).
//
// One check-in (Agent.Run) verifies what the director asks for against the
// image repository and the transparency log (package uptane fetches and
// refreshes, package verify decides), streams the
// image chunk by chunk into the inactive slot, verifying each chunk before
// writing it (package install), reads the slot back, and asks the bootloader
// for one trial boot (package bootloader). After the reboot, Agent.Boot runs
// the health check and commits (slot permanent, security counter raised,
// "installed" reported) or rolls back ("rolled-back" reported with the
// reason). If the new image never comes up, the bootloader falls back on its
// own and the next Boot reports that.
//
// # Crash safety
//
// Everything the agent remembers is one state file replaced atomically
// (fsys.WriteFile), and each phase of an update is written before the step it
// names starts; bootloader transitions are one environment write each. The
// order of writes is chosen so that a power cut between any two of them
// leaves a device that boots a verified image and an agent that can finish
// or undo the update:
//
//   - install: state(installing) → MarkBad(target) → slot writes, each
//     synced before it is recorded in the progress file → read-back →
//     chunk index saved → state(written) → SetTrial(target) → state(trial)
//     → reboot. The target slot is out of the boot order from before its
//     first byte is written until SetTrial, so a half-written slot is
//     never booted.
//   - commit: MarkGood(target) → state(committed, counter raised). A cut in
//     between repeats the health check and the commit at the next boot.
//   - rollback: state(rolling-back, reason) → MarkBad(target) →
//     state(rolled back). A cut before MarkBad still rolls back: the trial
//     had one attempt, which this boot used up.
//
// The agent only keeps a slot in the boot order as a fallback when it holds
// a verified release at or above the security counter, so the bootloader
// can never fall back below it.
//
// All of the agent's own file I/O (state, slots, progress, chunk indexes,
// the log checkpoint that uptane stores) goes through an fsys.FS, so the
// crash test replaces the operating system with a model that loses
// unsynced data at every point. The one exception is the TUF metadata in
// Agent.TUFDir, which go-tuf reads and writes with package os; uptane
// keeps its own durable copy of each trusted root there.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/bootenv"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/install"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/termsafe"
	"github.com/rampartfw/rampart/internal/uptane"
	"github.com/rampartfw/rampart/internal/verify"
)

// Agent is one device's update agent. Build it with New; the exported
// fields are the seams tests and the simulator replace.
type Agent struct {
	Config *Config
	// FS holds the state directory and the slots.
	FS fsys.FS
	// TUFDir holds the trusted TUF metadata of both repositories, on the
	// real filesystem (go-tuf reads and writes it with package os), and
	// the log checkpoint under log/, which uptane reads and writes
	// through FS.
	TUFDir     string
	Bootloader bootloader.Bootloader
	// HTTP is the mTLS client pinned to the server CA; nil when the agent
	// has no certificate yet (offline installs still work).
	HTTP *http.Client
	// BootedSlot tells which slot the running system came from.
	BootedSlot func() (bootloader.Slot, error)
	// Exec runs the health check and reboot commands.
	Exec func(ctx context.Context, argv []string, timeout time.Duration) error
	Now  func() time.Time
	Log  *slog.Logger

	ImageRoot, DirectorRoot []byte
	LogOrigin               string
	LogKey                  note.Verifier

	// OnProgress, when set, is called as an install verifies and writes
	// chunks (from the install's workers, one call at a time; it must be
	// quick). The command line draws a progress line with it on a
	// terminal.
	OnProgress func(InstallProgress)

	// memo carries what a check-in verified to the next (uptane.Memo).
	memo uptane.Memo
}

// InstallProgress is how far an install has got.
type InstallProgress struct {
	// Source is "server" or "bundle".
	Source string
	Target string
	// Chunks and Size describe the image; Done and Bytes the chunks
	// verified and written so far, earlier attempts' included (Resumed
	// of them).
	Chunks, Done, Resumed int
	Size, Bytes           int64
}

// New wires an agent from its configuration for production: the real
// filesystem, the configured bootloader, the kernel command line and
// os/exec. The device certificate is optional (before enrollment).
func New(cfg *Config, log *slog.Logger) (*Agent, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Agent{Config: cfg, FS: fsys.OS, TUFDir: filepath.Join(cfg.State.Dir, "tuf"), Exec: RunCommand, Now: time.Now, Log: log}
	var err error
	if a.ImageRoot, err = readConfigFile(cfg.Trust.ImageRoot, "trust.image_root"); err != nil {
		return nil, err
	}
	if a.DirectorRoot, err = readConfigFile(cfg.Trust.DirectorRoot, "trust.director_root"); err != nil {
		return nil, err
	}
	lk, err := readConfigFile(cfg.Trust.LogKey, "trust.log_key")
	if err != nil {
		return nil, err
	}
	if a.LogKey, err = note.NewVerifier(strings.TrimSpace(string(lk))); err != nil {
		return nil, &ConfigError{Path: cfg.Trust.LogKey, Msg: "not a log verifier key (origin+hash+key): " + err.Error()}
	}
	a.LogOrigin = a.LogKey.Name()
	if a.Bootloader, err = OpenBootloader(cfg, fsys.OS); err != nil {
		return nil, err
	}
	a.BootedSlot = func() (bootloader.Slot, error) { return SlotFromCmdline(cfg.Bootloader.Cmdline) }
	if cfg.Server.URL != "" {
		if _, err := os.Stat(cfg.Device.Certificate); err == nil {
			if a.HTTP, err = NewHTTPClient(cfg); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

func readConfigFile(path, key string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &ConfigError{Path: path, Msg: fmt.Sprintf("%s: %v", key, err)}
	}
	return b, nil
}

// NewHTTPClient is the device's mTLS client: the device certificate, and
// the configured server CA as the only trust anchor (never the system
// pool).
func NewHTTPClient(cfg *Config) (*http.Client, error) {
	caPEM, err := readConfigFile(cfg.Server.CA, "server.ca")
	if err != nil {
		return nil, err
	}
	pool, err := pki.CertPoolFromPEM(caPEM)
	if err != nil {
		return nil, &ConfigError{Path: cfg.Server.CA, Msg: err.Error()}
	}
	var cert *tls.Certificate
	if cfg.Device.Certificate != "" {
		c, err := tls.LoadX509KeyPair(cfg.Device.Certificate, cfg.Device.Key)
		if err != nil {
			return nil, &ConfigError{Path: cfg.Device.Certificate, Msg: "device certificate and key: " + err.Error() + " (run rampart-agent enroll)"}
		}
		cert = &c
	}
	tlsCfg := pki.ClientTLSConfig(pool, cert)
	// A device checks in once a poll interval (an hour by default), long
	// after the server has closed the idle connection (2 minutes), so
	// each check-in would otherwise be a full handshake. With the
	// server's session ticket the next connection resumes: neither end
	// signs a CertificateVerify or checks one, the key exchange still
	// runs (forward secrecy kept), and the server still verifies the
	// device's certificate and revocation on the resumed session
	// (pki.ServerTLSConfig). One entry: the device talks to one server.
	tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	// Never a redirect: the device talks to server.url and nothing else
	// (see install.NoRedirects); every request path also enforces it.
	return install.NoRedirects(&http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsCfg, ResponseHeaderTimeout: time.Minute},
		Timeout:   cfg.Download.Timeout.Duration,
	}), nil
}

// OpenBootloader opens the configured backend on fsy (used by the sim
// backend only: the U-Boot and GRUB environments are written by package
// bootenv with their own crash-safe recipes).
func OpenBootloader(cfg *Config, fsy fsys.FS) (bootloader.Bootloader, error) {
	b := cfg.Bootloader
	switch b.Backend {
	case "sim":
		return bootloader.OpenSimFS(fsy, b.Env, b.MaxAttempts)
	case "grub":
		return bootloader.NewGRUB(&bootenv.GRUB{Path: b.Env}), nil
	case "uboot":
		var u *bootenv.UBoot
		var err error
		if b.FWEnvConfig != "" {
			u, err = bootenv.LoadFWEnvConfig(b.FWEnvConfig)
		} else {
			u, err = bootenv.NewUBoot(bootenv.Location{Path: b.Env, Size: int64(b.EnvSize)})
		}
		if err != nil {
			return nil, &ConfigError{Path: b.FWEnvConfig + b.Env, Msg: err.Error()}
		}
		ub := bootloader.NewUBoot(u)
		if b.MaxAttempts > 0 {
			ub.MaxAttempts = b.MaxAttempts
		}
		return ub, nil
	}
	return nil, &ConfigError{Msg: "unknown bootloader backend " + b.Backend}
}

// SlotFromCmdline reads the booted slot from a kernel command line file:
// rauc.slot=A (what RAUC's boot scripts pass) or rampart.slot=A.
func SlotFromCmdline(path string) (bootloader.Slot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the booted slot: %w", err)
	}
	for _, f := range strings.Fields(string(b)) {
		for _, p := range []string{"rauc.slot=", "rampart.slot="} {
			if v, ok := strings.CutPrefix(f, p); ok {
				switch bootloader.Slot(v) {
				case bootloader.A, bootloader.B:
					return bootloader.Slot(v), nil
				}
				return "", fmt.Errorf("%s: %s names slot %q, not A or B", path, f, v)
			}
		}
	}
	return "", fmt.Errorf("%s has no rauc.slot= or rampart.slot=: the boot script must pass the slot it booted", path)
}

// RunCommand runs argv with a timeout, killing its whole process group
// when the time is up so a hung health check cannot outlive its limit.
func RunCommand(ctx context.Context, argv []string, timeout time.Duration) error {
	if len(argv) == 0 {
		return errors.New("empty command")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() == context.DeadlineExceeded {
		return &TimeoutError{Command: argv[0], After: timeout}
	}
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 200 {
			msg = msg[len(msg)-200:]
		}
		if msg != "" {
			return fmt.Errorf("%s: %w: %s", argv[0], err, msg)
		}
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	return nil
}

// TimeoutError is a command that did not finish in time.
type TimeoutError struct {
	Command string
	After   time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s did not finish within %s", e.Command, e.After)
}

// Errors the CLI maps to exit codes.
var (
	// ErrNotEnrolled: no device certificate yet.
	ErrNotEnrolled = errors.New("device is not enrolled")
	// ErrOfflineRefused: the offline policy does not allow this bundle.
	ErrOfflineRefused = errors.New("offline install refused by policy")
	// ErrInstall: the install failed for a reason that is not an attack
	// (download, disk); the active slot is untouched.
	ErrInstall = errors.New("install failed")
	// ErrUnavailable: a check-in could not get what it verifies from the
	// server: unreachable, an HTTP error, or a transfer cut short
	// (connection reset, timeout, a body that ended early). It is not an
	// attack and is not reported as one; nothing changed, and the next
	// check-in tries again.
	ErrUnavailable = errors.New("check-in failed")
)

// hinted is an error with advice for whoever reads it on the device
// (failure.Hinter); the command line prints it as its hint.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string       { return h.err.Error() }
func (h *hinted) Unwrap() error       { return h.err }
func (h *hinted) FailureHint() string { return h.hint }

func withHint(err error, hint string) error { return &hinted{err: err, hint: hint} }

// Outcome says what one operation did.
type Outcome struct {
	// Action is one of: nothing, up-to-date, not-retried, installed-pending-reboot,
	// committed, rolled-back, booted.
	Action  string   `json:"action"`
	Target  string   `json:"target,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Slot    string   `json:"slot,omitempty"`
	Reboot  bool     `json:"reboot,omitempty"`
	Install *Install `json:"install,omitempty"`
	// InstallTime is the part of Run spent installing (the chunk index,
	// the image, the slot, the boot request), after the check-in proper
	// (settling, queued reports, the verified decision); zero when Run
	// installed nothing. The simulator reports the two apart.
	InstallTime time.Duration `json:"-"`
}

// Install counts what an install transferred.
type Install struct {
	// Source is "server" or "bundle": where the bytes not reused from
	// the running slot came from (BytesDownloaded counts them either way).
	Source          string `json:"source"`
	ImageSize       int64  `json:"image_size"`
	BytesDownloaded int64  `json:"bytes_downloaded"`
	BytesReused     int64  `json:"bytes_reused"`
	Chunks          int    `json:"chunks"`
	Fetched         int    `json:"fetched"`
	Reused          int    `json:"reused"`
	Skipped         int    `json:"skipped"`
}

func (a *Agent) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Agent) stateDir() string { return a.Config.State.Dir }

func (a *Agent) slotPath(s bootloader.Slot) string {
	if s == bootloader.A {
		return a.Config.Slots.A
	}
	return a.Config.Slots.B
}

func other(s bootloader.Slot) bootloader.Slot {
	if s == bootloader.A {
		return bootloader.B
	}
	return bootloader.A
}

// open prepares the state directory (removing temporary files a power cut
// left) and loads the state.
func (a *Agent) open() (*State, error) {
	if err := a.FS.MkdirAll(a.stateDir(), 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := fsys.RemoveTemps(a.FS, a.stateDir()); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	st, err := loadState(a.FS, a.stateDir())
	if errors.Is(err, ErrStateDamaged) {
		if st, err = recoverState(a.FS, a.stateDir(), err, a.now(), true); err == nil {
			err = a.save(st)
		}
	} else if err == nil && st.salvaged {
		err = a.save(st)
	}
	return st, err
}

func (a *Agent) save(st *State) error { return saveState(a.FS, a.stateDir(), st) }

// lastError records err for status; a refusal keeps its attack class.
func (a *Agent) lastError(st *State, err error) {
	ev := &Event{Time: a.now().UTC(), Msg: termsafe.Bounded(err.Error(), maxMsgRunes)}
	var ve *verify.Error
	if errors.As(err, &ve) {
		ev.Class = string(ve.Class)
	}
	st.LastError = ev
}
