package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/termsafe"
)

var rolloutCreateCmd = &cmdSpec{
	name:    "rollout create",
	summary: "roll a published release out to selected devices, phase by phase",
	usage: `
Usage: rampart rollout create PRODUCT/VERSION [--select EXPR] [--phases LIST] [--soak D]
    [--max-failure-rate P%] [--min-success N] [--max-concurrent N] [--approve-after PHASE]
    [--window WINDOW] [--critical] [--json] --server URL --ca FILE --token TOKEN

Each phase hands the release to the selected devices its share reaches
(a device's place is a hash of the rollout and device ids: stable),
is held for --soak, and is promoted when at least --min-success
confirmed installs came in and failures (rollbacks, failed installs; not
refusals of tampered data) stay at or below --max-failure-rate; a
breached gate pauses the rollout. At most --max-concurrent devices are
in flight at once. Beyond --approve-after, and before a --critical
rollout starts, an operator other than the creator must approve.
Outside --window ("DAYS HH:MM-HH:MM ZONE", docs/fleet.md) the phase
holds: nothing more is handed out and it is not promoted; a device's own
tag window=... holds it the same way; a --critical rollout ignores
both. A window that never opens is refused. Needs
an operator or admin token. It prints the rollout's id; --json prints
{"id", "matched", "below_security_version", "note"}.

Flags:
` + serverFlagsHelp + `    --select EXPR          a CEL selector (rampart device list --help); default: every device
    --phases LIST          1%,10%,50%,100% (default), counts (10,100,100%), or exp
    --soak D               how long each phase is held (default 30m)
    --max-failure-rate P%  the failure gate (default 2%)
    --min-success N        confirmed installs a phase needs (default 1)
    --max-concurrent N     devices in flight at once (default 0: no limit)
    --approve-after PHASE  promotion beyond this phase needs a second operator
    --window WINDOW        a maintenance window: Mon-Fri 01:00-05:00 Europe/Berlin
    --critical             start only after a second operator approves; ignore windows
    --json                 print JSON

Example:
    rampart rollout create acme-gw/2.4.1 --select 'hardware == "acme-gw-rev2" && tags.site != "lab"' \
        --phases 1%,10%,50%,100% --soak 30m --max-failure-rate 2% --min-success 20 --max-concurrent 500 \
        --window 'Mon-Fri 01:00-05:00 Europe/Berlin' --approve-after 10%
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("rollout create", flag.ContinueOnError)
		sf := addServerFlags(fs)
		var req api.RolloutRequest
		fs.StringVar(&req.Select, "select", "", "")
		fs.StringVar(&req.Phases, "phases", "1%,10%,50%,100%", "")
		fs.StringVar(&req.Soak, "soak", "", "")
		fs.StringVar(&req.MaxFailureRate, "max-failure-rate", "", "")
		fs.IntVar(&req.MinSuccess, "min-success", 0, "")
		fs.IntVar(&req.MaxConcurrent, "max-concurrent", 0, "")
		fs.StringVar(&req.ApproveAfter, "approve-after", "", "")
		fs.BoolVar(&req.Critical, "critical", false, "")
		fs.StringVar(&req.Window, "window", "", "")
		asJSON := fs.Bool("json", false, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("rampart rollout create --help shows an example", "rollout create takes the release, PRODUCT/VERSION")
		}
		req.Release = pos[0]
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		out, err := c.CreateRollout(context.Background(), req)
		if err != nil {
			return err
		}
		if out.Note != "" {
			fmt.Fprintf(e.stderr, "rampart: note: %s\n", termsafe.String(out.Note))
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(out)
		}
		// The id alone on stdout, for scripts.
		fmt.Fprintln(e.stdout, termsafe.String(out.ID))
		fmt.Fprintf(e.stderr, "rampart: rolling %s out to %d selected device(s)\n", termsafe.String(req.Release), out.Matched)
		return nil
	},
}

var rolloutListCmd = &cmdSpec{
	name:    "rollout list",
	summary: "list rollouts, newest first",
	usage: `
Usage: rampart rollout list [--json] --server URL --ca FILE --token TOKEN

Lists the newest 1000 rollouts with their state, phase and counts. Needs
an operator, auditor or admin token. --json prints an array of what
rollout show --json prints.

Flags:
` + serverFlagsHelp + `    --json           print JSON

Example:
    rampart rollout list
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("rollout list", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "")
		c, _, err := connect(e, fs, args, 0, usagef("", "rollout list takes no arguments"))
		if err != nil {
			return err
		}
		rs, err := c.Rollouts(context.Background())
		if err != nil {
			return err
		}
		if *asJSON {
			if rs == nil {
				rs = []api.Rollout{}
			}
			return json.NewEncoder(e.stdout).Encode(rs)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRELEASE\tSTATE\tPHASE\tINSTALLED\tIN FLIGHT\tFAILED")
		for _, r := range rs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\n", termsafe.String(r.ID), termsafe.String(r.Release), r.State, phaseText(r),
				r.Counts.Installed, r.Counts.Downloading+r.Counts.Installing, r.Counts.Failed+r.Counts.RolledBack)
		}
		return tw.Flush()
	},
}

func phaseText(r api.Rollout) string {
	if r.Phase < 1 || r.Phase > len(r.Phases) {
		return "-"
	}
	return fmt.Sprintf("%d/%d (%s)", r.Phase, len(r.Phases), r.Phases[r.Phase-1])
}

var rolloutShowCmd = &cmdSpec{
	name:    "rollout show",
	summary: "show a rollout: state, phase, counts, why it paused",
	usage: `
Usage: rampart rollout show ID [--json] --server URL --ca FILE --token TOKEN

--json prints {"id", "release", "state", "phase", "phases", "counts":
{"pending", "downloading", "installing", "installed", "rolled-back",
"failed", "refused"}, "paused_reason", "failure_reasons", "created_by",
"approved_by", ...} (docs/api.md, Rollouts). Needs an operator, auditor
or admin token.

Flags:
` + serverFlagsHelp + `    --json           print JSON

Example:
    rampart rollout show ro-3f9a1c2b4d5e --json
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("rollout show", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "")
		c, pos, err := connect(e, fs, args, 1, usagef("", "rollout show takes the rollout id"))
		if err != nil {
			return err
		}
		r, err := c.Rollout(context.Background(), pos[0])
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(r)
		}
		printRollout(e, r)
		return nil
	},
}

func printRollout(e *env, r api.Rollout) {
	w := e.stdout
	fmt.Fprintf(w, "rollout   %s\nrelease   %s (security version %d)\nstate     %s\nphase     %s of %s\n",
		termsafe.String(r.ID), termsafe.String(r.Release), r.SecurityVersion, r.State, phaseText(r), strings.Join(r.Phases, ","))
	if r.PausedReason != "" {
		fmt.Fprintf(w, "why       %s\n", termsafe.String(r.PausedReason))
	}
	if r.Window != "" {
		state := "open"
		switch {
		case r.Critical:
			state = "ignored: critical"
		case !r.WindowOpen && r.WindowOpens != nil:
			state = "closed, opens " + r.WindowOpens.Format("2006-01-02 15:04Z07:00")
		case !r.WindowOpen:
			state = "closed"
		}
		fmt.Fprintf(w, "window    %s (%s)\n", termsafe.String(r.Window), state)
	}
	c := r.Counts
	fmt.Fprintf(w, "devices   %d pending, %d downloading, %d installing, %d installed, %d rolled back, %d failed, %d refused, %d policy-denied\n",
		c.Pending, c.Downloading, c.Installing, c.Installed, c.RolledBack, c.Failed, c.Refused, c.PolicyDenied)
	for reason, n := range r.FailureReasons {
		fmt.Fprintf(w, "failure   %d x %s\n", n, termsafe.String(reason))
	}
	fmt.Fprintf(w, "created   by %s\n", termsafe.String(r.CreatedBy))
	if r.ApprovedBy != "" {
		fmt.Fprintf(w, "approved  by %s\n", termsafe.String(r.ApprovedBy))
	}
	printRolloutStats(e, r.Stats)
}

func rolloutActionCmd(action, summary, more string) *cmdSpec {
	return &cmdSpec{
		name:    "rollout " + action,
		summary: summary,
		usage: `
Usage: rampart rollout ` + action + ` ID [--reason TEXT] --server URL --ca FILE --token TOKEN

` + more + ` Audited with the reason. Needs an operator or admin token.

Flags:
` + serverFlagsHelp + `    --reason TEXT    why (at most 256 bytes)

Example:
    rampart rollout ` + action + ` ro-3f9a1c2b4d5e --reason "ticket 4711"
`,
		run: func(e *env, args []string) error {
			fs := flag.NewFlagSet("rollout "+action, flag.ContinueOnError)
			reason := fs.String("reason", "", "")
			c, pos, err := connect(e, fs, args, 1, usagef("", "rollout %s takes the rollout id", action))
			if err != nil {
				return err
			}
			r, err := c.RolloutAction(context.Background(), pos[0], action, *reason)
			if err != nil {
				return err
			}
			printRollout(e, r)
			return nil
		},
	}
}

var (
	rolloutPauseCmd   = rolloutActionCmd("pause", "pause a rollout: nothing more is handed out", "Devices already in flight finish.")
	rolloutResumeCmd  = rolloutActionCmd("resume", "resume a paused rollout", "An aborted rollout cannot be resumed.")
	rolloutAbortCmd   = rolloutActionCmd("abort", "stop a rollout for good", "Devices already in flight finish; nothing more is handed out.")
	rolloutApproveCmd = rolloutActionCmd("approve", "approve a rollout waiting for it (not your own)", "Starts a critical rollout, or lets one promote beyond its --approve-after phase; its creator may not approve it.")
)
