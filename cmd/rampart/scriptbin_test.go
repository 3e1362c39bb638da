package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/rampartfw/rampart/internal/race"
)

// Under -race, the scripts' rampart is this package's test binary built
// without -race. The scripts run about 490 rampart processes, each one
// short and sequential: a race-built one spent 0.16 s of CPU starting
// (0.04 s without), and the package took 197 s of CPU under -race. What
// runs concurrently stays raced: the servers the scripts talk to run in
// this (race-built) test process, and the demo, the simulator and the
// uploads run in process in their own tests. Without -race the scripts
// run this binary, as testscript does by default.

var scriptBin struct {
	once sync.Once
	dir  string
	err  error
}

// scriptPath puts the directory of the scripts' rampart first in e's
// PATH, building it on first use under -race.
func scriptPath(e *testscript.Env) error {
	if !race.Enabled {
		return nil
	}
	scriptBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "rampart-scripts-")
		if err != nil {
			scriptBin.err = err
			return
		}
		scriptBin.dir = dir
		// A test binary named rampart runs as the rampart command of
		// TestMain (testscript.Main), with the test-only key cost.
		cmd := exec.Command("go", "test", "-c", "-o", filepath.Join(dir, "rampart"), ".")
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			scriptBin.err = fmt.Errorf("building the scripts' rampart without -race: %v\n%s", err, out)
		}
	})
	if scriptBin.err != nil {
		return scriptBin.err
	}
	e.Setenv("PATH", scriptBin.dir+string(os.PathListSeparator)+e.Getenv("PATH"))
	return nil
}

// withCleanup removes the scripts' rampart after the tests.
type withCleanup struct{ m *testing.M }

func (w withCleanup) Run() int {
	code := w.m.Run()
	if scriptBin.dir != "" {
		os.RemoveAll(scriptBin.dir)
	}
	return code
}
