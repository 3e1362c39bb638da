// Package onlineroles signs a repository's online roles: the snapshot, which
// pins the version, length and hash of every targets-type role, and the
// timestamp, which pins the snapshot. The offline publisher (rampart repo
// publish) and the server (on every accepted push and timestamp refresh)
// use the same code, so their repositories cannot drift apart.
package onlineroles

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
)

// ErrNoKey means none of the given keys is authorised for the role.
var ErrNoKey = errors.New("no authorised online key")

// ErrBelowThreshold means the given keys cannot reach the role's threshold.
var ErrBelowThreshold = errors.New("online keys below threshold")

// MaxVersion is the highest metadata version Rampart signs or serves
// (2^40). An honest repository gains a version per publish or timestamp
// renewal: at one a second, 2^40 lasts 34,000 years. Anything near 2^63
// was signed by someone else, with a stolen key, to make devices refuse
// every honest version as a rollback; the server refuses to go near it,
// so its own versions never need to, and the recovery from such an
// attack is a rotation of the stolen keys (docs/incident-response.md),
// never a race to a higher number.
const MaxVersion int64 = 1 << 40

// ErrVersion means a version is out of 1..MaxVersion.
var ErrVersion = errors.New("metadata version out of range")

// CheckVersion refuses a version outside 1..MaxVersion for role.
func CheckVersion(role string, v int64) error {
	if v < 1 || v > MaxVersion {
		return fmt.Errorf("%w: %s version %d is not within 1..%d; rotate the online keys instead (docs/incident-response.md)", ErrVersion, role, v, MaxVersion)
	}
	return nil
}

// Role is one targets-type role as the snapshot will pin it.
type Role struct {
	Name    string // "targets" or a delegated role
	Version int64
	Data    []byte // the exact bytes clients will fetch
}

// Options of one signing.
type Options struct {
	Root             *metadata.Metadata[metadata.RootType]
	Roles            []Role
	SnapshotVersion  int64
	TimestampVersion int64
	SnapshotExpires  time.Time
	TimestampExpires time.Time
	Signers          []keys.Signer
}

// Sign returns the encoded snapshot and timestamp.
func Sign(o Options) (snap, ts []byte, err error) {
	if err := CheckVersion(metadata.SNAPSHOT, o.SnapshotVersion); err != nil {
		return nil, nil, err
	}
	s := metadata.Snapshot(o.SnapshotExpires.UTC().Truncate(time.Second))
	s.Signed.Version = o.SnapshotVersion
	s.Signed.Meta = map[string]*metadata.MetaFiles{}
	roles := slices.Clone(o.Roles)
	sort.Slice(roles, func(i, j int) bool { return roles[i].Name < roles[j].Name })
	for _, r := range roles {
		s.Signed.Meta[r.Name+".json"] = MetaFile(r.Version, r.Data)
	}
	if err := SignRole(o.Root, metadata.SNAPSHOT, s, o.Signers); err != nil {
		return nil, nil, err
	}
	if snap, err = s.ToBytes(true); err != nil {
		return nil, nil, err
	}
	ts, err = SignTimestamp(o.Root, snap, o.SnapshotVersion, o.TimestampVersion, o.TimestampExpires, o.Signers)
	if err != nil {
		return nil, nil, err
	}
	return snap, ts, nil
}

// SignTimestamp returns a timestamp of version tsVersion pinning the given
// snapshot; the server uses it alone to renew a timestamp before it expires.
func SignTimestamp(root *metadata.Metadata[metadata.RootType], snap []byte, snapVersion, tsVersion int64, expires time.Time, signers []keys.Signer) ([]byte, error) {
	if err := CheckVersion(metadata.TIMESTAMP, tsVersion); err != nil {
		return nil, err
	}
	t := metadata.Timestamp(expires.UTC().Truncate(time.Second))
	t.Signed.Version = tsVersion
	t.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": MetaFile(snapVersion, snap)}
	if err := SignRole(root, metadata.TIMESTAMP, t, signers); err != nil {
		return nil, err
	}
	return t.ToBytes(true)
}

// MetaFile pins a document by version, length and SHA-256.
func MetaFile(version int64, data []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(data)
	mf := metadata.MetaFile(version)
	mf.Length = int64(len(data))
	mf.Hashes = metadata.Hashes{"sha256": sum[:]}
	return mf
}

// SignRole signs m with every given key that root authorises for role,
// each key once (a second signature under one key id would make the
// document invalid), and checks the role's threshold with go-tuf.
func SignRole[T metadata.Roles](root *metadata.Metadata[metadata.RootType], role string, m *metadata.Metadata[T], signers []keys.Signer) error {
	want := root.Signed.Roles[role].KeyIDs
	signed := 0
	var got []string
	seen := map[string]bool{}
	for _, sg := range signers {
		id, err := keys.ID(sg.Public())
		if err != nil {
			return err
		}
		got = append(got, id)
		if seen[id] || !slices.Contains(want, id) {
			continue
		}
		seen[id] = true
		if _, err := m.Sign(keys.ForTUF(sg)); err != nil {
			return fmt.Errorf("signing %s with key %s: %w", role, id, err)
		}
		signed++
	}
	if signed == 0 {
		return fmt.Errorf("%w: none of the given keys (%s) is a %s key; the root names %s", ErrNoKey, strings.Join(got, ", "), role, strings.Join(want, ", "))
	}
	if err := root.VerifyDelegate(role, m); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBelowThreshold, role, err)
	}
	return nil
}
