package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/termsafe"
)

var logVerifyCmd = &cmdSpec{
	name:    "log verify",
	summary: "check the transparency log: signature, consistency, inclusion",
	usage: `
Usage: rampart log verify --log-key FILE [--checkpoint OLD] [--release TARGET] [-o NEW]
                          --server URL --ca FILE

Fetches the log's current checkpoint and checks it is signed by the log key
(FILE holds the verifier key, as rampart server keys writes log.pub). With
--checkpoint, checks that the current log is an append-only extension of
the checkpoint saved earlier (a fork or a rollback is refused). With
--release, checks that the release's statement is included under the
current checkpoint and prints it. -o saves the verified checkpoint for the
next run. Exit status 1 means the log failed a check.

Flags:
` + serverFlagsHelp + `    --log-key FILE       the log's verifier key
    --checkpoint FILE    a checkpoint verified before
    --release TARGET     a release's target path, e.g. acme-gw/2.4.1/fw.img
    -o FILE              where to save the current checkpoint

Example:
    rampart log verify --log-key online/log.pub --checkpoint last.cp -o last.cp \
        --release acme-gw/2.4.1/fw.img --server https://127.0.0.1:8443 --ca srv/ca.pem
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("log verify", flag.ContinueOnError)
		sf := addServerFlags(fs)
		keyFile := fs.String("log-key", "", "")
		old := fs.String("checkpoint", "", "")
		rel := fs.String("release", "", "")
		out := fs.String("o", "", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 0 || *keyFile == "" {
			return usagef("rampart log verify --help shows an example", "log verify needs --log-key and no arguments")
		}
		verifier, err := readLogKey(*keyFile)
		if err != nil {
			return err
		}
		origin := verifier.Name()
		// Text from the key file or the server is made safe to print.
		show := termsafe.String
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		ctx := context.Background()
		raw, err := c.Checkpoint(ctx)
		if err != nil {
			return err
		}
		cp, err := logproof.OpenCheckpoint(origin, verifier, raw)
		if err != nil {
			return logRefusal{err}
		}
		fmt.Fprintf(e.stdout, "checkpoint of %s: size %d, signed by the log key\n", show(origin), cp.Size)
		if *old != "" {
			prev, err := os.ReadFile(*old)
			if err != nil {
				return err
			}
			pcp, err := logproof.OpenCheckpoint(origin, verifier, prev)
			if err != nil {
				return logRefusal{fmt.Errorf("%s: %w", *old, err)}
			}
			proof, err := c.Consistency(ctx, pcp.Size, cp.Size)
			if err != nil && pcp.Size <= cp.Size {
				return err
			}
			if err := logproof.VerifyConsistency(origin, verifier, prev, raw, proof); err != nil {
				return logRefusal{err}
			}
			fmt.Fprintf(e.stdout, "consistent with %s (size %d)\n", *old, pcp.Size)
		}
		if *rel != "" {
			stmt, proof, err := c.LogProof(ctx, *rel)
			if err != nil {
				return err
			}
			if _, err := logproof.VerifyInclusion(origin, verifier, stmt, proof); err != nil {
				return logRefusal{err}
			}
			st, err := logproof.ParseStatement(stmt)
			if err != nil || st.Target != *rel {
				return logRefusal{fmt.Errorf("%w: the logged statement is not about %s", logproof.ErrNotIncluded, *rel)}
			}
			var signers []string
			for _, id := range st.SignerKeyIDs {
				signers = append(signers, show(id))
			}
			fmt.Fprintf(e.stdout, "%s is in the log at index %d: sha256 %s, %d bytes, security version %d, %s version %d signed by %s\n",
				show(st.Target), proof.Index, show(st.SHA256), st.Length, st.SecurityVersion, show(st.Role), st.RoleVersion, strings.Join(signers, ", "))
		}
		if *out != "" {
			if err := atomicfile.WriteFile(*out, raw, 0o644); err != nil {
				return err
			}
		}
		return nil
	},
}

type logRefusal struct{ err error }

func (l logRefusal) Error() string             { return l.err.Error() }
func (l logRefusal) Unwrap() error             { return l.err }
func (l logRefusal) FailureKind() failure.Kind { return failure.Refused }
func (l logRefusal) FailureHint() string {
	return "the server showed a log that the log key did not sign or that is not an extension of what you saw before: investigate before trusting its releases"
}

// readLogKey reads a log verifier key file (log.pub of rampart server keys).
func readLogKey(path string) (note.Verifier, error) {
	kb, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(kb)))
	if err != nil {
		return nil, usagef("the file holds one line like origin+hash+key (rampart server keys writes log.pub)", "%s: %v", path, err)
	}
	return verifier, nil
}
