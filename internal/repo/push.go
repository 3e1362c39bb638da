package repo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/release"
)

// BlobFile is a payload or chunk index a push needs, and where it is.
type BlobFile struct {
	SHA256 string
	Length int64
	Path   string
}

// PushSet is what a repository sends to a server that holds the given
// versions: every newer root, targets and product role, each meeting its
// thresholds, and the files of the releases they name.
type PushSet struct {
	Roots   [][]byte
	Targets []byte
	Roles   map[string][]byte
	Blobs   []BlobFile
	// Versions are the versions pushed, by role.
	Versions map[string]int64
}

// PushSet computes the push for a server at the given versions. It
// refuses, like publish, when a role to push lacks signatures.
func (r *Repo) PushSet(server map[string]int64) (*PushSet, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	statuses, err := r.status(s)
	if err != nil {
		return nil, err
	}
	problems := r.problems(statuses, func(st RoleStatus) bool { return st.Version <= server[st.Role] })
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrBelowThreshold, strings.Join(problems, "\n  "))
	}
	ps := &PushSet{Roles: map[string][]byte{}, Versions: map[string]int64{}}
	vs, err := r.publishedRootVersions()
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		if v > server[metadata.ROOT] {
			b, err := os.ReadFile(filepath.Join(r.publicDir(), fmt.Sprintf("%d.root.json", v)))
			if err != nil {
				return nil, err
			}
			ps.Roots = append(ps.Roots, b)
		}
	}
	if s.rootStaged && s.root.Signed.Version > server[metadata.ROOT] {
		b, err := s.root.ToBytes(true)
		if err != nil {
			return nil, err
		}
		ps.Roots = append(ps.Roots, b)
	}
	if len(ps.Roots) > 0 {
		ps.Versions[metadata.ROOT] = s.root.Signed.Version
	}
	doc := func(role string) ([]byte, int64, error) {
		d, staged := s.doc(role)
		v := versionOf(d)
		if v <= server[role] {
			return nil, v, nil
		}
		if staged {
			b, err := d.(*metadata.Metadata[metadata.TargetsType]).ToBytes(true)
			return b, v, err
		}
		b, err := os.ReadFile(r.publicPath(role, v))
		return b, v, err
	}
	if ps.Targets, ps.Versions[metadata.TARGETS], err = doc(metadata.TARGETS); err != nil {
		return nil, err
	}
	if ps.Targets == nil {
		delete(ps.Versions, metadata.TARGETS)
	}
	for _, d := range s.delegatedRoles() {
		b, v, err := doc(d.Name)
		if err != nil {
			return nil, err
		}
		if b == nil {
			continue
		}
		ps.Roles[d.Name], ps.Versions[d.Name] = b, v
		for path, tf := range s.roles[d.Name].Signed.Targets {
			m, err := release.FromTarget(path, tf)
			if err != nil {
				return nil, err
			}
			img, ix := PublicTargetPaths(path, tf.Hashes["sha256"].String(), m.Index.SHA256)
			for _, bf := range []BlobFile{
				{SHA256: tf.Hashes["sha256"].String(), Length: tf.Length, Path: img},
				{SHA256: m.Index.SHA256, Length: m.Index.Length, Path: ix},
			} {
				// A release's files are in staging until published, and in
				// public/targets after.
				staged := r.blobPath(bf.SHA256)
				if _, err := os.Stat(staged); err == nil {
					bf.Path = staged
				} else {
					bf.Path = filepath.Join(r.publicDir(), bf.Path)
				}
				ps.Blobs = append(ps.Blobs, bf)
			}
		}
	}
	return ps, nil
}

// AdoptPublished records what a server published after a push: its
// metadata files (N.ROLE.json, N.snapshot.json, timestamp.json) are written
// into public/, timestamp.json last, the pushed releases' files move from
// staging to public/targets/, and the pushed roles leave staging. The
// repository then mirrors the server, and bundles can be made from it.
func (r *Repo) AdoptPublished(ps *PushSet, files map[string][]byte) error {
	s, err := r.load()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.publicDir(), 0o755); err != nil {
		return err
	}
	for _, b := range ps.Blobs {
		if !strings.HasPrefix(b.Path, r.blobDir()) {
			continue
		}
		for path, tf := range allTargets(s) {
			m, err := release.FromTarget(path, tf)
			if err != nil {
				return err
			}
			img, ix := PublicTargetPaths(path, tf.Hashes["sha256"].String(), m.Index.SHA256)
			for _, p := range []struct{ digest, dst string }{{tf.Hashes["sha256"].String(), img}, {m.Index.SHA256, ix}} {
				if p.digest != b.SHA256 {
					continue
				}
				dst := filepath.Join(r.publicDir(), p.dst)
				if _, err := os.Stat(dst); err == nil {
					continue
				}
				if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
					return err
				}
				if err := linkOrCopy(b.Path, dst); err != nil {
					return err
				}
			}
		}
	}
	var last []byte
	for name, data := range files {
		if name == "timestamp.json" {
			last = data
			continue
		}
		if filepath.Base(name) != name {
			return fmt.Errorf("%w: server file name %q", ErrBadInput, name)
		}
		if err := atomicfile.WriteFile(filepath.Join(r.publicDir(), name), data, 0o644); err != nil {
			return err
		}
	}
	if last != nil {
		if err := atomicfile.WriteFile(filepath.Join(r.publicDir(), "timestamp.json"), last, 0o644); err != nil {
			return err
		}
	}
	if ps.Versions[metadata.ROOT] > 0 && s.rootStaged {
		os.Remove(r.stagedPath(metadata.ROOT))
	}
	for role := range ps.Versions {
		if role != metadata.ROOT {
			if err := os.Remove(r.stagedPath(role)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	for _, b := range ps.Blobs {
		if strings.HasPrefix(b.Path, r.blobDir()) {
			os.Remove(b.Path)
		}
	}
	return nil
}

func allTargets(s *state) map[string]*metadata.TargetFiles {
	out := map[string]*metadata.TargetFiles{}
	for _, role := range s.roles {
		for p, tf := range role.Signed.Targets {
			out[p] = tf
		}
	}
	return out
}

// RootsAfter returns every root version above have, published and staged,
// in order; the staged one only if it meets its thresholds.
func (r *Repo) RootsAfter(have int64) ([][]byte, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	var out [][]byte
	vs, err := r.publishedRootVersions()
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		if v > have {
			b, err := os.ReadFile(filepath.Join(r.publicDir(), fmt.Sprintf("%d.root.json", v)))
			if err != nil {
				return nil, err
			}
			out = append(out, b)
		}
	}
	if s.rootStaged && s.root.Signed.Version > have {
		st, err := r.status(s)
		if err != nil {
			return nil, err
		}
		if !st[0].Ready {
			return nil, fmt.Errorf("%w: the staged root version %d lacks signatures (rampart repo status %s)", ErrBelowThreshold, s.root.Signed.Version, r.Dir)
		}
		b, err := s.root.ToBytes(true)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}
