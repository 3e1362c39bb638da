package offlinerepo

import (
	"crypto"
	"fmt"
	"os"
	"slices"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/release"
)

// Delegate delegates the product's target paths (PRODUCT/*/*) from the
// targets role to a new terminating role of the same name, held by
// releaseKeys with the given threshold. The targets role and the new product
// role are staged; both need signatures.
func (r *Repo) Delegate(product string, releaseKeys []crypto.PublicKey, threshold int) error {
	if err := release.ValidateProduct(product); err != nil {
		return err
	}
	s, err := r.load()
	if err != nil {
		return err
	}
	if s.delegation(product) != nil {
		return fmt.Errorf("product %s is %w as a delegated role; change its keys with rampart repo rotate", product, ErrExists)
	}
	if len(releaseKeys) == 0 {
		return fmt.Errorf("%w: a product role needs at least one key", ErrBadInput)
	}
	t := r.stageTargets(s, metadata.TARGETS)
	if t.Signed.Delegations == nil {
		t.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}}
	}
	t.Signed.Delegations.Roles = append(t.Signed.Delegations.Roles, metadata.DelegatedRole{
		Name:        product,
		KeyIDs:      []string{},
		Threshold:   threshold,
		Terminating: true,
		Paths:       []string{release.DelegationPattern(product)},
	})
	for _, pub := range releaseKeys {
		k, err := keys.TUFKey(pub)
		if err != nil {
			return err
		}
		if err := t.Signed.AddKey(k, product); err != nil {
			return err
		}
	}
	d := s.delegation(product)
	if threshold < 1 || threshold > len(d.KeyIDs) {
		return fmt.Errorf("%w: threshold %d must be between 1 and the %d distinct key(s) given", ErrBadInput, threshold, len(d.KeyIDs))
	}
	role := metadata.Targets(r.now().Add(r.cfg.ExpiryFor(product)))
	s.roles[product], s.rolesStaged[product] = role, true
	return r.saveStaged(s, metadata.TARGETS, product)
}

// RotateOptions change a role's keys and threshold.
type RotateOptions struct {
	Add       []crypto.PublicKey
	Remove    []string // key ids
	Threshold int      // 0 keeps the current threshold
}

// Rotate changes the keys of a role. Keys of root, targets, snapshot and
// timestamp live in root, so rotating them stages a new root version, which
// must be signed by a threshold of the old root keys and of the new ones.
// Keys of a product role live in targets, so rotating them stages targets.
// Roles whose existing signatures no longer meet the new threshold must be
// staged again (rampart repo stage) and re-signed before publishing.
func (r *Repo) Rotate(role string, opt RotateOptions) error {
	s, err := r.load()
	if err != nil {
		return err
	}
	if len(opt.Add) == 0 && len(opt.Remove) == 0 && opt.Threshold == 0 {
		return fmt.Errorf("%w: nothing to change (give --add-key, --remove-key or --threshold)", ErrBadInput)
	}
	var ids func() []string
	var add func(*metadata.Key) error
	var remove func(string) error
	var setThreshold func(int)
	var staged []string
	switch role {
	case metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP:
		r.stageRoot(s)
		staged = []string{metadata.ROOT}
		ids = func() []string { return s.root.Signed.Roles[role].KeyIDs }
		add = func(k *metadata.Key) error { return s.root.Signed.AddKey(k, role) }
		remove = func(id string) error { return s.root.Signed.RevokeKey(id, role) }
		setThreshold = func(n int) { s.root.Signed.Roles[role].Threshold = n }
	default:
		if s.delegation(role) == nil {
			return fmt.Errorf("%w %q: not a top-level role nor a delegated product", ErrUnknownRole, role)
		}
		t := r.stageTargets(s, metadata.TARGETS)
		staged = []string{metadata.TARGETS}
		ids = func() []string { return s.delegation(role).KeyIDs }
		add = func(k *metadata.Key) error { return t.Signed.AddKey(k, role) }
		remove = func(id string) error { return t.Signed.RevokeKey(id, role) }
		setThreshold = func(n int) { s.delegation(role).Threshold = n }
	}
	for _, pub := range opt.Add {
		k, err := keys.TUFKey(pub)
		if err != nil {
			return err
		}
		id, _ := k.ID()
		if slices.Contains(ids(), id) {
			return fmt.Errorf("%w: key %s is already a key of %s", ErrBadInput, id, role)
		}
		if err := add(k); err != nil {
			return err
		}
	}
	for _, id := range opt.Remove {
		if !slices.Contains(ids(), id) {
			return fmt.Errorf("%w: key %s is not a key of %s (its keys: %v)", ErrBadInput, id, role, ids())
		}
		if err := remove(id); err != nil {
			return err
		}
	}
	if opt.Threshold != 0 {
		setThreshold(opt.Threshold)
	}
	n := len(ids())
	th := 0
	if role == metadata.ROOT || role == metadata.TARGETS || role == metadata.SNAPSHOT || role == metadata.TIMESTAMP {
		th = s.root.Signed.Roles[role].Threshold
	} else {
		th = s.delegation(role).Threshold
	}
	if th < 1 || th > n {
		return fmt.Errorf("%w: %s would have threshold %d with %d key(s); set --threshold between 1 and %d", ErrBadInput, role, th, n, n)
	}
	return r.saveStaged(s, staged...)
}

// Stage starts a new version of a role with a fresh expiry and no
// signatures, for example to renew a role before it expires or to re-sign
// a product role after one of its keys was revoked.
func (r *Repo) Stage(role string) error {
	s, err := r.load()
	if err != nil {
		return err
	}
	switch role {
	case metadata.ROOT:
		r.stageRoot(s)
	case metadata.TARGETS:
		r.stageTargets(s, role)
	default:
		if s.delegation(role) == nil {
			return fmt.Errorf("%w %q: not root, targets nor a delegated product", ErrUnknownRole, role)
		}
		r.stageTargets(s, role)
	}
	return r.saveStaged(s, role)
}

// Unstage drops the staged version of a role.
func (r *Repo) Unstage(role string) error {
	if err := os.Remove(r.stagedPath(role)); err != nil {
		return fmt.Errorf("%w %s: %v", ErrNothingStaged, role, err)
	}
	return nil
}
