package bootenv

// Interoperability with the tools that share the environment on a device:
// mkenvimage (u-boot-tools), fw_printenv/fw_setenv (libubootenv-tool) and
// grub-editenv (grub-common). Regular files stand in for the flash.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// tool fails rather than skips: an interop test that quietly does not run
// is how byte-compatibility regresses unnoticed.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (Debian package %s); run make test, which installs it", name, pkg)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// toolEnv has no newlines in values, which fw_printenv's output could not
// represent unambiguously, but spaces, '=' and other punctuation.
var toolEnv = Env{
	"boot_part":         "a",
	"bootcount":         "0",
	"bootlimit":         "3",
	"upgrade_available": "0",
	"bootargs":          "console=ttyS0,115200 root=/dev/mmcblk0p2 rw quiet",
	"bootcmd":           "run distro_bootcmd; echo a=b \\ c",
	"x.y-z_1":           "#not a comment",
}

const envSize = 0x4000

type ubootFixture struct {
	dir, image, config string
	u                  *UBoot
}

// newFixture creates an image file of one or two copies of 0xff (erased
// flash) and the matching fw_env.config.
func newFixture(t *testing.T, redundant bool) *ubootFixture {
	t.Helper()
	f := &ubootFixture{dir: t.TempDir()}
	f.image = filepath.Join(f.dir, "env.bin")
	f.config = filepath.Join(f.dir, "fw_env.config")
	copies := 1
	cfg := fmt.Sprintf("# test environment\n%s 0x0000 %#x\n", f.image, envSize)
	if redundant {
		copies = 2
		cfg += fmt.Sprintf("%s %#x %#x\n", f.image, envSize, envSize)
	}
	if err := os.WriteFile(f.image, bytes.Repeat([]byte{0xff}, copies*envSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := LoadFWEnvConfig(f.config)
	if err != nil {
		t.Fatal(err)
	}
	u.LockFile = filepath.Join(f.dir, "lock")
	f.u = u
	return f
}

func (f *ubootFixture) printenv(t *testing.T) (Env, error) {
	t.Helper()
	out, err := exec.Command(tool(t, "fw_printenv", "libubootenv-tool"), "-c", f.config).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("fw_printenv: %v: %s", err, out)
	}
	env := Env{}
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("fw_printenv printed %q", line)
		}
		env[name] = value
	}
	return env, nil
}

func (f *ubootFixture) setenv(t *testing.T, args ...string) {
	t.Helper()
	run(t, tool(t, "fw_setenv", "libubootenv-tool"), append([]string{"-c", f.config}, args...)...)
}

func (f *ubootFixture) load(t *testing.T) *Snapshot {
	t.Helper()
	snap, err := f.u.Load()
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func (f *ubootFixture) copyFlags(t *testing.T) [2]byte {
	data, err := os.ReadFile(f.image)
	if err != nil {
		t.Fatal(err)
	}
	return [2]byte{data[4], data[envSize+4]}
}

func mustEqual(t *testing.T, what string, got, want Env) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// envText is mkenvimage's input: one name=value per line.
func envText(env Env) string {
	var b strings.Builder
	for _, name := range env.Names() {
		fmt.Fprintf(&b, "%s=%s\n", name, env[name])
	}
	return b.String()
}

func TestMkenvimageToOurs(t *testing.T) {
	mk := tool(t, "mkenvimage", "u-boot-tools")
	dir := t.TempDir()
	src := filepath.Join(dir, "env.txt")
	os.WriteFile(src, []byte(envText(toolEnv)), 0o644)
	for _, c := range []struct {
		name      string
		redundant bool
		args      []string
	}{
		{"single", false, nil},
		{"single pad 0x00", false, []string{"-p", "0"}},
		{"redundant", true, []string{"-r"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, "img")
			args := append([]string{"-s", fmt.Sprint(envSize), "-o", out}, c.args...)
			run(t, mk, append(args, src)...)
			img, _ := os.ReadFile(out)
			env, flags, err := ParseUBoot(img, c.redundant)
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "parsed mkenvimage output", env, toolEnv)
			// mkenvimage keeps input order, which here is sorted, and pads
			// with 0xff by default, so ours must be the very same bytes.
			if len(c.args) == 0 || c.redundant {
				ours, err := MarshalUBoot(env, envSize, c.redundant, flags)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(ours, img) {
					t.Fatal("MarshalUBoot differs from mkenvimage byte for byte")
				}
				if c.redundant && flags != 1 {
					t.Fatalf("mkenvimage -r flags = %d, want 1", flags)
				}
			}
		})
	}
}

func TestOursToFwPrintenv(t *testing.T) {
	for _, red := range []bool{false, true} {
		t.Run(fmt.Sprint("redundant=", red), func(t *testing.T) {
			f := newFixture(t, red)
			if err := f.u.Save(toolEnv); err != nil {
				t.Fatal(err)
			}
			got, err := f.printenv(t)
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "fw_printenv of our Save", got, toolEnv)
		})
	}
}

func TestFwSetenvAndOursInterleaved(t *testing.T) {
	for _, red := range []bool{false, true} {
		t.Run(fmt.Sprint("redundant=", red), func(t *testing.T) {
			f := newFixture(t, red)
			if err := f.u.Save(toolEnv); err != nil {
				t.Fatal(err)
			}
			f.setenv(t, "boot_part", "b c=d")
			want := toolEnv.Clone()
			want["boot_part"] = "b c=d"
			mustEqual(t, "our Load after fw_setenv", f.load(t).Env, want)

			f.setenv(t, "bootlimit") // no value deletes
			delete(want, "bootlimit")
			mustEqual(t, "our Load after fw_setenv delete", f.load(t).Env, want)

			if err := f.u.Update(func(e Env) error { e["upgrade_available"] = "1"; return nil }); err != nil {
				t.Fatal(err)
			}
			want["upgrade_available"] = "1"
			got, err := f.printenv(t)
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "fw_printenv after our Update", got, want)
		})
	}
}

// TestFwSetenvWritesSameBytes: for the same content fw_setenv and we write
// the same variables area; only the padding (libubootenv reuses a buffer it
// does not clear) and so the CRC may differ.
func TestFwSetenvWritesSameBytes(t *testing.T) {
	f := newFixture(t, false)
	if err := f.u.Save(toolEnv); err != nil {
		t.Fatal(err)
	}
	f.setenv(t, "zz", "last")
	theirs, _ := os.ReadFile(f.image)
	want := toolEnv.Clone()
	want["zz"] = "last"
	ours, _ := MarshalUBoot(want, envSize, false, 0)
	n := bytes.Index(ours[4:], []byte{0, 0}) + 4 + 2
	if !bytes.Equal(ours[4:n], theirs[4:n]) {
		t.Fatalf("variables area differs:\n ours   %q\n theirs %q", ours[4:n], theirs[4:n])
	}
}

func TestRedundantAlternatingWriters(t *testing.T) {
	f := newFixture(t, true)
	mk := tool(t, "mkenvimage", "u-boot-tools")
	src := filepath.Join(f.dir, "env.txt")
	os.WriteFile(src, []byte(envText(toolEnv)), 0o644)
	first := filepath.Join(f.dir, "copy0")
	run(t, mk, "-r", "-s", fmt.Sprint(envSize), "-o", first, src)
	img, _ := os.ReadFile(f.image)
	c0, _ := os.ReadFile(first)
	copy(img, c0) // copy 0 from mkenvimage (flags 1), copy 1 erased
	os.WriteFile(f.image, img, 0o644)

	for i := 0; i < 12; i++ {
		before := f.copyFlags(t)
		val := fmt.Sprint("v", i)
		if i%2 == 0 {
			f.setenv(t, "counter", val)
		} else if err := f.u.Update(func(e Env) error { e["counter"] = val; return nil }); err != nil {
			t.Fatal(err)
		}
		after := f.copyFlags(t)
		// Each writer must have written the other copy with the next
		// generation: the same step whoever wrote.
		snap := f.load(t)
		if after[1-snap.Copy] != before[1-snap.Copy] || after[snap.Copy] != before[1-snap.Copy]+1 {
			t.Fatalf("write %d (%s): flags %v -> %v, current copy %d", i, map[bool]string{true: "fw_setenv", false: "ours"}[i%2 == 0], before, after, snap.Copy)
		}
		theirs, err := f.printenv(t)
		if err != nil {
			t.Fatal(err)
		}
		if theirs["counter"] != val || snap.Env["counter"] != val {
			t.Fatalf("write %d: fw_printenv sees %q, we see %q, want %q", i, theirs["counter"], snap.Env["counter"], val)
		}
		mustEqual(t, "both readers", snap.Env, theirs)
	}
}

// TestRedundantSelectionMatchesFwPrintenv builds two valid copies with
// chosen generations (including the 255 -> 0 wrap and a tie), optionally
// tears one of them, and checks that we pick the same copy fw_printenv does
// and that the next write by either side goes to the same copy with the
// same generation.
func TestRedundantSelectionMatchesFwPrintenv(t *testing.T) {
	type pair struct {
		flags [2]byte
		torn  int // copy with a flipped byte, or -1
	}
	var cases []pair
	for _, fl := range [][2]byte{{1, 2}, {2, 1}, {7, 7}, {255, 0}, {0, 255}, {254, 255}, {255, 254}, {0, 1}, {128, 3}} {
		cases = append(cases, pair{fl, -1})
	}
	for _, fl := range [][2]byte{{1, 2}, {2, 1}, {255, 0}, {0, 255}} {
		cases = append(cases, pair{fl, 0}, pair{fl, 1})
	}
	for _, c := range cases {
		fl := c.flags
		t.Run(fmt.Sprint(fl[0], "-", fl[1], "-torn", c.torn), func(t *testing.T) {
			setup := func() *ubootFixture {
				f := newFixture(t, true)
				var img []byte
				for i := 0; i < 2; i++ {
					c, err := MarshalUBoot(Env{"copy": fmt.Sprint(i)}, envSize, true, fl[i])
					if err != nil {
						t.Fatal(err)
					}
					img = append(img, c...)
				}
				if c.torn >= 0 {
					img[c.torn*envSize+20] ^= 0x55
				}
				os.WriteFile(f.image, img, 0o644)
				return f
			}
			f := setup()
			theirs, err := f.printenv(t)
			if err != nil {
				t.Fatal(err)
			}
			snap := f.load(t)
			if theirs["copy"] != fmt.Sprint(snap.Copy) {
				t.Fatalf("fw_printenv uses copy %s, we use %d", theirs["copy"], snap.Copy)
			}
			f.setenv(t, "w", "1")
			g := setup()
			if err := g.u.Update(func(e Env) error { e["w"] = "1"; return nil }); err != nil {
				t.Fatal(err)
			}
			if a, b := f.copyFlags(t), g.copyFlags(t); a != b {
				t.Fatalf("after one write: fw_setenv left flags %v, we left %v", a, b)
			}
			mustEqual(t, "after one write", f.load(t).Env, g.load(t).Env)
		})
	}
}

func TestTornCopyFallback(t *testing.T) {
	f := newFixture(t, true)
	if err := f.u.Save(Env{"boot_part": "a"}); err != nil {
		t.Fatal(err)
	}
	f.setenv(t, "boot_part", "b")
	newest := f.load(t).Copy
	older := 1 - newest

	flip := func(copyIdx int) {
		img, _ := os.ReadFile(f.image)
		img[copyIdx*envSize+100] ^= 0x55
		os.WriteFile(f.image, img, 0o644)
	}
	flip(newest)
	theirs, err := f.printenv(t)
	if err != nil {
		t.Fatal(err)
	}
	snap := f.load(t)
	if theirs["boot_part"] != "a" || snap.Env["boot_part"] != "a" || snap.Copy != older {
		t.Fatalf("torn newest copy: fw_printenv %v, ours %+v", theirs, snap)
	}
	if !errors.Is(snap.Damaged, ErrBadCRC) {
		t.Fatalf("damage not reported: %v", snap.Damaged)
	}

	// Repair, then tear the older copy instead: the newest stays in use.
	flip(newest)
	flip(older)
	theirs, err = f.printenv(t)
	if err != nil {
		t.Fatal(err)
	}
	snap = f.load(t)
	if theirs["boot_part"] != "b" || snap.Env["boot_part"] != "b" || snap.Copy != newest || snap.Damaged == nil {
		t.Fatalf("torn older copy: fw_printenv %v, ours %+v", theirs, snap)
	}

	// Both torn: neither side may invent an environment.
	flip(newest)
	if _, err := f.printenv(t); err == nil {
		t.Fatal("fw_printenv read a doubly torn environment")
	}
	if _, err := f.u.Load(); !errors.Is(err, ErrBadCRC) {
		t.Fatalf("ours: %v", err)
	}
}

func TestTornSingleCopy(t *testing.T) {
	f := newFixture(t, false)
	if err := f.u.Save(toolEnv); err != nil {
		t.Fatal(err)
	}
	img, _ := os.ReadFile(f.image)
	img[50] ^= 1
	os.WriteFile(f.image, img, 0o644)
	if _, err := f.printenv(t); err == nil {
		t.Fatal("fw_printenv accepted a torn single copy")
	}
	var ce *CRCError
	if _, err := f.u.Load(); !errors.As(err, &ce) || !strings.Contains(err.Error(), f.image) {
		t.Fatalf("ours: %v", err)
	}
}

// ---- GRUB ----

func grubList(t *testing.T, path string) []string {
	t.Helper()
	out := run(t, tool(t, "grub-editenv", "grub-common"), path, "list")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	sort.Strings(lines)
	return lines
}

// grubToolEnv has spaces, '=', '#' and a backslash in values; no newlines,
// which grub-editenv list cannot show unambiguously (tested separately).
var grubToolEnv = Env{
	"boot_part":   "a",
	"kernel_args": "console=ttyS0 root=PARTUUID=1234 quiet",
	"saved_entry": "Debian GNU/Linux, with Linux 6.1",
	"hash":        "#x",
	"back":        `C:\path\`,
	"empty":       "",
}

func TestGRUBEditenvToOurs(t *testing.T) {
	ge := tool(t, "grub-editenv", "grub-common")
	p := filepath.Join(t.TempDir(), "grubenv")
	run(t, ge, p, "create")
	empty, err := (&GRUB{Path: p}).Load()
	if err != nil || len(empty) != 0 {
		t.Fatal(empty, err)
	}
	want := grubToolEnv.Clone()
	want["multi"] = "line1\nline2"
	args := []string{p, "set"}
	for _, name := range want.Names() {
		args = append(args, name+"="+want[name])
	}
	run(t, ge, args...)
	got, err := (&GRUB{Path: p}).Load()
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "our Load of grub-editenv's file", got, want)
	// Set in name order on a fresh block, grub-editenv writes exactly what
	// MarshalGRUB writes.
	theirs, _ := os.ReadFile(p)
	ours, err := MarshalGRUB(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, theirs) {
		t.Fatalf("MarshalGRUB differs:\n ours   %q\n theirs %q", ours, theirs)
	}
	run(t, ge, p, "unset", "multi")
	delete(want, "multi")
	got, _ = (&GRUB{Path: p}).Load()
	mustEqual(t, "after grub-editenv unset", got, want)
}

func TestOursToGRUBEditenv(t *testing.T) {
	ge := tool(t, "grub-editenv", "grub-common")
	g := &GRUB{Path: filepath.Join(t.TempDir(), "grubenv")}
	if err := g.Save(grubToolEnv); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, name := range grubToolEnv.Names() {
		want = append(want, name+"="+grubToolEnv[name])
	}
	sort.Strings(want)
	if got := grubList(t, g.Path); !reflect.DeepEqual(got, want) {
		t.Fatalf("grub-editenv list:\n got  %q\n want %q", got, want)
	}
	run(t, ge, g.Path, "set", "boot_part=b", "new=x=y z")
	env, err := g.Load()
	if err != nil {
		t.Fatal(err)
	}
	wantEnv := grubToolEnv.Clone()
	wantEnv["boot_part"] = "b"
	wantEnv["new"] = "x=y z"
	mustEqual(t, "our Load after grub-editenv set", env, wantEnv)
	// A value with a newline written by us comes back through the tool.
	wantEnv["multi"] = "l1\nl2\\"
	if err := g.Save(wantEnv); err != nil {
		t.Fatal(err)
	}
	if out := run(t, ge, g.Path, "list"); !strings.Contains(out, "multi=l1\nl2\\\n") {
		t.Fatalf("grub-editenv list: %q", out)
	}
}
