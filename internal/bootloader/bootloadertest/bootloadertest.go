// Package bootloadertest is the conformance suite every bootloader.Bootloader
// must pass. It drives a backend through the agent's update flow, power-ups
// included, and checks the resulting State, the slot each boot starts and
// the number of environment writes after every step, so that running it on
// the simulator and on the real U-Boot and GRUB environments shows the three
// behave identically.
package bootloadertest

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/rampartfw/rampart/internal/bootloader"
)

// Damage is what Target.Damage does to the stored boot variables.
type Damage int

const (
	// Missing removes every boot variable, as on a fresh or wiped
	// environment; other variables stay.
	Missing Damage = iota
	// Garbage stores values that name no slot in the order and counters
	// that are not numbers.
	Garbage
)

func (d Damage) String() string {
	if d == Missing {
		return "missing"
	}
	return "garbage"
}

// Target is one backend under test.
type Target struct {
	// Bootloader must start in the factory state (Provision): only slot A
	// in the order, at MaxAttempts.
	Bootloader bootloader.Bootloader
	// Boot simulates one power-up on the same stored state: the boot
	// script's logic, including its write.
	Boot func() (bootloader.Slot, error)
	// Writes returns how many times the stored state has been written.
	Writes func() int
	// Damage changes the stored variables behind the Bootloader's back,
	// without counting as a write.
	Damage func(t *testing.T, d Damage)
	// MissingBootsNothing says the boot script's defaults for missing
	// variables boot no slot (RAUC's grub.conf).
	MissingBootsNothing bool
	// MissingBootsBoth says the boot script's defaults for missing
	// variables are order A B with both slots at MaxAttempts (RAUC's
	// U-Boot script). With neither, missing variables are the factory
	// state (the simulator).
	MissingBootsBoth bool
}

// Run runs the suite; newTarget is called once per subtest.
func Run(t *testing.T, newTarget func(t *testing.T) Target) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg := newTarget(t)
			st, err := tg.Bootloader.State()
			if err != nil {
				t.Fatalf("State of a new target: %v", err)
			}
			c.run(t, &harness{Target: tg, max: st.MaxAttempts})
		})
	}
}

type harness struct {
	Target
	max int
}

var cases = []struct {
	name string
	run  func(t *testing.T, h *harness)
}{
	{"FreshBootsA", freshBootsA},
	{"FirstBootCutsNeverBootB", firstBootCutsNeverBootB},
	{"ReadsDoNotWrite", readsDoNotWrite},
	{"TrialNotConfirmedFallsBack", trialNotConfirmedFallsBack},
	{"TrialCommittedStaysPrimary", trialCommittedStaysPrimary},
	{"CommittedButUnconfirmedFallsBackAfterMax", committedButUnconfirmed},
	{"MarkBadAfterTrial", markBadAfterTrial},
	{"RepeatedCycles", repeatedCycles},
	{"InvalidArguments", invalidArguments},
	{"MarkGoodZeroAttempts", markGoodZeroAttempts},
	{"SetTrialNeedsFallback", setTrialNeedsFallback},
	{"MarkBadKeepsOneSlot", markBadKeepsOneSlot},
	{"ExhaustedResets", exhaustedResets},
	{"MissingVariables", missingVariables},
	{"GarbageVariables", garbageVariables},
}

// --- steps; each checks the number of writes it caused ---

func (h *harness) do(t *testing.T, what string, wantErr error, f func() error) {
	t.Helper()
	before := h.Writes()
	err := f()
	switch {
	case wantErr == nil && err != nil:
		t.Fatalf("%s: %v", what, err)
	case wantErr != nil && !errors.Is(err, wantErr):
		t.Fatalf("%s: got error %v, want %v", what, err, wantErr)
	}
	want := 1
	if err != nil {
		want = 0
	}
	if got := h.Writes() - before; got != want {
		t.Fatalf("%s (err %v): %d writes, want %d", what, err, got, want)
	}
}

func (h *harness) setTrial(t *testing.T, s bootloader.Slot, n int, wantErr error) {
	t.Helper()
	h.do(t, fmt.Sprintf("SetTrial(%s, %d)", s, n), wantErr, func() error { return h.Bootloader.SetTrial(s, n) })
}

func (h *harness) markGood(t *testing.T, s bootloader.Slot, wantErr error) {
	t.Helper()
	h.do(t, fmt.Sprintf("MarkGood(%s)", s), wantErr, func() error { return h.Bootloader.MarkGood(s) })
}

func (h *harness) markBad(t *testing.T, s bootloader.Slot, wantErr error) {
	t.Helper()
	h.do(t, fmt.Sprintf("MarkBad(%s)", s), wantErr, func() error { return h.Bootloader.MarkBad(s) })
}

// boot powers up and expects want, or ErrNoBootableSlot when want is "".
// A boot always writes once: the scripts save on both paths.
func (h *harness) boot(t *testing.T, want bootloader.Slot) {
	t.Helper()
	before := h.Writes()
	got, err := h.Boot()
	if want == "" {
		if !errors.Is(err, bootloader.ErrNoBootableSlot) {
			t.Fatalf("boot: got %q, %v; want ErrNoBootableSlot", got, err)
		}
	} else if err != nil || got != want {
		t.Fatalf("boot: got %q, %v; want %s", got, err, want)
	}
	if n := h.Writes() - before; n != 1 {
		t.Fatalf("boot wrote %d times, want 1", n)
	}
}

// state expects the state order with attempts, e.g. state(t, "B", 0, "A", 3).
func (h *harness) state(t *testing.T, pairs ...any) {
	t.Helper()
	want := bootloader.State{Attempts: map[bootloader.Slot]int{}, MaxAttempts: h.max}
	for i := 0; i < len(pairs); i += 2 {
		s := bootloader.Slot(pairs[i].(string))
		want.Order = append(want.Order, s)
		want.Attempts[s] = pairs[i+1].(int)
	}
	before := h.Writes()
	got, err := h.Bootloader.State()
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if !got.Equal(want) {
		t.Fatalf("State = %v, want %v", got, want)
	}
	if h.Writes() != before {
		t.Fatal("State wrote")
	}
}

func (h *harness) primary(t *testing.T, want bootloader.Slot) {
	t.Helper()
	got, err := h.Bootloader.Primary()
	if want == "" {
		if !errors.Is(err, bootloader.ErrNoBootableSlot) {
			t.Fatalf("Primary = %q, %v; want ErrNoBootableSlot", got, err)
		}
		return
	}
	if err != nil || got != want {
		t.Fatalf("Primary = %q, %v; want %s", got, err, want)
	}
}

// upOn boots s and confirms it, as the agent does after a health check.
func (h *harness) upOn(t *testing.T, s bootloader.Slot) {
	t.Helper()
	h.boot(t, s)
	h.markGood(t, s, nil)
}

// --- cases ---

func freshBootsA(t *testing.T, h *harness) {
	if h.max < 1 {
		t.Fatalf("MaxAttempts = %d", h.max)
	}
	h.state(t, "A", h.max)
	h.primary(t, bootloader.A)
	h.boot(t, bootloader.A)
	h.state(t, "A", h.max-1)
}

// firstBootCutsNeverBootB: the power is cut during every one of the first
// boots, before the agent has run, again and again. Slot B holds nothing
// verified at the factory, so no boot may start it: the bootloader resets
// A's attempts and starts A again.
func firstBootCutsNeverBootB(t *testing.T, h *harness) {
	for round := 0; round < 3; round++ {
		for i := 0; i < h.max; i++ {
			h.boot(t, bootloader.A)
		}
		h.state(t, "A", 0)
		h.primary(t, "")
		h.boot(t, "")
		h.state(t, "A", h.max)
	}
	h.upOn(t, bootloader.A)
	h.state(t, "A", h.max)
}

func readsDoNotWrite(t *testing.T, h *harness) {
	before := h.Writes()
	for i := 0; i < 3; i++ {
		if _, err := h.Bootloader.State(); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Bootloader.Primary(); err != nil {
			t.Fatal(err)
		}
	}
	if h.Writes() != before {
		t.Fatalf("State and Primary wrote %d times", h.Writes()-before)
	}
}

func trialNotConfirmedFallsBack(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.setTrial(t, bootloader.B, 1, nil)
	h.state(t, "B", 1, "A", h.max)
	h.primary(t, bootloader.B)
	h.boot(t, bootloader.B)
	// B never comes up far enough to confirm: nobody but the bootloader
	// writes from here on.
	h.state(t, "B", 0, "A", h.max)
	h.primary(t, bootloader.A)
	h.boot(t, bootloader.A)
	h.state(t, "B", 0, "A", h.max-1)
	// The agent on A notices and reports the rollback.
	h.markGood(t, bootloader.A, nil)
	h.markBad(t, bootloader.B, nil)
	h.state(t, "A", h.max)
	h.boot(t, bootloader.A)
}

func trialCommittedStaysPrimary(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.setTrial(t, bootloader.B, 1, nil)
	h.boot(t, bootloader.B)
	h.markGood(t, bootloader.B, nil)
	h.state(t, "B", h.max, "A", h.max)
	for i := 0; i < 20; i++ {
		h.upOn(t, bootloader.B)
	}
	h.state(t, "B", h.max, "A", h.max)
}

func committedButUnconfirmed(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.setTrial(t, bootloader.B, 1, nil)
	h.upOn(t, bootloader.B)
	// B stops confirming (its agent is broken): every boot is counted.
	for i := 0; i < h.max; i++ {
		h.boot(t, bootloader.B)
	}
	h.state(t, "B", 0, "A", h.max)
	h.boot(t, bootloader.A)
}

func markBadAfterTrial(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.setTrial(t, bootloader.B, 1, nil)
	h.boot(t, bootloader.B)
	// The health check on B fails; the agent rolls back at once.
	h.markBad(t, bootloader.B, nil)
	h.state(t, "A", h.max)
	h.primary(t, bootloader.A)
	h.boot(t, bootloader.A)
	// A bad slot is not committed by mistake, and can be tried again.
	h.markGood(t, bootloader.B, bootloader.ErrNotInOrder)
	h.markGood(t, bootloader.A, nil)
	h.setTrial(t, bootloader.B, 1, nil)
	h.state(t, "B", 1, "A", h.max)
	h.upOn(t, bootloader.B)
}

func repeatedCycles(t *testing.T, h *harness) {
	cur := bootloader.A
	h.upOn(t, cur)
	for i := 0; i < 6; i++ {
		next := cur.Other()
		h.setTrial(t, next, 1, nil)
		h.upOn(t, next)
		h.state(t, string(next), h.max, string(cur), h.max)
		cur = next
	}
	if cur != bootloader.A {
		t.Fatalf("ended on %s", cur)
	}
}

func invalidArguments(t *testing.T, h *harness) {
	for _, s := range []bootloader.Slot{"", "C", "a", "A ", "A B", "R"} {
		h.setTrial(t, s, 1, bootloader.ErrInvalidSlot)
		h.markGood(t, s, bootloader.ErrInvalidSlot)
		h.markBad(t, s, bootloader.ErrInvalidSlot)
	}
	for _, n := range []int{-1, 0, h.max + 1, 100} {
		h.setTrial(t, bootloader.B, n, bootloader.ErrInvalidAttempts)
	}
	h.state(t, "A", h.max)
}

// markGoodZeroAttempts: MarkGood accepts a slot with no attempts left (the
// trial slot after its trial boot: that is the commit) and refuses one
// outside the order.
func markGoodZeroAttempts(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.setTrial(t, bootloader.B, 1, nil)
	h.boot(t, bootloader.B)
	h.state(t, "B", 0, "A", h.max)
	h.markGood(t, bootloader.B, nil)
	h.state(t, "B", h.max, "A", h.max)
	h.markGood(t, bootloader.B, nil)
	h.markBad(t, bootloader.A, nil)
	h.markGood(t, bootloader.A, bootloader.ErrNotInOrder)
	h.state(t, "B", h.max)
}

func setTrialNeedsFallback(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.markBad(t, bootloader.B, nil)
	for i := 0; i < h.max; i++ {
		h.boot(t, bootloader.A)
	}
	h.state(t, "A", 0)
	// A failed trial of B would find A out of attempts too.
	h.setTrial(t, bootloader.B, 1, bootloader.ErrNoFallback)
	h.markGood(t, bootloader.A, nil)
	h.setTrial(t, bootloader.B, 1, nil)
	h.state(t, "B", 1, "A", h.max)
}

func markBadKeepsOneSlot(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.markBad(t, bootloader.B, nil)
	h.markBad(t, bootloader.A, bootloader.ErrNoFallback)
	h.markBad(t, bootloader.B, nil) // already out: harmless, still one write
	h.state(t, "A", h.max)
	h.boot(t, bootloader.A)
}

func exhaustedResets(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.setTrial(t, bootloader.B, 1, nil)
	h.boot(t, bootloader.B)
	// Neither slot is ever confirmed again.
	for i := 0; i < h.max; i++ {
		h.boot(t, bootloader.A)
	}
	h.state(t, "B", 0, "A", 0)
	h.primary(t, "")
	h.boot(t, "")
	h.state(t, "B", h.max, "A", h.max)
	h.boot(t, bootloader.B)
}

func missingVariables(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.setTrial(t, bootloader.B, 1, nil)
	h.Damage(t, Missing)
	if h.MissingBootsNothing {
		h.state(t)
		h.primary(t, "")
		h.boot(t, "")
		h.boot(t, "")
		// Nothing to commit or fall back to.
		h.markGood(t, bootloader.A, bootloader.ErrNotInOrder)
		h.setTrial(t, bootloader.B, 1, bootloader.ErrNoFallback)
		return
	}
	if h.MissingBootsBoth {
		h.state(t, "A", h.max, "B", h.max)
		h.upOn(t, bootloader.A)
		return
	}
	h.state(t, "A", h.max)
	h.upOn(t, bootloader.A)
}

func garbageVariables(t *testing.T, h *harness) {
	h.upOn(t, bootloader.A)
	h.Damage(t, Garbage)
	if _, err := h.Bootloader.State(); !errors.Is(err, bootloader.ErrCorrupt) {
		t.Fatalf("State of garbage: %v, want ErrCorrupt", err)
	}
	if _, err := h.Bootloader.Primary(); !errors.Is(err, bootloader.ErrCorrupt) {
		t.Fatalf("Primary of garbage: %v, want ErrCorrupt", err)
	}
	h.boot(t, "")
	h.setTrial(t, bootloader.B, 1, bootloader.ErrNoFallback)
	h.markBad(t, bootloader.B, bootloader.ErrNoFallback)
	// The agent is running on A (the bootloader said so on the command
	// line): MarkGood rewrites a clean state.
	h.markGood(t, bootloader.A, nil)
	h.state(t, "A", h.max)
	h.upOn(t, bootloader.A)
	h.setTrial(t, bootloader.B, 1, nil)
	h.upOn(t, bootloader.B)
	h.state(t, "B", h.max, "A", h.max)
}

// Op is one step of a differential test: apply the same sequence to two
// targets and compare the outcomes after every step.
type Op struct {
	Kind     string // "trial", "good", "bad", "boot"
	Slot     bootloader.Slot
	Attempts int
}

// Apply performs op on tg and returns a comparable description of the
// outcome: the booted slot or the error class, and the State afterwards.
func Apply(tg Target, op Op) string {
	var res string
	var err error
	switch op.Kind {
	case "trial":
		err = tg.Bootloader.SetTrial(op.Slot, op.Attempts)
	case "good":
		err = tg.Bootloader.MarkGood(op.Slot)
	case "bad":
		err = tg.Bootloader.MarkBad(op.Slot)
	case "boot":
		var s bootloader.Slot
		s, err = tg.Boot()
		res = "booted " + string(s)
	default:
		panic("bootloadertest: unknown op " + op.Kind)
	}
	res += " err=" + errClass(err)
	st, serr := tg.Bootloader.State()
	return fmt.Sprintf("%s state=%v stateErr=%s", res, st, errClass(serr))
}

func errClass(err error) string {
	if err == nil {
		return "nil"
	}
	for _, e := range []error{bootloader.ErrInvalidSlot, bootloader.ErrNoBootableSlot, bootloader.ErrNoFallback,
		bootloader.ErrNotInOrder, bootloader.ErrInvalidAttempts, bootloader.ErrCorrupt} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "other: " + err.Error()
}

// RandomOps returns n pseudo-random operations from seed, biased towards
// the agent's flow but including the mistakes it must survive.
func RandomOps(seed uint64, n int, maxAttempts int) []Op {
	x := seed | 1
	next := func(k int) int {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return int(x % uint64(k))
	}
	slots := []bootloader.Slot{bootloader.A, bootloader.B, "C"}
	kinds := []string{"boot", "boot", "boot", "good", "good", "trial", "bad"}
	ops := make([]Op, n)
	for i := range ops {
		ops[i] = Op{Kind: kinds[next(len(kinds))], Slot: slots[next(len(slots)-1)], Attempts: 1 + next(maxAttempts)}
		if next(20) == 0 {
			ops[i].Slot = slots[2]
		}
		if next(20) == 0 {
			ops[i].Attempts = maxAttempts + 1
		}
	}
	return slices.Clip(ops)
}
