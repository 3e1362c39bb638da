package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/install"
	"github.com/rampartfw/rampart/internal/uptane"
	"github.com/rampartfw/rampart/internal/verify"
)

// Run is one check-in: settle any pending trial, send queued reports, ask
// the director, verify, install and request the trial boot (rebooting
// through the configured command). A verification refusal is reported to
// the server with its attack class and returned as a *verify.Error.
func (a *Agent) Run(ctx context.Context) (*Outcome, error) {
	if a.Config.Server.URL == "" {
		// Not enrolling would not help: there is nothing to enroll with.
		return nil, &ConfigError{Msg: "no server to check in with: the configuration has no [server] section (server.url and server.ca); install BUNDLE works without one"}
	}
	if a.HTTP == nil {
		return nil, ErrNotEnrolled
	}
	st, err := a.open()
	if err != nil {
		return nil, err
	}
	if out, err := a.settle(ctx, st, false); out != nil || err != nil {
		return out, err
	}
	a.flush(ctx, st)

	d, err := uptane.Check(ctx, a.uptaneConfig(st))
	if err != nil {
		if errors.Is(err, uptane.ErrUnavailable) {
			err = withHint(fmt.Errorf("%w: %w", ErrUnavailable, err),
				"the server could not be reached or a transfer was cut short; this is not a refusal, nothing was installed, and the next check-in tries again")
		}
		return nil, a.refusedOrFailed(ctx, st, err)
	}
	if d.Nothing {
		return &Outcome{Action: "nothing"}, nil
	}
	res := d.Result
	rel := releaseOf(res)
	if st.Running != nil && st.Running.SHA256 == rel.SHA256 {
		return &Outcome{Action: "up-to-date", Target: rel.Target}, nil
	}
	if reason, ok := st.Failed[rel.SHA256]; ok {
		return &Outcome{Action: "not-retried", Target: rel.Target, Reason: reason}, nil
	}
	// Only now, acting on the release, does the device commit to the
	// log checkpoint it was proven under (see uptane.KeepCheckpoint).
	if err := d.KeepCheckpoint(); err != nil {
		return nil, err
	}
	index := func(ctx context.Context) ([]byte, error) {
		return a.fetchIndex(ctx, d.IndexURL, d.Release.Index.Length)
	}
	src := &install.HTTPSource{Client: a.HTTP, URL: d.ImageURL, MaxRetries: a.Config.Download.Retries}
	return a.install(ctx, st, rel, "server", res, index, src)
}

func (a *Agent) uptaneConfig(st *State) uptane.Config {
	c := a.Config
	return uptane.Config{
		ServerURL: c.Server.URL, HTTPClient: a.HTTP, StateDir: a.TUFDir, FS: a.FS,
		ImageRoot: a.ImageRoot, DirectorRoot: a.DirectorRoot,
		LogOrigin: a.LogOrigin, LogKey: a.LogKey,
		DeviceID: c.Device.ID, HardwareID: c.Device.HardwareID,
		MinSecurityVersion: st.SecurityCounter, Now: a.Now,
	}
}

// refusedOrFailed records err; a refusal is reported to the server.
func (a *Agent) refusedOrFailed(ctx context.Context, st *State, err error) error {
	a.lastError(st, err)
	var ve *verify.Error
	if errors.As(err, &ve) {
		a.Log.Warn("update refused", "class", ve.Class, "err", err)
		st.queue(Report{Status: "verification-refused", Reason: string(ve.Class)})
	} else {
		a.Log.Warn("check-in failed", "err", err)
	}
	if serr := a.save(st); serr != nil {
		return errors.Join(err, serr)
	}
	a.flush(ctx, st)
	return err
}

// refusedInstall records a refusal that came after install began: the
// target slot is out of the boot order (and may be partly written) and its
// release forgotten, so the error says so, and the pending record goes:
// nothing will resume a refused release, and status must not show one.
func (a *Agent) refusedInstall(ctx context.Context, st *State, target bootloader.Slot, err error) error {
	st.Pending = nil
	return a.refusedOrFailed(ctx, st, &SlotChangedError{Slot: string(target), Err: err})
}

// SlotChangedError is a refusal (Err, a *verify.Error) that came after the
// install into Slot began: that slot no longer holds a bootable release.
// The running slot is untouched.
type SlotChangedError struct {
	Slot string
	Err  error
}

func (e *SlotChangedError) Error() string { return e.Err.Error() }
func (e *SlotChangedError) Unwrap() error { return e.Err }

func (a *Agent) fetchIndex(ctx context.Context, u string, length int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := install.NoRedirects(a.HTTP).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: fetching the chunk index: %v", ErrInstall, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: fetching the chunk index: HTTP %d", ErrInstall, resp.StatusCode)
	}
	// Never more than the signed length: a body that declares or carries
	// more is endless data, refused without reading past the length. One
	// that ends early is a failed download, resumed next time.
	if resp.ContentLength > length {
		return nil, endlessIndex(fmt.Sprintf("declares %d bytes", resp.ContentLength), length)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, length+1))
	if err != nil {
		return nil, fmt.Errorf("%w: fetching the chunk index: cut after %d of %d bytes: %w", ErrInstall, len(b), length, err)
	}
	if int64(len(b)) > length {
		return nil, endlessIndex("goes on", length)
	}
	return b, nil
}

func endlessIndex(what string, length int64) error {
	return &verify.Error{Class: verify.EndlessData, Role: "image",
		Msg: fmt.Sprintf("the chunk index %s past its signed length of %d bytes", what, length)}
}

// releaseOf is what the agent records of a verified release.
func releaseOf(res *verify.Result) Release {
	return Release{Target: res.Target, Version: res.Release.Version, SecurityVersion: res.Release.SecurityVersion,
		Length: res.File.Length, SHA256: hex.EncodeToString(res.File.Hashes["sha256"]), IndexSHA256: res.Release.Index.SHA256}
}

// install writes rel into the inactive slot and asks for its trial boot.
// index returns the untrusted chunk index bytes, checked here against res.
func (a *Agent) install(ctx context.Context, st *State, rel Release, source string, res *verify.Result,
	index func(context.Context) ([]byte, error), src install.Source) (*Outcome, error) {
	if max := a.Config.Download.MaxImageSize; max > 0 && rel.Length > max {
		err := withHint(fmt.Errorf("%w: %s is %d bytes, download.max_image_size is %d", ErrInstall, rel.Target, rel.Length, max),
			"the release is larger than download.max_image_size allows: deploy a smaller one, or raise the limit")
		return nil, a.installFailed(ctx, st, "too-large", err)
	}
	booted, err := a.BootedSlot()
	if err != nil {
		return nil, err
	}
	target := other(booted)
	if err := a.fits(target, rel); err != nil {
		return nil, a.installFailed(ctx, st, "too-large", err)
	}

	fresh := st.Pending == nil || st.Pending.SHA256 != rel.SHA256 || st.Pending.Slot != string(target) ||
		st.Pending.Phase != PhaseInstalling && st.Pending.Phase != PhaseWritten
	if fresh {
		st.Pending = &Pending{Release: rel, Slot: string(target), Phase: PhaseInstalling, Source: source, Started: a.now().UTC()}
		// The slot is about to be overwritten: whatever release it held
		// is gone, whether this install commits or rolls back.
		st.Other = nil
		st.queue(Report{Status: "downloading", Version: rel.Version, SecurityVersion: rel.SecurityVersion})
		if err := a.FS.Remove(a.progressPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if err := a.save(st); err != nil {
			return nil, err
		}
	}
	// From here until SetTrial the target slot must not be bootable.
	if err := a.unbootable(target); err != nil {
		return nil, err
	}
	a.flush(ctx, st)

	ixBytes, err := index(ctx)
	var ve *verify.Error
	switch {
	case errors.As(err, &ve):
		return nil, a.refusedInstall(ctx, st, target, err)
	case err != nil:
		return nil, a.installFailed(ctx, st, "download", err)
	}
	ix, err := verify.Index(res, ixBytes)
	if err != nil {
		return nil, a.refusedInstall(ctx, st, target, err)
	}

	slot, err := a.FS.OpenFile(a.slotPath(target), os.O_RDWR, 0)
	if err != nil {
		return nil, a.installFailed(ctx, st, "slot", fmt.Errorf("%w: opening slot %s: %v", ErrInstall, target, err))
	}
	defer slot.Close()
	local := a.localImage(booted)
	if local != nil {
		defer local.Image.(io.Closer).Close()
	}
	prog := a.loadProgress(rel.SHA256, len(ix.Chunks))
	// Done answers from what earlier attempts recorded; the syncer adds
	// to prog while Install runs.
	earlier := prog.clone()
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	ps := a.startProgressSyncer(slot, prog, cancel)
	opts := install.Options{
		Workers:  a.Config.Download.Workers,
		Done:     func(i int) bool { return st.Pending.Phase == PhaseWritten || earlier.has(i) },
		Progress: ps.written,
	}
	r, err := install.Install(ictx, ix, src, slot, local, opts)
	// On failure keep what was written for the next attempt; on success
	// the slot is synced and read back, and the progress file goes.
	if perr := ps.stop(err != nil); perr != nil {
		if err == nil || ctx.Err() == nil && errors.Is(err, context.Canceled) {
			err = perr // the syncer failed, and cancelled the install
		}
	}
	if err != nil {
		var cm *install.ChunkMismatchError
		var rb *install.ReadBackError
		switch {
		case errors.Is(err, install.ErrEndlessData):
			return nil, a.refusedInstall(ctx, st, target, &verify.Error{Class: verify.EndlessData, Role: "image", Msg: "the image goes on past the bytes asked for; nothing of it was written", Err: err})
		case errors.As(err, &cm), errors.Is(err, install.ErrChunkMismatch):
			return nil, a.refusedInstall(ctx, st, target, &verify.Error{Class: verify.Mismatch, Role: "image", Msg: "a chunk does not match the signed index; nothing of it was written", Err: err})
		case errors.Is(err, chunkindex.ErrImageHash):
			// Signed metadata that contradicts itself, not a failing disk.
			return nil, a.refusedInstall(ctx, st, target, &verify.Error{Class: verify.Mismatch, Role: "image", Msg: "the slot matches every chunk of the signed index but not the signed image hash; the slot is not made bootable", Err: err})
		case errors.As(err, &rb):
			return nil, a.installFailed(ctx, st, "read-back", fmt.Errorf("%w: %w", ErrInstall, err))
		case errors.Is(err, syscall.ENOSPC):
			return nil, a.installFailed(ctx, st, "disk-full", fmt.Errorf("%w: %w", ErrInstall, err))
		}
		return nil, a.installFailed(ctx, st, "download", fmt.Errorf("%w: %w", ErrInstall, err))
	}
	out := &Outcome{Action: "installed-pending-reboot", Target: rel.Target, Slot: string(target), Reboot: true,
		Install: &Install{ImageSize: rel.Length, BytesDownloaded: r.BytesDownloaded, BytesReused: r.BytesReused,
			Chunks: r.Chunks, Fetched: r.Fetched, Reused: r.Reused, Skipped: r.Skipped}}

	// The slot holds the signed image (read back in full by Install).
	// Keep its index: it is what local chunk reuse needs next time.
	if err := fsys.WriteFile(a.FS, a.indexPath(target), ixBytes, 0o600); err != nil {
		return nil, err
	}
	st.Pending.Phase = PhaseWritten
	st.Pending.Downloaded, st.Pending.Reused = r.BytesDownloaded, r.BytesReused
	st.queue(Report{Status: "installing", Version: rel.Version, SecurityVersion: rel.SecurityVersion})
	if err := a.save(st); err != nil {
		return nil, err
	}
	if err := a.Bootloader.SetTrial(target, 1); err != nil {
		return nil, fmt.Errorf("asking the bootloader for a trial boot of %s: %w", target, err)
	}
	st.Pending.Phase = PhaseTrial
	st.LastError = nil
	st.queue(Report{Status: "installed-pending-reboot", Version: rel.Version, SecurityVersion: rel.SecurityVersion})
	if err := a.save(st); err != nil {
		return nil, err
	}
	if err := a.FS.Remove(a.progressPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	a.Log.Info("installed, rebooting into the trial", "target", rel.Target, "slot", target,
		"downloaded", r.BytesDownloaded, "reused", r.BytesReused, "size", rel.Length)
	a.flush(ctx, st)
	if err := a.Exec(ctx, a.Config.Reboot.Command, a.Config.Reboot.Timeout.Duration); err != nil {
		return out, fmt.Errorf("reboot command: %w", err)
	}
	return out, nil
}

// fits refuses, before anything is downloaded or written, a release larger
// than the target slot: a block device's capacity, or a file slot's size
// (a file slot stands for a partition: it is created at its size and never
// grown).
func (a *Agent) fits(target bootloader.Slot, rel Release) error {
	f, err := a.FS.OpenFile(a.slotPath(target), os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("%w: opening slot %s: %w", ErrInstall, target, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return fmt.Errorf("%w: the size of slot %s: %w", ErrInstall, target, err)
	}
	if rel.Length <= size {
		return nil
	}
	return withHint(fmt.Errorf("%w: %s is %d bytes, slot %s (%s) holds %d", ErrInstall, rel.Target, rel.Length, target, a.slotPath(target), size),
		"the release does not fit this device's slots: deploy one that does; a file slot must be created at the full size of the partition it stands for (truncate -s SIZE FILE)")
}

// progressEvery is how many chunks are written between syncs of the slot
// and the progress file: at 1 MiB chunks, at most 64 MiB is fetched again
// after a power cut.
var progressEvery = 64

// progressSyncer records written chunks as done, durably: it syncs the
// slot, then saves the progress file, every progressEvery chunks. It does
// so on its own goroutine, so the download never waits for the disk: the
// chunks of a batch were written before the batch was taken, so the
// sync that follows covers them, whatever is written meanwhile. A failed
// sync or save cancels the install (cancel) and is returned by stop.
type progressSyncer struct {
	a      *Agent
	slot   fsys.File
	prog   *progress // owned by the syncer goroutine until stop returns
	cancel func()

	mu      sync.Mutex
	pending []int
	kick    chan struct{}
	done    chan struct{}
	err     error
}

func (a *Agent) startProgressSyncer(slot fsys.File, prog *progress, cancel func()) *progressSyncer {
	ps := &progressSyncer{a: a, slot: slot, prog: prog, cancel: cancel, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(ps.done)
		for range ps.kick {
			if err := ps.persist(); err != nil {
				ps.err = err
				cancel()
				for range ps.kick { // drain until stop
				}
				return
			}
		}
	}()
	return ps
}

// written is install.Options.Progress.
func (ps *progressSyncer) written(i int) {
	ps.mu.Lock()
	ps.pending = append(ps.pending, i)
	full := len(ps.pending) >= progressEvery
	ps.mu.Unlock()
	if full {
		select {
		case ps.kick <- struct{}{}:
		default: // a persist is already due; it takes this chunk too
		}
	}
}

// persist syncs the slot and records every chunk written before the sync.
func (ps *progressSyncer) persist() error {
	ps.mu.Lock()
	batch := ps.pending
	ps.pending = nil
	ps.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := ps.slot.Sync(); err != nil {
		return fmt.Errorf("%w: syncing the slot: %w", ErrInstall, err)
	}
	for _, i := range batch {
		ps.prog.set(i)
	}
	return ps.a.saveProgress(ps.prog)
}

// stop ends the syncer; with final it also persists the chunks written
// since its last batch (the install failed: keep them for the next
// attempt). It returns the first sync or save error.
func (ps *progressSyncer) stop(final bool) error {
	close(ps.kick)
	<-ps.done
	if ps.err == nil && final {
		ps.err = ps.persist()
	}
	return ps.err
}

func (a *Agent) installFailed(ctx context.Context, st *State, reason string, err error) error {
	a.lastError(st, err)
	a.Log.Warn("install failed", "reason", reason, "err", err)
	version, sv := "", uint64(0)
	if st.Pending != nil {
		version, sv = st.Pending.Version, st.Pending.SecurityVersion
	}
	st.queue(Report{Status: "failed", Reason: reason, Version: version, SecurityVersion: sv})
	if serr := a.save(st); serr != nil {
		return errors.Join(err, serr)
	}
	a.flush(ctx, st)
	return err
}

// unbootable takes s out of the boot order if it is in it.
func (a *Agent) unbootable(s bootloader.Slot) error {
	bs, err := a.Bootloader.State()
	if err != nil && !errors.Is(err, bootloader.ErrCorrupt) {
		return fmt.Errorf("reading the boot state: %w", err)
	}
	if err == nil && !bs.InOrder(s) {
		return nil
	}
	if err := a.Bootloader.MarkBad(s); err != nil {
		return fmt.Errorf("taking slot %s out of the boot order: %w", s, err)
	}
	return nil
}

func (a *Agent) indexPath(s bootloader.Slot) string {
	return filepath.Join(a.stateDir(), "index-"+string(s))
}

func (a *Agent) progressPath() string { return filepath.Join(a.stateDir(), "progress") }

// localImage is the running slot and its index, for chunk reuse; nil when
// the agent does not know what the running slot holds.
func (a *Agent) localImage(booted bootloader.Slot) *install.Local {
	b, err := fsys.ReadFile(a.FS, a.indexPath(booted), 64<<20)
	if err != nil {
		return nil
	}
	ix, err := chunkindex.Parse(b)
	if err != nil {
		return nil
	}
	f, err := a.FS.OpenFile(a.slotPath(booted), os.O_RDONLY, 0)
	if err != nil {
		return nil
	}
	return &install.Local{Index: ix, Image: f}
}

// progress is the set of chunks written and synced for one image.
type progress struct {
	SHA256 string `json:"sha256"`
	Done   []byte `json:"done"` // bitmap
}

func (p *progress) has(i int) bool { return i/8 < len(p.Done) && p.Done[i/8]&(1<<(i%8)) != 0 }
func (p *progress) clone() *progress {
	return &progress{SHA256: p.SHA256, Done: append([]byte(nil), p.Done...)}
}
func (p *progress) set(i int) { p.Done[i/8] |= 1 << (i % 8) }

func (a *Agent) loadProgress(sha string, chunks int) *progress {
	p := &progress{SHA256: sha, Done: make([]byte, (chunks+7)/8)}
	b, err := fsys.ReadFile(a.FS, a.progressPath(), 16<<20)
	if err != nil {
		return p
	}
	var old progress
	// A progress file for another image, or one that does not parse, is
	// ignored: it only ever saves work, and the read-back catches a lie.
	if json.Unmarshal(b, &old) == nil && old.SHA256 == sha && len(old.Done) == len(p.Done) {
		return &old
	}
	return p
}

func (a *Agent) saveProgress(p *progress) error {
	b, _ := json.Marshal(p)
	return fsys.WriteFile(a.FS, a.progressPath(), b, 0o600)
}

// Boot runs once early at every boot: it finishes a trial (health check,
// then commit or roll back), notices a fallback the bootloader made on its
// own, and confirms a healthy committed slot to the bootloader.
func (a *Agent) Boot(ctx context.Context) (*Outcome, error) {
	st, err := a.open()
	if err != nil {
		return nil, err
	}
	out, err := a.settle(ctx, st, true)
	if out == nil && err == nil {
		out = &Outcome{Action: "booted"}
		if b, berr := a.BootedSlot(); berr == nil {
			out.Slot = string(b)
		}
	}
	if a.HTTP != nil {
		a.flush(ctx, st)
	}
	return out, err
}

// settle brings the state in line with the slot that booted. It returns a
// non-nil Outcome when it committed, rolled back or must reboot; with
// confirm it also health-checks a committed slot and marks it good.
func (a *Agent) settle(ctx context.Context, st *State, confirm bool) (*Outcome, error) {
	booted, err := a.BootedSlot()
	if err != nil {
		return nil, err
	}
	p := st.Pending
	if p != nil {
		ps := bootloader.Slot(p.Slot)
		switch {
		case booted == ps && (p.Phase == PhaseTrial || p.Phase == PhaseWritten):
			return a.trial(ctx, st, booted)
		case booted == ps && p.Phase == PhaseRollingBack:
			return a.rollback(ctx, st, booted, p.Reason)
		case booted == ps:
			// Running a slot the agent never finished writing: the boot
			// state was lost or tampered with. Get out of it.
			return a.rollback(ctx, st, booted, "booted-incomplete-slot")
		case p.Phase == PhaseTrial:
			// The trial never confirmed: the bootloader fell back.
			return a.fellBack(ctx, st, booted, ps, "trial-boot-failed", confirm)
		case p.Phase == PhaseRollingBack:
			return a.fellBack(ctx, st, booted, ps, p.Reason, confirm)
		}
		// installing or written on the old slot: Run resumes it.
	}
	if st.Slot != "" && booted != bootloader.Slot(st.Slot) && (p == nil || p.Slot != string(booted)) {
		// The committed slot failed its boots and the bootloader fell back
		// to the other one, which holds st.Other if anything known.
		a.Log.Warn("the committed slot did not boot; running the fallback", "committed", st.Slot, "booted", booted)
		st.Slot = string(booted)
		st.Running, st.Other = st.Other, nil
		st.queue(Report{Status: "rolled-back", Reason: "committed-slot-failed", Version: st.versionOrEmpty()})
		if err := a.save(st); err != nil {
			return nil, err
		}
	}
	if st.Slot == "" {
		st.Slot = string(booted) // first boot: the factory slot
		if err := a.save(st); err != nil {
			return nil, err
		}
	}
	if !confirm {
		return nil, nil
	}
	return a.confirmRunning(ctx, st, booted)
}

// confirmRunning health-checks the committed slot the device runs on and
// confirms it to the bootloader, which counts every boot: a slot left
// unconfirmed loses an attempt at each power-on (with GRUB's one try, the
// next power-on already finds it out of attempts). It returns an
// "unhealthy" Outcome when the check fails, nil otherwise.
func (a *Agent) confirmRunning(ctx context.Context, st *State, booted bootloader.Slot) (*Outcome, error) {
	if err := a.health(ctx); err != nil {
		a.lastError(st, err)
		st.queue(Report{Status: "failed", Reason: "health-check", Version: st.versionOrEmpty()})
		if serr := a.save(st); serr != nil {
			return nil, errors.Join(err, serr)
		}
		return &Outcome{Action: "unhealthy", Slot: string(booted), Reason: err.Error()}, err
	}
	if err := a.Bootloader.MarkGood(booted); err != nil {
		return nil, fmt.Errorf("confirming slot %s to the bootloader: %w", booted, err)
	}
	return nil, a.pruneFallback(st, booted)
}

// fellBack handles a boot of the old slot while an update of the other
// slot (failed) was on trial or being rolled back: the bootloader fell
// back by itself (the new image never came up, or the reboot after a
// failed health check happened). It records the rollback and then, like
// every boot, health-checks the slot it runs on and confirms it, so that
// the next power-on boots it again. A cut between the two finds no pending
// update and confirms the slot as on a normal boot.
func (a *Agent) fellBack(ctx context.Context, st *State, booted, failed bootloader.Slot, reason string, confirm bool) (*Outcome, error) {
	out, err := a.rolledBack(ctx, st, failed, reason)
	if err != nil || !confirm {
		return out, err
	}
	if unhealthy, err := a.confirmRunning(ctx, st, booted); err != nil {
		if unhealthy != nil {
			// The rollback stands; the old slot stays unconfirmed, as any
			// committed slot whose health check fails.
			out.Action, out.Reason = unhealthy.Action, reason+"; then the running slot failed its health check: "+unhealthy.Reason
		}
		return out, err
	}
	return out, nil
}

func (s *State) versionOrEmpty() string {
	if s.Running == nil {
		return ""
	}
	return s.Running.Version
}

// pruneFallback keeps the other slot bootable only when it holds a verified
// release at or above the security counter.
func (a *Agent) pruneFallback(st *State, running bootloader.Slot) error {
	if p := st.Pending; p != nil && p.Slot == string(other(running)) {
		return nil // being installed: already out of the order
	}
	if st.Other != nil && st.Other.SecurityVersion >= st.SecurityCounter {
		return nil
	}
	return a.unbootable(other(running))
}

func (a *Agent) health(ctx context.Context) error {
	h := a.Config.Health
	return a.Exec(ctx, h.Command, h.Timeout.Duration)
}

// trial is the first boot of a freshly installed slot.
func (a *Agent) trial(ctx context.Context, st *State, slot bootloader.Slot) (*Outcome, error) {
	p := st.Pending
	if err := a.health(ctx); err != nil {
		reason := "health-check-failed"
		var te *TimeoutError
		if errors.As(err, &te) {
			reason = "health-check-timeout"
		}
		a.Log.Warn("trial boot unhealthy, rolling back", "target", p.Target, "err", err)
		a.lastError(st, err)
		p.Phase, p.Reason = PhaseRollingBack, reason
		if err := a.save(st); err != nil {
			return nil, err
		}
		return a.rollback(ctx, st, slot, reason)
	}
	// Commit: the bootloader first, then the state. A cut in between
	// finds the trial phase again and repeats both.
	if err := a.Bootloader.MarkGood(slot); err != nil {
		return nil, fmt.Errorf("committing slot %s: %w", slot, err)
	}
	rel := p.Release
	st.Other, st.Running = st.Running, &rel
	if st.Slot == string(slot) {
		st.Other = nil // reinstall into the committed slot: nothing known about the other
	}
	st.Slot = string(slot)
	st.SecurityCounter = max(st.SecurityCounter, rel.SecurityVersion)
	st.Pending = nil
	delete(st.Failed, rel.SHA256)
	st.LastError = nil
	st.queue(Report{Status: "installed", Version: rel.Version, SecurityVersion: rel.SecurityVersion})
	if err := a.save(st); err != nil {
		return nil, err
	}
	a.Log.Info("committed", "target", rel.Target, "slot", slot, "security_counter", st.SecurityCounter)
	if err := a.pruneFallback(st, slot); err != nil {
		return nil, err
	}
	return &Outcome{Action: "committed", Target: rel.Target, Slot: string(slot)}, nil
}

// rollback takes the running (trial) slot out of the boot order and reboots
// into the other one.
func (a *Agent) rollback(ctx context.Context, st *State, slot bootloader.Slot, reason string) (*Outcome, error) {
	if err := a.unbootable(slot); err != nil {
		return nil, err
	}
	out, err := a.rolledBack(ctx, st, slot, reason)
	if err != nil {
		return nil, err
	}
	out.Reboot = true
	if err := a.Exec(ctx, a.Config.Reboot.Command, a.Config.Reboot.Timeout.Duration); err != nil {
		return out, fmt.Errorf("reboot command: %w", err)
	}
	return out, nil
}

// rolledBack records a finished rollback of the pending update in slot.
func (a *Agent) rolledBack(ctx context.Context, st *State, slot bootloader.Slot, reason string) (*Outcome, error) {
	if err := a.unbootable(slot); err != nil {
		return nil, err
	}
	p := st.Pending
	st.fail(p.SHA256, reason)
	st.Pending = nil
	st.queue(Report{Status: "rolled-back", Reason: reason, Version: p.Version, SecurityVersion: p.SecurityVersion})
	if err := a.save(st); err != nil {
		return nil, err
	}
	a.Log.Warn("rolled back", "target", p.Target, "reason", reason)
	return &Outcome{Action: "rolled-back", Target: p.Target, Reason: reason, Slot: string(other(slot))}, nil
}

// flush sends queued reports in order, dropping each once the server has
// it (or refused it as a replay, which means it already had it). Failure to
// reach the server is not an error: the reports wait for the next check-in.
func (a *Agent) flush(ctx context.Context, st *State) {
	if a.HTTP == nil || len(st.Outbox) == 0 {
		return
	}
	sent := 0
	for _, r := range st.Outbox {
		if err := a.send(ctx, r); err != nil {
			a.Log.Info("report not delivered; will retry", "status", r.Status, "err", err)
			break
		}
		sent++
	}
	if sent == 0 {
		return
	}
	st.Outbox = st.Outbox[sent:]
	if err := a.save(st); err != nil {
		a.Log.Warn("saving the outbox", "err", err)
	}
}

func (a *Agent) send(ctx context.Context, r Report) error {
	body, _ := json.Marshal(r)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.Config.Server.URL+"/api/v1/device/report", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := install.NoRedirects(a.HTTP).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusConflict, resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusUnprocessableEntity:
		// A replay (the server has it), a counter jump, or a report it
		// will never take (an installed release it never published, a
		// security version other than the release's): retrying would
		// block every later report. The server counts the anomaly.
		a.Log.Warn("report dropped by the server", "status", r.Status, "http", resp.StatusCode)
		return nil
	}
	return fmt.Errorf("HTTP %d", resp.StatusCode)
}
