package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/offlinerepo"
)

var repoPushCmd = &cmdSpec{
	name:    "repo push",
	summary: "push signed roles and new releases to rampart-server",
	usage: `
Usage: rampart repo push DIR --server URL --ca FILE --token TOKEN

Sends the server every root, targets and product role newer than what it
holds (each must meet its thresholds, as for publish), after uploading the
payloads and chunk indexes of new releases it does not have. The server
verifies everything again, logs the releases, and signs snapshot and
timestamp with its online keys; DIR/public then mirrors what the server
published, so bundles can be made from it. Needs a release-manager token.

Flags:
` + serverFlagsHelp + `
Example:
    rampart repo push repo --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$TOKEN"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo push", flag.ContinueOnError)
		sf := addServerFlags(fs)
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("rampart repo push --help shows an example", "repo push takes the repository directory")
		}
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		out, err := c.PushRepo(context.Background(), client.RepoPush{
			Open: func() (*offlinerepo.Repo, error) { return openRepo(e, pos[0]) },
			Upload: func(path string, r io.Reader, length int64) (io.Reader, func()) {
				return startProgress(e, "uploading "+filepath.Base(path), r, length)
			},
		})
		if err != nil {
			return err
		}
		if out.Result == nil {
			if out.Adopted {
				fmt.Fprintf(e.stdout, "the server already had what is staged; %s/public now mirrors it\n", pos[0])
			} else {
				fmt.Fprintln(e.stderr, "rampart: note: the server is up to date; nothing to push")
			}
			return nil
		}
		res := out.Result
		fmt.Fprintf(e.stdout, "pushed to %s: root %d, targets %d, snapshot %d, timestamp %d\n", c.Base(), res.Versions["root"], res.Versions["targets"], res.Versions["snapshot"], res.Versions["timestamp"])
		for _, rel := range res.Releases {
			fmt.Fprintf(e.stdout, "  new release %s (logged)\n", rel)
		}
		return nil
	},
}
