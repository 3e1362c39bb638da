package offlinerepo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/logproof"

	"github.com/rampartfw/rampart/internal/release"
)

// Change operations.
const (
	Added   = "added"
	Removed = "removed"
	Changed = "changed"
)

// Change is one difference between a staged role and the last version of
// it that verifies.
type Change struct {
	Op string `json:"op"`
	// Kind is what changed: target, delegation, key, role-keys, threshold,
	// paths, terminating, consistent-snapshot or expiry.
	Kind string `json:"kind"`
	// Name is the target path, role or key id concerned.
	Name string `json:"name"`
	// Detail says what it is now and, for a change, what it was.
	Detail string `json:"detail"`
}

// RoleDiff is what a key holder signs when they sign a staged role: every
// change against its published version, which verified against the root
// chain before this was computed.
type RoleDiff struct {
	Role    string `json:"role"`
	Version int64  `json:"version"`
	// Base is the published version compared against; 0 when the role was
	// never published, and every entry is then an addition.
	Base int64 `json:"base_version"`
	// Digest is the SHA-256 of the exact bytes a signature covers (the
	// canonical signed part); Sign can be told to sign only that.
	Digest  string   `json:"signed_sha256"`
	Changes []Change `json:"changes"`
}

// Diff returns the changes a signature on the staged role would approve.
func (r *Repo) Diff(role string) (*RoleDiff, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	return s.diff(role)
}

// Diffs returns the diff of every staged role, root first.
func (r *Repo) Diffs() ([]*RoleDiff, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	roles := []string{metadata.ROOT, metadata.TARGETS}
	for _, d := range s.delegatedRoles() {
		roles = append(roles, d.Name)
	}
	var out []*RoleDiff
	for _, role := range roles {
		if _, staged := s.doc(role); !staged {
			continue
		}
		d, err := s.diff(role)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (s *state) diff(role string) (*RoleDiff, error) {
	doc, staged := s.doc(role)
	if doc == nil {
		if _, _, err := s.authorities(role); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w %q", ErrUnknownRole, role)
	}
	if !staged {
		return nil, fmt.Errorf("%w %s (its published version %d is final): stage a new version first with rampart repo stage", ErrNothingStaged, role, versionOf(doc))
	}
	signed, err := signedBytes(doc)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(signed)
	d := &RoleDiff{Role: role, Version: versionOf(doc), Digest: hex.EncodeToString(sum[:]), Changes: []Change{}}
	switch m := doc.(type) {
	case *metadata.Metadata[metadata.RootType]:
		var base *metadata.RootType
		if s.prevRoot != nil {
			base, d.Base = &s.prevRoot.Signed, s.prevRoot.Signed.Version
		}
		d.Changes = diffRoot(base, &m.Signed)
	case *metadata.Metadata[metadata.TargetsType]:
		var base *metadata.TargetsType
		if pub := s.pub.role(role); pub != nil {
			base, d.Base = &pub.Signed, pub.Signed.Version
		}
		d.Changes = diffTargets(base, &m.Signed)
	}
	return d, nil
}

func diffExpiry(was, now time.Time, hadBase bool) []Change {
	if hadBase && was.Equal(now) {
		return nil
	}
	c := Change{Op: Changed, Kind: "expiry", Detail: stampOf(now)}
	if hadBase {
		c.Detail += " (was " + stampOf(was) + ")"
	} else {
		c.Op = Added
	}
	return []Change{c}
}

func stampOf(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func diffRoot(base, next *metadata.RootType) []Change {
	var out []Change
	var baseKeys map[string]*metadata.Key
	var baseRoles map[string]*metadata.Role
	if base != nil {
		baseKeys, baseRoles = base.Keys, base.Roles
	}
	out = append(out, diffKeys(baseKeys, next.Keys)...)
	names := slices.Sorted(maps.Keys(next.Roles))
	for name := range baseRoles {
		if _, ok := next.Roles[name]; !ok {
			out = append(out, Change{Op: Removed, Kind: "role", Name: name})
		}
	}
	for _, name := range names {
		var was *metadata.Role
		if baseRoles != nil {
			was = baseRoles[name]
		}
		out = append(out, diffRoleKeys(name, was, next.Roles[name])...)
	}
	if base != nil && base.ConsistentSnapshot != next.ConsistentSnapshot {
		out = append(out, Change{Op: Changed, Kind: "consistent-snapshot", Name: "consistent_snapshot", Detail: fmt.Sprintf("%v (was %v)", next.ConsistentSnapshot, base.ConsistentSnapshot)})
	}
	// The log key: a signature on root vouches for the key every device
	// will verify the transparency log under.
	var baseFields map[string]any
	if base != nil {
		baseFields = base.UnrecognizedFields
	}
	out = append(out, diffLogKey(baseFields, next.UnrecognizedFields)...)
	var was time.Time
	if base != nil {
		was = base.Expires
	}
	return append(out, diffExpiry(was, next.Expires, base != nil)...)
}

// diffRoleKeys compares the key ids and threshold of one role.
func diffRoleKeys(name string, was, now *metadata.Role) []Change {
	var out []Change
	var wasIDs []string
	if was != nil {
		wasIDs = was.KeyIDs
	}
	for _, id := range sortedIDs(now.KeyIDs) {
		if !slices.Contains(wasIDs, id) {
			out = append(out, Change{Op: Added, Kind: "role-keys", Name: name, Detail: "key " + id + " may now sign " + name})
		}
	}
	for _, id := range sortedIDs(wasIDs) {
		if !slices.Contains(now.KeyIDs, id) {
			out = append(out, Change{Op: Removed, Kind: "role-keys", Name: name, Detail: "key " + id + " no longer signs " + name})
		}
	}
	switch {
	case was == nil:
		out = append(out, Change{Op: Added, Kind: "threshold", Name: name, Detail: fmt.Sprintf("%d of %d keys", now.Threshold, len(now.KeyIDs))})
	case was.Threshold != now.Threshold:
		out = append(out, Change{Op: Changed, Kind: "threshold", Name: name, Detail: fmt.Sprintf("%d of %d keys (was %d of %d)", now.Threshold, len(now.KeyIDs), was.Threshold, len(was.KeyIDs))})
	}
	return out
}

func diffKeys(was, now map[string]*metadata.Key) []Change {
	var out []Change
	for _, id := range slices.Sorted(maps.Keys(now)) {
		if _, ok := was[id]; !ok {
			out = append(out, Change{Op: Added, Kind: "key", Name: id, Detail: keyType(now[id])})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(was)) {
		if _, ok := now[id]; !ok {
			out = append(out, Change{Op: Removed, Kind: "key", Name: id, Detail: keyType(was[id])})
		}
	}
	return out
}

func keyType(k *metadata.Key) string {
	if k == nil {
		return ""
	}
	return k.Type + "/" + k.Scheme
}

func sortedIDs(ids []string) []string {
	out := slices.Clone(ids)
	sort.Strings(out)
	return out
}

// diffLogKey compares the log key member of two roles' unrecognized fields.
// The values are whatever JSON held (a string, or an object from a hostile
// file), so they are compared by their printed form: == on two maps would
// panic.
func diffLogKey(base, next map[string]any) []Change {
	baseLog, hadBase := base[logproof.RootField]
	nextLog, hasNext := next[logproof.RootField]
	was, now := fmt.Sprint(baseLog), fmt.Sprint(nextLog)
	switch {
	case !hadBase && !hasNext, hadBase && hasNext && was == now:
		return nil
	case !hadBase:
		return []Change{{Op: Added, Kind: "log-key", Name: logproof.RootField, Detail: now}}
	case !hasNext:
		return []Change{{Op: Removed, Kind: "log-key", Name: logproof.RootField, Detail: was}}
	}
	return []Change{{Op: Changed, Kind: "log-key", Name: logproof.RootField, Detail: fmt.Sprintf("%s (was %s)", now, was)}}
}

func diffTargets(base, next *metadata.TargetsType) []Change {
	var out []Change
	var baseTargets map[string]*metadata.TargetFiles
	var baseDel *metadata.Delegations
	if base != nil {
		baseTargets, baseDel = base.Targets, base.Delegations
	}
	for _, path := range slices.Sorted(maps.Keys(next.Targets)) {
		now := next.Targets[path]
		was, ok := baseTargets[path]
		switch {
		case !ok:
			out = append(out, Change{Op: Added, Kind: "target", Name: path, Detail: describeTarget(path, now)})
		default:
			if d := targetDelta(path, was, now); d != "" {
				out = append(out, Change{Op: Changed, Kind: "target", Name: path, Detail: d})
			}
		}
	}
	for _, path := range slices.Sorted(maps.Keys(baseTargets)) {
		if _, ok := next.Targets[path]; !ok {
			out = append(out, Change{Op: Removed, Kind: "target", Name: path, Detail: describeTarget(path, baseTargets[path])})
		}
	}
	out = append(out, diffDelegations(baseDel, next.Delegations)...)
	// A log key has no meaning in targets, but a signature would vouch
	// for it all the same: show it.
	var baseFields map[string]any
	if base != nil {
		baseFields = base.UnrecognizedFields
	}
	out = append(out, diffLogKey(baseFields, next.UnrecognizedFields)...)
	var was time.Time
	if base != nil {
		was = base.Expires
	}
	return append(out, diffExpiry(was, next.Expires, base != nil)...)
}

// targetFacts are the properties of a target a signer vouches for.
func targetFacts(path string, tf *metadata.TargetFiles) []struct{ name, value string } {
	facts := []struct{ name, value string }{
		{"length", fmt.Sprint(tf.Length)},
		{"sha256", tf.Hashes["sha256"].String()},
	}
	m, err := release.FromTarget(path, tf)
	if err != nil {
		return append(facts, struct{ name, value string }{"release metadata", "INVALID: " + err.Error()})
	}
	facts = append(facts,
		struct{ name, value string }{"security version", fmt.Sprint(m.SecurityVersion)},
		struct{ name, value string }{"hardware", strings.Join(m.HardwareIDs, ",")},
		struct{ name, value string }{"chunk index sha256", m.Index.SHA256},
	)
	if m.LowerSecurityVersionReason != "" {
		facts = append(facts, struct{ name, value string }{"lower security version reason", m.LowerSecurityVersionReason})
	}
	return facts
}

func describeTarget(path string, tf *metadata.TargetFiles) string {
	var parts []string
	for _, f := range targetFacts(path, tf) {
		parts = append(parts, f.name+" "+f.value)
	}
	return strings.Join(parts, ", ")
}

func targetDelta(path string, was, now *metadata.TargetFiles) string {
	wf, nf := targetFacts(path, was), targetFacts(path, now)
	var parts []string
	for _, n := range nf {
		old := "(none)"
		for _, w := range wf {
			if w.name == n.name {
				old = w.value
			}
		}
		if old != n.value {
			parts = append(parts, fmt.Sprintf("%s %s (was %s)", n.name, n.value, old))
		}
	}
	for _, w := range wf {
		if !slices.ContainsFunc(nf, func(n struct{ name, value string }) bool { return n.name == w.name }) {
			parts = append(parts, fmt.Sprintf("%s removed (was %s)", w.name, w.value))
		}
	}
	return strings.Join(parts, ", ")
}

func diffDelegations(was, now *metadata.Delegations) []Change {
	var wasKeys, nowKeys map[string]*metadata.Key
	var wasRoles, nowRoles []metadata.DelegatedRole
	if was != nil {
		wasKeys, wasRoles = was.Keys, was.Roles
	}
	if now != nil {
		nowKeys, nowRoles = now.Keys, now.Roles
	}
	out := diffKeys(wasKeys, nowKeys)
	find := func(rs []metadata.DelegatedRole, name string) *metadata.DelegatedRole {
		for i := range rs {
			if rs[i].Name == name {
				return &rs[i]
			}
		}
		return nil
	}
	for _, n := range nowRoles {
		w := find(wasRoles, n.Name)
		if w == nil {
			out = append(out, Change{Op: Added, Kind: "delegation", Name: n.Name, Detail: fmt.Sprintf("paths %s, terminating %v", strings.Join(n.Paths, " "), n.Terminating)})
			out = append(out, diffRoleKeys(n.Name, nil, &metadata.Role{KeyIDs: n.KeyIDs, Threshold: n.Threshold})...)
			continue
		}
		out = append(out, diffRoleKeys(n.Name, &metadata.Role{KeyIDs: w.KeyIDs, Threshold: w.Threshold}, &metadata.Role{KeyIDs: n.KeyIDs, Threshold: n.Threshold})...)
		if !slices.Equal(w.Paths, n.Paths) || !slices.Equal(w.PathHashPrefixes, n.PathHashPrefixes) {
			out = append(out, Change{Op: Changed, Kind: "paths", Name: n.Name, Detail: fmt.Sprintf("paths %s (was %s)", strings.Join(n.Paths, " "), strings.Join(w.Paths, " "))})
		}
		if w.Terminating != n.Terminating {
			out = append(out, Change{Op: Changed, Kind: "terminating", Name: n.Name, Detail: fmt.Sprintf("%v (was %v)", n.Terminating, w.Terminating)})
		}
	}
	for _, w := range wasRoles {
		if find(nowRoles, w.Name) == nil {
			out = append(out, Change{Op: Removed, Kind: "delegation", Name: w.Name, Detail: fmt.Sprintf("paths %s", strings.Join(w.Paths, " "))})
		}
	}
	return out
}
