package offlinerepo

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/onlineroles"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/verify"
)

// PublishResult lists the versions that publish wrote.
type PublishResult struct {
	Versions map[string]int64 `json:"versions"`
	// Written are the metadata files written, relative to public/.
	Written []string `json:"written"`
}

// Publish signs a new snapshot and timestamp with the online keys and
// writes every staged role into public/. It refuses, writing nothing, unless
// every role meets its threshold and none has expired; and before writing it
// verifies the complete new repository the way a TUF client will. The
// timestamp is written last, so a reader never sees a timestamp that names
// metadata not yet stored.
func (r *Repo) Publish(online []keys.Signer) (*PublishResult, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	statuses, err := r.status(s)
	if err != nil {
		return nil, err
	}
	problems := r.problems(statuses, nil)
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrBelowThreshold, strings.Join(problems, "\n  "))
	}

	// Encode every role as it will be published.
	docs := map[string][]byte{}
	res := &PublishResult{Versions: map[string]int64{}}
	var rootBytes []byte
	if s.rootStaged {
		if rootBytes, err = s.root.ToBytes(true); err != nil {
			return nil, err
		}
	}
	roles := []string{metadata.TARGETS}
	for _, d := range s.delegatedRoles() {
		roles = append(roles, d.Name)
	}
	snapVersion, tsVersion := int64(1), int64(1)
	if s.snapshot != nil {
		snapVersion = s.snapshot.Signed.Version + 1
	}
	if s.timestamp != nil {
		tsVersion = s.timestamp.Signed.Version + 1
	}
	var pinned []onlineroles.Role
	for _, role := range roles {
		doc, staged := s.doc(role)
		var b []byte
		v := versionOf(doc)
		if staged {
			m := doc.(*metadata.Metadata[metadata.TargetsType])
			if b, err = m.ToBytes(true); err != nil {
				return nil, err
			}
			docs[role] = b
		} else if b = s.pub.roles[role]; b == nil {
			return nil, fmt.Errorf("role %s version %d is neither staged nor published", role, v)
		}
		pinned = append(pinned, onlineroles.Role{Name: role, Version: v, Data: b})
		res.Versions[role] = v
	}
	snapBytes, tsBytes, err := onlineroles.Sign(onlineroles.Options{
		Root: s.root, Roles: pinned,
		SnapshotVersion: snapVersion, TimestampVersion: tsVersion,
		SnapshotExpires:  r.now().Add(r.cfg.ExpiryFor(metadata.SNAPSHOT)),
		TimestampExpires: r.now().Add(r.cfg.ExpiryFor(metadata.TIMESTAMP)),
		Signers:          online,
	})
	if errors.Is(err, onlineroles.ErrNoKey) {
		return nil, fmt.Errorf("%w: %v", ErrNotAuthorised, err)
	} else if errors.Is(err, onlineroles.ErrBelowThreshold) {
		return nil, fmt.Errorf("%w: %v", ErrBelowThreshold, err)
	} else if err != nil {
		return nil, err
	}
	res.Versions[metadata.ROOT] = s.root.Signed.Version
	res.Versions[metadata.SNAPSHOT] = snapVersion
	res.Versions[metadata.TIMESTAMP] = tsVersion

	// Verify the whole new repository as a client would, from the first
	// root, before a single file is written.
	md, trusted, err := r.clientView(s, rootBytes, docs, snapBytes, tsBytes)
	if err != nil {
		return nil, err
	}
	if err := verify.Repository(trusted, md, r.now()); err != nil {
		return nil, fmt.Errorf("the repository would not verify for clients, nothing was published: %w", err)
	}

	if err := os.MkdirAll(r.publicDir(), 0o755); err != nil {
		return nil, err
	}
	usedBlobs, err := r.publishBlobs(s)
	if err != nil {
		return nil, err
	}
	write := func(name string, b []byte) error {
		res.Written = append(res.Written, name)
		return atomicfile.WriteFile(filepath.Join(r.publicDir(), name), b, 0o644)
	}
	if rootBytes != nil {
		if err := write(fmt.Sprintf("%d.root.json", s.root.Signed.Version), rootBytes); err != nil {
			return nil, err
		}
		if err := write("root.json", rootBytes); err != nil {
			return nil, err
		}
	}
	for _, role := range roles {
		if b, ok := docs[role]; ok {
			if err := write(fmt.Sprintf("%d.%s.json", res.Versions[role], role), b); err != nil {
				return nil, err
			}
		}
	}
	if err := write(fmt.Sprintf("%d.snapshot.json", snapVersion), snapBytes); err != nil {
		return nil, err
	}
	if err := write("timestamp.json", tsBytes); err != nil {
		return nil, err
	}
	// Only now is the staged state consumed.
	if s.rootStaged {
		os.Remove(r.stagedPath(metadata.ROOT))
	}
	for _, role := range roles {
		if _, ok := docs[role]; ok {
			os.Remove(r.stagedPath(role))
		}
	}
	for _, b := range usedBlobs {
		os.Remove(b)
	}
	return res, nil
}

// clientView assembles the metadata a client would fetch after this
// publish, and the first root it would trust.
func (r *Repo) clientView(s *state, stagedRoot []byte, docs map[string][]byte, snap, ts []byte) (verify.Metadata, []byte, error) {
	md := verify.Metadata{Snapshot: snap, Timestamp: ts, Delegated: map[string][]byte{}}
	var trusted []byte
	if len(s.pub.roots) > 0 {
		trusted = s.pub.roots[0]
		md.Roots = append(md.Roots, s.pub.roots[1:]...)
	}
	if stagedRoot != nil {
		if trusted == nil {
			trusted = stagedRoot
		} else {
			md.Roots = append(md.Roots, stagedRoot)
		}
	}
	get := func(role string) ([]byte, error) {
		if b, ok := docs[role]; ok {
			return b, nil
		}
		if b := s.pub.roles[role]; b != nil {
			return b, nil
		}
		return nil, fmt.Errorf("role %s is neither staged nor published", role)
	}
	var err error
	if md.Targets, err = get(metadata.TARGETS); err != nil {
		return md, nil, err
	}
	for _, d := range s.delegatedRoles() {
		b, err := get(d.Name)
		if err != nil {
			return md, nil, err
		}
		md.Delegated[d.Name] = b
	}
	return md, trusted, nil
}

// publishBlobs moves the payload and chunk index of every target in a
// staged product role into public/targets/, under consistent-snapshot
// names.
func (r *Repo) publishBlobs(s *state) (used []string, err error) {
	for role, staged := range s.rolesStaged {
		if !staged {
			continue
		}
		for path, tf := range s.roles[role].Signed.Targets {
			m, err := release.FromTarget(path, tf)
			if err != nil {
				return nil, err
			}
			img, ix := PublicTargetPaths(path, tf.Hashes["sha256"].String(), m.Index.SHA256)
			if _, err := os.Stat(filepath.Join(r.publicDir(), img)); err != nil {
				if err := r.checkStagedBlob(path, tf, m); err != nil {
					return nil, err
				}
			}
			for _, p := range []struct{ blob, dst string }{
				{tf.Hashes["sha256"].String(), img},
				{m.Index.SHA256, ix},
			} {
				dst := filepath.Join(r.publicDir(), p.dst)
				if _, err := os.Stat(dst); err == nil {
					continue
				}
				if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
					return nil, err
				}
				// Link, not rename: releases with identical content
				// share one content-addressed blob.
				if err := linkOrCopy(r.blobPath(p.blob), dst); err != nil {
					if errors.Is(err, fs.ErrNotExist) {
						return nil, fmt.Errorf("payload %s of %s is missing from %s: the staged release is incomplete; remove it with rampart repo unstage %s", p.blob, path, r.blobDir(), role)
					}
					return nil, err
				}
				used = append(used, r.blobPath(p.blob))
			}
		}
	}
	return used, nil
}

// checkStagedBlob verifies a staged payload and its index against the
// target about to be published, and makes both durable. Staged blobs may
// sit on disk for days while signers sign, and release add leaves the
// fsync to this point.
func (r *Repo) checkStagedBlob(path string, tf *metadata.TargetFiles, m *release.Meta) error {
	ixPath := r.blobPath(m.Index.SHA256)
	ixBytes, err := os.ReadFile(ixPath)
	if err != nil {
		return fmt.Errorf("chunk index %s of %s: %w (remove the release with rampart repo unstage %s)", m.Index.SHA256, path, err, m.Product)
	}
	ix, err := chunkindex.Parse(ixBytes)
	if err != nil || sha256Hex(ixBytes) != m.Index.SHA256 || ix.ImageLength != tf.Length || hex.EncodeToString(ix.ImageHash[:]) != tf.Hashes["sha256"].String() {
		return fmt.Errorf("%w: the staged chunk index of %s does not match its signed metadata; remove the release with rampart repo unstage %s and add it again", ErrCorruptStaging, path, m.Product)
	}
	f, err := os.Open(r.blobPath(tf.Hashes["sha256"].String()))
	if err != nil {
		return fmt.Errorf("payload of %s: %w (remove the release with rampart repo unstage %s)", path, err, m.Product)
	}
	defer f.Close()
	if err := ix.VerifyStream(f, nil, 0); err != nil {
		return fmt.Errorf("%w: the staged payload of %s does not match its signed hashes (%v); remove the release with rampart repo unstage %s and add it again", ErrCorruptStaging, path, err, m.Product)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return nil
}

// linkOrCopy makes dst a durable copy of src, by hard link when possible.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return atomicfile.SyncDir(filepath.Dir(dst))
	} else if errors.Is(err, fs.ErrNotExist) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.Write(dst, 0o644, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// PublicTargetPaths returns where a target's payload and chunk index live,
// relative to public/: consistent-snapshot names, HASH.FILENAME, in the
// target's directory.
func PublicTargetPaths(target, imageSHA256, indexSHA256 string) (image, index string) {
	dir, file := filepath.Split(target)
	image = filepath.Join("targets", dir, imageSHA256+"."+file)
	index = filepath.Join("targets", dir, indexSHA256+"."+file+release.IndexSuffix)
	return image, index
}

// problems describes every role that publish or push would refuse: expired,
// or short of a threshold. skip leaves out roles the caller will not send.
func (r *Repo) problems(statuses []RoleStatus, skip func(RoleStatus) bool) []string {
	var problems []string
	for _, st := range statuses {
		if skip != nil && skip(st) {
			continue
		}
		if st.Expired {
			problems = append(problems, fmt.Sprintf("%s version %d expired at %s; stage a new version (rampart repo stage %s %s) and sign it", st.Role, st.Version, st.Expires.Format("2006-01-02T15:04:05Z"), r.Dir, st.Role))
			continue
		}
		for _, q := range st.Requirements {
			if !q.Met() {
				what := "staged"
				if !st.Staged {
					what = "published"
				}
				p := fmt.Sprintf("%s (%s version %d) has %d of %d signatures from %s; missing: %s", st.Role, what, st.Version, len(q.Signed), q.Threshold, q.Name, strings.Join(q.Missing, ", "))
				if !st.Staged {
					p += fmt.Sprintf("; its keys changed, so stage it again (rampart repo stage %s %s) and sign it", r.Dir, st.Role)
				}
				problems = append(problems, p)
			}
		}
	}
	return problems
}
