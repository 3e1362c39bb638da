package verify

import (
	"fmt"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/rampartfw/rampart/internal/release"
)

// Chain verifies one target's metadata a document at a time, in TUF's
// order: root versions, timestamp, snapshot, targets, then the role that
// signs the target. A caller reading the documents from a stream (an
// offline bundle) hands each one over as it arrives and can drop it
// afterwards, so memory holds the verified state and one document, never
// every document at once. Target is Chain used on documents already in
// memory; both decide alike.
type Chain struct {
	trusted *trustedmetadata.TrustedMetadata
	opt     Options
}

// NewChain starts a chain from the trusted root.
func NewChain(trustedRoot []byte, opt Options) (*Chain, error) {
	if err := checkDuplicates("root", trustedRoot); err != nil {
		return nil, err
	}
	trusted, err := trustedmetadata.New(trustedRoot)
	if err != nil {
		return nil, classify("root", fmt.Errorf("trusted root: %w", err))
	}
	if !opt.Time.IsZero() {
		trusted.RefTime = opt.Time.UTC()
	}
	return &Chain{trusted: trusted, opt: opt}, nil
}

// RootVersion is the version of the newest root trusted so far.
func (c *Chain) RootVersion() int64 { return c.trusted.Root.Signed.Version }

// UpdateRoot verifies raw as the next root version (signed by the
// thresholds of the current root and of itself) and trusts it.
func (c *Chain) UpdateRoot(raw []byte) error {
	if err := checkDuplicates("root", raw); err != nil {
		return err
	}
	if _, err := c.trusted.UpdateRoot(raw); err != nil {
		return classify("root", fmt.Errorf("root version %d: %w", c.RootVersion()+1, err))
	}
	return nil
}

// UpdateTimestamp verifies the timestamp against the trusted root.
func (c *Chain) UpdateTimestamp(raw []byte) error {
	if err := checkDuplicates("timestamp", raw); err != nil {
		return err
	}
	if _, err := c.trusted.UpdateTimestamp(raw); err != nil {
		return expiryOr(c.trusted, "timestamp", raw, err)
	}
	return nil
}

// UpdateSnapshot verifies the snapshot against the timestamp.
func (c *Chain) UpdateSnapshot(raw []byte) error {
	if err := checkDuplicates("snapshot", raw); err != nil {
		return err
	}
	if _, err := c.trusted.UpdateSnapshot(raw, false); err != nil {
		return expiryOr(c.trusted, "snapshot", raw, err)
	}
	return nil
}

// UpdateTargets verifies the top-level targets role against the snapshot.
func (c *Chain) UpdateTargets(raw []byte) error {
	if err := checkDuplicates("targets", raw); err != nil {
		return err
	}
	if _, err := c.trusted.UpdateTargets(raw); err != nil {
		return expiryOr(c.trusted, "targets", raw, err)
	}
	return nil
}

// Target finds target through the delegations of the verified targets
// role, verifying the delegated roles it needs from delegated, and
// applies Rampart's release rules (custom metadata, hardware id, security
// version).
func (c *Chain) Target(target string, delegated map[string][]byte) (*Result, error) {
	for name, raw := range delegated {
		if err := checkDuplicates(name, raw); err != nil {
			return nil, err
		}
	}
	trusted, opt := c.trusted, c.opt
	top := trusted.Targets[metadata.TARGETS]
	if top == nil {
		return nil, refuse(MissingTarget, "targets", nil, "the targets role was not verified")
	}
	versions, expires := map[string]int64{}, map[string]time.Time{}
	versions["root"], expires["root"] = trusted.Root.Signed.Version, trusted.Root.Signed.Expires
	versions["timestamp"], expires["timestamp"] = trusted.Timestamp.Signed.Version, trusted.Timestamp.Signed.Expires
	versions["snapshot"], expires["snapshot"] = trusted.Snapshot.Signed.Version, trusted.Snapshot.Signed.Expires
	versions["targets"], expires["targets"] = top.Signed.Version, top.Signed.Expires

	if _, _, _, err := release.ParseTargetPath(target); err != nil {
		return nil, refuse(Malformed, "", err, "target %q", target)
	}
	var (
		file      *metadata.TargetFiles
		role      string
		threshold int
		signers   []string
	)
	// Rampart repositories delegate every product path to one terminating
	// role; the top-level targets role lists no releases itself.
	if tf, ok := top.Signed.Targets[target]; ok {
		file, role = tf, metadata.TARGETS
		threshold = trusted.Root.Signed.Roles[metadata.TARGETS].Threshold
		signers = ValidSigners(trusted.Root.Signed.Keys, trusted.Root.Signed.Roles[metadata.TARGETS].KeyIDs, top)
	} else {
		if top.Signed.Delegations == nil {
			return nil, refuse(MissingTarget, "targets", nil, "no role is delegated target %s", target)
		}
		for _, rr := range top.Signed.Delegations.GetRolesForTarget(target) {
			raw, ok := delegated[rr.Name]
			if !ok {
				return nil, refuse(MissingTarget, rr.Name, nil, "metadata of role %s, delegated target %s, is missing", rr.Name, target)
			}
			dr, err := trusted.UpdateDelegatedTargets(raw, rr.Name, metadata.TARGETS)
			if err != nil {
				return nil, expiryOr(trusted, rr.Name, raw, err)
			}
			versions[rr.Name], expires[rr.Name] = dr.Signed.Version, dr.Signed.Expires
			if tf, ok := dr.Signed.Targets[target]; ok {
				file, role = tf, rr.Name
				for _, d := range top.Signed.Delegations.Roles {
					if d.Name == rr.Name {
						threshold = d.Threshold
						signers = ValidSigners(top.Signed.Delegations.Keys, d.KeyIDs, dr)
					}
				}
				break
			}
			if rr.Terminating {
				break
			}
		}
		if file == nil {
			return nil, refuse(MissingTarget, "", nil, "target %s is not in the signed metadata", target)
		}
	}

	res, err := newResult(target, file, role, opt)
	if err != nil {
		return nil, err
	}
	res.Signers, res.Threshold = signers, threshold
	res.Versions, res.Expires = versions, expires
	return res, nil
}
