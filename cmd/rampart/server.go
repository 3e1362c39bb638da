package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/termsafe"
)

// serverFlags are the flags of every command that talks to rampart-server.
type serverFlags struct {
	server, ca, token *string
}

// connect adds the server flags to fs, parses args, refuses with usage
// unless exactly n positional arguments remain, and makes the client:
// the start every one-shot server command shares.
func connect(e *env, fs *flag.FlagSet, args []string, n int, usage error) (*client.Client, []string, error) {
	sf := addServerFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if len(pos) != n {
		return nil, nil, usage
	}
	c, err := sf.client(e)
	return c, pos, err
}

func addServerFlags(fs *flag.FlagSet) serverFlags {
	return serverFlags{fs.String("server", "", ""), fs.String("ca", "", ""), fs.String("token", "", "")}
}

func (f serverFlags) client(e *env) (*client.Client, error) {
	pick := func(v *string, env string) string {
		if *v != "" {
			return *v
		}
		return e.getenv(env)
	}
	srv := pick(f.server, "RAMPART_SERVER")
	if srv == "" {
		return nil, usagef("give the server's https URL", "no server: give --server URL (or RAMPART_SERVER)")
	}
	c, err := client.New(srv, pick(f.ca, "RAMPART_CA"), pick(f.token, "RAMPART_TOKEN"))
	if err != nil {
		return nil, err // a *client.SetupError: exit 2, with its own hint
	}
	return c, nil
}

const serverFlagsHelp = `    --server URL     the server, https://HOST:PORT (or RAMPART_SERVER)
    --ca FILE        the server CA certificate to trust (or RAMPART_CA)
    --token TOKEN    an operator token (or RAMPART_TOKEN)
`

var serverKeysCmd = &cmdSpec{
	name:    "server keys",
	summary: "fetch the server's online public keys for the root ceremony",
	usage: `
Usage: rampart server keys --server URL --ca FILE -o DIR

Writes DIR/snapshot.pub and DIR/timestamp.pub (the online keys to name in
rampart repo init --snapshot-key/--timestamp-key), DIR/director-targets.pub,
DIR/director-snapshot.pub and DIR/director-timestamp.pub (the director's
online keys, for the director root), and DIR/log.pub (the transparency
log's verifier key). Existing files are not replaced.

Prints each file with its key id, and log.pub with the verifier key it
holds (which embeds the key's hash). Compare them, out of band, with the
ids rampart-server logs at startup ("online keys") before naming the keys
in rampart repo init and before provisioning devices with log.pub.

Flags:
` + serverFlagsHelp + `    -o DIR           where to write the keys

Example:
    rampart server keys --server https://127.0.0.1:8443 --ca srv/ca.pem -o online/
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("server keys", flag.ContinueOnError)
		sf := addServerFlags(fs)
		out := fs.String("o", "", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 0 || *out == "" {
			return usagef("example: rampart server keys --server https://127.0.0.1:8443 --ca srv/ca.pem -o online/", "server keys takes -o DIR and no arguments")
		}
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		ks, err := c.Keys(context.Background())
		if err != nil {
			return err
		}
		var missing []string
		for _, k := range [][2]string{{"snapshot", ks.Snapshot}, {"timestamp", ks.Timestamp}, {"log_key", ks.LogKey}} {
			if k[1] == "" {
				missing = append(missing, k[0])
			}
		}
		if len(missing) != 0 {
			return fmt.Errorf("the server's answer lacks online keys: %s", strings.Join(missing, ", "))
		}
		// Check every key before writing any file.
		type keyFile struct{ name, content, line string }
		var files []keyFile
		for _, role := range []string{"snapshot", "timestamp", "director-targets", "director-snapshot", "director-timestamp"} {
			if ks.Role(role) == "" {
				continue
			}
			pub, err := keys.ParsePublic([]byte(ks.Role(role)))
			if err != nil {
				return fmt.Errorf("the server's %s key: %w", role, err)
			}
			id, err := keys.ID(pub)
			if err != nil {
				return fmt.Errorf("the server's %s key: %w", role, err)
			}
			files = append(files, keyFile{role + ".pub", ks.Role(role), fmt.Sprintf("%s key id %s %s", role, id, keys.TypeOf(pub))})
		}
		vkey := strings.TrimSpace(ks.LogKey)
		if _, err := note.NewVerifier(vkey); err != nil {
			return fmt.Errorf("the server's log key %s: %v", termsafe.String(vkey), err)
		}
		files = append(files, keyFile{"log.pub", vkey + "\n", "log verifier key " + termsafe.String(vkey)})
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		for _, f := range files {
			path := filepath.Join(*out, f.name)
			if err := atomicfile.CreateNew(path, []byte(f.content), 0o644); err != nil {
				tw.Flush()
				return err
			}
			fmt.Fprintf(tw, "%s\t%s\n", path, f.line)
		}
		return tw.Flush()
	},
}

var auditVerifyCmd = &cmdSpec{
	name:    "audit verify",
	summary: "fetch the audit log and check its hash chain",
	usage: `
Usage: rampart audit verify --server URL --ca FILE --token TOKEN [--head SEQ:HASH]

Downloads every audit entry and recomputes the hash chain; an edited,
deleted or reordered entry is named and the command exits 1. Prints the
head (sequence and hash): record it elsewhere and pass it back with --head
later to detect a rewritten or truncated tail. When the server's retention
pruned the log's start, the chain is verified from the anchor it keeps
(the last pruned entry's hash, recorded by a chained prune-audit entry);
a --head older than the anchor cannot be checked and is refused. Needs an
auditor token.

Flags:
` + serverFlagsHelp + `    --head SEQ:HASH  a head recorded earlier, which must still be in the log

Example:
    rampart audit verify --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$AUDITOR"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
		sf := addServerFlags(fs)
		head := fs.String("head", "", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 0 {
			return usagef("", "audit verify takes no arguments")
		}
		var hd *auditHead
		if *head != "" {
			seqS, hash, ok := strings.Cut(*head, ":")
			var seq uint64
			if _, err := fmt.Sscan(seqS, &seq); !ok || err != nil {
				return usagef("as printed by an earlier audit verify", "--head %q is not SEQ:HASH", *head)
			}
			hd = &auditHead{seq, hash}
		}
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		const whole = 10 * time.Minute
		ctx, cancel := context.WithTimeoutCause(context.Background(), whole, &client.TimeoutError{Op: "audit verify", Reason: "the log was not read within " + whole.String()})
		defer cancel()
		n, last, err := verifyAuditLog(ctx, c, hd)
		if err != nil {
			return err
		}
		if n == 0 {
			fmt.Fprintln(e.stdout, "verified 0 audit entries")
			return nil
		}
		if first := last.Seq - uint64(n) + 1; first > 1 {
			fmt.Fprintf(e.stdout, "entries before seq %d were pruned by the server's retention; the chain is verified from their anchor\n", first)
		}
		fmt.Fprintf(e.stdout, "verified %d audit entries; head %d:%s\n", n, last.Seq, last.Hash)
		return nil
	},
}

// auditHead is a head recorded earlier (--head SEQ:HASH).
type auditHead struct {
	seq  uint64
	hash string
}

// verifyAuditLog fetches the audit log page by page and checks its hash
// chain, each page after the previous page's last entry, and that head
// (if not nil) is still in it. It holds one page at a time and returns
// the number of entries and the last one. When the server's retention
// pruned the log's start, the chain is checked from the anchor (the last
// pruned entry's seq and hash), which a chained prune-audit entry must
// record, and a head recorded before the anchor can no longer be checked.
func verifyAuditLog(ctx context.Context, c *client.Client, head *auditHead) (n int, last *audit.Entry, err error) {
	anchor, err := c.AuditAnchor(ctx)
	if err != nil {
		return 0, nil, err
	}
	if anchor.Seq > 0 {
		last = &audit.Entry{Seq: anchor.Seq, Hash: anchor.Hash}
	}
	headSeen, anchorRecorded := false, anchor.Seq == 0
	if head != nil && head.seq <= anchor.Seq {
		if head.seq < anchor.Seq || head.hash != anchor.Hash {
			return 0, nil, &auditRefusal{fmt.Errorf("%w: recorded head %d was pruned by the server's retention (the log is kept after seq %d); record heads more often than the retention", audit.ErrBroken, head.seq, anchor.Seq)}
		}
		headSeen = true
	}
	err = c.AuditPagesAfter(ctx, anchor.Seq, func(page []audit.Entry) error {
		if err := audit.Verify(last, page); err != nil {
			return &auditRefusal{pageIndex(err, n)}
		}
		if head != nil && page[0].Seq <= head.seq && head.seq <= page[len(page)-1].Seq {
			headSeen = true
			if err := audit.VerifyHead(page, head.seq, head.hash); err != nil {
				return &auditRefusal{pageIndex(err, n)}
			}
		}
		for _, e := range page {
			if e.Action == "prune-audit" && e.Detail["through_seq"] == fmt.Sprint(anchor.Seq) && e.Detail["through_hash"] == anchor.Hash {
				anchorRecorded = true
			}
		}
		n += len(page)
		l := page[len(page)-1]
		last = &l
		return nil
	})
	if err != nil {
		// A chain error from above, or the client's refusal of pages
		// that do not follow one another (both exit 1), or a failure to
		// fetch.
		return 0, nil, err
	}
	if !anchorRecorded {
		return 0, nil, &auditRefusal{fmt.Errorf("%w: the log starts after seq %d, but no prune-audit entry in it records that anchor (entries were deleted, not pruned)", audit.ErrBroken, anchor.Seq)}
	}
	if head != nil && !headSeen {
		// The log is empty or ends before the head: VerifyHead says so.
		var tail []audit.Entry
		if last != nil {
			tail = []audit.Entry{*last}
		}
		if err := audit.VerifyHead(tail, head.seq, head.hash); err != nil {
			return 0, nil, &auditRefusal{err}
		}
	}
	return n, last, nil
}

// pageIndex makes a chain error's index count from the log's start
// rather than from its page's.
func pageIndex(err error, offset int) error {
	var be *audit.BrokenError
	if errors.As(err, &be) {
		be.Index += offset
	}
	return err
}

// auditRefusal makes a broken chain exit with the refusal code.
type auditRefusal struct{ err error }

func (a *auditRefusal) Error() string             { return a.err.Error() }
func (a *auditRefusal) Unwrap() error             { return a.err }
func (a *auditRefusal) FailureKind() failure.Kind { return failure.Refused }
func (a *auditRefusal) FailureHint() string {
	return "the audit log in the server's database was altered; preserve the database and investigate"
}

var directorPushRootCmd = &cmdSpec{
	name:    "director push-root",
	summary: "push the offline-signed director root to the server (admin)",
	usage: `
Usage: rampart director push-root DIR --server URL --ca FILE --token ADMIN

DIR is a repository made with rampart repo init whose targets, snapshot and
timestamp keys are the server's director keys (rampart server keys writes
them) and whose root the root key holders signed. Every root version the
server does not have yet is pushed; each must be signed by a threshold of
the previous root's keys and of its own. Pushed roots are recorded in
DIR/public/, so a later rampart repo rotate DIR stages the next version:
that is how the director's online keys rotate (docs/incident-response.md).

Flags:
` + serverFlagsHelp + `
Example:
    rampart repo init director --root-key keys/root-a.pub --root-key keys/root-b.pub --root-threshold 2 \
        --targets-key online/director-targets.pub --snapshot-key online/director-snapshot.pub \
        --timestamp-key online/director-timestamp.pub
    rampart repo sign director root --key keys/root-a.key
    rampart repo sign director root --key keys/root-b.key
    rampart director push-root director --server https://127.0.0.1:8443 --ca srv/ca.pem --token "$ADMIN"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("director push-root", flag.ContinueOnError)
		sf := addServerFlags(fs)
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("rampart director push-root --help shows an example", "director push-root takes the director repository directory")
		}
		c, err := sf.client(e)
		if err != nil {
			return err
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		ctx := context.Background()
		have, err := c.DirectorRootVersion(ctx)
		if err != nil {
			return err
		}
		roots, err := r.RootsAfter(have)
		if err != nil {
			return err
		}
		if len(roots) == 0 {
			fmt.Fprintln(e.stderr, "rampart: note: the server has every root version; nothing to push")
			return nil
		}
		v, err := c.PushDirectorRoots(ctx, roots)
		if err != nil {
			return err
		}
		// The server holds them: record them as published, so that the
		// next rotation stages the version after them.
		if err := r.AdoptPushedRoots(roots); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "director root version %d on the server\n", v)
		return nil
	},
}
