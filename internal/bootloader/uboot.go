package bootloader

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/rampartfw/rampart/internal/bootenv"
)

// RAUC's U-Boot variables (RAUC src/bootloaders/uboot.c, contrib/uboot.sh).
const (
	ubootOrder = "BOOT_ORDER"
)

func ubootLeft(s Slot) string { return "BOOT_" + string(s) + "_LEFT" }

// UBootEnv is the part of *bootenv.UBoot that UBoot uses; tests wrap it to
// count writes.
type UBootEnv interface {
	Load() (*bootenv.Snapshot, error)
	// Update must load, change and save under one lock, with one write.
	Update(change func(bootenv.Env) error) error
}

// UBoot keeps the boot state in a U-Boot environment with RAUC's variables,
// so RAUC's boot script (contrib/uboot.sh) and "rauc status" work unchanged:
//
//	BOOT_ORDER="A B"   slots in boot priority, separated by spaces
//	BOOT_A_LEFT=3      attempts left for A, a hex digit as RAUC and
//	BOOT_B_LEFT=3      U-Boot's setexpr write it
//
// The boot script it assumes does, on every boot (RunUBootScript models it):
//
//  1. set BOOT_ORDER to "A B" and BOOT_x_LEFT to MaxAttempts where empty;
//  2. walk BOOT_ORDER and take the first slot whose BOOT_x_LEFT is above 0,
//     decrement its BOOT_x_LEFT (setexpr), saveenv and boot it;
//  3. if there is none, set BOOT_A_LEFT and BOOT_B_LEFT to MaxAttempts,
//     saveenv and reset.
//
// The number in the script's steps 1 and 3 must equal MaxAttempts. A slot
// marked bad leaves BOOT_ORDER and gets BOOT_x_LEFT=0, as RAUC's mark-bad
// does. Use a redundant environment: a single copy on a raw partition is
// lost by a torn write, and U-Boot then boots with its built-in default.
type UBoot struct {
	Env UBootEnv
	// MaxAttempts is RAUC's boot-attempts; 0 means DefaultMaxAttempts.
	MaxAttempts int
}

// NewUBoot returns a UBoot over env with the default maximum.
func NewUBoot(env UBootEnv) *UBoot { return &UBoot{Env: env} }

// State reads the environment. With an error wrapping ErrCorrupt the State
// is still returned: it is how the boot script will read the variables.
func (u *UBoot) State() (State, error) {
	limit, err := checkMax(u.MaxAttempts)
	if err != nil {
		return State{}, err
	}
	snap, err := u.Env.Load()
	if err != nil {
		return State{}, fmt.Errorf("reading the u-boot environment: %w", err)
	}
	return readUBoot(snap.Env, limit)
}

// Primary returns the slot the next boot starts.
func (u *UBoot) Primary() (Slot, error) { return primary(u.State()) }

// SetTrial implements Bootloader with one environment write.
func (u *UBoot) SetTrial(s Slot, attempts int) error {
	return u.update(func(st State, _ bool) (State, error) { return setTrial(st, s, attempts) })
}

// MarkGood implements Bootloader with one environment write.
func (u *UBoot) MarkGood(s Slot) error {
	return u.update(func(st State, corrupt bool) (State, error) { return markGood(st, s, corrupt) })
}

// MarkBad implements Bootloader with one environment write.
func (u *UBoot) MarkBad(s Slot) error {
	return u.update(func(st State, _ bool) (State, error) { return markBad(st, s) })
}

// Provision writes the factory state (BOOT_ORDER="A", BOOT_A_LEFT at
// MaxAttempts, BOOT_B_LEFT=0: only slot A bootable) in one write, keeping
// every other variable. An environment without the variables is not the
// factory state: RAUC's script defaults it to BOOT_ORDER="A B" with both
// slots at MaxAttempts, so power cuts during the first boots (before the
// agent has run) would use up A's attempts and boot the empty slot B.
// Write the factory state into the image (rampart-agent provision).
func (u *UBoot) Provision() error {
	return u.update(func(st State, _ bool) (State, error) { return factory(st.MaxAttempts), nil })
}

// SimulateBoot runs the boot script's logic on the environment with one
// write, as U-Boot would on power-up, and returns the slot it boots. It is
// for tests and simulations; on a device U-Boot does this.
func (u *UBoot) SimulateBoot() (Slot, error) {
	limit, err := checkMax(u.MaxAttempts)
	if err != nil {
		return "", err
	}
	var (
		slot    Slot
		bootErr error
	)
	err = u.Env.Update(func(env bootenv.Env) error {
		slot, bootErr = RunUBootScript(env, limit)
		return nil // saveenv runs on both paths of the script
	})
	if err != nil {
		return "", fmt.Errorf("simulated boot: %w", err)
	}
	return slot, bootErr
}

func (u *UBoot) update(op func(st State, corrupt bool) (State, error)) error {
	limit, err := checkMax(u.MaxAttempts)
	if err != nil {
		return err
	}
	return u.Env.Update(func(env bootenv.Env) error {
		st, cerr := readUBoot(env, limit)
		n, err := op(st, cerr != nil)
		if err != nil {
			return err
		}
		writeUBoot(env, n)
		return nil
	})
}

// readUBoot reads env the way the boot script does. Malformed values are
// read as the script would (unknown names skipped, a counter that is not a
// digit as no attempts) and reported in an error wrapping ErrCorrupt.
func readUBoot(env bootenv.Env, limit int) (State, error) {
	st := State{Attempts: map[Slot]int{}, MaxAttempts: limit}
	var bad []string
	order, ok := env[ubootOrder]
	if !ok || order == "" {
		order = "A B" // the script's test -n || setenv
	}
	st.Order, bad = readOrder(ubootOrder, order, bad)
	for _, s := range st.Order {
		v, ok := env[ubootLeft(s)]
		if !ok || v == "" {
			st.Attempts[s] = limit
			continue
		}
		n, ok := ubootCounter(v)
		if !ok || n > limit {
			bad = append(bad, fmt.Sprintf("%s=%q is not a hex digit up to %d", ubootLeft(s), v, limit))
			if !ok {
				n = 0
			}
		}
		st.Attempts[s] = n
	}
	return st, corruptErr(bad)
}

// readOrder splits an order variable on blanks as U-Boot's hush and GRUB's
// "for" do, keeping the first occurrence of each known slot.
func readOrder(name, value string, bad []string) ([]Slot, []string) {
	var order []Slot
	fields := strings.Fields(value)
	if len(fields) == 0 {
		bad = append(bad, fmt.Sprintf("%s=%q lists no slot", name, value))
	}
	for _, f := range fields {
		s := Slot(f)
		switch {
		case s.Check() != nil:
			bad = append(bad, fmt.Sprintf("%s=%q names unknown slot %q", name, value, f))
		case slices.Contains(order, s):
			bad = append(bad, fmt.Sprintf("%s=%q lists %s twice", name, value, f))
		default:
			order = append(order, s)
		}
	}
	return order, bad
}

// ubootCounter parses a BOOT_x_LEFT value. Only a single digit, optionally
// 0x-prefixed, is read the same by RAUC (hex), setexpr (hex) and U-Boot's
// test -gt; anything else is refused and the script model treats it as 0.
func ubootCounter(v string) (int, bool) {
	d := strings.TrimPrefix(v, "0x")
	if len(d) != 1 || d[0] < '0' || d[0] > '9' {
		return 0, false
	}
	return int(d[0] - '0'), true
}

func corruptErr(bad []string) error {
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; MarkGood the running slot to rewrite the boot variables", ErrCorrupt, strings.Join(bad, "; "))
}

// writeUBoot stores st as RAUC writes it: the order joined by spaces, each
// counter in hex, 0 for a slot outside the order.
func writeUBoot(env bootenv.Env, st State) {
	order := make([]string, len(st.Order))
	for i, s := range st.Order {
		order[i] = string(s)
	}
	env[ubootOrder] = strings.Join(order, " ")
	for _, s := range slots {
		env[ubootLeft(s)] = strconv.FormatInt(int64(st.Attempts[s]), 16)
	}
}

// RunUBootScript applies one boot of RAUC's U-Boot script (see UBoot) to
// env in place and returns the slot it boots, or ErrNoBootableSlot after
// the reset branch. It is written against the variables, not the model, so
// the conformance suite compares the script with the model.
func RunUBootScript(env bootenv.Env, limit int) (Slot, error) {
	if env[ubootOrder] == "" {
		env[ubootOrder] = "A B"
	}
	for _, s := range slots {
		if env[ubootLeft(s)] == "" {
			env[ubootLeft(s)] = strconv.Itoa(limit)
		}
	}
	for _, name := range strings.Fields(env[ubootOrder]) {
		for _, s := range slots {
			if name != string(s) {
				continue
			}
			// test ${BOOT_x_LEFT} -gt 0; text that is not a digit counts as 0.
			if n, _ := ubootCounter(env[ubootLeft(s)]); n > 0 {
				env[ubootLeft(s)] = strconv.FormatInt(int64(n-1), 16) // setexpr - 1
				return s, nil
			}
		}
	}
	for _, s := range slots {
		env[ubootLeft(s)] = strconv.Itoa(limit)
	}
	return "", fmt.Errorf("%w: no slot in BOOT_ORDER=%q has attempts left; counters reset to %d, U-Boot resets", ErrNoBootableSlot, env[ubootOrder], limit)
}

var _ Bootloader = (*UBoot)(nil)
