package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
)

const directorRepo = "director"

// directorCache keeps each device's current director repository in memory,
// keyed by (device, assignment, root version), so a check-in that finds
// nothing new costs a map lookup, not a signature.
type directorCache struct {
	mu      sync.Mutex
	entries map[string]*directorEntry
}

type directorEntry struct {
	mu        sync.Mutex
	key       string
	repo      *director.Repo
	refreshAt time.Time
}

// forget drops a device's cached repository (its record was removed; an
// enrollment under the same id starts afresh).
func (c *directorCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, id)
}

func (c *directorCache) entry(id string) *directorEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]*directorEntry{}
	}
	e := c.entries[id]
	if e == nil {
		e = &directorEntry{}
		c.entries[id] = e
	}
	return e
}

type directorRootRequest = api.DirectorRootRequest

// handleDirectorRoot accepts new versions of the offline-signed director
// root when director.AcceptRoots does, and stores them with their audit
// entry.
func (s *Server) handleDirectorRoot(w http.ResponseWriter, r *http.Request) {
	var req directorRootRequest
	if err := decodeJSON(w, r, maxJSONBody, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if len(req.Roots) == 0 {
		writeError(w, errorf(http.StatusBadRequest, "nothing-pushed", "give at least one root version"))
		return
	}
	s.images.Lock()
	defer s.images.Unlock()
	var chain [][]byte
	for v := int64(1); ; v++ {
		d, err := s.store.Doc(r.Context(), directorRepo, metadata.ROOT, v)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			writeError(w, toAPIError(err))
			return
		}
		chain = append(chain, d.Data)
	}
	root, err := director.AcceptRoots(chain, req.Roots, s.directorKeys, s.now())
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	var docs []store.Doc
	for i, raw := range req.Roots {
		docs = append(docs, store.Doc{Repo: directorRepo, Role: metadata.ROOT, Version: int64(len(chain) + i + 1), Data: raw})
	}
	err = s.atomically(r, func(tx store.Tx) (event, error) {
		return event{operatorActor(r), "push-director-root", "director", "accepted", map[string]string{"version": strconv.FormatInt(root.Signed.Version, 10)}},
			tx.PutDocs(r.Context(), docs...)
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.directorRoot.Store(&directorRootState{version: root.Signed.Version, data: req.Roots[len(req.Roots)-1], consistent: root.Signed.ConsistentSnapshot})
	writeJSON(w, http.StatusOK, api.DirectorRootResponse{Root: root.Signed.Version})
}

func (s *Server) handleDirectorRootVersion(w http.ResponseWriter, r *http.Request) {
	var v int64
	if d, err := s.store.Doc(r.Context(), directorRepo, metadata.ROOT, 0); err == nil {
		v = d.Version
	} else if !errors.Is(err, store.ErrNotFound) {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.DirectorVersionResponse{Director: v})
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

type directorRootState struct {
	version    int64
	data       []byte
	consistent bool
}

// currentDirectorRoot returns the newest director root, loading it once.
func (s *Server) currentDirectorRoot(ctx context.Context) (*directorRootState, error) {
	if st := s.directorRoot.Load(); st != nil {
		return st, nil
	}
	d, err := s.store.Doc(ctx, directorRepo, metadata.ROOT, 0)
	if err != nil {
		return nil, err
	}
	rt, err := metadata.Root().FromBytes(d.Data)
	if err != nil {
		return nil, err
	}
	st := &directorRootState{version: d.Version, data: d.Data, consistent: rt.Signed.ConsistentSnapshot}
	s.directorRoot.Store(st)
	return st, nil
}

var directorFileRE = regexp.MustCompile(`^([1-9][0-9]{0,18})\.(root|snapshot|targets)\.json$`)

// handleDirector serves the calling device's own director repository; the
// device is whoever its client certificate says, so no device can ask for
// another's.
func (s *Server) handleDirector(w http.ResponseWriter, r *http.Request) {
	id, ok := s.device(w, r)
	if !ok {
		return
	}
	file := r.PathValue("file")
	w.Header().Set("Cache-Control", "no-store") // per device: never cache in shared caches
	if m := directorFileRE.FindStringSubmatch(file); m != nil && !servableVersion(m[1]) {
		writeError(w, errorf(http.StatusNotFound, "not-found", "no director file %q", file))
		return
	}
	if m := directorFileRE.FindStringSubmatch(file); m != nil && m[2] == "root" {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		d, err := s.store.Doc(r.Context(), directorRepo, metadata.ROOT, v)
		if err != nil {
			writeError(w, toAPIError(err))
			return
		}
		writeMeta(w, d.Data)
		return
	}
	repo, root, err := s.directorFor(r.Context(), id)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if b, ok := repo.Files(root.consistent)[file]; ok {
		writeMeta(w, b)
		return
	}
	// An older version the device may still ask for.
	if m := directorFileRE.FindStringSubmatch(file); m != nil {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		d, err := s.store.Doc(r.Context(), directorRepo+"/"+id, m[2], v)
		if err == nil {
			writeMeta(w, d.Data)
			return
		}
	}
	writeError(w, errorf(http.StatusNotFound, "not-found", "no director file %q", file))
}

// directorSigners returns the director keys this server holds (current
// and, after a rotation, previous) that root names for each role: until
// the rotated director root is pushed the server signs with the previous
// keys, and after it with the new ones alone, never with a key the root
// no longer names.
func (s *Server) directorSigners(root []byte) director.Keys {
	rt, err := metadata.Root().FromBytes(root)
	if err != nil {
		return s.directorKeys // director.Build reports the bad root
	}
	pick := func(role string, cur, prev []keys.Signer) []keys.Signer {
		var out []keys.Signer
		for _, sg := range append(append([]keys.Signer{}, cur...), prev...) {
			id, err := keys.ID(sg.Public())
			if rl := rt.Signed.Roles[role]; err == nil && rl != nil && contains(rl.KeyIDs, id) {
				out = append(out, sg)
			}
		}
		if len(out) == 0 {
			return cur // director.Build names the key the root lacks
		}
		return out
	}
	return director.Keys{
		Targets:   pick(metadata.TARGETS, s.directorKeys.Targets, s.previousDirectorKeys.Targets),
		Snapshot:  pick(metadata.SNAPSHOT, s.directorKeys.Snapshot, s.previousDirectorKeys.Snapshot),
		Timestamp: pick(metadata.TIMESTAMP, s.directorKeys.Timestamp, s.previousDirectorKeys.Timestamp),
	}
}

func writeMeta(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// directorFor returns the device's director repository, building and
// storing a new version only when its assignment changed or its metadata
// nears expiry.
func (s *Server) directorFor(ctx context.Context, id string) (*director.Repo, *directorRootState, error) {
	root, err := s.currentDirectorRoot(ctx)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, errorf(http.StatusServiceUnavailable, "no-director-root", "the director root has not been pushed yet (rampart director push-root)")
		}
		return nil, nil, err
	}
	a, err := s.store.Assignment(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	e := s.directors.entry(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := s.now()
	key := director.CacheKey(id, a.Target, root.version)
	if e.repo != nil && e.key == key && now.Before(e.refreshAt) {
		return e.repo, root, nil
	}
	dev, err := s.store.Device(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	prev := e.repo
	if prev == nil {
		if prev, err = s.loadDirector(ctx, id); err != nil {
			return nil, nil, err
		}
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
	repo, err := director.Build(root.data, as, prev, s.directorSigners(root.data), now, director.Expiry{})
	if err != nil {
		return nil, nil, err
	}
	if prev == nil || repo.Versions != prev.Versions {
		err := s.store.PutDocs(ctx,
			store.Doc{Repo: directorRepo + "/" + id, Role: metadata.TARGETS, Version: repo.Versions.Targets, Data: repo.Targets},
			store.Doc{Repo: directorRepo + "/" + id, Role: metadata.SNAPSHOT, Version: repo.Versions.Snapshot, Data: repo.Snapshot},
			store.Doc{Repo: directorRepo + "/" + id, Role: metadata.TIMESTAMP, Version: repo.Versions.Timestamp, Data: repo.Timestamp})
		if err != nil {
			return nil, nil, err
		}
	}
	e.key, e.repo, e.refreshAt = key, repo, now.Add(time.Minute)
	return repo, root, nil
}

func (s *Server) loadDirector(ctx context.Context, id string) (*director.Repo, error) {
	var docs [3][]byte
	for i, role := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		d, err := s.store.Doc(ctx, directorRepo+"/"+id, role, 0)
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
