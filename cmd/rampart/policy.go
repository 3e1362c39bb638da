package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/termsafe"
)

// maxPolicyFile bounds the policy file read (the server refuses more
// than 64 KiB; a little more is read so that it says so).
const maxPolicyFile = 1 << 20

var policySetCmd = &cmdSpec{
	name:    "policy set",
	summary: "set the fleet policy: CEL rules that allow or deny a device a release",
	usage: `
Usage: rampart policy set --file FILE [--json] --server URL --ca FILE --token TOKEN

Sends the policy file (YAML, docs/policy.md) to the server, which
compiles its rules and stores it as a new version; from the next check-in
on, a rollout offers its release only to the devices the policy allows.
A rule that does not compile or names an unknown input is refused with
its line and column in the file. An empty file clears the policy. Needs
an operator or admin token; audited. --json prints what policy show
--json prints.

Flags:
` + serverFlagsHelp + `    --file FILE      the policy file
    --json           print JSON

Example:
    rampart policy set --file policy.yaml
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("policy set", flag.ContinueOnError)
		file := fs.String("file", "", "")
		asJSON := fs.Bool("json", false, "")
		c, _, err := connect(e, fs, args, 0, usagef("rampart policy set --help shows an example", "policy set takes no arguments: give --file FILE"))
		if err != nil {
			return err
		}
		if *file == "" {
			return usagef("rampart policy set --help shows an example", "give the policy file with --file FILE")
		}
		src, err := fsys.ReadFile(fsys.OS, *file, maxPolicyFile)
		if err != nil {
			return err
		}
		p, err := c.SetPolicy(context.Background(), string(src))
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(p)
		}
		fmt.Fprintf(e.stdout, "policy version %d: %d rule(s), default %s\n", p.Version, len(p.Rules), p.Default)
		return nil
	},
}

var policyShowCmd = &cmdSpec{
	name:    "policy show",
	summary: "show the fleet policy in force",
	usage: `
Usage: rampart policy show [--source] [--json] --server URL --ca FILE --token TOKEN

Prints the policy's version, who set it and when, its default and its
rules in the order they are evaluated. --source prints the policy file
as it was set instead. --json prints {"version", "default", "rules":
[{"name", "effect", "expr", "description", "line"}], "source", "sha256",
"set_by", "set_at"}. Needs an operator, auditor or admin token.

Flags:
` + serverFlagsHelp + `    --source         print the policy file
    --json           print JSON

Example:
    rampart policy show
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("policy show", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "")
		source := fs.Bool("source", false, "")
		c, _, err := connect(e, fs, args, 0, usagef("", "policy show takes no arguments"))
		if err != nil {
			return err
		}
		p, err := c.Policy(context.Background())
		if err != nil {
			return err
		}
		switch {
		case *asJSON:
			return json.NewEncoder(e.stdout).Encode(p)
		case *source:
			// Line by line: the file's newlines stay, anything a
			// terminal would act on is escaped.
			lines := strings.Split(p.Source, "\n")
			for i, l := range lines {
				lines[i] = termsafe.Bounded(l, len(l)+1)
			}
			_, err := fmt.Fprint(e.stdout, strings.Join(lines, "\n"))
			return err
		}
		if p.Version == 0 {
			fmt.Fprintln(e.stderr, "rampart: no policy is set: every device may take every release")
			return nil
		}
		fmt.Fprintf(e.stdout, "version   %d\nset       by %s at %s\ndefault   %s\n", p.Version, termsafe.String(p.SetBy), p.SetAt.Format("2006-01-02 15:04:05Z07:00"), p.Default)
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "LINE\tRULE\tEFFECT\tEXPRESSION")
		for _, r := range p.Rules {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", r.Line, termsafe.String(r.Name), r.Effect, termsafe.String(r.Expr))
		}
		return tw.Flush()
	},
}

var policyExplainCmd = &cmdSpec{
	name:    "policy explain",
	summary: "say whether the policy lets a device take a release, and which rule decided",
	usage: `
Usage: rampart policy explain DEVICE PRODUCT/VERSION [--critical] [--json] --server URL --ca FILE --token TOKEN

Evaluates the policy in force for the device and the published release,
as the server does when a rollout would hand it out, and prints the
decision, the rule that made it (or the default), each rule evaluated
in order, and the inputs the rules saw. --critical evaluates it as for
a critical rollout (release.critical). --json prints {"device",
"release", "policy_version", "allowed", "decision", "rule", "reason",
"trace": [{"rule", "effect", "matched", "error"}], "input": {...}}.
Needs an operator, auditor or admin token.

Flags:
` + serverFlagsHelp + `    --critical       as for a critical rollout
    --json           print JSON

Example:
    rampart policy explain gw-0042 acme-gw/2.4.1
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("policy explain", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "")
		critical := fs.Bool("critical", false, "")
		c, pos, err := connect(e, fs, args, 2, usagef("rampart policy explain --help shows an example", "policy explain takes the device id and the release, PRODUCT/VERSION"))
		if err != nil {
			return err
		}
		x, err := c.ExplainPolicy(context.Background(), pos[0], pos[1], *critical)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(x)
		}
		printExplanation(e, x)
		return nil
	},
}

func printExplanation(e *env, x api.PolicyExplanation) {
	w := e.stdout
	fmt.Fprintf(w, "%s: device %s, release %s (policy version %d)\n", x.Decision, termsafe.String(x.Device), termsafe.String(x.Release), x.PolicyVersion)
	rule := "(default)"
	if x.Rule != "" {
		rule = termsafe.String(x.Rule)
	}
	fmt.Fprintf(w, "rule      %s\nwhy       %s\n", rule, termsafe.String(x.Reason))
	for _, r := range x.Trace {
		res := "no match"
		switch {
		case r.Error != "":
			res = "error: " + termsafe.String(r.Error)
		case r.Matched:
			res = "matched"
		}
		fmt.Fprintf(w, "checked   %s %s: %s\n", r.Effect, termsafe.String(r.Rule), res)
	}
}
