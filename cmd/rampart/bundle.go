package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/termsafe"
)

var bundleCmd = &cmdSpec{
	name:    "bundle",
	summary: "write an offline bundle of a published release",
	usage: `
Usage: rampart bundle DIR PRODUCT/VERSION -o|--output FILE [--server URL --ca FILE]

Writes one file holding the release's image, its chunk index and every
metadata file needed to verify it offline: the root chain, timestamp,
snapshot, targets and the product role. The release must be published.

With a server (--server, or RAMPART_SERVER), the bundle also carries the
release's transparency-log proof from it. Devices install a bundle only
with that proof, unless their offline.require_log is false; rampart
verify does not need it.

Flags:
    -o FILE          the bundle to write (also --output)
` + serverFlagsHelp + `
Example:
    rampart bundle repo acme-gw/2.4.1 -o acme-gw-2.4.1.rbundle
    rampart bundle repo acme-gw/2.4.1 -o acme-gw-2.4.1.rbundle --server https://127.0.0.1:8443 --ca srv/ca.pem
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("bundle", flag.ContinueOnError)
		out := fs.String("o", "", "")
		fs.StringVar(out, "output", "", "")
		sf := addServerFlags(fs)
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
		if *sf.server != "" || e.getenv("RAMPART_SERVER") != "" {
			if c.LogProof, err = fetchLogProof(e, sf, p); err != nil {
				return err
			}
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
		if c.LogProof == nil {
			fmt.Fprintf(e.stdout, "wrote %s (%s)\n", *out, p.Target)
			fmt.Fprintf(e.stderr, "rampart: note: %s carries no log proof, so devices refuse it unless offline.require_log is false; give --server URL --ca FILE to add it\n", *out)
			return nil
		}
		fmt.Fprintf(e.stdout, "wrote %s (%s, with its log proof)\n", *out, p.Target)
		return nil
	},
}

// fetchLogProof asks the server for the release's log proof and checks
// that its statement is this release, so a wrong server or a stale
// mirror is caught here rather than on the device (which verifies all of
// it, signature and inclusion included).
func fetchLogProof(e *env, sf serverFlags, p *offlinerepo.Published) ([]byte, error) {
	target, sum := p.Target, p.File.Hashes["sha256"].String()
	cl, err := sf.client(e)
	if err != nil {
		return nil, err
	}
	b, err := cl.LogProofJSON(context.Background(), target)
	if err != nil {
		return nil, fmt.Errorf("fetching the log proof of %s: %w", target, err)
	}
	env, err := logproof.ParseEnvelope(b)
	if err != nil {
		return nil, fmt.Errorf("the server's log proof of %s: %v", target, err)
	}
	st, err := logproof.ParseStatement(env.Statement)
	if err != nil {
		return nil, fmt.Errorf("the server's log proof of %s: %w", target, err)
	}
	if st.Target != target || st.Length != p.File.Length || st.SHA256 != sum {
		return nil, fmt.Errorf("the server logged %s (%d bytes, sha256 %s), not this release (%d bytes, sha256 %s): is --server the server this repository was pushed to?", termsafe.String(st.Target), st.Length, termsafe.String(st.SHA256), p.File.Length, sum)
	}
	if len(b) > bundle.MaxLogProof {
		return nil, fmt.Errorf("the server's log proof of %s is %d bytes, more than a bundle holds (%d)", target, len(b), bundle.MaxLogProof)
	}
	return b, nil
}
