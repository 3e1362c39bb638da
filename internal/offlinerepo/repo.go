// Package offlinerepo owns an offline TUF image repository on disk: the staged
// metadata that key holders sign one at a time, the payloads and chunk
// indexes of releases waiting to be published, and the published
// repository (public/) that any static web server can host.
//
// Layout of a repository directory:
//
//	rampart-repo.json          settings (expiry periods)
//	staged/root.json           roles being prepared, with the signatures
//	staged/targets.json        gathered so far
//	staged/roles/PRODUCT.json
//	staged/blobs/SHA256        payloads and chunk indexes not yet published
//	public/N.root.json         every root version, so clients walk rotations
//	public/N.targets.json      consistent-snapshot metadata
//	public/N.PRODUCT.json
//	public/N.snapshot.json
//	public/timestamp.json
//	public/targets/PRODUCT/VERSION/SHA256.FILENAME
//	public/targets/PRODUCT/VERSION/SHA256.FILENAME.rpidx   (chunk index)
//
// Every command takes an exclusive lock on the directory and writes files
// atomically, so a failed or interrupted command leaves the repository as
// it was (or, for publish, with the new files present but not yet
// referenced by timestamp.json).
package offlinerepo

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/release"
)

// Errors callers distinguish.
var (
	ErrNotRepository  = errors.New("not a rampart repository")
	ErrExists         = errors.New("already exists")
	ErrNotAuthorised  = errors.New("key is not authorised for this role")
	ErrAlreadySigned  = errors.New("role is already signed by this key")
	ErrBelowThreshold = errors.New("role does not meet its signature threshold")
	ErrNothingStaged  = errors.New("nothing staged for this role")
	ErrUnknownRole    = errors.New("unknown role")
	ErrSecurityLower  = errors.New("security version would go down")
	ErrBadInput       = errors.New("invalid input")
	ErrExpired        = errors.New("role has expired")
	ErrLocked         = errors.New("repository is locked by another rampart command")
	ErrCorruptStaging = errors.New("staged release is corrupt")
)

// Repo is an open repository. It is not safe for concurrent use; the
// directory lock keeps other processes out.
type Repo struct {
	Dir  string
	cfg  *Config
	lock *os.File
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Notify receives remarks for the operator (for example signatures
	// that a change invalidated).
	Notify func(string)
}

func (r *Repo) now() time.Time { return r.Now().UTC().Truncate(time.Second) }

func (r *Repo) notify(format string, args ...any) {
	if r.Notify != nil {
		r.Notify(fmt.Sprintf(format, args...))
	}
}

func (r *Repo) stagedDir() string        { return filepath.Join(r.Dir, "staged") }
func (r *Repo) publicDir() string        { return filepath.Join(r.Dir, "public") }
func (r *Repo) blobDir() string          { return filepath.Join(r.Dir, "staged", "blobs") }
func (r *Repo) blobPath(h string) string { return filepath.Join(r.blobDir(), h) }

func (r *Repo) stagedPath(role string) string {
	switch role {
	case metadata.ROOT, metadata.TARGETS:
		return filepath.Join(r.stagedDir(), role+".json")
	}
	return filepath.Join(r.stagedDir(), "roles", role+".json")
}

// Open opens and locks an existing repository.
func Open(dir string) (*Repo, error) {
	cfg, err := readConfig(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w (no %s)", dir, ErrNotRepository, configName)
		}
		return nil, err
	}
	r := &Repo{Dir: dir, cfg: cfg, Now: time.Now}
	if err := r.lockDir(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Repo) lockDir() error {
	f, err := os.OpenFile(filepath.Join(r.Dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", r.Dir, ErrLocked)
	}
	r.lock = f
	return nil
}

// Close releases the repository lock.
func (r *Repo) Close() error {
	if r.lock == nil {
		return nil
	}
	err := r.lock.Close()
	r.lock = nil
	return err
}

// Config returns the repository's settings.
func (r *Repo) Config() *Config { return r.cfg }

// state is the repository as it will be after the next publish: staged
// roles where there are some, published ones elsewhere.
type state struct {
	root       *metadata.Metadata[metadata.RootType]
	rootStaged bool
	// prevRoot is the latest published root, nil before the first publish.
	prevRoot *metadata.Metadata[metadata.RootType]
	// parentRoot is the root version before the effective one, whose keys
	// also had to sign it; nil for version 1.
	parentRoot    *metadata.Metadata[metadata.RootType]
	targets       *metadata.Metadata[metadata.TargetsType]
	targetsStaged bool
	roles         map[string]*metadata.Metadata[metadata.TargetsType]
	rolesStaged   map[string]bool
	// published versions of each role, zero when never published.
	pubVersion map[string]int64
	snapshot   *metadata.Metadata[metadata.SnapshotType]
	timestamp  *metadata.Metadata[metadata.TimestampType]
	// pub is public/ as it verified.
	pub *published
}

var rootFileRE = regexp.MustCompile(`^([0-9]+)\.root\.json$`)

// publishedRootVersions lists the N of every public/N.root.json, ascending.
func (r *Repo) publishedRootVersions() ([]int64, error) {
	entries, err := os.ReadDir(r.publicDir())
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var vs []int64
	for _, e := range entries {
		if m := rootFileRE.FindStringSubmatch(e.Name()); m != nil {
			v, err := strconv.ParseInt(m[1], 10, 64)
			if err == nil {
				vs = append(vs, v)
			}
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	return vs, nil
}

func readMeta[T metadata.Roles](path string, empty *metadata.Metadata[T]) (*metadata.Metadata[T], error) {
	b, err := readBounded(path, maxMetadata)
	if err != nil {
		return nil, err
	}
	m, err := empty.FromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func (r *Repo) load() (*state, error) {
	s := &state{roles: map[string]*metadata.Metadata[metadata.TargetsType]{}, rolesStaged: map[string]bool{}, pubVersion: map[string]int64{}}
	pub, err := r.readPublished()
	if err != nil {
		return nil, err
	}
	s.pub = pub
	if len(pub.roots) > 0 {
		s.prevRoot = pub.latestRoot()
		s.pubVersion[metadata.ROOT] = int64(len(pub.roots))
	}
	if pub.timestamp != nil {
		s.timestamp, s.snapshot = pub.trusted.Timestamp, pub.trusted.Snapshot
		for role := range pub.roles {
			m := pub.trusted.Targets[role]
			s.pubVersion[role] = m.Signed.Version
			if role == metadata.TARGETS {
				s.targets = m
			} else {
				s.roles[role] = m
			}
		}
	}

	s.root = s.prevRoot
	if m, err := readMeta(r.stagedPath(metadata.ROOT), metadata.Root()); err == nil {
		s.root, s.rootStaged = m, true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if s.root == nil {
		return nil, fmt.Errorf("%s: %w (no root metadata)", r.Dir, ErrNotRepository)
	}
	if s.rootStaged {
		s.parentRoot = s.prevRoot
	} else if v := s.root.Signed.Version; v > 1 {
		if s.parentRoot, err = metadata.Root().FromBytes(pub.roots[v-2]); err != nil {
			return nil, err
		}
	}
	if m, err := readMeta(r.stagedPath(metadata.TARGETS), metadata.Targets()); err == nil {
		s.targets, s.targetsStaged = m, true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if s.targets == nil {
		return nil, fmt.Errorf("%s: %w (no targets metadata)", r.Dir, ErrNotRepository)
	}
	entries, err := os.ReadDir(filepath.Join(r.stagedDir(), "roles"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if filepath.Ext(name) != ".json" {
			continue
		}
		role := name[:len(name)-len(".json")]
		if !isProduct(role) {
			return nil, fmt.Errorf("%w: %s is not a product role's staged metadata; move it out of %s", ErrBadInput, name, filepath.Join(r.stagedDir(), "roles"))
		}
		m, err := readMeta(filepath.Join(r.stagedDir(), "roles", name), metadata.Targets())
		if err != nil {
			return nil, err
		}
		s.roles[role], s.rolesStaged[role] = m, true
	}
	// A product delegated but never published whose staged version was
	// unstaged is back where repo delegate left it: staged, and empty.
	for _, d := range s.delegatedRoles() {
		if s.roles[d.Name] == nil {
			s.roles[d.Name], s.rolesStaged[d.Name] = metadata.Targets(r.now().Add(r.cfg.ExpiryFor(d.Name))), true
		}
	}
	return s, nil
}

// delegatedRoles returns the product roles the effective targets delegate.
func (s *state) delegatedRoles() []metadata.DelegatedRole {
	if s.targets.Signed.Delegations == nil {
		return nil
	}
	return s.targets.Signed.Delegations.Roles
}

func (s *state) delegation(role string) *metadata.DelegatedRole {
	for i, d := range s.delegatedRoles() {
		if d.Name == role {
			return &s.delegatedRoles()[i]
		}
	}
	return nil
}

// stageRoot makes the root editable: a staged copy with the next version,
// a fresh expiry and no signatures. Changing an already staged root drops
// the signatures it had gathered, since they no longer cover its content.
func (r *Repo) stageRoot(s *state) {
	if s.rootStaged {
		r.dropSignatures("root", len(s.root.Signatures))
		s.root.ClearSignatures()
	} else {
		c := *s.root
		c.Signed.Keys = cloneKeys(s.root.Signed.Keys)
		c.Signed.Roles = cloneRoles(s.root.Signed.Roles)
		c.Signatures = nil
		c.Signed.Version = s.root.Signed.Version + 1
		s.root, s.rootStaged = &c, true
	}
	s.root.Signed.Expires = r.now().Add(r.cfg.ExpiryFor(metadata.ROOT))
}

func (r *Repo) stageTargets(s *state, role string) *metadata.Metadata[metadata.TargetsType] {
	var m *metadata.Metadata[metadata.TargetsType]
	staged := false
	if role == metadata.TARGETS {
		m, staged = s.targets, s.targetsStaged
	} else {
		m, staged = s.roles[role], s.rolesStaged[role]
	}
	if staged {
		r.dropSignatures(role, len(m.Signatures))
		m.ClearSignatures()
	} else {
		b, _ := m.ToBytes(false)
		c, _ := metadata.Targets().FromBytes(b) // deep copy of a document we just encoded
		c.Signatures = nil
		c.Signed.Version = m.Signed.Version + 1
		m = c
	}
	m.Signed.Expires = r.now().Add(r.cfg.ExpiryFor(role))
	if role == metadata.TARGETS {
		s.targets, s.targetsStaged = m, true
	} else {
		s.roles[role], s.rolesStaged[role] = m, true
	}
	return m
}

func (r *Repo) dropSignatures(role string, n int) {
	if n > 0 {
		r.notify("the change to %s invalidates the %d signature(s) it had; its signers must sign again", role, n)
	}
}

func cloneKeys(in map[string]*metadata.Key) map[string]*metadata.Key {
	out := make(map[string]*metadata.Key, len(in))
	for k, v := range in {
		c := *v
		out[k] = &c
	}
	return out
}

func cloneRoles(in map[string]*metadata.Role) map[string]*metadata.Role {
	out := make(map[string]*metadata.Role, len(in))
	for k, v := range in {
		c := *v
		c.KeyIDs = append([]string(nil), v.KeyIDs...)
		out[k] = &c
	}
	return out
}

// saveStaged writes every staged role of s.
func (r *Repo) saveStaged(s *state, roles ...string) error {
	if err := os.MkdirAll(filepath.Join(r.stagedDir(), "roles"), 0o755); err != nil {
		return err
	}
	for _, role := range roles {
		var b []byte
		var err error
		switch role {
		case metadata.ROOT:
			b, err = s.root.ToBytes(true)
		case metadata.TARGETS:
			b, err = s.targets.ToBytes(true)
		default:
			b, err = s.roles[role].ToBytes(true)
		}
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(r.stagedPath(role), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// isProduct reports whether role is a delegated product role.
func isProduct(role string) bool {
	return release.ValidateProduct(role) == nil
}

func sha256Hex(b []byte) string { return hex.EncodeToString(sha256Sum(b)) }

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func (r *Repo) publicPath(role string, version int64) string {
	return filepath.Join(r.publicDir(), fmt.Sprintf("%d.%s.json", version, role))
}
