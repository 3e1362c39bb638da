package repo

import (
	"fmt"
	"os"
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
	role, err := readMeta(r.publicPath(product, s.pubVersion[product]), metadata.Targets())
	if err != nil {
		return nil, err
	}
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
	vs, err := r.publishedRootVersions()
	if err != nil {
		return nil, err
	}
	for i, v := range vs {
		if v != int64(i+1) {
			return nil, fmt.Errorf("public/%d.root.json is missing: the root history has a gap", i+1)
		}
		b, err := os.ReadFile(filepath.Join(r.publicDir(), fmt.Sprintf("%d.root.json", v)))
		if err != nil {
			return nil, err
		}
		c.Roots = append(c.Roots, b)
	}
	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(r.publicDir(), name)) }
	if c.Timestamp, err = read("timestamp.json"); err != nil {
		return nil, err
	}
	if c.Snapshot, err = read(fmt.Sprintf("%d.snapshot.json", s.snapshot.Signed.Version)); err != nil {
		return nil, err
	}
	if c.Targets, err = read(fmt.Sprintf("%d.targets.json", s.pubVersion[metadata.TARGETS])); err != nil {
		return nil, err
	}
	if c.Delegated, err = read(fmt.Sprintf("%d.%s.json", s.pubVersion[p.Meta.Product], p.Meta.Product)); err != nil {
		return nil, err
	}
	if c.Index, err = os.ReadFile(p.IndexPath); err != nil {
		return nil, err
	}
	c.ImageSize = p.File.Length
	return c, nil
}
