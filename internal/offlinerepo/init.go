package offlinerepo

import (
	"crypto"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
)

// InitOptions are the keys and thresholds of a new root of trust.
type InitOptions struct {
	RootKeys         []crypto.PublicKey
	RootThreshold    int
	TargetsKeys      []crypto.PublicKey
	TargetsThreshold int
	// SnapshotKeys and TimestampKeys are the online keys.
	SnapshotKeys  []crypto.PublicKey
	TimestampKeys []crypto.PublicKey
	// Expiry overrides DefaultExpiry per role.
	Expiry map[string]Duration
	Now    func() time.Time
}

// Init creates a repository with root version 1 and an empty targets role,
// both staged and unsigned.
func Init(dir string, opt InitOptions) (*Repo, error) {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s: %w and is not empty", dir, ErrExists)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	cfg := &Config{Format: 1, Expiry: map[string]Duration{}}
	for role, d := range opt.Expiry {
		if _, ok := DefaultExpiry[role]; !ok && !isProduct(role) {
			return nil, fmt.Errorf("%w: unknown role %q in expiry (use root, targets, delegated, snapshot, timestamp or a product name)", ErrBadInput, role)
		}
		cfg.Expiry[role] = d
	}
	r := &Repo{Dir: dir, cfg: cfg, Now: opt.Now}
	now := r.now()
	root := metadata.Root(now.Add(cfg.ExpiryFor(metadata.ROOT)))
	root.Signed.ConsistentSnapshot = true
	for _, rk := range []struct {
		role      string
		keys      []crypto.PublicKey
		threshold int
	}{
		{metadata.ROOT, opt.RootKeys, opt.RootThreshold},
		{metadata.TARGETS, opt.TargetsKeys, opt.TargetsThreshold},
		{metadata.SNAPSHOT, opt.SnapshotKeys, 1},
		{metadata.TIMESTAMP, opt.TimestampKeys, 1},
	} {
		if len(rk.keys) == 0 {
			return nil, fmt.Errorf("%w: the %s role needs at least one key", ErrBadInput, rk.role)
		}
		for _, pub := range rk.keys {
			k, err := keys.TUFKey(pub)
			if err != nil {
				return nil, fmt.Errorf("%s key: %w", rk.role, err)
			}
			if err := root.Signed.AddKey(k, rk.role); err != nil {
				return nil, err
			}
		}
		n := len(root.Signed.Roles[rk.role].KeyIDs)
		if rk.threshold < 1 || rk.threshold > n {
			return nil, fmt.Errorf("%w: %s threshold %d must be between 1 and its %d distinct key(s)", ErrBadInput, rk.role, rk.threshold, n)
		}
		root.Signed.Roles[rk.role].Threshold = rk.threshold
	}
	targets := metadata.Targets(now.Add(cfg.ExpiryFor(metadata.TARGETS)))

	if err := os.MkdirAll(filepath.Join(dir, "staged", "roles"), 0o755); err != nil {
		return nil, err
	}
	if err := writeConfig(dir, cfg); err != nil {
		return nil, err
	}
	if err := r.lockDir(); err != nil {
		return nil, err
	}
	s := &state{root: root, rootStaged: true, targets: targets, targetsStaged: true}
	if err := r.saveStaged(s, metadata.ROOT, metadata.TARGETS); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}
