package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/termsafe"
)

var fleetStatsCmd = &cmdSpec{
	name:    "fleet stats",
	summary: "show fleet metrics: devices per release, success rate, install time, mttr, tamper detections",
	usage: `
Usage: rampart fleet stats [--json] --server URL --ca FILE --token TOKEN

Devices (unrevoked) per release and per security version they last
confirmed; the update success rate (confirmed installs over confirmed
installs plus rollbacks and failed installs, in every rollout); the time
from a release's hand-out to the device's confirmed boot (p50, p95); the
mean time to recover from a failed deployment (a device found on a
release signed with a revoked key, until it confirms a good release);
and the verification refusals devices reported, by attack class
(tamper detections: not failures). A metric nothing measured yet is "-"
(null in JSON). --json prints {"devices", "by_version", "by_security_version",
"update_success_rate", "time_to_install_p50_s", "time_to_install_p95_s",
"mttr_s", "tamper_detections"}. Needs an operator, auditor or admin token.

Flags:
` + serverFlagsHelp + `    --json           print JSON

Example:
    rampart fleet stats --json
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("fleet stats", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "")
		c, _, err := connect(e, fs, args, 0, usagef("", "fleet stats takes no arguments"))
		if err != nil {
			return err
		}
		st, err := c.FleetStats(context.Background())
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(st)
		}
		w := e.stdout
		fmt.Fprintf(w, "devices               %d\n", st.Devices)
		for _, v := range sortedByCount(st.ByVersion) {
			fmt.Fprintf(w, "release               %s: %d\n", termsafe.String(v), st.ByVersion[v])
		}
		for _, v := range sortedByCount(st.BySecurityVersion) {
			fmt.Fprintf(w, "security version      %s: %d\n", termsafe.String(v), st.BySecurityVersion[v])
		}
		fmt.Fprintf(w, "update success rate   %s\n", optional(st.UpdateSuccessRate, func(f float64) string { return strconv.FormatFloat(f*100, 'f', 2, 64) + "%" }))
		fmt.Fprintf(w, "time to install       p50 %s, p95 %s\n", optional(st.TimeToInstallP50, seconds), optional(st.TimeToInstallP95, seconds))
		fmt.Fprintf(w, "mttr                  %s\n", optional(st.MTTR, seconds))
		for _, class := range sortedByCount(st.TamperDetections) {
			if n := st.TamperDetections[class]; n > 0 {
				fmt.Fprintf(w, "tamper detections     %s: %d\n", termsafe.String(class), n)
			}
		}
		return nil
	},
}

func seconds(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) + "s" }

func optional(f *float64, format func(float64) string) string {
	if f == nil {
		return "-"
	}
	return format(*f)
}

// sortedByCount returns m's keys, the largest count first (ties by name).
func sortedByCount(m map[string]int) []string {
	return slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		if a < b {
			return -1
		}
		return 1
	})
}

// printRolloutStats prints a rollout's metrics (rollout show).
func printRolloutStats(e *env, st *api.RolloutStats) {
	if st == nil {
		return
	}
	w := e.stdout
	fmt.Fprintf(w, "success   %s, install time p50 %s, p95 %s, mttr %s\n",
		optional(st.UpdateSuccessRate, func(f float64) string { return strconv.FormatFloat(f*100, 'f', 2, 64) + "%" }),
		optional(st.TimeToInstallP50, seconds), optional(st.TimeToInstallP95, seconds), optional(st.MTTR, seconds))
	for _, class := range sortedByCount(st.TamperDetections) {
		if n := st.TamperDetections[class]; n > 0 {
			fmt.Fprintf(w, "tamper    %d x %s\n", n, termsafe.String(class))
		}
	}
}
