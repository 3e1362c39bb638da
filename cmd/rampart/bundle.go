package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/bundle"
)

var bundleCmd = &command{
	name:    "bundle",
	summary: "write an offline bundle of a published release",
	usage: `
Usage: rampart bundle DIR PRODUCT/VERSION -o|--output FILE

Writes one file holding the release's image, its chunk index and every
metadata file needed to verify it offline: the root chain, timestamp,
snapshot, targets and the product role. The release must be published.

Example:
    rampart bundle repo acme-gw/2.4.1 -o acme-gw-2.4.1.rbundle
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("bundle", flag.ContinueOnError)
		out := fs.String("o", "", "")
		fs.StringVar(out, "output", "", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 2 || *out == "" {
			return usagef("example: rampart bundle repo acme-gw/2.4.1 -o acme-gw-2.4.1.rbundle", "bundle takes DIR and PRODUCT/VERSION, and -o FILE")
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		p, err := r.FindPublished(pos[1])
		if err != nil {
			return err
		}
		c, err := r.BundleContents(p)
		if err != nil {
			return err
		}
		img, err := os.Open(p.ImagePath)
		if err != nil {
			return err
		}
		defer img.Close()
		src, stop := startProgress(e, "bundling", img, c.ImageSize)
		err = atomicfile.Write(*out, 0o644, func(w io.Writer) error { return bundle.Write(w, c, src) })
		stop()
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s (%s)\n", *out, p.Target)
		return nil
	},
}
