package main

import (
	"bytes"
	"strings"
	"testing"
)

// Every command answers --help on stdout with exit 0, a usage line and an
// example, and is listed by the top-level help.
func TestEveryCommandHasHelpWithExample(t *testing.T) {
	var top bytes.Buffer
	if code := run([]string{"help"}, &env{stdout: &top, stderr: &top, getenv: func(string) string { return "" }}); code != 0 {
		t.Fatalf("help exited %d", code)
	}
	for _, c := range commands {
		var out, errOut bytes.Buffer
		args := append(strings.Fields(c.name), "--help")
		code := run(args, &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
		if code != 0 || !strings.Contains(out.String(), "Usage: rampart "+c.name) || !strings.Contains(out.String(), "Example:") {
			t.Errorf("%s --help: exit %d, output:\n%s%s", c.name, code, out.String(), errOut.String())
		}
		if !strings.Contains(top.String(), c.name) {
			t.Errorf("top-level help does not list %s", c.name)
		}
	}
}

func TestUnknownFlagIsUsageError(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"verify", "x.rbundle", "--bogus"}, &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
	if code != exitInput || !strings.Contains(errOut.String(), "rampart: error: flag provided but not defined: -bogus") || !strings.Contains(errOut.String(), "rampart: hint: rampart verify --help") {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
}
