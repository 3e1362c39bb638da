package server

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/hosteddirector"
	"github.com/rampartfw/rampart/internal/store"
)

const directorRepo = hosteddirector.Repo

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
	s.directors.SetRoot(&hosteddirector.RootState{Version: root.Signed.Version, Data: req.Roots[len(req.Roots)-1], Consistent: root.Signed.ConsistentSnapshot})
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
	repo, root, err := s.directors.For(r.Context(), id)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if b, ok := repo.Files(root.Consistent)[file]; ok {
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

func writeMeta(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}
