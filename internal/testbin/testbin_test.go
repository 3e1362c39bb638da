package testbin

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// helperEnv makes this test binary, re-executed, one of the processes
// racing for a build (TestOnceAcrossProcesses).
const helperEnv = "TESTBIN_HELPER_OUT"

func TestMain(m *testing.M) {
	if out := os.Getenv(helperEnv); out != "" {
		if err := once(out, slowBuild(out)); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// slowBuild writes a file into the build directory and counts itself in
// out's sibling file builds, slowly enough that the others arrive while it
// runs.
func slowBuild(out string) func(string) error {
	return func(tmp string) error {
		f, err := os.OpenFile(out+".builds", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.WriteString("build\n")
		f.Close()
		time.Sleep(200 * time.Millisecond)
		return os.WriteFile(filepath.Join(tmp, "prog"), []byte("built"), 0o755)
	}
}

// TestOnceAcrossProcesses: processes and goroutines asking for the same
// build at once get one build between them, and each finds it whole.
func TestOnceAcrossProcesses(t *testing.T) {
	out := filepath.Join(t.TempDir(), "programs")
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"="+out)
			if b, err := cmd.CombinedOutput(); err != nil {
				errs <- errors.New(string(b))
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- once(out, slowBuild(out))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	builds, err := os.ReadFile(out + ".builds")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(builds), "build"); n != 1 {
		t.Errorf("%d builds for six callers; want 1", n)
	}
	if b, err := os.ReadFile(filepath.Join(out, "prog")); err != nil || string(b) != "built" {
		t.Errorf("the build's output: %q, %v", b, err)
	}
	// No temporary directory is left beside it.
	left, _ := filepath.Glob(out + ".tmp-*")
	if len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestFailedBuildIsRetried: a build that fails leaves nothing named out, so
// the next caller builds again rather than adopting half a build.
func TestFailedBuildIsRetried(t *testing.T) {
	out := filepath.Join(t.TempDir(), "programs")
	boom := errors.New("compile error")
	err := once(out, func(tmp string) error {
		os.WriteFile(filepath.Join(tmp, "prog"), []byte("half"), 0o755)
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("once: %v; want the build's error", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed build left %s: %v", out, err)
	}
	if err := once(out, slowBuild(out)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "prog")); string(b) != "built" {
		t.Errorf("after the retry: %q", b)
	}
}

// TestProgram gets the module's programs, built once beside each other (in
// make test's shared directory, already built when another test asked
// first), and refuses a name that is not one of them.
func TestProgram(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the module's programs")
	}
	if _, err := Program("rampart-evil"); err == nil || !strings.Contains(err.Error(), "not one of") {
		t.Fatalf("Program(rampart-evil): %v", err)
	}
	first, err := Program("rampart-server")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(first, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rampart-server") {
		t.Fatalf("%s version: %v\n%s", first, err, out)
	}
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Programs {
		path, err := Program(p)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(path) != filepath.Dir(first) {
			t.Errorf("%s built into %s, not beside rampart-server", p, path)
		}
	}
	again, _ := os.Stat(first)
	if !again.ModTime().Equal(fi.ModTime()) {
		t.Error("rampart-server was built again")
	}
}
