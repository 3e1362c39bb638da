package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Every command answers --help and "help COMMAND" on stdout with exit 0 in
// the shared layout; version and --version print the version; an unknown
// command is a usage error, not a complaint about the data directory.
func TestHelpVersionUnknown(t *testing.T) {
	for _, c := range program.Commands {
		for _, args := range [][]string{{c.Name, "--help"}, {"help", c.Name}} {
			var out, errOut bytes.Buffer
			code := run(context.Background(), args, &out, &errOut)
			if code != 0 || !strings.HasPrefix(out.String(), "Usage: rampart-server "+c.Name) || !strings.Contains(out.String(), "Example:") || !strings.Contains(out.String(), "Exit status:") {
				t.Errorf("%q: exit %d\n%s%s", args, code, out.String(), errOut.String())
			}
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "rampart-server ") {
			t.Errorf("%q: exit %d %q %q", args, code, out.String(), errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"foo"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `rampart-server: error: unknown command "foo"`) || strings.Contains(errOut.String(), "data directory") {
		t.Errorf("foo: exit %d %q", code, errOut.String())
	}
}
