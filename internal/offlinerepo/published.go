package offlinerepo

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/verify"
)

// maxMetadata bounds every metadata file the repository reads from public/
// or from a server: the limit devices and bundles apply too.
const maxMetadata = bundle.MaxMetadata

// ErrUnverified is the class of every refusal to build on, or adopt,
// published metadata that does not verify against the repository's own
// root chain.
var ErrUnverified = errors.New("published metadata does not verify")

// UnverifiedError says what did not verify and where it came from.
type UnverifiedError struct {
	// Source is "public/" or the server's answer to a push.
	Source string
	Err    error
	// Recover tells the operator how to get back to a state that verifies.
	Recover string
}

func (e *UnverifiedError) Error() string {
	return fmt.Sprintf("%s does not verify against the repository's root chain (public/1.root.json onwards): %v", e.Source, e.Err)
}

func (e *UnverifiedError) Unwrap() []error           { return []error{ErrUnverified, e.Err} }
func (e *UnverifiedError) FailureKind() failure.Kind { return failure.Refused }
func (e *UnverifiedError) FailureHint() string       { return e.Recover }

// recoverPublic is the advice when public/ itself fails to verify.
const recoverPublic = "nothing was changed and nothing will be signed on top of it. Restore public/ from a copy you trust: " +
	"a backup, or another key holder's repository (compare it with the key holders' own signed copies); " +
	"if a rampart command wrote it after a push, the server that answered may be compromised: stop pushing to it and investigate (docs/key-ceremony.md)"

// published is public/ after it verified: the root chain from
// 1.root.json, and the timestamp, snapshot, targets and product roles they
// pin, with their bytes, so that no later step re-reads a file it did not
// verify.
type published struct {
	// roots[i] is root version i+1.
	roots [][]byte
	// timestamp, snapshot and roles are nil before the first publish.
	timestamp, snapshot []byte
	roles               map[string][]byte
	// trusted holds the verified, parsed metadata.
	trusted *trustedmetadata.TrustedMetadata
}

func (p *published) latestRoot() *metadata.Metadata[metadata.RootType] {
	if p.trusted == nil {
		return nil
	}
	return p.trusted.Root
}

// role returns the published, verified version of a targets role, or nil.
func (p *published) role(name string) *metadata.Metadata[metadata.TargetsType] {
	if p.trusted == nil || p.timestamp == nil {
		return nil
	}
	return p.trusted.Targets[name]
}

// readBounded reads a whole file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	return fsys.ReadFile(fsys.OS, path, limit)
}

// readPublished reads public/ and verifies it. File names come from the
// unverified timestamp and snapshot, so each is checked to be a name this
// repository could have written before it is read.
func (r *Repo) readPublished() (*published, error) {
	bad := func(err error) error {
		return &UnverifiedError{Source: "public/", Err: err, Recover: recoverPublic}
	}
	vs, err := r.publishedRootVersions()
	if err != nil {
		return nil, err
	}
	p := &published{}
	for i, v := range vs {
		if v != int64(i+1) {
			return nil, bad(fmt.Errorf("public/%d.root.json is missing: the root history has a gap", i+1))
		}
		b, err := readBounded(filepath.Join(r.publicDir(), fmt.Sprintf("%d.root.json", v)), maxMetadata)
		if err != nil {
			return nil, bad(err)
		}
		p.roots = append(p.roots, b)
	}
	if len(p.roots) == 0 {
		return p, nil
	}
	if b, err := readBounded(filepath.Join(r.publicDir(), "root.json"), maxMetadata); err == nil {
		// A push or publish cut short may leave root.json one version
		// behind; it must still be a root of the chain.
		if !slices.ContainsFunc(p.roots, func(r []byte) bool { return bytes.Equal(r, b) }) {
			return nil, bad(errors.New("public/root.json is none of the published root versions"))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, bad(err)
	}
	p.timestamp, err = readBounded(filepath.Join(r.publicDir(), "timestamp.json"), maxMetadata)
	if errors.Is(err, fs.ErrNotExist) {
		p.timestamp = nil
	} else if err != nil {
		return nil, bad(err)
	} else {
		if err := r.readPinned(p); err != nil {
			return nil, bad(err)
		}
	}
	if p.trusted, err = checkPublished(p); err != nil {
		return nil, bad(err)
	}
	return p, nil
}

// readPinned reads the snapshot the timestamp names and the roles the
// snapshot names.
func (r *Repo) readPinned(p *published) error {
	ts, err := metadata.Timestamp().FromBytes(p.timestamp)
	if err != nil {
		return fmt.Errorf("public/timestamp.json: %w", err)
	}
	sm, ok := ts.Signed.Meta["snapshot.json"]
	if !ok || sm.Version < 1 {
		return errors.New("public/timestamp.json names no snapshot version")
	}
	if p.snapshot, err = readBounded(filepath.Join(r.publicDir(), fmt.Sprintf("%d.snapshot.json", sm.Version)), maxMetadata); err != nil {
		return err
	}
	snap, err := metadata.Snapshot().FromBytes(p.snapshot)
	if err != nil {
		return fmt.Errorf("public/%d.snapshot.json: %w", sm.Version, err)
	}
	p.roles = map[string][]byte{}
	for name, mf := range snap.Signed.Meta {
		role, err := pinnedRole(name)
		if err != nil {
			return fmt.Errorf("public/%d.snapshot.json: %w", sm.Version, err)
		}
		if mf.Version < 1 {
			return fmt.Errorf("public/%d.snapshot.json pins %s at version %d", sm.Version, name, mf.Version)
		}
		if p.roles[role], err = readBounded(r.publicPath(role, mf.Version), maxMetadata); err != nil {
			return err
		}
	}
	return nil
}

// pinnedRole returns the role a snapshot entry names, refusing any name
// this repository could not have written: a snapshot is read before it
// verifies, so its names must not reach the file system unchecked.
func pinnedRole(name string) (string, error) {
	role, ok := strings.CutSuffix(name, ".json")
	if !ok || (role != metadata.TARGETS && !isProduct(role)) {
		return "", fmt.Errorf("%w: snapshot entry %q is neither targets.json nor PRODUCT.json", ErrBadInput, name)
	}
	return role, nil
}

// checkPublished verifies published metadata: the root chain from version
// 1, then, when there is a timestamp, everything it pins, with go-tuf's
// checks and no expiry (an offline repository builds on expired metadata
// all the time). The snapshot must pin exactly targets and the roles it
// delegates. It reads nothing.
func checkPublished(p *published) (*trustedmetadata.TrustedMetadata, error) {
	first, err := metadata.Root().FromBytes(p.roots[0])
	if err != nil {
		return nil, fmt.Errorf("root version 1: %w", err)
	}
	if first.Signed.Version != 1 {
		return nil, fmt.Errorf("public/1.root.json is root version %d", first.Signed.Version)
	}
	if p.timestamp == nil {
		trusted, err := trustedmetadata.New(p.roots[0])
		if err != nil {
			return nil, fmt.Errorf("root version 1: %w", err)
		}
		for i, raw := range p.roots[1:] {
			if _, err := trusted.UpdateRoot(raw); err != nil {
				return nil, fmt.Errorf("root version %d: %w", i+2, err)
			}
		}
		return trusted, nil
	}
	md := verify.Metadata{Roots: p.roots[1:], Timestamp: p.timestamp, Snapshot: p.snapshot, Targets: p.roles[metadata.TARGETS], Delegated: map[string][]byte{}}
	for role, b := range p.roles {
		if role != metadata.TARGETS {
			md.Delegated[role] = b
		}
	}
	if md.Targets == nil {
		return nil, errors.New("the snapshot pins no targets role")
	}
	trusted, err := verify.Signed(p.roots[0], md)
	if err != nil {
		return nil, err
	}
	if got, want := int64(len(p.roots)), trusted.Root.Signed.Version; got != want {
		return nil, fmt.Errorf("the root chain ends at version %d, not %d", want, got)
	}
	for role := range md.Delegated {
		if _, ok := trusted.Targets[role]; !ok {
			return nil, fmt.Errorf("the snapshot pins %s, which targets does not delegate", role)
		}
	}
	return trusted, nil
}
