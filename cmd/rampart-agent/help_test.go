package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Every command answers --help and "help COMMAND" on stdout with exit 0 in
// the shared layout (not "flag: help requested"); version and --version
// print the version; an unknown command is a usage error.
func TestHelpVersionUnknown(t *testing.T) {
	for _, c := range program.Commands {
		for _, args := range [][]string{{c.Name, "--help"}, {"help", c.Name}} {
			var out, errOut bytes.Buffer
			code := run(context.Background(), args, &out, &errOut)
			if code != 0 || !strings.HasPrefix(out.String(), "Usage: rampart-agent "+c.Name) || !strings.Contains(out.String(), "Example:") || !strings.Contains(out.String(), "Exit status:") {
				t.Errorf("%q: exit %d\n%s%s", args, code, out.String(), errOut.String())
			}
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "rampart-agent ") {
			t.Errorf("%q: exit %d %q %q", args, code, out.String(), errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"frob"}, &out, &errOut); code != exitUsage || !strings.Contains(errOut.String(), `rampart-agent: error: unknown command "frob"`) {
		t.Errorf("frob: exit %d %q", code, errOut.String())
	}
}
