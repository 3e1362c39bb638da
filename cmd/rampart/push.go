package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

var repoPushCmd = &command{
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
		if len(ps.Roots) == 0 && ps.Targets == nil && len(ps.Roles) == 0 {
			fmt.Fprintln(e.stderr, "rampart: note: the server is up to date; nothing to push")
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
		// Mirror what the server published.
		files := map[string][]byte{}
		fetch := func(name string) error {
			b, err := c.Metadata(ctx, name)
			if err != nil {
				return fmt.Errorf("fetching %s: %w", name, err)
			}
			files[name] = b
			return nil
		}
		for v := before["root"] + 1; v <= res.Versions["root"]; v++ {
			if err := fetch(fmt.Sprintf("%d.root.json", v)); err != nil {
				return err
			}
			files["root.json"] = files[fmt.Sprintf("%d.root.json", v)]
		}
		for role, v := range res.Versions {
			if role == "root" || role == "timestamp" || v <= before[role] {
				continue
			}
			if err := fetch(fmt.Sprintf("%d.%s.json", v, role)); err != nil {
				return err
			}
		}
		if err := fetch("timestamp.json"); err != nil {
			return err
		}
		if err := r.AdoptPublished(ps, files); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "pushed to %s: root %d, targets %d, snapshot %d, timestamp %d\n", c.Base(), res.Versions["root"], res.Versions["targets"], res.Versions["snapshot"], res.Versions["timestamp"])
		for _, rel := range res.Releases {
			fmt.Fprintf(e.stdout, "  new release %s (logged)\n", rel)
		}
		return nil
	},
}
