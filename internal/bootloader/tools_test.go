package bootloader_test

// The variables as the tools on a device see them: libubootenv's
// fw_printenv/fw_setenv (what RAUC itself calls) and grub-editenv.

import (
	"bytes"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/bootenv"
	"github.com/rampartfw/rampart/internal/bootloader"
)

// tool fails rather than skips: an interop test that quietly does not run
// is how compatibility regresses unnoticed.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (Debian package %s); run scripts/test-deps.sh or make test, which install it", name, pkg)
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

// parseList reads name=value lines as fw_printenv and grub-editenv list
// print them.
func parseList(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unexpected line %q in %q", line, out)
		}
		m[k] = v
	}
	return m
}

func (f *ubootFixture) printenv(t *testing.T) map[string]string {
	t.Helper()
	return parseList(t, run(t, tool(t, "fw_printenv", "libubootenv-tool"), "-c", f.config))
}

func (f *ubootFixture) setenv(t *testing.T, args ...string) {
	t.Helper()
	run(t, tool(t, "fw_setenv", "libubootenv-tool"), append([]string{"-c", f.config}, args...)...)
}

// wantVars checks the boot variables and that the board's own survived.
func wantVars(t *testing.T, what string, got map[string]string, boot map[string]string, others bootenv.Env) {
	t.Helper()
	want := map[string]string{}
	for k, v := range others {
		want[k] = v
	}
	for k, v := range boot {
		want[k] = v
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

func mustState(t *testing.T, bl bootloader.Bootloader, want string) {
	t.Helper()
	st, err := bl.State()
	if err != nil {
		t.Fatal(err)
	}
	if st.String() != want {
		t.Fatalf("State = %v, want %s", st, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestUBootVariablesWithFwPrintenv(t *testing.T) {
	for _, redundant := range []bool{false, true} {
		name := map[bool]string{false: "single", true: "redundant"}[redundant]
		t.Run(name, func(t *testing.T) {
			f := newUBootFixture(t, redundant)
			bl := f.bl
			wantVars(t, "image built by bootenv", f.printenv(t), nil, boardEnv)

			must(t, bl.Provision())
			wantVars(t, "after Provision", f.printenv(t),
				map[string]string{"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}, boardEnv)

			if s, err := bl.SimulateBoot(); err != nil || s != bootloader.A {
				t.Fatalf("boot: %q, %v", s, err)
			}
			wantVars(t, "after the boot script", f.printenv(t),
				map[string]string{"BOOT_ORDER": "A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}, boardEnv)
			must(t, bl.MarkGood(bootloader.A))
			must(t, bl.SetTrial(bootloader.B, 1))
			wantVars(t, "after SetTrial(B, 1)", f.printenv(t),
				map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1"}, boardEnv)

			if s, err := bl.SimulateBoot(); err != nil || s != bootloader.B {
				t.Fatalf("boot: %q, %v", s, err)
			}
			wantVars(t, "after the trial boot", f.printenv(t),
				map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}, boardEnv)
			must(t, bl.MarkBad(bootloader.B))
			// RAUC's mark-bad: out of BOOT_ORDER, BOOT_x_LEFT=0.
			wantVars(t, "after MarkBad(B)", f.printenv(t),
				map[string]string{"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}, boardEnv)

			// What RAUC's mark-active B does with fw_setenv: BOOT_B_LEFT in
			// hex, then BOOT_ORDER, two separate writes.
			f.setenv(t, "BOOT_B_LEFT", "3")
			f.setenv(t, "BOOT_ORDER", "B A")
			mustState(t, bl, "order=[B:3 A:3] max=3")
			// RAUC's mark-good of A on a custom maximum writes hex.
			f.setenv(t, "BOOT_A_LEFT", "a")
			if _, err := bl.State(); err == nil {
				t.Fatal("BOOT_A_LEFT=a (10) accepted; it is read differently by U-Boot's test -gt")
			}
			must(t, bl.MarkGood(bootloader.B))
			wantVars(t, "after MarkGood(B) repaired A's counter", f.printenv(t),
				map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "3"}, boardEnv)
			mustState(t, bl, "order=[B:3 A:0] max=3")
		})
	}
}

func TestGRUBVariablesWithGrubEditenv(t *testing.T) {
	editenv := tool(t, "grub-editenv", "grub-common")
	f := newGRUBFixture(t, false)
	list := func() map[string]string { return parseList(t, run(t, editenv, f.path, "list")) }
	other := bootenv.Env{"saved_entry": "0"}

	// Without the variables RAUC's grub.conf boots the rescue entry.
	mustState(t, f.bl, "order=[] max=1")
	must(t, f.bl.Provision())
	wantVars(t, "after Provision", list(),
		map[string]string{"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"}, other)

	if s, err := f.bl.SimulateBoot(); err != nil || s != bootloader.A {
		t.Fatalf("boot: %q, %v", s, err)
	}
	wantVars(t, "after grub.conf", list(),
		map[string]string{"ORDER": "A B", "A_OK": "1", "A_TRY": "1", "B_OK": "0", "B_TRY": "0"}, other)
	must(t, f.bl.MarkGood(bootloader.A))
	must(t, f.bl.SetTrial(bootloader.B, 1))
	wantVars(t, "after SetTrial(B, 1)", list(),
		map[string]string{"ORDER": "B A", "A_OK": "1", "A_TRY": "0", "B_OK": "1", "B_TRY": "0"}, other)

	// Our bytes are what grub-editenv itself writes: a no-op set through
	// the tool leaves the file unchanged.
	before, _ := os.ReadFile(f.path)
	run(t, editenv, f.path, "set", "saved_entry=0")
	after, _ := os.ReadFile(f.path)
	if !bytes.Equal(before, after) {
		t.Fatalf("grub-editenv rewrote our grubenv differently:\n%q\n%q", before, after)
	}

	if s, err := f.bl.SimulateBoot(); err != nil || s != bootloader.B {
		t.Fatalf("boot: %q, %v", s, err)
	}
	must(t, f.bl.MarkBad(bootloader.B))
	// RAUC's mark-bad: B_OK=0, B_TRY=0; we also move B behind A in ORDER.
	wantVars(t, "after MarkBad(B)", list(),
		map[string]string{"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"}, other)

	// RAUC's mark-active B through grub-editenv, read back by us.
	run(t, editenv, f.path, "set", "B_OK=1", "B_TRY=0", "ORDER=B A")
	mustState(t, f.bl, "order=[B:1 A:1] max=1")
}
