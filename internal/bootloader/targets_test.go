package bootloader_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rampartfw/rampart/internal/bootenv"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/bootloader/bootloadertest"
)

const envSize = 0x4000

// boardEnv stands for the variables a board ships with; the boot state must
// leave them alone.
var boardEnv = bootenv.Env{
	"bootcmd":   "run rauc_boot",
	"bootargs":  "console=ttyS0,115200 rootwait",
	"bootdelay": "2",
}

// countingUBoot counts the Updates that reached their save.
type countingUBoot struct {
	*bootenv.UBoot
	writes int
}

func (c *countingUBoot) Update(change func(bootenv.Env) error) error {
	saving := false
	err := c.UBoot.Update(func(env bootenv.Env) error {
		if err := change(env); err != nil {
			return err
		}
		saving = true
		return nil
	})
	if saving {
		c.writes++
	}
	return err
}

type countingGRUB struct {
	*bootenv.GRUB
	writes int
}

func (c *countingGRUB) Save(env bootenv.Env) error {
	c.writes++
	return c.GRUB.Save(env)
}

// ubootFixture is an environment image built with bootenv in a temp file,
// one copy or two, plus the fw_env.config fw_printenv needs.
type ubootFixture struct {
	image, config string
	raw           *bootenv.UBoot
	env           *countingUBoot
	bl            *bootloader.UBoot
}

func newUBootFixture(t *testing.T, redundant bool) *ubootFixture {
	t.Helper()
	dir := t.TempDir()
	f := &ubootFixture{image: filepath.Join(dir, "env.bin"), config: filepath.Join(dir, "fw_env.config")}
	copies := []bootenv.Location{{Path: f.image, Offset: 0, Size: envSize}}
	if redundant {
		copies = append(copies, bootenv.Location{Path: f.image, Offset: envSize, Size: envSize})
	}
	if err := os.WriteFile(f.image, bytes.Repeat([]byte{0xff}, len(copies)*envSize), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := ""
	for _, c := range copies {
		cfg += c.Path + " " + hex(c.Offset) + " " + hex(c.Size) + "\n"
	}
	if err := os.WriteFile(f.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := bootenv.NewUBoot(copies...)
	if err != nil {
		t.Fatal(err)
	}
	u.LockFile = filepath.Join(dir, "lock")
	if err := u.Save(boardEnv); err != nil {
		t.Fatal(err)
	}
	f.raw = u
	f.env = &countingUBoot{UBoot: u}
	f.bl = bootloader.NewUBoot(f.env)
	return f
}

func hex(n int64) string { return fmt.Sprintf("%#x", n) }

func (f *ubootFixture) load(t *testing.T) *bootenv.Snapshot {
	t.Helper()
	snap, err := f.raw.Load()
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// damage edits the variables behind the bootloader's back.
func (f *ubootFixture) damage(t *testing.T, d bootloadertest.Damage) {
	t.Helper()
	err := f.raw.Update(func(env bootenv.Env) error {
		switch d {
		case bootloadertest.Missing:
			delete(env, "BOOT_ORDER")
			delete(env, "BOOT_A_LEFT")
			delete(env, "BOOT_B_LEFT")
		case bootloadertest.Garbage:
			env["BOOT_ORDER"] = "x,y"
			env["BOOT_A_LEFT"] = "zz"
			env["BOOT_B_LEFT"] = "-1"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func ubootTarget(t *testing.T, redundant bool) bootloadertest.Target {
	f := newUBootFixture(t, redundant)
	must(t, f.bl.Provision())
	f.env.writes = 0
	damages := 0
	tg := bootloadertest.Target{
		Bootloader:       f.bl,
		Boot:             f.bl.SimulateBoot,
		MissingBootsBoth: true,
		Writes:           func() int { return f.env.writes },
		Damage: func(t *testing.T, d bootloadertest.Damage) {
			f.damage(t, d)
			damages++
		},
	}
	if redundant {
		// Count on the medium as well: each write of a redundant
		// environment goes to the other copy with the next generation.
		gen0 := f.load(t).Flags
		tg.Writes = func() int {
			snap := f.load(t)
			onMedium := int(snap.Flags-gen0) - damages
			if onMedium != f.env.writes {
				t.Errorf("generation counter says %d writes, Update was called for %d", onMedium, f.env.writes)
			}
			return onMedium
		}
	}
	return tg
}

type grubFixture struct {
	path string
	raw  *bootenv.GRUB
	env  *countingGRUB
	bl   *bootloader.GRUB
}

func newGRUBFixture(t *testing.T, provision bool) *grubFixture {
	t.Helper()
	f := &grubFixture{path: filepath.Join(t.TempDir(), "grubenv")}
	f.raw = &bootenv.GRUB{Path: f.path}
	if err := f.raw.Save(bootenv.Env{"saved_entry": "0"}); err != nil {
		t.Fatal(err)
	}
	f.env = &countingGRUB{GRUB: f.raw}
	f.bl = bootloader.NewGRUB(f.env)
	if provision {
		if err := f.bl.Provision(); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *grubFixture) damage(t *testing.T, d bootloadertest.Damage) {
	t.Helper()
	env, err := f.raw.Load()
	if err != nil {
		t.Fatal(err)
	}
	switch d {
	case bootloadertest.Missing:
		for _, k := range []string{"ORDER", "A_OK", "A_TRY", "B_OK", "B_TRY"} {
			delete(env, k)
		}
	case bootloadertest.Garbage:
		env["ORDER"] = "x,y"
		env["A_OK"] = "maybe"
		env["A_TRY"] = "zz"
		env["B_OK"] = ""
		env["B_TRY"] = "2"
	}
	if err := f.raw.Save(env); err != nil {
		t.Fatal(err)
	}
}

func grubTarget(t *testing.T) bootloadertest.Target {
	f := newGRUBFixture(t, true)
	f.env.writes = 0
	return bootloadertest.Target{
		Bootloader:          f.bl,
		Boot:                f.bl.SimulateBoot,
		Writes:              func() int { return f.env.writes },
		Damage:              f.damage,
		MissingBootsNothing: true,
	}
}

func simTarget(t *testing.T, s *bootloader.Sim) bootloadertest.Target {
	return bootloadertest.Target{
		Bootloader: s,
		Boot:       s.Boot,
		Writes:     s.Writes,
		Damage: func(t *testing.T, d bootloadertest.Damage) {
			var raw []byte // Missing
			if d == bootloadertest.Garbage {
				raw = []byte(`{"order": "A B", garbage`)
			}
			if err := s.SetRaw(raw); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func newSim(t *testing.T, max int) *bootloader.Sim {
	t.Helper()
	s, err := bootloader.NewSim(max)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Run("Sim", func(t *testing.T) {
		bootloadertest.Run(t, func(t *testing.T) bootloadertest.Target { return simTarget(t, newSim(t, 0)) })
	})
	t.Run("SimMax1", func(t *testing.T) {
		bootloadertest.Run(t, func(t *testing.T) bootloadertest.Target { return simTarget(t, newSim(t, 1)) })
	})
	t.Run("SimFile", func(t *testing.T) {
		bootloadertest.Run(t, func(t *testing.T) bootloadertest.Target {
			s, err := bootloader.OpenSim(filepath.Join(t.TempDir(), "boot.json"), 0)
			if err != nil {
				t.Fatal(err)
			}
			return simTarget(t, s)
		})
	})
	t.Run("UBootSingle", func(t *testing.T) {
		bootloadertest.Run(t, func(t *testing.T) bootloadertest.Target { return ubootTarget(t, false) })
	})
	t.Run("UBootRedundant", func(t *testing.T) {
		bootloadertest.Run(t, func(t *testing.T) bootloadertest.Target { return ubootTarget(t, true) })
	})
	t.Run("GRUB", func(t *testing.T) {
		bootloadertest.Run(t, grubTarget)
	})
}
