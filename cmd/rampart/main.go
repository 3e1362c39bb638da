// Command rampart is the operator CLI of Rampart: keys, the offline TUF
// repository with threshold release signing, offline bundles and their
// verification. Behaviour lives in internal/ packages; this command only
// parses flags and wires them together.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// Version is set at link time (-X main.Version=...) or read from build info.
var Version = ""

// env is what a command may touch besides its arguments.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

type command struct {
	name    string
	summary string
	usage   string
	run     func(e *env, args []string) error
}

// commands lists every command in the order help shows them.
var commands = []*command{
	keyGenerateCmd, keyIDCmd,
	repoInitCmd, repoSignCmd, repoImportCmd, repoDelegateCmd, repoStatusCmd, repoDiffCmd, repoPublishCmd, repoRotateCmd, repoStageCmd, repoUnstageCmd,
	releaseAddCmd, bundleCmd, verifyCmd,
	serverKeysCmd, repoPushCmd, tokenCreateCmd, tokenListCmd, tokenSetRoleCmd, tokenRevokeCmd, auditVerifyCmd,
	deviceTokenCmd, deviceRevokeCmd, deployCmd, directorPushRootCmd, logVerifyCmd,
}

func main() {
	os.Exit(run(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
}

func run(args []string, e *env) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			args = append(args[1:], "--help")
			return run(args, e)
		}
		mainUsage(e.stdout)
		return exitOK
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(e.stdout, "rampart", version())
		return exitOK
	}
	// Commands are one or two words: "verify", "repo sign".
	var cmd *command
	rest := args
	for _, c := range commands {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			if cmd == nil || len(words) > len(strings.Fields(cmd.name)) {
				cmd, rest = c, args[len(words):]
			}
		}
	}
	if cmd == nil {
		group := args[0]
		var subs []string
		for _, c := range commands {
			if strings.HasPrefix(c.name, group+" ") {
				subs = append(subs, strings.TrimPrefix(c.name, group+" "))
			}
		}
		if len(subs) > 0 {
			if len(args) > 1 {
				return report(e.stderr, usagef("rampart "+group+" --help lists them", "unknown command %q; rampart %s has: %s", group+" "+args[1], group, strings.Join(subs, ", ")))
			}
			groupUsage(e.stdout, group)
			return exitOK
		}
		return report(e.stderr, usagef("rampart help lists the commands", "unknown command %q", args[0]))
	}
	err := cmd.run(e, rest)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stdout, strings.TrimLeft(cmd.usage, "\n"))
		return exitOK
	}
	if err != nil {
		return report(e.stderr, err)
	}
	return exitOK
}

func mainUsage(w io.Writer) {
	fmt.Fprint(w, `Rampart signs firmware, publishes it as a TUF repository, and verifies it.

Usage:
    rampart COMMAND [ARGUMENTS] [FLAGS]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "    %-18s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run "rampart COMMAND --help" for a command's flags and an example.

Exit status: 0 success; 1 verification or a policy check refused the input;
2 usage or input error; 3 environment error (file system, HSM module).
`)
}

func groupUsage(w io.Writer, group string) {
	fmt.Fprintf(w, "Usage: rampart %s COMMAND ...\n\nCommands:\n", group)
	for _, c := range commands {
		if strings.HasPrefix(c.name, group+" ") {
			fmt.Fprintf(w, "    %-18s %s\n", c.name, c.summary)
		}
	}
}

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
