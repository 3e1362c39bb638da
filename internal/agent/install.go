package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/install"
	"github.com/rampartfw/rampart/internal/verify"
)

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
	if a.OnProgress != nil {
		p := InstallProgress{Source: source, Target: rel.Target, Chunks: len(ix.Chunks), Size: rel.Length}
		for i, c := range ix.Chunks {
			if opts.Done(i) {
				p.Done, p.Resumed, p.Bytes = p.Done+1, p.Resumed+1, p.Bytes+c.Length
			}
		}
		a.OnProgress(p)
		opts.Progress = func(i int) {
			ps.written(i)
			p.Done, p.Bytes = p.Done+1, p.Bytes+ix.Chunks[i].Length
			a.OnProgress(p)
		}
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
		Install: &Install{Source: source, ImageSize: rel.Length, BytesDownloaded: r.BytesDownloaded, BytesReused: r.BytesReused,
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
