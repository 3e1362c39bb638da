package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/termsafe"
)

var deviceListCmd = &cmdSpec{
	name:    "device list",
	summary: "list devices, optionally those a CEL selector picks",
	usage: `
Usage: rampart device list [--select EXPR] [--json] --server URL --ca FILE --token TOKEN

Lists enrolled devices in id order: id, hardware, tags, the release it
runs (after a confirmed boot), its security version, state and last
check-in. --select is a CEL expression over the device: id, hardware,
tags (a tag the device lacks reads as ""), version, security_version and
risk (the tag "risk"). Needs an operator, auditor or admin token.

--json prints a JSON array of objects with the members id, hardware,
tags, version, security_version, state, last_seen (null before the
first report) and last_refusal (when the device last refused an update
as tampered).

Flags:
` + serverFlagsHelp + `    --select EXPR    a CEL selector
    --json           print JSON

Example:
    rampart device list --select 'hardware == "acme-gw-rev2" && tags.site != "lab"' --json
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("device list", flag.ContinueOnError)
		sel := fs.String("select", "", "")
		asJSON := fs.Bool("json", false, "")
		c, _, err := connect(e, fs, args, 0, usagef("rampart device list --help shows an example", "device list takes no arguments"))
		if err != nil {
			return err
		}
		var all []api.DeviceSummary
		err = c.Devices(context.Background(), *sel, func(page []api.DeviceSummary) error {
			all = append(all, page...)
			return nil
		})
		if err != nil {
			return err
		}
		if *asJSON {
			if all == nil {
				all = []api.DeviceSummary{}
			}
			return json.NewEncoder(e.stdout).Encode(all)
		}
		if len(all) == 0 {
			fmt.Fprintln(e.stderr, "rampart: no device matches")
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tHARDWARE\tVERSION\tSECURITY\tSTATE\tLAST SEEN\tTAGS")
		for _, d := range all {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", termsafe.String(d.ID), termsafe.String(d.Hardware), orDash(d.Version),
				d.SecurityVersion, termsafe.String(d.State), timeOrDash(d.LastSeen), tagText(d.Tags))
		}
		return tw.Flush()
	},
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return termsafe.String(s)
}

func timeOrDash(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func tagText(tags map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		parts = append(parts, termsafe.String(k+"="+tags[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

var deviceShowCmd = &cmdSpec{
	name:    "device show",
	summary: "show a device: state, tags, assignment and report history",
	usage: `
Usage: rampart device show ID [--json] --server URL --ca FILE --token TOKEN

Shows what device list shows, plus what is assigned to the device, its
kept reports (newest first, with their reasons) and counts per status.
Needs an operator, auditor or admin token.

--json prints the server's answer (GET /api/v1/devices/ID in docs/api.md).

Flags:
` + serverFlagsHelp + `    --json           print JSON

Example:
    rampart device show gw-0042 --json
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("device show", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "")
		c, pos, err := connect(e, fs, args, 1, usagef("", "device show takes the device id"))
		if err != nil {
			return err
		}
		d, err := c.Device(context.Background(), pos[0])
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(d)
		}
		w := e.stdout
		fmt.Fprintf(w, "device    %s\nhardware  %s\nstate     %s\nrunning   %s (security version %d)\nassigned  %s\ntags      %s\nlast seen %s\n",
			termsafe.String(d.ID), termsafe.String(d.Hardware), termsafe.String(d.State), orDash(d.Version), d.SecurityVersion,
			orDash(d.Assigned), tagText(d.Tags), timeOrDash(&d.LastSeen))
		if d.LastRefusal != "" {
			fmt.Fprintf(w, "refused   %s (last tamper detection)\n", termsafe.String(d.LastRefusal))
		}
		if d.Anomalies > 0 {
			fmt.Fprintf(w, "anomalies %d (last: %s)\n", d.Anomalies, termsafe.String(d.LastAnomaly))
		}
		if len(d.Reports) > 0 {
			fmt.Fprintln(w, "reports:")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for _, r := range d.Reports {
				fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", r.Counter, r.At.UTC().Format(time.RFC3339), termsafe.String(r.Status), orDash(r.Version), orDash(r.Reason))
			}
			tw.Flush()
		}
		return nil
	},
}

var deviceTagCmd = &cmdSpec{
	name:    "device tag",
	summary: "set operator tags on a device",
	usage: `
Usage: rampart device tag ID KEY=VALUE... --server URL --ca FILE --token TOKEN

Keys are 1-63 of a-z 0-9 _, starting with a letter (selectors and policy
read them as tags.KEY); values at most 128 bytes. A device has at most 32
tags; the tag "risk" is its risk level for policy. Needs an operator or
admin token.

Flags:
` + serverFlagsHelp + `
Example:
    rampart device tag gw-0042 site=berlin ring=canary
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("device tag", flag.ContinueOnError)
		sf := addServerFlags(fs)
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) < 2 {
			return usagef("rampart device tag --help shows an example", "device tag takes the device id and KEY=VALUE tags")
		}
		set := map[string]string{}
		for _, kv := range pos[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return usagef("give tags as KEY=VALUE", "%q is not KEY=VALUE", termsafe.String(kv))
			}
			set[k] = v
		}
		return setTags(e, sf, pos[0], set, nil)
	},
}

var deviceUntagCmd = &cmdSpec{
	name:    "device untag",
	summary: "remove operator tags from a device",
	usage: `
Usage: rampart device untag ID KEY... --server URL --ca FILE --token TOKEN

Removes tags (a key the device does not have is not an error). Needs an
operator or admin token.

Flags:
` + serverFlagsHelp + `
Example:
    rampart device untag gw-0042 ring
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("device untag", flag.ContinueOnError)
		sf := addServerFlags(fs)
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) < 2 {
			return usagef("", "device untag takes the device id and the keys to remove")
		}
		return setTags(e, sf, pos[0], nil, pos[1:])
	},
}

func setTags(e *env, sf serverFlags, id string, set map[string]string, unset []string) error {
	c, err := sf.client(e)
	if err != nil {
		return err
	}
	tags, err := c.SetTags(context.Background(), id, set, unset)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", termsafe.String(id), tagText(tags))
	return nil
}

var releaseListCmd = &cmdSpec{
	name:    "release list",
	summary: "list the releases a server publishes",
	usage: `
Usage: rampart release list [--product P] [--json] --server URL --ca FILE --token TOKEN

Lists the published releases, newest first per product: version,
security version, the product's signers whose signatures verify and
whether they meet the delegation's threshold, the release's index in
the transparency log, and when it was created. Needs a release-manager,
operator, auditor or admin token.

--json prints a JSON array of objects with the members target, product,
version, security_version, hardware, signers, threshold, threshold_met,
log_index and created.

Flags:
` + serverFlagsHelp + `    --product P      only this product's releases
    --json           print JSON

Example:
    rampart release list --product acme-gw --json
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("release list", flag.ContinueOnError)
		product := fs.String("product", "", "")
		asJSON := fs.Bool("json", false, "")
		c, _, err := connect(e, fs, args, 0, usagef("", "release list takes no arguments"))
		if err != nil {
			return err
		}
		rels, err := c.Releases(context.Background(), *product)
		if err != nil {
			return err
		}
		if *asJSON {
			if rels == nil {
				rels = []api.Release{}
			}
			return json.NewEncoder(e.stdout).Encode(rels)
		}
		if len(rels) == 0 {
			fmt.Fprintln(e.stderr, "rampart: no published release")
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RELEASE\tSECURITY\tSIGNERS\tLOG INDEX\tLOG PROOF\tCREATED")
		for _, r := range rels {
			met := "below threshold"
			if r.ThresholdMet {
				met = "threshold met"
			}
			idx := "-"
			if r.LogIndex != nil {
				idx = fmt.Sprint(*r.LogIndex)
			}
			proof := termsafe.String(r.LogProof)
			if r.LogProofError != "" {
				proof += ": " + termsafe.String(r.LogProofError)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d of %d, %s\t%s\t%s\t%s\n", termsafe.String(r.Target), r.SecurityVersion, len(r.Signers), r.Threshold, met, idx, proof, r.Created.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	},
}
