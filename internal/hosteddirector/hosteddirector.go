// Package hosteddirector is rampart-server's Uptane director service: it
// owns the per-device director repositories, built on demand from the
// current director root, the device's assignment and the image
// repository's signed entry (director.Build, which is pure), stored as
// they are handed out, and cached in memory per (device, assignment and
// its sequence number, root version). Replicas over one store each keep
// their own cache: the check-in reads the assignment anyway, so one
// changed on another replica is seen at the next check-in, and a rebuild
// builds on the newest stored repository, whichever replica stored it,
// so a device's director versions never go backwards. It also keeps the current director root and picks the
// online keys it names (current or, after a rotation, previous). What a
// pushed director root may be is decided by director.AcceptRoots; HTTP
// is package server's. A Service is safe for concurrent use.
package hosteddirector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
)

// Repo is the name of the director's repository in the store; a
// device's own metadata is under Repo/DEVICE-ID.
const Repo = "director"

// ErrNoRoot means no director root has been pushed yet.
var ErrNoRoot = errors.New("the director root has not been pushed yet (rampart director push-root)")

// Store is what the director service needs of the metadata store.
type Store interface {
	Doc(ctx context.Context, repo, role string, version int64) (store.Doc, error)
	PutDocs(ctx context.Context, docs ...store.Doc) error
	Assignment(ctx context.Context, deviceID string) (store.Assignment, error)
	Device(ctx context.Context, id string) (store.Device, error)
}

// Config wires a Service.
type Config struct {
	Store Store
	// Keys are the director's online keys; Previous the ones a rotation
	// replaced, used while the current root still names them.
	Keys, Previous director.Keys
	// ProductRole returns the image repository's published role of a
	// product: what an assignment's target is copied from.
	ProductRole func(ctx context.Context, product string) (*metadata.Metadata[metadata.TargetsType], error)
	// Decide, when set, is called as a device checks in, before its
	// assignment is read: the fleet's rollouts may assign it a release
	// now (fleet.Service.Decide).
	Decide func(ctx context.Context, id string) error
	Now    func() time.Time
}

// Service is the director. It is safe for concurrent use.
type Service struct {
	store       Store
	keys        director.Keys
	previous    director.Keys
	productRole func(ctx context.Context, product string) (*metadata.Metadata[metadata.TargetsType], error)
	decide      func(ctx context.Context, id string) error
	now         func() time.Time
	root        atomic.Pointer[RootState]
	cache       cache
}

// New returns a Service.
func New(c Config) *Service {
	return &Service{store: c.Store, keys: c.Keys, previous: c.Previous, productRole: c.ProductRole, decide: c.Decide, now: c.Now}
}

// SetRoot records a newly accepted director root as the current one.
func (s *Service) SetRoot(st *RootState) { s.root.Store(st) }

// Forget drops a device's cached repository (its record was removed; an
// enrollment under the same id starts afresh).
func (s *Service) Forget(id string) { s.cache.forget(id) }

// cache keeps each device's current director repository in memory,
// keyed by (device, assignment and its sequence number, root version),
// so a check-in that finds nothing new costs a map lookup, not a
// signature.
type cache struct {
	mu      sync.Mutex
	entries map[string]*entry
}

type entry struct {
	mu        sync.Mutex
	key       string
	repo      *director.Repo
	refreshAt time.Time
}

// forget drops a device's cached repository (its record was removed; an
// enrollment under the same id starts afresh).
func (c *cache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, id)
}

func (c *cache) entry(id string) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]*entry{}
	}
	e := c.entries[id]
	if e == nil {
		e = &entry{}
		c.entries[id] = e
	}
	return e
}

// RootState is the current director root: its version, bytes and
// whether it asks for consistent snapshots.
type RootState struct {
	Version    int64
	Data       []byte
	Consistent bool
}

// ReloadRoot reads the newest director root from the store and makes it
// the current one if it is newer: a root another replica accepted
// becomes this replica's within one reload (Server.Run's interval).
func (s *Service) ReloadRoot(ctx context.Context) error {
	cur := s.root.Load()
	if cur == nil {
		return nil // loaded at the first use
	}
	d, err := s.store.Doc(ctx, Repo, metadata.ROOT, 0)
	if err != nil {
		return err
	}
	if d.Version <= cur.Version {
		return nil
	}
	rt, err := metadata.Root().FromBytes(d.Data)
	if err != nil {
		return err
	}
	s.root.CompareAndSwap(cur, &RootState{Version: d.Version, Data: d.Data, Consistent: rt.Signed.ConsistentSnapshot})
	return nil
}

// Root returns the newest director root, loading it once.
func (s *Service) Root(ctx context.Context) (*RootState, error) {
	if st := s.root.Load(); st != nil {
		return st, nil
	}
	d, err := s.store.Doc(ctx, Repo, metadata.ROOT, 0)
	if err != nil {
		return nil, err
	}
	rt, err := metadata.Root().FromBytes(d.Data)
	if err != nil {
		return nil, err
	}
	st := &RootState{Version: d.Version, Data: d.Data, Consistent: rt.Signed.ConsistentSnapshot}
	s.root.Store(st)
	return st, nil
}

// signers returns the director keys this server holds (current
// and, after a rotation, previous) that root names for each role: until
// the rotated director root is pushed the server signs with the previous
// keys, and after it with the new ones alone, never with a key the root
// no longer names.
func (s *Service) signers(root []byte) director.Keys {
	rt, err := metadata.Root().FromBytes(root)
	if err != nil {
		return s.keys // director.Build reports the bad root
	}
	pick := func(role string, cur, prev []keys.Signer) []keys.Signer {
		var out []keys.Signer
		for _, sg := range append(append([]keys.Signer{}, cur...), prev...) {
			id, err := keys.ID(sg.Public())
			if rl := rt.Signed.Roles[role]; err == nil && rl != nil && slices.Contains(rl.KeyIDs, id) {
				out = append(out, sg)
			}
		}
		if len(out) == 0 {
			return cur // director.Build names the key the root lacks
		}
		return out
	}
	return director.Keys{
		Targets:   pick(metadata.TARGETS, s.keys.Targets, s.previous.Targets),
		Snapshot:  pick(metadata.SNAPSHOT, s.keys.Snapshot, s.previous.Snapshot),
		Timestamp: pick(metadata.TIMESTAMP, s.keys.Timestamp, s.previous.Timestamp),
	}
}

// For returns the device's director repository, building and
// storing a new version only when its assignment changed or its metadata
// nears expiry.
func (s *Service) For(ctx context.Context, id string) (*director.Repo, *RootState, error) {
	root, err := s.Root(ctx)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, ErrNoRoot
		}
		return nil, nil, err
	}
	if s.decide != nil {
		if err := s.decide(ctx, id); err != nil {
			return nil, nil, err
		}
	}
	a, err := s.store.Assignment(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	e := s.cache.entry(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := s.now()
	// The assignment's sequence number is in the key: another replica may
	// have changed the assignment and changed it back (X, Y, X), and the
	// repository it built for each is newer than this replica's.
	key := director.CacheKey(id, a.Target, root.Version) + "#" + strconv.FormatUint(a.Seq, 10)
	if e.repo != nil && e.key == key && now.Before(e.refreshAt) {
		return e.repo, root, nil
	}
	dev, err := s.store.Device(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	// Build on the newest stored repository, not only this replica's
	// cached one: another replica may have stored newer versions (for a
	// newer assignment, or a renewal), and a version built on an older
	// one would collide with them and go backwards for the device.
	prev, err := s.latest(ctx, id, e.repo)
	if err != nil {
		return nil, nil, err
	}
	as := director.Assignment{DeviceID: id, HardwareID: dev.HardwareID, Target: a.Target}
	if a.Target != "" {
		product, _, _, err := release.ParseTargetPath(a.Target)
		if err != nil {
			return nil, nil, err
		}
		role, err := s.productRole(ctx, product)
		if err != nil {
			return nil, nil, err
		}
		tf, ok := role.Signed.Targets[a.Target]
		if !ok {
			return nil, nil, fmt.Errorf("assigned target %s is not in the image repository", a.Target)
		}
		as.File = tf
	}
	repo, err := director.Build(root.Data, as, prev, s.signers(root.Data), now, director.Expiry{})
	if err != nil {
		return nil, nil, err
	}
	if prev == nil || repo.Versions != prev.Versions {
		// Another replica storing the same versions at the same moment
		// makes this a conflict (store.ErrConflict): the device gets the
		// stored ones at its next check-in.
		err := s.store.PutDocs(ctx,
			store.Doc{Repo: Repo + "/" + id, Role: metadata.TARGETS, Version: repo.Versions.Targets, Data: repo.Targets},
			store.Doc{Repo: Repo + "/" + id, Role: metadata.SNAPSHOT, Version: repo.Versions.Snapshot, Data: repo.Snapshot},
			store.Doc{Repo: Repo + "/" + id, Role: metadata.TIMESTAMP, Version: repo.Versions.Timestamp, Data: repo.Timestamp})
		if err != nil {
			return nil, nil, err
		}
	}
	// Until a role needs renewing, a build for this key gives the same
	// repository back: serve it from memory till then (an hour at most).
	// A fixed minute made every check-in of a large fleet, past its
	// device's first minute, read the device, parse its product role and
	// run director.Build again.
	renew, err := repo.RenewAt(director.Expiry{})
	if err != nil {
		return nil, nil, err
	}
	if limit := now.Add(time.Hour); renew.After(limit) {
		renew = limit
	}
	e.key, e.repo, e.refreshAt = key, repo, renew
	return repo, root, nil
}

// latest returns the device's newest stored repository: cached when the
// stored timestamp's version is the cached one's (one read), loaded
// otherwise.
func (s *Service) latest(ctx context.Context, id string, cached *director.Repo) (*director.Repo, error) {
	if cached != nil {
		d, err := s.store.Doc(ctx, Repo+"/"+id, metadata.TIMESTAMP, 0)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if err == nil && d.Version == cached.Versions.Timestamp {
			return cached, nil
		}
	}
	return s.load(ctx, id)
}

func (s *Service) load(ctx context.Context, id string) (*director.Repo, error) {
	var docs [3][]byte
	for i, role := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		d, err := s.store.Doc(ctx, Repo+"/"+id, role, 0)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		docs[i] = d.Data
	}
	return director.Load(docs[0], docs[1], docs[2])
}
