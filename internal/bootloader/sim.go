package bootloader

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"

	"github.com/rampartfw/rampart/internal/fsys"
)

// Sim is a simulated bootloader with the package's state model, for tests
// and the fleet simulator. Its state is an encoded record kept in memory or
// in a file, so a simulated device can persist it across simulated reboots
// and process restarts, and tests can corrupt it (SetRaw) the way flash
// corruption would. A missing record is the factory state, as Provision
// writes it on the real backends: only slot A in the order, at
// MaxAttempts. Configured with MaxAttempts 1 it behaves as GRUB with
// RAUC's grub.conf: one try per MarkGood, then the fallback.
//
// Every transition and every Boot is one write of the record (atomic in
// file mode); Writes counts them.
type Sim struct {
	mu     sync.Mutex
	fs     fsys.FS
	path   string // "" keeps the record in raw
	raw    []byte // nil: no record yet
	limit  int
	writes int
}

// simRecord is the encoded state; json keeps it readable in a simulated
// device's directory.
type simRecord struct {
	Order    []string       `json:"order"`
	Attempts map[string]int `json:"attempts"`
}

// NewSim returns an in-memory Sim in the factory state. maxAttempts 0 means
// DefaultMaxAttempts.
func NewSim(maxAttempts int) (*Sim, error) {
	limit, err := checkMax(maxAttempts)
	if err != nil {
		return nil, err
	}
	return &Sim{limit: limit}, nil
}

// OpenSim returns a Sim whose record lives in path; a missing file is the
// factory state and is created by the first write.
func OpenSim(path string, maxAttempts int) (*Sim, error) {
	return OpenSimFS(fsys.OS, path, maxAttempts)
}

// OpenSimFS is OpenSim on the given filesystem, so that a model of power
// loss can hold the record.
func OpenSimFS(fsy fsys.FS, path string, maxAttempts int) (*Sim, error) {
	if path == "" {
		return nil, errors.New("simulated bootloader: empty state file path; use NewSim for an in-memory one")
	}
	s, err := NewSim(maxAttempts)
	if err != nil {
		return nil, err
	}
	s.fs, s.path = fsy, path
	return s, nil
}

// State implements Bootloader. With an error wrapping ErrCorrupt the State
// is still returned: it is how Boot will read the record.
func (s *Sim) State() (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	raw, err := s.read()
	if err != nil {
		return State{}, err
	}
	return s.decode(raw)
}

// Primary implements Bootloader.
func (s *Sim) Primary() (Slot, error) { return primary(s.State()) }

// SetTrial implements Bootloader with one write.
func (s *Sim) SetTrial(slot Slot, attempts int) error {
	return s.update(func(st State, _ bool) (State, error) { return setTrial(st, slot, attempts) })
}

// MarkGood implements Bootloader with one write.
func (s *Sim) MarkGood(slot Slot) error {
	return s.update(func(st State, corrupt bool) (State, error) { return markGood(st, slot, corrupt) })
}

// MarkBad implements Bootloader with one write.
func (s *Sim) MarkBad(slot Slot) error {
	return s.update(func(st State, _ bool) (State, error) { return markBad(st, slot) })
}

// Boot is the simulated power-up: it takes one attempt from the first slot
// in the order that has any and returns it, or, when none has, restores
// MaxAttempts for every slot in the order and returns ErrNoBootableSlot.
// Either way it writes the record once, as the boot scripts save the
// environment on both paths.
func (s *Sim) Boot() (Slot, error) {
	var (
		slot    Slot
		bootErr error
	)
	err := s.update(func(st State, _ bool) (State, error) {
		var n State
		n, slot, bootErr = boot(st)
		return n, nil
	})
	if err != nil {
		return "", err
	}
	return slot, bootErr
}

// Provision writes the factory state (only slot A in the order, at
// MaxAttempts) in one write.
func (s *Sim) Provision() error {
	return s.update(func(State, bool) (State, error) { return factory(s.limit), nil })
}

// Writes returns how many times the record has been written.
func (s *Sim) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// Raw returns the encoded record, nil when there is none yet.
func (s *Sim) Raw() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read()
}

// SetRaw replaces the encoded record, nil removing it, to inject the
// corruption or loss a real environment can suffer. It is not counted as a
// bootloader write.
func (s *Sim) SetRaw(raw []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.path == "" {
		s.raw = slices.Clone(raw)
		return nil
	}
	if raw == nil {
		if err := s.fs.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return fsys.WriteFile(s.fs, s.path, raw, 0o644)
}

func (s *Sim) read() ([]byte, error) {
	if s.path == "" {
		return s.raw, nil
	}
	raw, err := fsys.ReadFile(s.fs, s.path, 64<<10)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading simulated boot state: %w", err)
	}
	return raw, nil
}

func (s *Sim) update(op func(st State, corrupt bool) (State, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	raw, err := s.read()
	if err != nil {
		return err
	}
	st, cerr := s.decode(raw)
	n, err := op(st, cerr != nil)
	if err != nil {
		return err
	}
	rec := simRecord{Attempts: map[string]int{}}
	for _, slot := range n.Order {
		rec.Order = append(rec.Order, string(slot))
		rec.Attempts[string(slot)] = n.Attempts[slot]
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if s.path == "" {
		s.raw = data
	} else if err := fsys.WriteFile(s.fs, s.path, data, 0o644); err != nil {
		return fmt.Errorf("writing simulated boot state: %w", err)
	}
	s.writes++
	return nil
}

// decode reads a record the way the simulated bootloader boots from it:
// unknown or repeated slots are skipped, a counter outside 0..9 means no
// attempts, and a record that is not JSON has no bootable slot, as a boot
// script finds nothing in variables it cannot read.
func (s *Sim) decode(raw []byte) (State, error) {
	if raw == nil {
		return factory(s.limit), nil
	}
	st := State{Attempts: map[Slot]int{}, MaxAttempts: s.limit}
	var rec simRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return st, fmt.Errorf("%w: simulated boot record is not JSON (%v); MarkGood the running slot to rewrite it", ErrCorrupt, err)
	}
	var bad []string
	for _, name := range rec.Order {
		slot := Slot(name)
		switch {
		case slot.Check() != nil:
			bad = append(bad, fmt.Sprintf("order names unknown slot %q", name))
			continue
		case slices.Contains(st.Order, slot):
			bad = append(bad, fmt.Sprintf("order lists %s twice", name))
			continue
		}
		st.Order = append(st.Order, slot)
		n, ok := rec.Attempts[name]
		if !ok || n < 0 || n > s.limit {
			bad = append(bad, fmt.Sprintf("attempts of %s missing or outside 0..%d", name, s.limit))
			if !ok || n < 0 || n > maxAttemptsLimit {
				n = 0
			}
		}
		st.Attempts[slot] = n
	}
	if len(rec.Order) == 0 {
		bad = append(bad, "order is empty")
	}
	return st, corruptErr(bad)
}

var _ Bootloader = (*Sim)(nil)
