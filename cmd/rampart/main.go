// Command rampart is the operator CLI of Rampart: keys, the offline TUF
// repository with threshold release signing, offline bundles and their
// verification. Behaviour lives in internal/ packages; this command only
// parses flags and wires them together.
package main

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"

	"k8s.io/klog/v2"

	"github.com/rampartfw/rampart/internal/command"
)

// env is what a command may touch besides its arguments.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

type cmdSpec struct {
	name    string
	summary string
	usage   string
	run     func(e *env, args []string) error
}

// commands lists every command in the order help shows them.
var commands = []*cmdSpec{
	keyGenerateCmd, keyIDCmd,
	repoInitCmd, repoSignCmd, repoImportCmd, repoDelegateCmd, repoStatusCmd, repoDiffCmd, repoPublishCmd, repoRotateCmd, repoSetLogKeyCmd, repoStageCmd, repoUnstageCmd,
	releaseAddCmd, bundleCmd, verifyCmd,
	serverKeysCmd, repoPushCmd, tokenCreateCmd, tokenListCmd, tokenSetRoleCmd, tokenRevokeCmd, auditVerifyCmd,
	deviceTokenCmd, deviceListCmd, deviceShowCmd, deviceTagCmd, deviceUntagCmd, deviceRevokeCmd, deviceRemoveCmd, releaseListCmd, deployCmd,
	rolloutCreateCmd, rolloutListCmd, rolloutShowCmd, rolloutPauseCmd, rolloutResumeCmd, rolloutAbortCmd, rolloutApproveCmd,
	policySetCmd, policyShowCmd, policyExplainCmd,
	fleetStatsCmd, incidentRevokeKeyCmd, incidentRedeployCmd,
	directorPushRootCmd, logVerifyCmd,
	simCmd, demoCmd,
}

func main() {
	// rampart demo runs a server in this process, whose transparency log
	// (tessera) logs through klog on stderr; the demo narrates instead.
	// (Here, once: klog's logger is global and not safe to swap in use.)
	klog.SetSlogLogger(slog.New(slog.DiscardHandler))
	os.Exit(run(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
}

// program is the shared help, version and command lookup (internal/command).
var program = func() *command.Program {
	p := &command.Program{
		Name:  "rampart",
		Intro: "Rampart signs firmware, publishes it as a TUF repository, and verifies it.",
		More:  "The docs/ directory has the quickstart, the key ceremony and every command (docs/cli.md).",
		ExitStatus: `    0  success
    1  verification or a policy check refused the input
    2  usage or input error
    3  environment error (file system, network, HSM module)`,
	}
	for _, c := range commands {
		p.Commands = append(p.Commands, &command.Command{Name: c.name, Summary: c.summary, Usage: c.usage})
	}
	return p
}()

func run(args []string, e *env) int {
	c, rest, done, err := program.Resolve(args, e.stdout)
	if done {
		return exitOK
	}
	var unknown *command.UnknownError
	if errors.As(err, &unknown) {
		return report(e.stderr, usagef(unknown.Hint(), "%s", unknown.Error()))
	}
	var cmd *cmdSpec
	for _, x := range commands {
		if x.name == c.Name {
			cmd = x
		}
	}
	err = cmd.run(e, rest)
	if errors.Is(err, flag.ErrHelp) {
		program.Help(e.stdout, c)
		return exitOK
	}
	if err != nil {
		return report(e.stderr, err)
	}
	return exitOK
}
