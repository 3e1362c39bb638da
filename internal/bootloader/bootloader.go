package bootloader

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Slot names an A/B slot the way RAUC's boot scripts do ("A" or "B").
type Slot string

// The two slots. Their names are the bootnames in the boot scripts.
const (
	A Slot = "A"
	B Slot = "B"
)

// slots lists every slot a device has, in the order the boot scripts
// default to. It is not exported so that nobody can change it.
var slots = []Slot{A, B}

// DefaultMaxAttempts is RAUC's boot-attempts default and the number its
// U-Boot script restores when every slot has run out.
const DefaultMaxAttempts = 3

// maxAttemptsLimit keeps counters to one digit, where U-Boot's setexpr
// (which prints hex), RAUC (which writes and reads hex) and U-Boot's test
// -gt (whose number base has varied between releases) all agree.
const maxAttemptsLimit = 9

var (
	// ErrInvalidSlot reports a slot name other than A or B.
	ErrInvalidSlot = errors.New("invalid slot")
	// ErrNoBootableSlot reports that the next boot starts no slot: every
	// slot in the order is out of attempts (the bootloader resets them and
	// reboots or starts its rescue entry) or the order is empty.
	ErrNoBootableSlot = errors.New("no bootable slot")
	// ErrNoFallback refuses a transition that would leave nothing to fall
	// back to if the slot it favours does not come up.
	ErrNoFallback = errors.New("no fallback slot")
	// ErrNotInOrder refuses MarkGood of a slot the bootloader does not
	// consider: it was marked bad or never set up for a trial.
	ErrNotInOrder = errors.New("slot is not in the boot order")
	// ErrInvalidAttempts reports an attempt count outside 1..MaxAttempts.
	ErrInvalidAttempts = errors.New("invalid attempt count")
	// ErrCorrupt reports boot variables that do not hold a state this
	// package writes. MarkGood of the running slot rewrites them.
	ErrCorrupt = errors.New("corrupt boot state")
)

// Check returns an error wrapping ErrInvalidSlot unless s is A or B.
func (s Slot) Check() error {
	if s == A || s == B {
		return nil
	}
	return fmt.Errorf("%w %q: want A or B", ErrInvalidSlot, string(s))
}

// Other returns the slot that is not s. s must be valid.
func (s Slot) Other() Slot {
	if s == A {
		return B
	}
	return A
}

// State is the boot state in the model every backend shares; see the
// package documentation.
type State struct {
	// Order lists the slots the bootloader considers, first choice first.
	Order []Slot
	// Attempts holds the boot attempts left for every slot in Order, and
	// only for those: a slot outside Order has none.
	Attempts map[Slot]int
	// MaxAttempts is what MarkGood grants and a reset restores. It is
	// configuration, reported here so callers need not know the backend.
	MaxAttempts int
}

// Primary returns the slot the next boot starts: the first one in Order
// with attempts left.
func (s State) Primary() (Slot, bool) {
	for _, slot := range s.Order {
		if s.Attempts[slot] > 0 {
			return slot, true
		}
	}
	return "", false
}

// InOrder reports whether the bootloader considers slot at all.
func (s State) InOrder(slot Slot) bool { return slices.Contains(s.Order, slot) }

// Bootable reports whether slot is in Order with attempts left.
func (s State) Bootable(slot Slot) bool { return s.InOrder(slot) && s.Attempts[slot] > 0 }

// Equal compares two states, treating nil and empty alike.
func (s State) Equal(o State) bool {
	if s.MaxAttempts != o.MaxAttempts || !slices.Equal(s.Order, o.Order) || len(s.Attempts) != len(o.Attempts) {
		return false
	}
	for k, v := range s.Attempts {
		if w, ok := o.Attempts[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Clone returns a deep copy.
func (s State) Clone() State {
	c := State{Order: slices.Clone(s.Order), Attempts: make(map[Slot]int, len(s.Attempts)), MaxAttempts: s.MaxAttempts}
	for k, v := range s.Attempts {
		c.Attempts[k] = v
	}
	return c
}

func (s State) String() string {
	var b strings.Builder
	b.WriteString("order=[")
	for i, slot := range s.Order {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", slot, s.Attempts[slot])
	}
	fmt.Fprintf(&b, "] max=%d", s.MaxAttempts)
	return b.String()
}

// Bootloader is what the device agent needs from the bootloader. Every
// transition performs exactly one environment write, or none when it
// returns an error; State and Primary never write.
type Bootloader interface {
	// State returns the boot state as the next boot will find it. When the
	// variables are malformed the error wraps ErrCorrupt and the State is
	// still returned: it is how the boot script reads them.
	State() (State, error)
	// Primary returns the slot the next boot starts, or ErrNoBootableSlot.
	Primary() (Slot, error)
	// SetTrial asks for a trial of s: s goes first in the order with
	// attempts tries (1..MaxAttempts; the agent uses 1), the other slot
	// stays after it with its attempts untouched, as the fallback. It is
	// refused with ErrNoFallback unless the other slot is in the order with
	// attempts left, because a failed trial would otherwise run into the
	// reset and boot the trial slot again; call MarkGood on the running
	// slot first.
	SetTrial(s Slot, attempts int) error
	// MarkGood commits s: s goes first with MaxAttempts, the other slot
	// stays after it, untouched, as the fallback. The agent calls it for
	// the running slot after every successful health check. A slot with no
	// attempts left is accepted (that is a trial slot after its trial
	// boot); a slot outside the order is refused with ErrNotInOrder, since
	// it was marked bad or never tried, unless the state is corrupt, where
	// MarkGood is the repair.
	MarkGood(s Slot) error
	// MarkBad takes s out of the order with no attempts, so the other slot
	// boots. It is refused with ErrNoFallback when s is the only slot left
	// in the order, which would leave the device with nothing to boot.
	MarkBad(s Slot) error
}

// checkMax validates a configured maximum, 0 meaning the default.
func checkMax(n int) (int, error) {
	if n == 0 {
		return DefaultMaxAttempts, nil
	}
	if n < 1 || n > maxAttemptsLimit {
		return 0, fmt.Errorf("%w: maximum %d is outside 1..%d; counters above %d are read differently by U-Boot's test and setexpr, so configure at most %d", ErrInvalidAttempts, n, maxAttemptsLimit, maxAttemptsLimit, maxAttemptsLimit)
	}
	return n, nil
}

// factory is the state a device leaves the factory with: slot A, which
// holds the factory image, is the only slot in the order, with
// maxAttempts. Slot B holds nothing verified, so it must never be booted:
// not even when a power cut during the very first boot, before the agent
// has run, uses up A's attempts (the bootloader then resets A's attempts
// and boots A again). The agent puts B in the order only for a trial of an
// image it has written there and verified.
func factory(maxAttempts int) State {
	return State{Order: []Slot{A}, Attempts: map[Slot]int{A: maxAttempts}, MaxAttempts: maxAttempts}
}

// The transitions below are the model. Sim applies them to its own state;
// UBoot and GRUB apply them to the state read from the environment and
// write the result back, so all three agree by construction on writes and
// the conformance suite checks that their boot scripts agree too. corrupt
// says the state was read leniently from malformed variables.

func setTrial(st State, s Slot, attempts int) (State, error) {
	if err := s.Check(); err != nil {
		return st, err
	}
	if attempts < 1 || attempts > st.MaxAttempts {
		return st, fmt.Errorf("%w: trial of %s with %d attempts; want 1..%d", ErrInvalidAttempts, s, attempts, st.MaxAttempts)
	}
	o := s.Other()
	if !st.Bootable(o) {
		return st, fmt.Errorf("%w: refusing a trial of %s because %s, the slot to fall back to, is out of the boot order or has no attempts left (%v); call MarkGood(%s) while running on it first", ErrNoFallback, s, o, st, o)
	}
	n := st.Clone()
	n.Order = []Slot{s, o}
	n.Attempts = map[Slot]int{s: attempts, o: st.Attempts[o]}
	return n, nil
}

func markGood(st State, s Slot, corrupt bool) (State, error) {
	if err := s.Check(); err != nil {
		return st, err
	}
	if !corrupt && !st.InOrder(s) {
		return st, fmt.Errorf("%w: refusing to mark %s good because it was marked bad or never set up for a trial (%v); call SetTrial(%s, 1) and boot it first", ErrNotInOrder, s, st, s)
	}
	n := st.Clone()
	n.Order = []Slot{s}
	n.Attempts = map[Slot]int{s: st.MaxAttempts}
	if o := s.Other(); st.InOrder(o) {
		n.Order = append(n.Order, o)
		n.Attempts[o] = st.Attempts[o]
	}
	return n, nil
}

func markBad(st State, s Slot) (State, error) {
	if err := s.Check(); err != nil {
		return st, err
	}
	n := st.Clone()
	n.Order = slices.DeleteFunc(n.Order, func(x Slot) bool { return x == s })
	delete(n.Attempts, s)
	if len(n.Order) == 0 {
		return st, fmt.Errorf("%w: refusing to mark %s bad because it is the only slot in the boot order (%v) and the device would not boot; try and commit the other slot first", ErrNoFallback, s, st)
	}
	return n, nil
}

// boot is the boot scripts' logic on the model: take one attempt from the
// first slot in Order that has any, or, when none has, restore MaxAttempts
// for every slot in Order and boot nothing.
func boot(st State) (State, Slot, error) {
	n := st.Clone()
	if s, ok := st.Primary(); ok {
		n.Attempts[s]--
		return n, s, nil
	}
	for _, s := range n.Order {
		n.Attempts[s] = n.MaxAttempts
	}
	return n, "", fmt.Errorf("%w: every slot in the order (%v) is out of attempts; attempts restored, the device resets", ErrNoBootableSlot, st)
}

// primary is Bootloader.Primary on a state read strictly.
func primary(st State, err error) (Slot, error) {
	if err != nil {
		return "", err
	}
	if s, ok := st.Primary(); ok {
		return s, nil
	}
	return "", fmt.Errorf("%w: the next boot starts no slot (%v)", ErrNoBootableSlot, st)
}
