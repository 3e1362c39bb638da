// Package testbin builds this module's programs for the tests that run them
// as processes (the real rampart-server a test kills, the rampart and
// rampart-agent of the quickstart walkthrough, the scripts' rampart).
//
// Each build is made once per run. Under make test, RAMPART_TESTBIN names a
// directory shared by every test binary of the run: the first test that
// needs a program builds it there under a file lock, and the others wait for
// it and reuse it. Without it, each test binary builds into a directory of
// its own, removed by Cleanup. Both matter on a fresh machine, where the
// builds are most of their cost: two test binaries building rampart-server
// at once each compiled every package it imports (the go command's cache
// does not share a build in progress between processes).
//
// The programs are built without -race, as they ship, whatever the test
// binary's own build: a test that runs them as processes times them, kills
// them, or starts hundreds of them.
package testbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Env names the directory shared by the test binaries of one run.
const Env = "RAMPART_TESTBIN"

// CompilerGOGC is the GOGC a test's go build runs with, the value make
// test gives its own go commands (the Makefile's "test: export GOGC"; keep
// the two equal): the compiler's collector at its default GOGC=100 cost a
// sixth to a quarter of a cold build's CPU (docs/performance.md, "The
// test suite's time"). The go command passes it to the compiler; the
// programs built run with their own default.
const CompilerGOGC = "GOGC=400"

var local struct {
	once sync.Once
	dir  string
	err  error
	mu   sync.Mutex // one build at a time within this process
}

// dir returns the directory the builds go to, and whether this process
// owns it (Cleanup removes only a directory it owns).
func dir() (string, bool, error) {
	if d := os.Getenv(Env); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", false, fmt.Errorf("testbin: %s=%s: %w", Env, d, err)
		}
		return d, false, nil
	}
	local.once.Do(func() {
		local.dir, local.err = os.MkdirTemp("", "rampart-testbin-")
	})
	return local.dir, true, local.err
}

// Cleanup removes what this process built into a directory of its own;
// call it from TestMain after the tests. A shared directory (RAMPART_TESTBIN)
// is left to whoever made it.
func Cleanup() {
	// Doing the once with nothing creates no directory when this process
	// built nothing, and orders the read of local.dir after any creation.
	local.once.Do(func() {})
	if local.dir != "" {
		os.RemoveAll(local.dir)
	}
}

// Programs are the commands Program builds, all in one go build: they share
// most of their packages.
var Programs = []string{"rampart", "rampart-server", "rampart-agent"}

// Program returns the path of cmd/NAME built without -race, building the
// module's programs on first use.
func Program(name string) (string, error) {
	known := false
	for _, p := range Programs {
		known = known || p == name
	}
	if !known {
		return "", fmt.Errorf("testbin: %q is not one of %v", name, Programs)
	}
	d, _, err := dir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(d, "programs")
	err = once(out, func(tmp string) error {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		args := []string{"build", "-o", tmp + string(filepath.Separator)}
		for _, p := range Programs {
			args = append(args, "./cmd/"+p)
		}
		return goCmd(root, args...)
	})
	if err != nil {
		return "", err
	}
	return filepath.Join(out, name), nil
}

// TestBinary returns the path of the test binary of the package in pkgDir,
// built without -race and named name (a test binary named after a command
// runs as that command in testscript's TestMain).
func TestBinary(pkgDir, name string) (string, error) {
	d, _, err := dir()
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(pkgDir)
	if err != nil {
		return "", err
	}
	out := filepath.Join(d, "test-"+strings.NewReplacer("/", "_", string(filepath.Separator), "_").Replace(strings.TrimPrefix(abs, string(filepath.Separator))))
	err = once(out, func(tmp string) error {
		return goCmd(abs, "test", "-c", "-o", filepath.Join(tmp, name), ".")
	})
	if err != nil {
		return "", err
	}
	return filepath.Join(out, name), nil
}

// once makes the directory out with build, unless it exists. The build goes
// to a temporary directory renamed to out when it succeeds, so a directory
// named out is always whole; the lock makes the others wait for it.
func once(out string, build func(tmp string) error) error {
	local.mu.Lock()
	defer local.mu.Unlock()
	lock, err := os.OpenFile(out+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("testbin: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("testbin: locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(out); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testbin: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), filepath.Base(out)+".tmp-")
	if err != nil {
		return fmt.Errorf("testbin: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := build(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("testbin: %w", err)
	}
	return nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("testbin: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("testbin: not inside the module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// goCmd runs the go command in dir with GOFLAGS cleared: the build is the
// plain one whatever flags the test run was given.
func goCmd(dir string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", CompilerGOGC)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testbin: go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
