package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/rampartfw/rampart/internal/fsys"
)

// Phases of a pending update, in order. The phase is written before the
// step it names starts, so after a power cut the agent knows what may be
// half done.
const (
	// PhaseInstalling: the target slot is out of the boot order and being
	// written; its content means nothing until the phase moves on.
	PhaseInstalling = "installing"
	// PhaseWritten: the whole slot was read back and matches the signed
	// image; the trial boot may be requested.
	PhaseWritten = "written"
	// PhaseTrial: the bootloader was asked for one trial boot of the slot.
	PhaseTrial = "trial"
	// PhaseRollingBack: the trial failed (Reason) and the slot is being
	// taken out of the boot order.
	PhaseRollingBack = "rolling-back"
)

// Release identifies an image the agent installed or is installing.
type Release struct {
	Target          string `json:"target"`
	Version         string `json:"version"`
	SecurityVersion uint64 `json:"security_version"`
	Length          int64  `json:"length"`
	SHA256          string `json:"sha256"`
	IndexSHA256     string `json:"index_sha256"`
}

// Pending is an update between its first write to the slot and its commit
// or rollback.
type Pending struct {
	Release
	Slot   string `json:"slot"`
	Phase  string `json:"phase"`
	Reason string `json:"reason,omitempty"`
	// Source is "server" or "bundle".
	Source  string    `json:"source"`
	Started time.Time `json:"started"`
	// Downloaded and Reused count the bytes of the last install attempt.
	Downloaded int64 `json:"downloaded"`
	Reused     int64 `json:"reused"`
}

// Report is a status report to the server, kept in the outbox until the
// server has it. Its counter is assigned when it is queued and persisted
// with it, so the device-side counter only ever grows, across power cuts
// too, and a replay of an old report is refused by the server.
type Report struct {
	Counter         uint64 `json:"counter"`
	Status          string `json:"status"`
	Reason          string `json:"reason,omitempty"`
	Version         string `json:"version,omitempty"`
	SecurityVersion uint64 `json:"security_version,omitempty"`
}

// Event is the last error the agent met, for status.
type Event struct {
	Time  time.Time `json:"time"`
	Class string    `json:"class,omitempty"`
	Msg   string    `json:"msg"`
}

// State is everything the agent remembers, in one file replaced atomically
// (StateDir/state.json), so any power cut leaves the previous or the next
// state and never a mixture.
type State struct {
	Format int `json:"format"`
	// Slot is the committed slot: the one that boots when no trial is
	// pending. Empty until the first boot has been confirmed.
	Slot string `json:"slot,omitempty"`
	// Running is the release in Slot; nil for the factory image.
	Running *Release `json:"running,omitempty"`
	// Other is the verified release in the other slot, kept as the
	// bootloader's fallback; nil when unknown or overwritten.
	Other *Release `json:"other,omitempty"`
	// SecurityCounter is the anti-rollback counter: no release below it
	// is installed, online or from a bundle.
	SecurityCounter uint64 `json:"security_counter"`
	// ReportCounter is the last counter assigned to a report.
	ReportCounter uint64   `json:"report_counter"`
	Pending       *Pending `json:"pending,omitempty"`
	// Failed maps the SHA-256 of releases that were rolled back to the
	// reason, so the agent does not install the same image in a loop.
	Failed    map[string]string `json:"failed,omitempty"`
	LastError *Event            `json:"last_error,omitempty"`
	Outbox    []Report          `json:"outbox,omitempty"`
}

const (
	stateFormat  = 1
	maxStateFile = 1 << 20
	maxOutbox    = 64
	maxFailed    = 32
)

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// loadState reads the state file; a missing one is the factory state.
func loadState(fsy fsys.FS, dir string) (*State, error) {
	b, err := fsys.ReadFile(fsy, statePath(dir), maxStateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Format: stateFormat}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading agent state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		// Only the agent writes this file, atomically; garbage here is
		// storage failure, and guessing could lower the security counter.
		return nil, fmt.Errorf("agent state %s is corrupt: %w", statePath(dir), err)
	}
	if s.Format != stateFormat {
		return nil, fmt.Errorf("agent state %s has format %d, this agent understands %d", statePath(dir), s.Format, stateFormat)
	}
	return &s, nil
}

func saveState(fsy fsys.FS, dir string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := fsys.WriteFile(fsy, statePath(dir), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing agent state: %w", err)
	}
	return nil
}

// queue adds a report to the outbox with the next counter. When the outbox
// is full the oldest progress report goes first: final outcomes matter more.
func (s *State) queue(r Report) {
	s.ReportCounter++
	r.Counter = s.ReportCounter
	s.Outbox = append(s.Outbox, r)
	for len(s.Outbox) > maxOutbox {
		drop := 0
		for i, o := range s.Outbox {
			if o.Status == "downloading" || o.Status == "installing" {
				drop = i
				break
			}
		}
		s.Outbox = append(s.Outbox[:drop], s.Outbox[drop+1:]...)
	}
}

func (s *State) fail(sha, reason string) {
	if s.Failed == nil {
		s.Failed = map[string]string{}
	}
	if len(s.Failed) >= maxFailed {
		for k := range s.Failed {
			delete(s.Failed, k)
			break
		}
	}
	s.Failed[sha] = reason
}
