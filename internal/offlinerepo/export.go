package offlinerepo

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/release"
)

// Published is a published release and where its files are.
type Published struct {
	Target    string
	Meta      *release.Meta
	File      *metadata.TargetFiles
	ImagePath string
	IndexPath string
}

// FindPublished resolves PRODUCT/VERSION (or a full target path) to a
// published release.
func (r *Repo) FindPublished(ref string) (*Published, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	parts := strings.Split(ref, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, fmt.Errorf("%w: release %q is not PRODUCT/VERSION", ErrBadInput, ref)
	}
	product := parts[0]
	if s.pubVersion[product] == 0 {
		return nil, fmt.Errorf("%w: product %s has no published metadata (rampart repo publish)", ErrBadInput, product)
	}
	role := s.pub.role(product)
	var matches []string
	for path := range role.Signed.Targets {
		if path == ref || strings.HasPrefix(path, ref+"/") {
			matches = append(matches, path)
		}
	}
	sort.Strings(matches)
	switch len(matches) {
	case 0:
		return nil, fmt.Errorf("%w: no published release %s (is it staged but not yet published?)", ErrBadInput, ref)
	case 1:
	default:
		return nil, fmt.Errorf("%w: %s matches several targets (%s); name one", ErrBadInput, ref, strings.Join(matches, ", "))
	}
	tf := role.Signed.Targets[matches[0]]
	m, err := release.FromTarget(matches[0], tf)
	if err != nil {
		return nil, err
	}
	img, ix := PublicTargetPaths(matches[0], tf.Hashes["sha256"].String(), m.Index.SHA256)
	return &Published{Target: matches[0], Meta: m, File: tf, ImagePath: filepath.Join(r.publicDir(), img), IndexPath: filepath.Join(r.publicDir(), ix)}, nil
}

// BundleContents gathers the published metadata a bundle of p needs.
func (r *Repo) BundleContents(p *Published) (*bundle.Contents, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	c := &bundle.Contents{Manifest: bundle.Manifest{Format: 1, Target: p.Target, Role: p.Meta.Product}}
	c.Roots = s.pub.roots
	c.Timestamp, c.Snapshot = s.pub.timestamp, s.pub.snapshot
	c.Targets = s.pub.roles[metadata.TARGETS]
	if c.Delegated = s.pub.roles[p.Meta.Product]; c.Delegated == nil {
		return nil, fmt.Errorf("%w: product %s has no published metadata", ErrBadInput, p.Meta.Product)
	}
	if c.Index, err = readBounded(p.IndexPath, p.Meta.Index.Length); err != nil {
		return nil, err
	}
	// The index is the one file of a bundle that public/'s metadata does
	// not carry; check it against the signed reference here, not on the
	// device.
	if int64(len(c.Index)) != p.Meta.Index.Length || sha256Hex(c.Index) != p.Meta.Index.SHA256 {
		return nil, &UnverifiedError{Source: p.IndexPath, Err: fmt.Errorf("the chunk index is not the one %s's signed metadata names (sha256 %s, %d bytes)", p.Target, p.Meta.Index.SHA256, p.Meta.Index.Length), Recover: recoverPublic}
	}
	c.ImageSize = p.File.Length
	return c, nil
}
