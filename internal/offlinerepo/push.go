package offlinerepo

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

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
	Roots [][]byte
	// RootVersions[i] is the version of Roots[i].
	RootVersions []int64
	Targets      []byte
	Roles        map[string][]byte
	Blobs        []BlobFile
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
	return r.pushSet(s, server)
}

func (r *Repo) pushSet(s *state, server map[string]int64) (*PushSet, error) {
	statuses, err := r.status(s)
	if err != nil {
		return nil, err
	}
	problems := r.problems(statuses, func(st RoleStatus) bool { return st.Version <= server[st.Role] })
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrBelowThreshold, strings.Join(problems, "\n  "))
	}
	ps := &PushSet{Roles: map[string][]byte{}, Versions: map[string]int64{}}
	for i, b := range s.pub.roots {
		if v := int64(i + 1); v > server[metadata.ROOT] {
			ps.Roots, ps.RootVersions = append(ps.Roots, b), append(ps.RootVersions, v)
		}
	}
	if s.rootStaged && s.root.Signed.Version > server[metadata.ROOT] {
		b, err := s.root.ToBytes(true)
		if err != nil {
			return nil, err
		}
		ps.Roots, ps.RootVersions = append(ps.Roots, b), append(ps.RootVersions, s.root.Signed.Version)
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
		if b := s.pub.roles[role]; b != nil {
			return b, v, nil
		}
		return nil, v, fmt.Errorf("role %s version %d is neither staged nor published", role, v)
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

// recoverPush is the advice when a server's answer to a push does not
// verify.
const recoverPush = "the server accepted the push, but what it serves now is not what was pushed, or is not signed by the keys this repository's root names. " +
	"Nothing was written to public/ and the pushed roles stay staged. Treat the server as compromised until shown otherwise: " +
	"do not push to it again, do not provision devices from it, compare its online and log keys with its console (rampart server keys, docs/key-ceremony.md)"

// Answer is what a server published after a push, as fetched from it:
// hostile until AdoptPublished verifies it.
type Answer struct {
	Timestamp []byte
	Snapshot  []byte
	// Roots maps each pushed root version to the bytes the server serves.
	Roots map[int64][]byte
	// Roles maps each pushed role to the bytes the server serves for the
	// version pushed.
	Roles map[string][]byte
}

// AdoptPublished makes public/ mirror what a server published after a
// push, and only if it verifies: fetch gets a metadata file from the
// server by name (N.ROLE.json, N.snapshot.json, timestamp.json). What is
// adopted is everything this repository holds above what it published
// (so a push whose answer was lost or refused can be adopted later, when
// the server has nothing left to receive); each such root and role must
// come back byte for byte as held here. Snapshot and timestamp must be
// signed by the online keys of the repository's own root, move forward,
// be fresh, and pin exactly the roles held here at the versions held
// here. Then the releases' files move from staging to public/targets/,
// the metadata is written (timestamp.json last) and the adopted roles
// leave staging. If anything does not verify, nothing is written and an
// *UnverifiedError says what. It reports whether there was anything to
// adopt; with nothing, it fetches nothing.
func (r *Repo) AdoptPublished(fetch func(name string) ([]byte, error)) (bool, error) {
	s, err := r.load()
	if err != nil {
		return false, err
	}
	ps, err := r.pushSet(s, s.pubVersion)
	if err != nil {
		return false, err
	}
	if ps.Empty() {
		return false, nil
	}
	ans, err := fetchAnswer(ps, fetch)
	if err != nil {
		return false, err
	}
	next, err := adoptable(s, ps, ans, r.now())
	if err != nil {
		return false, &UnverifiedError{Source: "the server's answer to the push", Err: err, Recover: recoverPush}
	}
	return true, r.writeAdopted(s, ps, next)
}

// Empty reports whether a push set has nothing to send.
func (ps *PushSet) Empty() bool {
	return len(ps.Roots) == 0 && ps.Targets == nil && len(ps.Roles) == 0
}

func (r *Repo) writeAdopted(s *state, ps *PushSet, next *published) error {
	if err := os.MkdirAll(r.publicDir(), 0o755); err != nil {
		return err
	}
	if err := r.adoptBlobs(s, ps); err != nil {
		return err
	}
	// Written in the order publish uses: a command cut short leaves new
	// files that timestamp.json does not reach yet.
	write := func(name string, b []byte) error {
		return atomicfile.WriteFile(filepath.Join(r.publicDir(), name), b, 0o644)
	}
	for v := len(s.pub.roots) + 1; v <= len(next.roots); v++ {
		if err := write(fmt.Sprintf("%d.root.json", v), next.roots[v-1]); err != nil {
			return err
		}
		if err := write("root.json", next.roots[v-1]); err != nil {
			return err
		}
	}
	for role, v := range ps.Versions {
		if role == metadata.ROOT {
			continue
		}
		if err := write(fmt.Sprintf("%d.%s.json", v, role), next.roles[role]); err != nil {
			return err
		}
	}
	if err := write(fmt.Sprintf("%d.snapshot.json", next.trusted.Snapshot.Signed.Version), next.snapshot); err != nil {
		return err
	}
	if err := write("timestamp.json", next.timestamp); err != nil {
		return err
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

// fetchAnswer fetches what a push's answer is checked on: the pushed roots
// and roles as the server now serves them, its timestamp and the snapshot
// the timestamp names.
func fetchAnswer(ps *PushSet, fetch func(string) ([]byte, error)) (*Answer, error) {
	get := func(name string) ([]byte, error) {
		b, err := fetch(name)
		if err != nil {
			return nil, fmt.Errorf("fetching %s from the server: %w", name, err)
		}
		if len(b) > maxMetadata {
			return nil, fmt.Errorf("the server's %s is larger than %d bytes", name, maxMetadata)
		}
		return b, nil
	}
	ans := &Answer{Roots: map[int64][]byte{}, Roles: map[string][]byte{}}
	var err error
	for _, v := range ps.RootVersions {
		if ans.Roots[v], err = get(fmt.Sprintf("%d.root.json", v)); err != nil {
			return nil, err
		}
	}
	for role, v := range ps.Versions {
		if role == metadata.ROOT {
			continue
		}
		if ans.Roles[role], err = get(fmt.Sprintf("%d.%s.json", v, role)); err != nil {
			return nil, err
		}
	}
	if ans.Timestamp, err = get("timestamp.json"); err != nil {
		return nil, err
	}
	// The snapshot's name comes from the unverified timestamp; it is only
	// a number, and what it names is verified with the rest.
	ts, err := metadata.Timestamp().FromBytes(ans.Timestamp)
	if err != nil {
		return nil, &UnverifiedError{Source: "the server's answer to the push", Err: fmt.Errorf("timestamp.json: %w", err), Recover: recoverPush}
	}
	sm, ok := ts.Signed.Meta["snapshot.json"]
	if !ok || sm.Version < 1 {
		return nil, &UnverifiedError{Source: "the server's answer to the push", Err: errors.New("timestamp.json names no snapshot version"), Recover: recoverPush}
	}
	if ans.Snapshot, err = get(fmt.Sprintf("%d.snapshot.json", sm.Version)); err != nil {
		return nil, err
	}
	return ans, nil
}

// adoptable decides whether a server's answer to a push may become the
// published state, and returns that state. It reads nothing.
func adoptable(s *state, ps *PushSet, ans *Answer, now time.Time) (*published, error) {
	for i, raw := range ps.Roots {
		if v := ps.RootVersions[i]; !bytes.Equal(ans.Roots[v], raw) {
			return nil, fmt.Errorf("the server serves a root version %d that differs from the one pushed", v)
		}
	}
	pushed := map[string][]byte{}
	if ps.Targets != nil {
		pushed[metadata.TARGETS] = ps.Targets
	}
	for role, raw := range ps.Roles {
		pushed[role] = raw
	}
	for role, raw := range pushed {
		if !bytes.Equal(ans.Roles[role], raw) {
			return nil, fmt.Errorf("the server serves a %s version %d that differs from the one pushed", role, ps.Versions[role])
		}
	}
	next := &published{roots: slices.Clone(s.pub.roots), roles: maps.Clone(s.pub.roles), timestamp: ans.Timestamp, snapshot: ans.Snapshot}
	if next.roles == nil {
		next.roles = map[string][]byte{}
	}
	for i, raw := range ps.Roots {
		v := ps.RootVersions[i]
		switch {
		case v <= int64(len(next.roots)):
			if !bytes.Equal(next.roots[v-1], raw) {
				return nil, fmt.Errorf("root version %d pushed differs from public/%d.root.json", v, v)
			}
		case v == int64(len(next.roots))+1:
			next.roots = append(next.roots, raw)
		default:
			return nil, fmt.Errorf("root version %d pushed after version %d", v, len(next.roots))
		}
	}
	if len(next.roots) == 0 {
		return nil, errors.New("no root version was published or pushed")
	}
	maps.Copy(next.roles, pushed)
	// The snapshot must pin exactly the roles held here; go-tuf then checks
	// each pinned version and hash against them.
	snap, err := metadata.Snapshot().FromBytes(ans.Snapshot)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	for name := range snap.Signed.Meta {
		role, err := pinnedRole(name)
		if err != nil {
			return nil, err
		}
		if next.roles[role] == nil {
			return nil, fmt.Errorf("the server's snapshot pins %s, which this repository neither pushed nor published", name)
		}
	}
	for role := range next.roles {
		if _, ok := snap.Signed.Meta[role+".json"]; !ok {
			return nil, fmt.Errorf("the server's snapshot leaves out %s.json", role)
		}
	}
	trusted, err := checkPublished(next)
	if err != nil {
		return nil, err
	}
	if trusted.Timestamp.Signed.IsExpired(now) {
		return nil, fmt.Errorf("the server's timestamp expired at %s", trusted.Timestamp.Signed.Expires.Format(time.RFC3339))
	}
	if trusted.Snapshot.Signed.IsExpired(now) {
		return nil, fmt.Errorf("the server's snapshot expired at %s", trusted.Snapshot.Signed.Expires.Format(time.RFC3339))
	}
	if s.timestamp != nil && trusted.Timestamp.Signed.Version <= s.timestamp.Signed.Version {
		return nil, fmt.Errorf("the server's timestamp version %d does not move past the published %d", trusted.Timestamp.Signed.Version, s.timestamp.Signed.Version)
	}
	if s.snapshot != nil && trusted.Snapshot.Signed.Version <= s.snapshot.Signed.Version {
		return nil, fmt.Errorf("the server's snapshot version %d does not move past the published %d", trusted.Snapshot.Signed.Version, s.snapshot.Signed.Version)
	}
	next.trusted = trusted
	return next, nil
}

// adoptBlobs moves the files of the pushed releases from staging to
// public/targets/.
func (r *Repo) adoptBlobs(s *state, ps *PushSet) error {
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
	for i, b := range s.pub.roots {
		if int64(i+1) > have {
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
