// Package pushaccept decides what the server's hosted image repository
// accepts. It is pure: Accept takes the metadata the server holds and the
// metadata an operator pushes, and returns the new repository state and
// the payloads it needs, or a typed refusal. Storage, HTTP and the online
// signing of snapshot and timestamp (package onlineroles) happen elsewhere.
//
// A push is accepted only if the repository after it verifies completely,
// as a TUF client would check it from the first root: every new root is
// signed by a threshold of the previous root's keys and of its own, every
// pushed role is exactly the next version and signed by a threshold of its
// delegator's current keys (so revoked keys no longer count), every role
// that was not pushed still meets its threshold under the new delegations,
// nothing has expired, published releases are immutable, every release
// lies inside its role's delegated paths, and no product's security
// version goes backwards unless the release records why.
package pushaccept

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/verify"
)

// Code is a stable refusal code, returned to clients in API errors.
type Code string

const (
	BadSignature      Code = "bad-signature"
	VersionNotNext    Code = "version-not-next"
	Expired           Code = "expired"
	Malformed         Code = "malformed"
	UnknownRole       Code = "unknown-role"
	ReleaseImmutable  Code = "release-immutable"
	SecurityLowered   Code = "security-version-lowered"
	OutsideDelegation Code = "path-outside-delegation"
	NothingPushed     Code = "nothing-pushed"
)

// Error is a refused push.
type Error struct {
	Code Code
	Role string
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func refuse(c Code, role, format string, args ...any) *Error {
	return &Error{Code: c, Role: role, Msg: fmt.Sprintf(format, args...)}
}

// State is the signed metadata the server holds.
type State struct {
	// Roots holds every root version in order, starting at version 1.
	Roots   [][]byte
	Targets []byte
	Roles   map[string][]byte
}

// Push is what an operator uploads: any new root versions (in order), a
// new targets, new product roles.
type Push struct {
	Roots   [][]byte
	Targets []byte
	Roles   map[string][]byte
}

// Blob is a payload or chunk index the server must hold before the push
// takes effect.
type Blob struct {
	SHA256 string
	Length int64
}

// NewRelease is a release the push adds.
type NewRelease struct {
	Target string
	Meta   *release.Meta
	Image  Blob
	Index  Blob
}

// Accepted is the result of an accepted push.
type Accepted struct {
	State State
	// Root is the newest root, for signing snapshot and timestamp.
	Root *metadata.Metadata[metadata.RootType]
	// Versions of targets and every product role after the push.
	Versions    map[string]int64
	Changed     []string
	NewReleases []NewRelease
}

// Accept checks a push against the current state at time now.
func Accept(cur State, p Push, now time.Time) (*Accepted, error) {
	if len(p.Roots) == 0 && p.Targets == nil && len(p.Roles) == 0 {
		return nil, refuse(NothingPushed, "", "the push carries no metadata")
	}
	next := State{Roots: append(append([][]byte{}, cur.Roots...), p.Roots...), Targets: cur.Targets, Roles: map[string][]byte{}}
	for k, v := range cur.Roles {
		next.Roles[k] = v
	}
	if len(next.Roots) == 0 {
		return nil, refuse(Malformed, "root", "the first push must carry root version 1")
	}

	// Root chain: the first root is trusted because an administrator
	// pushed it; each later one must be signed by both thresholds.
	root, err := parseRoot(next.Roots[0])
	if err != nil {
		return nil, err
	}
	if root.Signed.Version != 1 {
		return nil, refuse(VersionNotNext, "root", "the first root must be version 1, not %d", root.Signed.Version)
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return nil, refuse(BadSignature, "root", "root version 1 is not signed by a threshold of its own keys: %v", err)
	}
	for _, raw := range next.Roots[1:] {
		r, err := parseRoot(raw)
		if err != nil {
			return nil, err
		}
		if r.Signed.Version != root.Signed.Version+1 {
			return nil, refuse(VersionNotNext, "root", "root version %d follows version %d; the next must be %d", r.Signed.Version, root.Signed.Version, root.Signed.Version+1)
		}
		if err := root.VerifyDelegate(metadata.ROOT, r); err != nil {
			return nil, refuse(BadSignature, "root", "root version %d is not signed by a threshold of the version %d root keys: %v", r.Signed.Version, root.Signed.Version, err)
		}
		if err := r.VerifyDelegate(metadata.ROOT, r); err != nil {
			return nil, refuse(BadSignature, "root", "root version %d is not signed by a threshold of its own keys: %v", r.Signed.Version, err)
		}
		root = r
	}
	if root.Signed.IsExpired(now) {
		return nil, refuse(Expired, "root", "root version %d expired at %s", root.Signed.Version, stamp(root.Signed.Expires))
	}

	// Targets.
	if p.Targets != nil {
		next.Targets = p.Targets
	}
	if next.Targets == nil {
		return nil, refuse(Malformed, "targets", "the repository has no targets metadata yet; push it with the first root")
	}
	targets, err := parseTargets("targets", next.Targets)
	if err != nil {
		return nil, err
	}
	if p.Targets != nil {
		if err := checkNext("targets", cur.Targets, targets); err != nil {
			return nil, err
		}
	}
	if err := root.VerifyDelegate(metadata.TARGETS, targets); err != nil {
		return nil, refuse(BadSignature, "targets", "targets version %d is not signed by a threshold of the targets keys of root version %d: %v%s", targets.Signed.Version, root.Signed.Version, err, resignHint(p.Targets == nil, "targets"))
	}
	if targets.Signed.IsExpired(now) {
		return nil, refuse(Expired, "targets", "targets version %d expired at %s", targets.Signed.Version, stamp(targets.Signed.Expires))
	}
	if len(targets.Signed.Targets) != 0 {
		return nil, refuse(Malformed, "targets", "the targets role must not list releases itself; releases belong to product roles")
	}

	// Product roles.
	delegated := map[string]metadata.DelegatedRole{}
	if targets.Signed.Delegations != nil {
		for _, d := range targets.Signed.Delegations.Roles {
			delegated[d.Name] = d
		}
	}
	for name := range p.Roles {
		if _, ok := delegated[name]; !ok {
			return nil, refuse(UnknownRole, name, "role %s is not delegated by targets version %d", name, targets.Signed.Version)
		}
	}
	acc := &Accepted{Root: root, Versions: map[string]int64{"targets": targets.Signed.Version}}
	if p.Targets != nil {
		acc.Changed = append(acc.Changed, "targets")
	}
	names := make([]string, 0, len(delegated))
	for n := range delegated {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		d := delegated[name]
		raw, pushed := p.Roles[name]
		if pushed {
			next.Roles[name] = raw
		} else if raw = cur.Roles[name]; raw == nil {
			return nil, refuse(Malformed, name, "role %s is delegated but has no metadata; push it with the targets that delegates it", name)
		}
		role, err := parseTargets(name, raw)
		if err != nil {
			return nil, err
		}
		if pushed {
			if err := checkNext(name, cur.Roles[name], role); err != nil {
				return nil, err
			}
		}
		if err := targets.VerifyDelegate(name, role); err != nil {
			return nil, refuse(BadSignature, name, "%s version %d is not signed by a threshold of its current keys: %v%s", name, role.Signed.Version, err, resignHint(!pushed, name))
		}
		if role.Signed.IsExpired(now) {
			return nil, refuse(Expired, name, "%s version %d expired at %s", name, role.Signed.Version, stamp(role.Signed.Expires))
		}
		acc.Versions[name] = role.Signed.Version
		if pushed {
			acc.Changed = append(acc.Changed, name)
			rels, err := checkReleases(name, d, cur.Roles[name], role)
			if err != nil {
				return nil, err
			}
			acc.NewReleases = append(acc.NewReleases, rels...)
		}
	}
	for name := range next.Roles {
		if _, ok := delegated[name]; !ok {
			delete(next.Roles, name) // undelegated roles are no longer served
		}
	}
	acc.State = next
	return acc, nil
}

func resignHint(unchanged bool, role string) string {
	if unchanged {
		return fmt.Sprintf("; its keys changed, so push a new version of %s signed by its current keys in the same push", role)
	}
	return ""
}

// checkNext requires m to be exactly one version after the current bytes.
func checkNext(role string, current []byte, m *metadata.Metadata[metadata.TargetsType]) error {
	want := int64(1)
	if current != nil {
		c, err := parseTargets(role, current)
		if err != nil {
			return err
		}
		want = c.Signed.Version + 1
	}
	if m.Signed.Version != want {
		return refuse(VersionNotNext, role, "%s version %d pushed; the next version must be %d", role, m.Signed.Version, want)
	}
	return nil
}

// checkReleases enforces release rules on a pushed product role and
// returns the releases it adds.
func checkReleases(name string, d metadata.DelegatedRole, current []byte, role *metadata.Metadata[metadata.TargetsType]) ([]NewRelease, error) {
	old := map[string]*metadata.TargetFiles{}
	var highest uint64
	if current != nil {
		c, err := parseTargets(name, current)
		if err != nil {
			return nil, err
		}
		old = c.Signed.Targets
		for path, tf := range old {
			if m, err := release.FromTarget(path, tf); err == nil {
				highest = max(highest, m.SecurityVersion)
			}
		}
	}
	for path, tf := range old {
		n, ok := role.Signed.Targets[path]
		if !ok {
			return nil, refuse(ReleaseImmutable, name, "release %s was removed; published releases stay", path)
		}
		if !sameTarget(tf, n) {
			return nil, refuse(ReleaseImmutable, name, "release %s was changed; published releases are immutable, publish a new version", path)
		}
	}
	var out []NewRelease
	paths := make([]string, 0, len(role.Signed.Targets))
	for path := range role.Signed.Targets {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		if _, ok := old[path]; ok {
			continue
		}
		tf := role.Signed.Targets[path]
		if in, _ := d.IsDelegatedPath(path); !in {
			return nil, refuse(OutsideDelegation, name, "release %s is outside the paths %v delegated to %s", path, d.Paths, name)
		}
		m, err := release.FromTarget(path, tf)
		if err != nil {
			return nil, refuse(Malformed, name, "release %s: %v", path, err)
		}
		if m.Product != name {
			return nil, refuse(OutsideDelegation, name, "release %s belongs to product %s, not %s", path, m.Product, name)
		}
		if m.SecurityVersion < highest && m.LowerSecurityVersionReason == "" {
			return nil, refuse(SecurityLowered, name, "release %s has security version %d, below %s's highest %d, and records no reason", path, m.SecurityVersion, name, highest)
		}
		sum, ok := tf.Hashes["sha256"]
		if !ok || len(sum) != 32 {
			return nil, refuse(Malformed, name, "release %s has no sha256 hash", path)
		}
		out = append(out, NewRelease{
			Target: path, Meta: m,
			Image: Blob{SHA256: hex.EncodeToString(sum), Length: tf.Length},
			Index: Blob{SHA256: m.Index.SHA256, Length: m.Index.Length},
		})
	}
	return out, nil
}

// sameTarget reports whether two target entries have the same signed
// content: their canonical JSON, which is what signatures cover, is equal.
// So a re-signed role that carries a published release serialised
// compactly or with other indentation is accepted, and any change of
// length, hashes (added ones included), custom metadata or unrecognised
// fields is not.
func sameTarget(a, b *metadata.TargetFiles) bool {
	ca, err := cjson.EncodeCanonical(a)
	if err != nil {
		return false
	}
	cb, err := cjson.EncodeCanonical(b)
	return err == nil && bytes.Equal(ca, cb)
}

func parseRoot(raw []byte) (*metadata.Metadata[metadata.RootType], error) {
	r, err := metadata.Root().FromBytes(raw)
	if err != nil {
		return nil, refuse(Malformed, "root", "root metadata: %v", err)
	}
	return r, nil
}

func parseTargets(role string, raw []byte) (*metadata.Metadata[metadata.TargetsType], error) {
	m, err := metadata.Targets().FromBytes(raw)
	if err != nil {
		return nil, refuse(Malformed, role, "%s metadata: %v", role, err)
	}
	return m, nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Index checks that a pushed chunk index belongs to a new release, reusing
// the offline verifier's rules (hash, length, and agreement with the
// target's own length and hash), and returns it decoded.
func Index(r NewRelease, tf *metadata.TargetFiles, data []byte) (*chunkindex.Index, error) {
	return verify.IndexOf(tf, r.Meta, r.Meta.Product, data)
}
