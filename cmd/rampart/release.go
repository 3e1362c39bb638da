package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"strconv"

	"github.com/rampartfw/rampart/internal/offlinerepo"
)

var releaseAddCmd = &cmdSpec{
	name:    "release add",
	summary: "add a firmware image as a new release of a product",
	usage: `
Usage: rampart release add DIR IMAGE --product P --version V --security-version N
                           --hardware ID... [--filename NAME]
                           [--allow-lower-security-version REASON]
                           [--chunk-size BYTES] [--json]

Copies IMAGE into the repository, cuts it into chunks and writes its chunk
index, and adds the target P/V/NAME to the product's role (staged: its
release signers sign it next). V is a semantic version; N is the
anti-rollback counter devices compare with theirs. N may not go below the
product's highest security version unless a REASON is given, which is
recorded in the signed metadata. A version is never added twice.
--chunk-size overrides the chunk index's chunk size (a power of two,
default 1 MiB; see docs/release-format.md).

Example:
    rampart release add repo fw.img --product acme-gw --version 2.4.1 \
        --security-version 7 --hardware acme-gw-rev2
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("release add", flag.ContinueOnError)
		product := fs.String("product", "", "")
		ver := fs.String("version", "", "")
		sv := fs.String("security-version", "", "")
		var hw multiFlag
		fs.Var(&hw, "hardware", "")
		filename := fs.String("filename", "", "")
		lower := fs.String("allow-lower-security-version", "", "")
		chunk := fs.Int64("chunk-size", 0, "")
		asJSON := fs.Bool("json", false, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 2 {
			return usagef("rampart release add --help shows an example", "release add takes DIR and IMAGE")
		}
		if *product == "" || *ver == "" || *sv == "" || len(hw) == 0 {
			return usagef("rampart release add --help shows an example", "release add needs --product, --version, --security-version and at least one --hardware")
		}
		n, err := strconv.ParseUint(*sv, 10, 64)
		if err != nil {
			return usagef("", "--security-version %q is not a non-negative integer", *sv)
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		stop := startSpinner(e, "indexing "+pos[1])
		res, err := r.AddRelease(offlinerepo.ReleaseOptions{
			Image: pos[1], Product: *product, Version: *ver, SecurityVersion: n, Hardware: hw,
			Filename: *filename, LowerSecurityVersionReason: *lower, ChunkSize: *chunk,
		})
		stop()
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(map[string]any{
				"target": res.Target, "length": res.Length, "sha256": res.SHA256, "chunks": res.Chunks, "release": res.Meta,
			})
		}
		fmt.Fprintf(e.stdout, "staged %s: %d bytes in %d chunks, sha256 %s\n", res.Target, res.Length, res.Chunks, res.SHA256)
		fmt.Fprintf(e.stderr, "rampart: next, %s's release signers sign: rampart repo sign %s %s --key KEY\n", *product, pos[0], *product)
		return nil
	},
}
