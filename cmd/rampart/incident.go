package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/rampartfw/rampart/internal/termsafe"
)

var incidentRevokeKeyCmd = &cmdSpec{
	name:    "incident revoke-key",
	summary: "revoke a leaked key: halt its releases' rollouts, list what it reached, print the rotation steps",
	usage: `
Usage: rampart incident revoke-key KEYID --reason TEXT [--json] --server URL --ca FILE --token TOKEN

KEYID is a release signer (a key whose signature published a release:
rampart release list --json shows "signed_by"), a product role's key, one
of the server's online keys, or a targets or root key (rampart key id
KEY.pub prints a key's id). At once, every rollout of a release the key
signed is aborted (for good: it cannot be resumed) with the reason, the
releases are marked ("revoked_key": true in rampart release list --json)
and are refused for new rollouts and deployments, and devices assigned
one that do not run it yet are unassigned. It lists the releases, the
halted rollouts and the devices running or assigned those releases, and
prints the offline rotation steps that remain (docs/incident-response.md).
Then run rampart incident redeploy. Audited. Needs an operator or admin
token. --json prints {"key_id", "kind", "role", "reason",
"halted_rollouts", "releases", "devices", "rotation_steps"}.

Flags:
` + serverFlagsHelp + `    --reason TEXT    why (required, at most 256 bytes; shown on every halted rollout)
    --json           print JSON

Example:
    rampart incident revoke-key 4f1c...e9 --reason "release signer laptop stolen, ticket 4711"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("incident revoke-key", flag.ContinueOnError)
		reason := fs.String("reason", "", "")
		asJSON := fs.Bool("json", false, "")
		c, pos, err := connect(e, fs, args, 1, usagef("rampart key id KEY.pub prints a key's id", "incident revoke-key takes the key id"))
		if err != nil {
			return err
		}
		if *reason == "" {
			return usagef("it is audited and shown on every halted rollout", "incident revoke-key needs --reason TEXT")
		}
		out, err := c.RevokeKey(context.Background(), pos[0], *reason)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(out)
		}
		w := e.stdout
		fmt.Fprintf(w, "revoked   %s (%s, %s)\n", termsafe.String(out.KeyID), out.Kind, termsafe.String(out.Role))
		if len(out.Releases) == 0 {
			fmt.Fprintln(w, "releases  none is signed with it: no rollout halted")
		}
		for _, r := range out.Releases {
			fmt.Fprintf(w, "release   %s (revoked: never offered again)\n", termsafe.String(r))
		}
		for _, r := range out.HaltedRollouts {
			fmt.Fprintf(w, "halted    rollout %s (aborted)\n", termsafe.String(r))
		}
		for _, d := range out.Devices {
			switch {
			case d.Running != "" && d.Assigned != "":
				fmt.Fprintf(w, "device    %s runs %s, assigned %s\n", termsafe.String(d.ID), termsafe.String(d.Running), termsafe.String(d.Assigned))
			case d.Running != "":
				fmt.Fprintf(w, "device    %s runs %s\n", termsafe.String(d.ID), termsafe.String(d.Running))
			default:
				fmt.Fprintf(w, "device    %s was assigned %s (unassigned)\n", termsafe.String(d.ID), termsafe.String(d.Assigned))
			}
		}
		if out.DevicesMore > 0 {
			fmt.Fprintf(w, "device    ... and %d more\n", out.DevicesMore)
		}
		fmt.Fprintln(w, "\nStill to do, offline (docs/incident-response.md):")
		for i, s := range out.RotationSteps {
			fmt.Fprintf(w, "  %d. %s\n", i+1, termsafe.String(s))
		}
		if len(out.Releases) > 0 {
			fmt.Fprintf(w, "Then put a good release back: rampart incident redeploy PRODUCT/VERSION --affected-by %s\n", termsafe.String(out.KeyID))
		}
		return nil
	},
}

var incidentRedeployCmd = &cmdSpec{
	name:    "incident redeploy",
	summary: "put the last known-good release back on the devices a revoked key's release reached",
	usage: `
Usage: rampart incident redeploy PRODUCT/VERSION --affected-by KEYID [--json] --server URL --ca FILE --token TOKEN

PRODUCT/VERSION is a release signed with KEYID, which must be revoked
(rampart incident revoke-key). Each device that runs it or is assigned
it is assigned the newest release of the product older than it, for the
device's hardware, at or above the device's security version, and signed
with no revoked key. A device for which no such release exists is listed
with why (publish a fixed release for it). Audited. Needs an operator or
admin token. --json prints {"release", "assigned", "unchanged",
"devices": [{"id", "assigned", "note"}]}.

Flags:
` + serverFlagsHelp + `    --affected-by KEYID  the revoked key
    --json               print JSON

Example:
    rampart incident redeploy acme-gw/2.4.1 --affected-by 4f1c...e9
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("incident redeploy", flag.ContinueOnError)
		key := fs.String("affected-by", "", "")
		asJSON := fs.Bool("json", false, "")
		c, pos, err := connect(e, fs, args, 1, usagef("rampart incident redeploy --help shows an example", "incident redeploy takes the affected release, PRODUCT/VERSION"))
		if err != nil {
			return err
		}
		if *key == "" {
			return usagef("the key given to rampart incident revoke-key", "incident redeploy needs --affected-by KEYID")
		}
		out, err := c.Redeploy(context.Background(), pos[0], *key)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(out)
		}
		w := e.stdout
		for _, d := range out.Devices {
			switch {
			case d.Assigned != "" && d.Note != "":
				fmt.Fprintf(w, "%s: %s (%s)\n", termsafe.String(d.ID), termsafe.String(d.Assigned), termsafe.String(d.Note))
			case d.Assigned != "":
				fmt.Fprintf(w, "%s: %s\n", termsafe.String(d.ID), termsafe.String(d.Assigned))
			default:
				fmt.Fprintf(w, "%s: nothing eligible: %s\n", termsafe.String(d.ID), termsafe.String(d.Note))
			}
		}
		fmt.Fprintf(e.stderr, "rampart: %d device(s) assigned a known-good release, %d left without one\n", out.Assigned, out.Unchanged)
		return nil
	},
}
