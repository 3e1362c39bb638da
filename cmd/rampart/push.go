package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
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
		ctx := context.Background()
		before, err := c.Versions(ctx)
		if err != nil {
			return err
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		ps, err := r.PushSet(before)
		if err != nil {
			return err
		}
		fetch := func(name string) ([]byte, error) { return c.Metadata(ctx, name) }
		if ps.Empty() {
			// A push whose answer was lost or refused is adopted now.
			adopted, err := r.AdoptPublished(fetch)
			if err != nil {
				return err
			}
			if adopted {
				fmt.Fprintf(e.stdout, "the server already had what is staged; %s/public now mirrors it\n", pos[0])
			} else {
				fmt.Fprintln(e.stderr, "rampart: note: the server is up to date; nothing to push")
			}
			return nil
		}
		for _, b := range ps.Blobs {
			has, err := c.HasBlob(ctx, b.SHA256)
			if err != nil {
				return err
			}
			if has {
				continue
			}
			f, err := os.Open(b.Path)
			if err != nil {
				return err
			}
			src, stop := startProgress(e, "uploading "+filepath.Base(b.Path), f, b.Length)
			err = c.PutBlob(ctx, b.SHA256, b.Length, src)
			stop()
			f.Close()
			if err != nil {
				return fmt.Errorf("uploading %s: %w", b.Path, err)
			}
		}
		res, err := c.Push(ctx, ps.Roots, ps.Targets, ps.Roles)
		if err != nil {
			return err
		}
		// Mirror what the server published, once it verifies.
		if _, err := r.AdoptPublished(fetch); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "pushed to %s: root %d, targets %d, snapshot %d, timestamp %d\n", c.Base(), res.Versions["root"], res.Versions["targets"], res.Versions["snapshot"], res.Versions["timestamp"])
		for _, rel := range res.Releases {
			fmt.Fprintf(e.stdout, "  new release %s (logged)\n", rel)
		}
		return nil
	},
}
