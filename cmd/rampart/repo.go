package main

import (
	"bufio"
	"crypto"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/termsafe"
)

func openRepo(e *env, dir string) (*offlinerepo.Repo, error) {
	r, err := offlinerepo.Open(dir)
	if err != nil {
		return nil, err
	}
	r.Notify = func(s string) { fmt.Fprintf(e.stderr, "rampart: note: %s\n", s) }
	return r, nil
}

var repoInitCmd = &cmdSpec{
	name:    "repo init",
	summary: "create a repository and its root of trust",
	usage: `
Usage: rampart repo init DIR --root-key PUB... --root-threshold N --targets-key PUB...
                         (--online-key PUB | --snapshot-key PUB --timestamp-key PUB)
                         [--targets-threshold N] [--expiry ROLE=DURATION...]

Creates DIR with root version 1 and an empty targets role, both staged and
unsigned. Keys are .pub files or PKCS#11 URIs. The online key signs
snapshot and timestamp at every publish.

Flags:
    --root-key PUB           a root key (repeat for each key holder)
    --root-threshold N       root signatures required (default 1)
    --targets-key PUB        a targets key (repeat)
    --targets-threshold N    targets signatures required (default 1)
    --online-key PUB         the snapshot and timestamp key
    --snapshot-key PUB       the snapshot key, when it differs
    --timestamp-key PUB      the timestamp key, when it differs
    --expiry ROLE=DURATION   how long new versions of ROLE stay valid: root
                             (default 365d), targets (182d), delegated
                             (every product role, 182d), snapshot (7d),
                             timestamp (1d), or a product name; DURATION
                             like 36h, 30d, 1y

Example:
    rampart repo init repo --root-key keys/root-a.pub --root-key keys/root-b.pub \
        --root-threshold 2 --targets-key keys/targets.pub --online-key keys/online.pub
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo init", flag.ContinueOnError)
		var rootKeys, targetsKeys, expiry multiFlag
		fs.Var(&rootKeys, "root-key", "")
		fs.Var(&targetsKeys, "targets-key", "")
		rootTh := fs.Int("root-threshold", 1, "")
		targetsTh := fs.Int("targets-threshold", 1, "")
		online := fs.String("online-key", "", "")
		snapKey := fs.String("snapshot-key", "", "")
		tsKey := fs.String("timestamp-key", "", "")
		fs.Var(&expiry, "expiry", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("rampart repo init --help shows an example", "repo init takes one argument, the repository directory")
		}
		if *snapKey == "" {
			*snapKey = *online
		}
		if *tsKey == "" {
			*tsKey = *online
		}
		if len(rootKeys) == 0 || len(targetsKeys) == 0 || *snapKey == "" || *tsKey == "" {
			return usagef("rampart repo init --help shows an example", "repo init needs --root-key, --targets-key and --online-key")
		}
		opt := offlinerepo.InitOptions{RootThreshold: *rootTh, TargetsThreshold: *targetsTh, Expiry: map[string]offlinerepo.Duration{}}
		if opt.RootKeys, err = loadPublics(rootKeys); err != nil {
			return err
		}
		if opt.TargetsKeys, err = loadPublics(targetsKeys); err != nil {
			return err
		}
		if opt.SnapshotKeys, err = loadPublics([]string{*snapKey}); err != nil {
			return err
		}
		if opt.TimestampKeys, err = loadPublics([]string{*tsKey}); err != nil {
			return err
		}
		for _, x := range expiry {
			role, dur, ok := strings.Cut(x, "=")
			if !ok {
				return usagef("example: --expiry timestamp=2d", "--expiry %q is not ROLE=DURATION", x)
			}
			d, err := offlinerepo.ParseDuration(dur)
			if err != nil {
				return usagef("", "--expiry %s: %v", role, err)
			}
			opt.Expiry[role] = d
		}
		r, err := offlinerepo.Init(pos[0], opt)
		if err != nil {
			return err
		}
		defer r.Close()
		fmt.Fprintf(e.stderr, "rampart: created %s; next, the root key holders sign: rampart repo sign %s root --key KEY\n", pos[0], pos[0])
		return nil
	},
}

var repoSignCmd = &cmdSpec{
	name:    "repo sign",
	summary: "review a staged role's changes and add one signature",
	usage: `
Usage: rampart repo sign DIR ROLE --key KEY [--yes] [--passphrase-file FILE]

Shows what a signature on the staged version of ROLE (root, targets or a
product) approves: every change against its published version, which is
first verified against the root chain (targets added, removed or changed
with length, sha256 and security version; keys, delegations and
thresholds; expiry). On a terminal it then asks for confirmation; scripts
pass --yes after reviewing the same output with rampart repo diff. Then
KEY (a .key file or a PKCS#11 URI) signs exactly what was shown. Each key
holder signs on their own; a key signs a role at most once. Prints the
key id that signed.

Read the changes: a target you did not add, a key you do not know or a
threshold you did not agree to means the repository was tampered with.
Answer no, and see docs/key-ceremony.md.

Flags:
    --key KEY                the signing key
    --yes                    sign without asking (the changes are still shown)
    --passphrase-file FILE   the key's passphrase (else RAMPART_PASSPHRASE or a prompt)

Example:
    rampart repo sign repo acme-gw --key keys/rel-a.key
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo sign", flag.ContinueOnError)
		key := fs.String("key", "", "")
		yes := fs.Bool("yes", false, "")
		ppFile := fs.String("passphrase-file", "", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 2 || *key == "" {
			return usagef("example: rampart repo sign repo root --key keys/root-a.key", "repo sign takes DIR and ROLE, and --key")
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		d, err := r.Diff(pos[1])
		if err != nil {
			return err
		}
		printDiff(e.stdout, d)
		if !*yes {
			if err := confirm(e, fmt.Sprintf("Sign %s version %d with %s?", d.Role, d.Version, *key)); err != nil {
				return err
			}
		}
		s, err := keys.Open(*key, passphraseSource(e, *ppFile))
		if err != nil {
			return err
		}
		defer s.Close()
		id, err := r.SignReviewed(pos[1], s, d.Digest)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s signed by %s\n", pos[1], id)
		return nil
	},
}

var repoDiffCmd = &cmdSpec{
	name:    "repo diff",
	summary: "show what signing a staged role would approve",
	usage: `
Usage: rampart repo diff DIR [ROLE] [--json]

For ROLE, or every staged role: the changes against its published
version, after verifying the published repository against the root chain.
This is what rampart repo sign shows before it signs. Exits 0 whatever the
changes.

Example:
    rampart repo diff repo acme-gw
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo diff", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 && len(pos) != 2 {
			return usagef("example: rampart repo diff repo acme-gw", "repo diff takes DIR and an optional ROLE")
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		var ds []*offlinerepo.RoleDiff
		if len(pos) == 2 {
			d, err := r.Diff(pos[1])
			if err != nil {
				return err
			}
			ds = append(ds, d)
		} else if ds, err = r.Diffs(); err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(ds)
		}
		if len(ds) == 0 {
			fmt.Fprintln(e.stdout, "nothing staged")
		}
		for _, d := range ds {
			printDiff(e.stdout, d)
		}
		return nil
	},
}

// printDiff shows a key holder what a signature on a staged role approves.
func printDiff(w io.Writer, d *offlinerepo.RoleDiff) {
	base := "never published before"
	if d.Base > 0 {
		base = fmt.Sprintf("against published version %d, which verifies", d.Base)
	}
	fmt.Fprintf(w, "%s version %d, %s (signed content sha256 %s):\n", termsafe.String(d.Role), d.Version, base, d.Digest)
	if len(d.Changes) == 0 {
		fmt.Fprintln(w, "    no change but the version")
	}
	mark := map[string]string{offlinerepo.Added: "+", offlinerepo.Removed: "-", offlinerepo.Changed: "~"}
	for _, c := range d.Changes {
		line := fmt.Sprintf("  %s %s", mark[c.Op], c.Kind)
		if c.Name != "" {
			line += " " + c.Name
		}
		if c.Detail != "" {
			line += ": " + c.Detail
		}
		fmt.Fprintln(w, termsafe.Bounded(line, 4096))
	}
}

// confirm asks a yes/no question on the terminal; anything but yes, and
// no terminal at all, refuses.
func confirm(e *env, question string) error {
	if !isTerminal(e.stdin) {
		return usagef("review the changes above (rampart repo diff shows them too), then run again with --yes", "not a terminal, so there is no one to confirm: pass --yes to sign what is shown")
	}
	fmt.Fprintf(e.stderr, "%s [y/N] ", question)
	line, err := bufio.NewReader(io.LimitReader(e.stdin, 256)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return &declined{}
}

// declined is a key holder's no.
type declined struct{}

func (*declined) Error() string             { return "not signed: declined" }
func (*declined) FailureKind() failure.Kind { return failure.Refused }
func (*declined) FailureHint() string {
	return "if the changes are not what you expected, do not sign; docs/key-ceremony.md says what to do"
}

var repoImportCmd = &cmdSpec{
	name:    "repo import-signatures",
	summary: "merge signatures made on other copies of a staged role",
	usage: `
Usage: rampart repo import-signatures DIR ROLE FILE...

Key holders can sign in parallel, each on their own copy of the repository
directory. Each FILE is a signed copy of ROLE's staged metadata (from the
copy's staged/ directory); its content must be identical to DIR's staged
ROLE. Every signature not yet present is checked (authorised key, valid
signature) and added. Prints the key ids added.

Example:
    rampart repo import-signatures repo acme-gw holder-b/repo/staged/roles/acme-gw.json
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo import-signatures", flag.ContinueOnError)
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) < 3 {
			return usagef("rampart repo import-signatures --help shows an example", "repo import-signatures takes DIR, ROLE and at least one FILE")
		}
		copies := map[string][]byte{}
		for _, f := range pos[2:] {
			b, err := readBounded(f, bundle.MaxMetadata)
			if err != nil {
				return err
			}
			copies[f] = b
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		added, err := r.ImportSignatures(pos[1], copies)
		if err != nil {
			return err
		}
		if len(added) == 0 {
			fmt.Fprintf(e.stderr, "rampart: note: no new signatures; %s already carries them all\n", pos[1])
		}
		for _, id := range added {
			fmt.Fprintf(e.stdout, "%s signed by %s\n", pos[1], id)
		}
		return nil
	},
}

var repoDelegateCmd = &cmdSpec{
	name:    "repo delegate",
	summary: "delegate a product line to its release signers",
	usage: `
Usage: rampart repo delegate DIR PRODUCT --key PUB... --threshold N

Delegates the target paths PRODUCT/*/* from the targets role to a new
terminating role PRODUCT held by the given keys, N of which must sign each
release. Stages targets (its signers sign again) and the new role.

Example:
    rampart repo delegate repo acme-gw --key keys/rel-a.pub --key keys/rel-b.pub \
        --key keys/rel-c.pub --threshold 2
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo delegate", flag.ContinueOnError)
		var ks multiFlag
		fs.Var(&ks, "key", "")
		th := fs.Int("threshold", 1, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 2 || len(ks) == 0 {
			return usagef("rampart repo delegate --help shows an example", "repo delegate takes DIR and PRODUCT, and at least one --key")
		}
		pubs, err := loadPublics(ks)
		if err != nil {
			return err
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		return r.Delegate(pos[1], pubs, *th)
	},
}

var repoStatusCmd = &cmdSpec{
	name:    "repo status",
	summary: "show each role's version, signatures, missing keys and expiry",
	usage: `
Usage: rampart repo status DIR [--json]

For root, targets and every product role: the version the next publish
would write, whether it is staged, the signatures present against the
threshold, the key ids still missing, and the expiry. Exits 0 whatever the
state; "ready" says whether publish would accept the role.

Example:
    rampart repo status repo
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo status", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("example: rampart repo status repo", "repo status takes one argument, the repository directory")
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		st, err := r.Status()
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROLE\tVERSION\tSTATE\tSIGNATURES\tEXPIRES\tREADY")
		for _, s := range st {
			state := "published"
			if s.Staged {
				state = "staged"
			}
			var sigs []string
			for _, q := range s.Requirements {
				sigs = append(sigs, fmt.Sprintf("%d/%d", len(q.Signed), q.Threshold))
			}
			ready := "yes"
			if s.Expired {
				ready = "no (expired)"
			} else if !s.Ready {
				ready = "no"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", s.Role, s.Version, state, strings.Join(sigs, " + "), s.Expires.Format("2006-01-02T15:04:05Z"), ready)
		}
		tw.Flush()
		for _, s := range st {
			for _, q := range s.Requirements {
				if !q.Met() {
					fmt.Fprintf(e.stdout, "%s needs %d more signature(s) from %s; not yet signed by:\n", s.Role, q.Threshold-len(q.Signed), q.Name)
					for _, id := range q.Missing {
						fmt.Fprintf(e.stdout, "    %s\n", id)
					}
				}
			}
			for _, id := range s.Invalid {
				fmt.Fprintf(e.stdout, "%s carries a signature by %s that does not verify (a revoked key, or a changed document)\n", s.Role, id)
			}
		}
		ds, err := r.Diffs()
		if err != nil {
			return err
		}
		for _, d := range ds {
			fmt.Fprintln(e.stdout)
			printDiff(e.stdout, d)
		}
		return nil
	},
}

var repoPublishCmd = &cmdSpec{
	name:    "repo publish",
	summary: "sign snapshot and timestamp and write DIR/public",
	usage: `
Usage: rampart repo publish DIR --key KEY... [--passphrase-file FILE] [--json]

Refuses, writing nothing, unless every role meets its threshold and none has
expired. Then signs a new snapshot and timestamp with the online key(s),
checks the whole new repository as a TUF client would, and writes the staged
roles, payloads and chunk indexes into DIR/public, timestamp.json last.
Run it with no staged change to renew snapshot and timestamp.

Example:
    rampart repo publish repo --key keys/online.key
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo publish", flag.ContinueOnError)
		var ks multiFlag
		fs.Var(&ks, "key", "")
		ppFile := fs.String("passphrase-file", "", "")
		asJSON := fs.Bool("json", false, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 || len(ks) == 0 {
			return usagef("example: rampart repo publish repo --key keys/online.key", "repo publish takes DIR and at least one --key")
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		pass := passphraseSource(e, *ppFile)
		var signers []keys.Signer
		for _, k := range ks {
			s, err := keys.Open(k, pass)
			if err != nil {
				return err
			}
			defer s.Close()
			signers = append(signers, s)
		}
		res, err := r.Publish(signers)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(res)
		}
		fmt.Fprintf(e.stdout, "published %s/public: root %d, targets %d, snapshot %d, timestamp %d\n", pos[0], res.Versions["root"], res.Versions["targets"], res.Versions["snapshot"], res.Versions["timestamp"])
		return nil
	},
}

var repoRotateCmd = &cmdSpec{
	name:    "repo rotate",
	summary: "add or revoke a role's keys, change its threshold",
	usage: `
Usage: rampart repo rotate DIR ROLE [--add-key PUB...] [--remove-key KEYID|PUB...] [--threshold N]

ROLE is root, targets, snapshot, timestamp or a product. Keys of the
top-level roles live in root: rotating them stages a new root version, which
must be signed by a threshold of the old root keys and of the new ones.
Product keys live in targets: rotating them stages targets. After a key is
revoked, its signatures stop counting; a role left below its threshold must
be staged again (rampart repo stage) and re-signed before publishing.

Example:
    rampart repo rotate repo acme-gw --remove-key 4f1c...e9 --add-key keys/rel-d.pub
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo rotate", flag.ContinueOnError)
		var add, remove multiFlag
		fs.Var(&add, "add-key", "")
		fs.Var(&remove, "remove-key", "")
		th := fs.Int("threshold", 0, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 2 {
			return usagef("rampart repo rotate --help shows an example", "repo rotate takes DIR and ROLE")
		}
		opt := offlinerepo.RotateOptions{Threshold: *th}
		if opt.Add, err = loadPublics(add); err != nil {
			return err
		}
		for _, rm := range remove {
			id := rm
			if _, err := os.Stat(rm); err == nil {
				var pub crypto.PublicKey
				if pub, err = keys.LoadPublic(rm); err != nil {
					return err
				}
				if id, err = keys.ID(pub); err != nil {
					return err
				}
			}
			opt.Remove = append(opt.Remove, id)
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		return r.Rotate(pos[1], opt)
	},
}

var repoStageCmd = &cmdSpec{
	name:    "repo stage",
	summary: "start a new version of a role (renew expiry, re-sign)",
	usage: `
Usage: rampart repo stage DIR ROLE

Stages a new version of ROLE with a fresh expiry and no signatures.

Example:
    rampart repo stage repo targets
`,
	run: func(e *env, args []string) error {
		return withRepoRole(e, args, "repo stage", func(r *offlinerepo.Repo, role string) error { return r.Stage(role) })
	},
}

var repoUnstageCmd = &cmdSpec{
	name:    "repo unstage",
	summary: "discard the staged version of a role",
	usage: `
Usage: rampart repo unstage DIR ROLE

Example:
    rampart repo unstage repo acme-gw
`,
	run: func(e *env, args []string) error {
		return withRepoRole(e, args, "repo unstage", func(r *offlinerepo.Repo, role string) error { return r.Unstage(role) })
	},
}

func withRepoRole(e *env, args []string, name string, f func(*offlinerepo.Repo, string) error) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("", "%s takes DIR and ROLE", name)
	}
	r, err := openRepo(e, pos[0])
	if err != nil {
		return err
	}
	defer r.Close()
	return f(r, pos[1])
}

var repoSetLogKeyCmd = &cmdSpec{
	name:    "repo set-log-key",
	summary: "name the transparency log's key in the root (stages root)",
	usage: `
Usage: rampart repo set-log-key DIR LOGPUB

LOGPUB is the log's verifier key file (log.pub, as rampart server keys
writes it: origin+hash+key). It stages a new root version that names it;
like every root change it needs a threshold of the previous root's keys
and of its own (rampart repo sign DIR root), then rampart repo push.

Devices verify the transparency log under the key the newest root they
trust names, instead of the key pinned in their configuration; a device
that holds a checkpoint signed by another key discards it and accepts the
named key's next checkpoint. That is how a stolen log key is rotated
(docs/incident-response.md). Compare the key with what the server's
console logs at start before you sign.

Example:
    rampart server keys -o online/ --server https://updates.example.com:8443 --ca srv/ca.pem
    rampart repo set-log-key repo online/log.pub
    rampart repo sign repo root --key keys/root-a.key
    rampart repo sign repo root --key keys/root-b.key
    rampart repo push repo --server https://updates.example.com:8443 --ca srv/ca.pem --token "$TOKEN"
`,
	run: func(e *env, args []string) error {
		fs := flag.NewFlagSet("repo set-log-key", flag.ContinueOnError)
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 2 {
			return usagef("rampart repo set-log-key --help shows an example", "repo set-log-key takes DIR and the log key file")
		}
		// A verifier key is one line of under 1 KiB; the root refuses more.
		b, err := fsys.ReadFile(fsys.OS, pos[1], 4<<10)
		if err != nil {
			return err
		}
		r, err := openRepo(e, pos[0])
		if err != nil {
			return err
		}
		defer r.Close()
		return r.SetLogKey(string(b))
	},
}
