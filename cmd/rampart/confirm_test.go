package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rampartfw/rampart/internal/keys"
)

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// On a terminal, repo sign asks after showing the changes: "y" signs, and
// anything else refuses (exit 1) with nothing signed.
func TestRepoSignConfirmsOnTerminal(t *testing.T) {
	keys.SetTestOnlyWorkFactor(10)
	dir := t.TempDir()
	c := &cli{t: t, dir: dir, env: map[string]string{"RAMPART_PASSPHRASE": "p"}}
	for _, k := range []string{"root", "targets", "online"} {
		c.ok("key", "generate", "keys/"+k)
	}
	c.ok("repo", "init", "repo", "--root-key", "keys/root.pub", "--targets-key", "keys/targets.pub", "--online-key", "keys/online.pub")
	sign := func(answer string) (int, string, string) {
		master, tty := openPTY(t)
		if _, err := master.WriteString(answer + "\n"); err != nil {
			t.Fatal(err)
		}
		var o, e bytes.Buffer
		wd, _ := os.Getwd()
		os.Chdir(dir)
		defer os.Chdir(wd)
		code := run([]string{"repo", "sign", "repo", "root", "--key", "keys/root.key"}, &env{stdin: tty, stdout: &o, stderr: &e, getenv: func(k string) string { return c.env[k] }})
		return code, o.String(), e.String()
	}
	code, out, errOut := sign("n")
	if code != exitRefused || !strings.Contains(out, "+ role-keys root") || !strings.Contains(errOut, "Sign root version 1 with keys/root.key? [y/N]") || !strings.Contains(errOut, "not signed: declined") {
		t.Fatalf("answer n: exit %d\n%s%s", code, out, errOut)
	}
	staged, _ := os.ReadFile(filepath.Join(dir, "repo", "staged", "root.json"))
	if bytes.Contains(staged, []byte(`"sig":`)) {
		t.Fatalf("declined, yet root carries a signature: %s", staged)
	}
	code, out, errOut = sign("y")
	if code != 0 || !strings.Contains(out, "root signed by ") {
		t.Fatalf("answer y: exit %d\n%s%s", code, out, errOut)
	}
}
