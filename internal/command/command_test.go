package command

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func testProgram() *Program {
	return &Program{Name: "prog", Intro: "prog does things.", ExitStatus: "    0  success",
		Commands: []*Command{
			{Name: "run", Summary: "run it", Usage: "\nUsage: prog run\n\nExample:\n    prog run\n"},
			{Name: "repo sign", Summary: "sign", Usage: "Usage: prog repo sign\n\nExample:\n    prog repo sign\n"},
			{Name: "repo status", Summary: "status", Usage: "Usage: prog repo status\n\nExample:\n    prog repo status\n"},
		}}
}

func TestResolve(t *testing.T) {
	p := testProgram()
	for _, tc := range []struct {
		args     []string
		done     bool
		cmd      string
		rest     []string
		out, err string
	}{
		{args: nil, done: true, out: "Commands:\n    run          run it\n"},
		{args: []string{"--help"}, done: true, out: "Exit status:\n    0  success\n"},
		{args: []string{"help", "repo", "sign"}, done: true, out: "Usage: prog repo sign\n"},
		{args: []string{"help", "repo"}, done: true, out: "Usage: prog repo COMMAND"},
		{args: []string{"repo"}, done: true, out: "repo status"},
		{args: []string{"version"}, done: true, out: "prog "},
		{args: []string{"--version"}, done: true, out: "prog "},
		{args: []string{"repo", "sign", "x", "--key", "k"}, cmd: "repo sign", rest: []string{"x", "--key", "k"}},
		{args: []string{"run", "--once"}, cmd: "run", rest: []string{"--once"}},
		{args: []string{"frob", "x"}, err: `unknown command "frob"`},
		{args: []string{"repo", "bogus"}, err: `unknown command "repo bogus"; prog repo has: sign, status`},
		{args: []string{"help", "frob"}, err: `unknown command "frob"`},
	} {
		var out bytes.Buffer
		c, rest, done, err := p.Resolve(tc.args, &out)
		if done != tc.done || !strings.Contains(out.String(), tc.out) {
			t.Errorf("%q: done %v, output %q; want done %v and %q", tc.args, done, out.String(), tc.done, tc.out)
		}
		if tc.cmd != "" && (c == nil || c.Name != tc.cmd || strings.Join(rest, " ") != strings.Join(tc.rest, " ")) {
			t.Errorf("%q: got %v %q, want %s %q", tc.args, c, rest, tc.cmd, tc.rest)
		}
		var u *UnknownError
		if tc.err != "" && (!errors.As(err, &u) || err.Error() != tc.err) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
		}
		if tc.err == "" && err != nil {
			t.Errorf("%q: unexpected error %v", tc.args, err)
		}
	}
}

func TestHelpEndsWithExitStatus(t *testing.T) {
	p := testProgram()
	var out bytes.Buffer
	p.Help(&out, p.Commands[0])
	if got := out.String(); !strings.HasPrefix(got, "Usage: prog run\n") || !strings.HasSuffix(got, "\nExit status:\n    0  success\n") {
		t.Fatalf("help page:\n%s", got)
	}
}
