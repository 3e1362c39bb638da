package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/rampartfw/rampart/internal/race"
	"github.com/rampartfw/rampart/internal/testbin"
)

// Under -race, the scripts' rampart is this package's test binary built
// without -race. The scripts run about 490 rampart processes, each one
// short and sequential: a race-built one spent 0.16 s of CPU starting
// (0.04 s without), and the package took 197 s of CPU under -race. What
// runs concurrently stays raced: the servers the scripts talk to run in
// this (race-built) test process, and the demo, the simulator and the
// uploads run in process in their own tests. Without -race the scripts
// run this binary, as testscript does by default.

// scriptPath puts the directory of the scripts' rampart first in e's
// PATH under -race: this package's test binary built without -race, once
// for the run (internal/testbin). A test binary named rampart runs as the
// rampart command of TestMain (testscript.Main), with the test-only key
// cost.
func scriptPath(e *testscript.Env) error {
	if !race.Enabled {
		return nil
	}
	bin, err := testbin.TestBinary(".", "rampart")
	if err != nil {
		return fmt.Errorf("building the scripts' rampart without -race: %w", err)
	}
	e.Setenv("PATH", filepath.Dir(bin)+string(os.PathListSeparator)+e.Getenv("PATH"))
	return nil
}

// withCleanup removes what the tests built after them.
type withCleanup struct{ m *testing.M }

func (w withCleanup) Run() int {
	code := w.m.Run()
	testbin.Cleanup()
	return code
}
