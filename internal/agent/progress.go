package agent

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/rampartfw/rampart/internal/fsys"
)

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

func (a *Agent) progressPath() string { return filepath.Join(a.stateDir(), "progress") }

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
