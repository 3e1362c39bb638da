package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/termsafe"
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

	// saved is what the counters file holds, so it is rewritten only when
	// a counter moves.
	saved counters
	// salvaged is set when the file read was over maxStateFile: the
	// agent writes it back bounded before anything else.
	salvaged bool
}

const (
	stateFormat  = 1
	maxStateFile = 1 << 20
	// maxSalvage bounds the read of a state file over maxStateFile, which
	// agents before the bound could write (a hostile message stored as the
	// last error): it is parsed once, bounded and written back.
	maxSalvage  = 16 << 20
	maxOutbox   = 64
	maxFailed   = 32
	maxCounters = 4 << 10
	// maxMsgRunes bounds an error message or reason kept in the state,
	// counted after escaping for display, so one message stays under
	// 2 KiB whatever a server, a bundle or a bootloader said.
	maxMsgRunes = 512
	// maxReportReason is the server's limit on a report's reason, in bytes.
	maxReportReason = 1 << 10
)

func statePath(dir string) string    { return filepath.Join(dir, "state.json") }
func countersPath(dir string) string { return filepath.Join(dir, "counters.json") }

// counters are the two numbers that must never go back: the anti-rollback
// counter (a lower one lets an old, vulnerable release back in) and the
// report counter (a lower one makes the server refuse every report as a
// replay). They are kept in a file of their own, written before the state
// that raises them, so neither a damaged state file nor its recovery can
// take them down.
type counters struct {
	SecurityCounter uint64 `json:"security_counter"`
	ReportCounter   uint64 `json:"report_counter"`
}

// ErrStateDamaged marks a state file that could not be read back. The
// agent recovers from it (RecoverState) when the counters survived.
var ErrStateDamaged = errors.New("agent state is damaged")

// loadState reads the state file; a missing one is the factory state. A
// state file over maxStateFile (written by an agent before the bound) is
// salvaged: parsed once, with every untrusted string bounded again. A
// corrupt one is an error wrapping ErrStateDamaged.
func loadState(fsy fsys.FS, dir string) (*State, error) {
	c, cerr := loadCounters(fsy, dir)
	b, err := fsys.ReadFile(fsy, statePath(dir), maxSalvage)
	if errors.Is(err, fs.ErrNotExist) {
		s := &State{Format: stateFormat}
		if cerr == nil {
			s.raise(c)
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrStateDamaged, statePath(dir), err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		// Only the agent writes this file, atomically; garbage here is
		// storage failure, and guessing could lower the security counter.
		return nil, fmt.Errorf("%w: %s is corrupt: %v", ErrStateDamaged, statePath(dir), err)
	}
	if s.Format != stateFormat {
		return nil, fmt.Errorf("agent state %s has format %d, this agent understands %d", statePath(dir), s.Format, stateFormat)
	}
	if cerr == nil {
		s.raise(c)
	}
	s.bound()
	s.salvaged = len(b) > maxStateFile
	return &s, nil
}

// recoverState starts over from the counters after the state file was
// found damaged: the committed slot, the releases and any pending update
// are forgotten (the next boot confirms the slot it runs on, as on a first
// boot), the counters are kept, and the damaged file is set aside for a
// post-mortem. Without a readable counters file nothing is recovered:
// guessing the counters could let an old release back in.
// With setAside false (status, which changes nothing) the file stays.
func recoverState(fsy fsys.FS, dir string, damage error, now time.Time, setAside bool) (*State, error) {
	c, err := loadCounters(fsy, dir)
	if err != nil {
		return nil, fmt.Errorf("%w; the counters cannot be recovered either (%v): restore %s from a backup, or re-provision the device",
			damage, err, statePath(dir))
	}
	msg := fmt.Sprintf("%v; the next run of the agent sets it aside and starts over with its counters kept", damage)
	if setAside {
		aside := statePath(dir) + ".damaged"
		if err := fsy.Rename(statePath(dir), aside); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w; setting it aside: %v", damage, err)
		}
		msg = fmt.Sprintf("%v; it was set aside as %s and the agent started over with its counters kept", damage, aside)
	}
	s := &State{Format: stateFormat}
	s.raise(c)
	s.LastError = &Event{Time: now.UTC(), Msg: termsafe.Bounded(msg, maxMsgRunes)}
	return s, nil
}

func loadCounters(fsy fsys.FS, dir string) (counters, error) {
	var c counters
	b, err := fsys.ReadFile(fsy, countersPath(dir), maxCounters)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s is corrupt: %w", countersPath(dir), err)
	}
	return c, nil
}

// raise takes each counter up to c: the counters file may be ahead of the
// state (a power cut between the two writes) but never behind it.
func (s *State) raise(c counters) {
	s.SecurityCounter = max(s.SecurityCounter, c.SecurityCounter)
	s.ReportCounter = max(s.ReportCounter, c.ReportCounter)
	s.saved = c
}

// bound cuts every string that came from outside the agent's control (a
// server's or a bundle's error text, a reason, a target name signed only
// by online keys) to a size that keeps the state file far below
// maxStateFile, and makes it safe to print.
func (s *State) bound() {
	clipRelease := func(r *Release) {
		if r == nil {
			return
		}
		r.Target = termsafe.Bounded(r.Target, maxMsgRunes)
		r.Version = termsafe.Bounded(r.Version, 128)
		r.SHA256 = termsafe.Bounded(r.SHA256, 64)
		r.IndexSHA256 = termsafe.Bounded(r.IndexSHA256, 64)
	}
	clipRelease(s.Running)
	clipRelease(s.Other)
	if p := s.Pending; p != nil {
		clipRelease(&p.Release)
		p.Reason = termsafe.Bounded(p.Reason, maxMsgRunes)
		p.Slot = termsafe.Bounded(p.Slot, 8)
		p.Phase = termsafe.Bounded(p.Phase, 32)
		p.Source = termsafe.Bounded(p.Source, 32)
	}
	if e := s.LastError; e != nil {
		e.Msg = termsafe.Bounded(e.Msg, maxMsgRunes)
		e.Class = termsafe.Bounded(e.Class, 64)
	}
	if len(s.Failed) > maxFailed {
		s.Failed = nil
	}
	for k, v := range s.Failed {
		if len(k) > 64 {
			delete(s.Failed, k)
			continue
		}
		s.Failed[k] = termsafe.Bounded(v, maxMsgRunes)
	}
	if len(s.Outbox) > maxOutbox {
		s.Outbox = s.Outbox[len(s.Outbox)-maxOutbox:]
	}
	for i := range s.Outbox {
		r := &s.Outbox[i]
		r.Reason = ReportReason(r.Reason)
		r.Status = termsafe.Bounded(r.Status, 64)
		r.Version = termsafe.Bounded(r.Version, 128)
	}
}

// ReportReason bounds a reason sent to the server to what the server
// accepts (1 KiB), safe to display.
func ReportReason(s string) string {
	s = termsafe.Bounded(s, maxMsgRunes)
	for len(s) > maxReportReason {
		s = termsafe.Bounded(s, utf8.RuneCountInString(s)/2)
	}
	return s
}

// saveState writes the counters (when they moved) and then the state.
// Every untrusted string is bounded first, so the file can always be read
// back; should it still exceed maxStateFile, the droppable parts go (the
// last error, the failed-release memory, progress reports), and if even
// that is not enough nothing is written and the error says so.
func saveState(fsy fsys.FS, dir string, s *State) error {
	s.bound()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if len(b) >= maxStateFile {
		s.LastError, s.Failed = nil, nil
		s.Outbox = slices.DeleteFunc(s.Outbox, func(r Report) bool { return r.Status == "downloading" || r.Status == "installing" })
		if b, err = json.MarshalIndent(s, "", "  "); err != nil {
			return err
		}
		if len(b) >= maxStateFile {
			return fmt.Errorf("writing agent state: %d bytes is over the %d-byte limit even after shedding the last error; the previous state is kept", len(b), maxStateFile)
		}
	}
	c := counters{SecurityCounter: s.SecurityCounter, ReportCounter: s.ReportCounter}
	if c != s.saved {
		cb, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := fsys.WriteFile(fsy, countersPath(dir), append(cb, '\n'), 0o600); err != nil {
			return fmt.Errorf("writing agent counters: %w", err)
		}
		s.saved = c
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
