package bootloader_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rampartfw/rampart/internal/bootenv"
	"github.com/rampartfw/rampart/internal/bootloader"
)

// setVars edits the U-Boot variables behind the bootloader's back; an empty
// value deletes.
func (f *ubootFixture) setVars(t *testing.T, kv ...string) {
	t.Helper()
	must(t, f.raw.Update(func(env bootenv.Env) error {
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(env, kv[i])
			} else {
				env[kv[i]] = kv[i+1]
			}
		}
		return nil
	}))
}

func TestUBootReadsLikeTheScript(t *testing.T) {
	cases := []struct {
		name    string
		vars    []string
		state   string
		corrupt bool
		boots   bootloader.Slot
	}{
		{"missing counter defaults to max", []string{"BOOT_ORDER", "B A", "BOOT_B_LEFT", ""}, "order=[B:3 A:3] max=3", false, "B"},
		{"0x prefix as setexpr may write it", []string{"BOOT_ORDER", "A B", "BOOT_A_LEFT", "0x2"}, "order=[A:2 B:3] max=3", false, "A"},
		{"extra blanks", []string{"BOOT_ORDER", "  B   A "}, "order=[B:3 A:3] max=3", false, "B"},
		{"one slot only", []string{"BOOT_ORDER", "B"}, "order=[B:3] max=3", false, "B"},
		{"counter not a digit", []string{"BOOT_ORDER", "A B", "BOOT_A_LEFT", "zz"}, "order=[A:0 B:3] max=3", true, "B"},
		{"counter above max", []string{"BOOT_ORDER", "A B", "BOOT_A_LEFT", "7"}, "order=[A:7 B:3] max=3", true, "A"},
		{"unknown slot skipped", []string{"BOOT_ORDER", "R A B"}, "order=[A:3 B:3] max=3", true, "A"},
		{"duplicate skipped", []string{"BOOT_ORDER", "B B A"}, "order=[B:3 A:3] max=3", true, "B"},
		{"blank order", []string{"BOOT_ORDER", "   "}, "order=[] max=3", true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newUBootFixture(t, true)
			f.setVars(t, c.vars...)
			st, err := f.bl.State()
			if st.String() != c.state || errors.Is(err, bootloader.ErrCorrupt) != c.corrupt {
				t.Fatalf("State = %v, %v; want %s, corrupt %v", st, err, c.state, c.corrupt)
			}
			s, err := f.bl.SimulateBoot()
			if s != c.boots || (c.boots == "") != errors.Is(err, bootloader.ErrNoBootableSlot) {
				t.Fatalf("boot = %q, %v; want %q", s, err, c.boots)
			}
		})
	}
}

func TestUBootConfig(t *testing.T) {
	f := newUBootFixture(t, false)
	for _, max := range []int{-1, 10} {
		f.bl.MaxAttempts = max
		if _, err := f.bl.State(); !errors.Is(err, bootloader.ErrInvalidAttempts) {
			t.Fatalf("MaxAttempts %d: %v", max, err)
		}
		if err := f.bl.MarkGood(bootloader.A); !errors.Is(err, bootloader.ErrInvalidAttempts) {
			t.Fatalf("MaxAttempts %d: %v", max, err)
		}
	}
	f.bl.MaxAttempts = 5
	mustState(t, f.bl, "order=[A:5 B:5] max=5")
	if s, _ := f.bl.SimulateBoot(); s != bootloader.A {
		t.Fatal(s)
	}
	must(t, f.bl.SetTrial(bootloader.B, 5))
	mustState(t, f.bl, "order=[B:5 A:4] max=5")
}

// An environment whose checksums fail in both copies cannot be changed
// without losing the board's variables; bootenv refuses and so do we.
func TestUBootUnreadableEnvironment(t *testing.T) {
	f := newUBootFixture(t, true)
	data, _ := os.ReadFile(f.image)
	data[10] ^= 1
	data[envSize+10] ^= 1
	must(t, os.WriteFile(f.image, data, 0o644))
	if _, err := f.bl.State(); !errors.Is(err, bootenv.ErrBadCRC) {
		t.Fatalf("State: %v", err)
	}
	if err := f.bl.MarkGood(bootloader.A); !errors.Is(err, bootenv.ErrBadCRC) {
		t.Fatalf("MarkGood: %v", err)
	}
	if f.env.writes != 0 {
		t.Fatal("wrote to an unreadable environment")
	}
}

func (f *grubFixture) setVars(t *testing.T, kv ...string) {
	t.Helper()
	env, err := f.raw.Load()
	must(t, err)
	for i := 0; i < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	must(t, f.raw.Save(env))
}

func TestGRUBFactoryStateBootsOnlyA(t *testing.T) {
	f := newGRUBFixture(t, true)
	mustState(t, f.bl, "order=[A:1] max=1")
	// Power cuts during the first boots, before the agent runs: GRUB
	// never starts slot B, which holds nothing verified.
	for i := 0; i < 4; i++ {
		want := map[bool]bootloader.Slot{true: bootloader.A, false: ""}[i%2 == 0]
		s, err := f.bl.SimulateBoot()
		if s != want || (want == "") != errors.Is(err, bootloader.ErrNoBootableSlot) {
			t.Fatalf("boot %d = %q, %v; want %q", i, s, err, want)
		}
	}
}

func TestGRUBReadsLikeTheScript(t *testing.T) {
	cases := []struct {
		name    string
		vars    []string
		state   string
		corrupt bool
		boots   bootloader.Slot
	}{
		{"both OK", nil, "order=[A:1 B:1] max=1", false, "A"},
		{"B first", []string{"ORDER", "B A"}, "order=[B:1 A:1] max=1", false, "B"},
		{"A tried", []string{"A_TRY", "1"}, "order=[A:0 B:1] max=1", false, "B"},
		{"A not OK", []string{"A_OK", "0"}, "order=[B:1] max=1", false, "B"},
		{"A not in ORDER", []string{"ORDER", "B"}, "order=[B:1] max=1", false, "B"},
		{"empty ORDER", []string{"ORDER", ""}, "order=[] max=1", true, ""},
		{"both tried: rescue", []string{"A_TRY", "1", "B_TRY", "1"}, "order=[A:0 B:0] max=1", false, ""},
		{"OK garbage", []string{"A_OK", "yes"}, "order=[B:1] max=1", true, "B"},
		{"TRY garbage", []string{"A_TRY", "no"}, "order=[A:0 B:1] max=1", true, "B"},
		{"unknown slot first", []string{"ORDER", "R B A"}, "order=[B:1 A:1] max=1", true, "B"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newGRUBFixture(t, true)
			// From the factory state (only A) to both slots OK, as after a
			// committed update with the other slot kept as the fallback.
			f.setVars(t, append([]string{"B_OK", "1"}, c.vars...)...)
			st, err := f.bl.State()
			if st.String() != c.state || errors.Is(err, bootloader.ErrCorrupt) != c.corrupt {
				t.Fatalf("State = %v, %v; want %s, corrupt %v", st, err, c.state, c.corrupt)
			}
			s, err := f.bl.SimulateBoot()
			if s != c.boots || (c.boots == "") != errors.Is(err, bootloader.ErrNoBootableSlot) {
				t.Fatalf("boot = %q, %v; want %q", s, err, c.boots)
			}
		})
	}
}

func TestGRUBFileProblems(t *testing.T) {
	t.Run("missing file boots rescue until provisioned", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "grubenv")
		bl := bootloader.NewGRUB(&bootenv.GRUB{Path: path})
		mustState(t, bl, "order=[] max=1")
		if _, err := bl.Primary(); !errors.Is(err, bootloader.ErrNoBootableSlot) {
			t.Fatal(err)
		}
		must(t, bl.Provision())
		if s, err := bl.SimulateBoot(); err != nil || s != bootloader.A {
			t.Fatalf("boot: %q, %v", s, err)
		}
	})
	t.Run("malformed file is refused, not overwritten", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "grubenv")
		must(t, os.WriteFile(path, []byte("ORDER=A B\n"), 0o644))
		bl := bootloader.NewGRUB(&bootenv.GRUB{Path: path})
		if _, err := bl.State(); !errors.Is(err, bootenv.ErrFormat) {
			t.Fatalf("State: %v", err)
		}
		if err := bl.MarkGood(bootloader.A); !errors.Is(err, bootenv.ErrFormat) {
			t.Fatalf("MarkGood: %v", err)
		}
		if data, _ := os.ReadFile(path); string(data) != "ORDER=A B\n" {
			t.Fatal("malformed grubenv was rewritten")
		}
	})
	t.Run("attempts other than 1", func(t *testing.T) {
		f := newGRUBFixture(t, true)
		if _, err := f.bl.SimulateBoot(); err != nil {
			t.Fatal(err)
		}
		must(t, f.bl.MarkGood(bootloader.A))
		if err := f.bl.SetTrial(bootloader.B, 2); !errors.Is(err, bootloader.ErrInvalidAttempts) {
			t.Fatal(err)
		}
	})
}

func TestSimRecords(t *testing.T) {
	cases := []struct {
		name, raw, state string
		corrupt          bool
	}{
		{"valid", `{"order":["B","A"],"attempts":{"A":3,"B":1}}`, "order=[B:1 A:3] max=3", false},
		{"unknown slot", `{"order":["C","A"],"attempts":{"A":3}}`, "order=[A:3] max=3", true},
		{"counter out of range", `{"order":["A","B"],"attempts":{"A":-1,"B":3}}`, "order=[A:0 B:3] max=3", true},
		{"counter missing", `{"order":["A","B"],"attempts":{"B":3}}`, "order=[A:0 B:3] max=3", true},
		{"empty order", `{"order":[],"attempts":{}}`, "order=[] max=3", true},
		{"not json", `garbage`, "order=[] max=3", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSim(t, 0)
			must(t, s.SetRaw([]byte(c.raw)))
			st, err := s.State()
			if st.String() != c.state || errors.Is(err, bootloader.ErrCorrupt) != c.corrupt {
				t.Fatalf("State = %v, %v; want %s, corrupt %v", st, err, c.state, c.corrupt)
			}
		})
	}
	if _, err := bootloader.NewSim(10); !errors.Is(err, bootloader.ErrInvalidAttempts) {
		t.Fatal(err)
	}
	if _, err := bootloader.OpenSim("", 0); err == nil {
		t.Fatal("empty path accepted")
	}
}
