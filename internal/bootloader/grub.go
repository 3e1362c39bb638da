package bootloader

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/rampartfw/rampart/internal/bootenv"
)

// RAUC's GRUB variables (RAUC src/bootloaders/grub.c, contrib/grub.conf).
const grubOrder = "ORDER"

func grubOK(s Slot) string  { return string(s) + "_OK" }
func grubTry(s Slot) string { return string(s) + "_TRY" }

// GRUBEnv is the part of *bootenv.GRUB that GRUB uses; tests wrap it to
// count writes.
type GRUBEnv interface {
	Load() (bootenv.Env, error)
	Save(bootenv.Env) error
}

// GRUB keeps the boot state in a grubenv with RAUC's variables, so RAUC's
// example grub.conf (contrib/grub.conf) and "rauc status" work unchanged:
//
//	ORDER="A B"   slots in boot priority
//	A_OK=1        1: the slot may be booted; 0: marked bad
//	A_TRY=0       0: not tried since it was last marked good; 1: tried
//
// The grub.conf it assumes does, on every boot (RunGRUBScript models it):
//
//  1. default ORDER="A B", every x_OK=0 and x_TRY=0, then load_env;
//  2. walk ORDER, setting x_TRY=1 for every slot it looks at, and boot the
//     first slot that had x_OK=1 and x_TRY=0;
//  3. if there is none, set x_TRY=0 for every slot with x_OK=1 and x_TRY=1
//     and boot the rescue entry;
//  4. save_env A_TRY B_TRY, on both paths.
//
// In the model a slot is in Order when it is in ORDER with x_OK=1, and has
// one attempt when x_TRY=0, none when x_TRY=1; MaxAttempts is always 1. A
// slot outside Order is written with x_OK=0 and x_TRY=0, as RAUC's mark-bad
// does, and stays listed in ORDER. An environment without the variables
// boots the rescue entry (step 1 makes no slot OK): write the factory state
// with Provision when building the image.
//
// grubenv has no checksum; bootenv.GRUB rewrites the block in place, as
// GRUB's save_env does (GRUB does not replay a journal, so it would not
// see a renamed file in time), which with the variables in the block's
// first sector is what makes each transition one atomic write. grub-editenv takes no
// lock, so it must not run while the agent changes the state; GRUB
// serialises the agent's own calls.
type GRUB struct {
	Env GRUBEnv
	mu  sync.Mutex
}

// NewGRUB returns a GRUB over env.
func NewGRUB(env GRUBEnv) *GRUB { return &GRUB{Env: env} }

// grubMax is fixed: RAUC's grub.conf gives each slot one try per mark-good.
const grubMax = 1

// State reads the grubenv. With an error wrapping ErrCorrupt the State is
// still returned: it is how grub.conf will read the variables.
func (g *GRUB) State() (State, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	env, err := g.load()
	if err != nil {
		return State{}, err
	}
	return readGRUB(env)
}

// Primary returns the slot the next boot starts.
func (g *GRUB) Primary() (Slot, error) { return primary(g.State()) }

// SetTrial implements Bootloader with one write; attempts must be 1.
func (g *GRUB) SetTrial(s Slot, attempts int) error {
	return g.update(func(st State, _ bool) (State, error) { return setTrial(st, s, attempts) })
}

// MarkGood implements Bootloader with one write.
func (g *GRUB) MarkGood(s Slot) error {
	return g.update(func(st State, corrupt bool) (State, error) { return markGood(st, s, corrupt) })
}

// MarkBad implements Bootloader with one write.
func (g *GRUB) MarkBad(s Slot) error {
	return g.update(func(st State, _ bool) (State, error) { return markBad(st, s) })
}

// Provision writes the factory state (ORDER="A B", A_OK=1 A_TRY=0, B_OK=0
// B_TRY=0: only slot A bootable) in one write, keeping every other
// variable; a missing grubenv is created.
func (g *GRUB) Provision() error {
	return g.update(func(State, bool) (State, error) { return factory(grubMax), nil })
}

// SimulateBoot runs grub.conf's logic on the grubenv with one write, as
// GRUB would on power-up, and returns the slot it boots, or
// ErrNoBootableSlot for the rescue entry. It is for tests and simulations.
func (g *GRUB) SimulateBoot() (Slot, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	env, err := g.load()
	if err != nil {
		return "", fmt.Errorf("simulated boot: %w", err)
	}
	slot, bootErr := RunGRUBScript(env)
	if err := g.Env.Save(env); err != nil {
		return "", fmt.Errorf("simulated boot: %w", err)
	}
	return slot, bootErr
}

// load treats a missing grubenv as an empty one, which is what GRUB's
// load_env amounts to. A grubenv that exists but cannot be parsed is an
// error: rewriting it would drop variables other tools own.
func (g *GRUB) load() (bootenv.Env, error) {
	env, err := g.Env.Load()
	if errors.Is(err, fs.ErrNotExist) {
		return bootenv.Env{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the grub environment: %w; recreate it with grub-editenv FILE create and Provision", err)
	}
	return env, nil
}

func (g *GRUB) update(op func(st State, corrupt bool) (State, error)) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	env, err := g.load()
	if err != nil {
		return err
	}
	st, cerr := readGRUB(env)
	n, err := op(st, cerr != nil)
	if err != nil {
		return err
	}
	writeGRUB(env, n)
	if err := g.Env.Save(env); err != nil {
		return fmt.Errorf("writing the grub environment: %w", err)
	}
	return nil
}

// grubFlag reads an x_OK or x_TRY value. strict accepts only what RAUC
// writes; the number is what GRUB's test -eq sees (base 0, like
// grub_strtosl), with unparsable text reported as not ok so the caller can
// pick the safe reading.
func grubFlag(v string) (n int64, strict, ok bool) {
	if v == "0" || v == "1" {
		return int64(v[0] - '0'), true, true
	}
	n, err := strconv.ParseInt(v, 0, 64)
	return n, false, err == nil
}

// readGRUB reads env the way grub.conf does. Malformed values are read on
// the side of not booting (x_OK not 1 means not OK, an unreadable x_TRY
// means tried) and reported in an error wrapping ErrCorrupt.
func readGRUB(env bootenv.Env) (State, error) {
	st := State{Attempts: map[Slot]int{}, MaxAttempts: grubMax}
	var bad []string
	order, ok := env[grubOrder]
	if !ok {
		order = "A B" // grub.conf's set ORDER before load_env
	}
	listed, bad := readOrder(grubOrder, order, bad)
	for _, s := range slots {
		okv, hasOK := env[grubOK(s)]
		tryv, hasTry := env[grubTry(s)]
		okN, okStrict, okParsed := grubFlag(okv)
		tryN, tryStrict, tryParsed := grubFlag(tryv)
		if hasOK && !okStrict {
			bad = append(bad, fmt.Sprintf("%s=%q is not 0 or 1", grubOK(s), okv))
		}
		if hasTry && !tryStrict {
			bad = append(bad, fmt.Sprintf("%s=%q is not 0 or 1", grubTry(s), tryv))
		}
		if !hasOK || !okParsed || okN != 1 || !slices.Contains(listed, s) {
			continue
		}
		st.Order = append(st.Order, s)
		if !hasTry || (tryParsed && tryN == 0) {
			st.Attempts[s] = 1
		} else {
			st.Attempts[s] = 0
		}
	}
	// Keep ORDER's priority, not the order of slots.
	st.Order = filterOrder(listed, st.Order)
	return st, corruptErr(bad)
}

// filterOrder returns the members of keep in the order of listed.
func filterOrder(listed, keep []Slot) []Slot {
	var out []Slot
	for _, s := range listed {
		if slices.Contains(keep, s) {
			out = append(out, s)
		}
	}
	return out
}

// writeGRUB stores st as RAUC does: ORDER lists the slots in Order first,
// then the others (marked not OK); x_TRY=0 means one attempt left.
func writeGRUB(env bootenv.Env, st State) {
	order := make([]string, 0, len(slots))
	for _, s := range st.Order {
		order = append(order, string(s))
	}
	for _, s := range slots {
		if !st.InOrder(s) {
			order = append(order, string(s))
			env[grubOK(s)], env[grubTry(s)] = "0", "0"
			continue
		}
		env[grubOK(s)] = "1"
		if st.Attempts[s] > 0 {
			env[grubTry(s)] = "0"
		} else {
			env[grubTry(s)] = "1"
		}
	}
	env[grubOrder] = strings.Join(order, " ")
}

// RunGRUBScript applies one boot of RAUC's grub.conf (see GRUB) to env in
// place and returns the slot it boots, or ErrNoBootableSlot for the rescue
// entry. It follows the script line by line rather than the model, so the
// conformance suite compares the two.
func RunGRUBScript(env bootenv.Env) (Slot, error) {
	vars := map[string]string{grubOrder: "A B"}
	for _, s := range slots {
		vars[grubOK(s)], vars[grubTry(s)] = "0", "0"
	}
	for k, v := range env { // load_env
		vars[k] = v
	}
	// [ "$X" -eq N ]; unreadable text is read on the side of not booting.
	eq := func(v string, n int64) bool {
		got, _, ok := grubFlag(v)
		if !ok {
			return false
		}
		return got == n
	}
	// OK, TRY and INDEX persist across iterations, as in the script, so an
	// unknown name re-tests the previous slot, which already failed.
	var ok, try string
	var index, chosen Slot
	for _, name := range strings.Fields(vars[grubOrder]) {
		for _, s := range slots {
			if name == string(s) {
				index, ok, try = s, vars[grubOK(s)], vars[grubTry(s)]
				vars[grubTry(s)] = "1"
			}
		}
		if eq(ok, 1) && eq(try, 0) {
			chosen = index
			break
		}
	}
	if chosen == "" {
		for _, s := range slots {
			if eq(vars[grubOK(s)], 1) && eq(vars[grubTry(s)], 1) {
				vars[grubTry(s)] = "0"
			}
		}
	}
	for _, s := range slots { // save_env A_TRY B_TRY
		env[grubTry(s)] = vars[grubTry(s)]
	}
	if chosen == "" {
		return "", fmt.Errorf("%w: no slot in ORDER=%q is OK and untried; tries reset, GRUB boots the rescue entry", ErrNoBootableSlot, vars[grubOrder])
	}
	return chosen, nil
}

var _ Bootloader = (*GRUB)(nil)
