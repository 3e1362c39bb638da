package tlog

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/transparency-dev/tessera/api/layout"
)

// Handler serves the log in dir read-only over HTTP in the C2SP
// tlog-tiles layout, at the handler's root (mount it with
// http.StripPrefix):
//
//	GET checkpoint                     text/plain; not cached
//	GET tile/<L>/<N>[.p/<W>]           hash tiles
//	GET tile/entries/<N>[.p/<W>]       entry bundles
//
// Tiles and bundles never change once written, so they are served as
// immutable; a partial one may disappear once the full one exists. Only
// canonical tile paths are served (layout.TilePath / layout.EntriesPath of
// the parsed coordinates), so nothing else in dir, such as .state, is
// reachable. The handler needs no open Log: a read-only replica can serve a
// copy of the directory.
func Handler(dir string) http.Handler {
	return &handler{dir: dir}
}

type handler struct{ dir string }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rel := strings.TrimPrefix(r.URL.Path, "/")
	var cacheControl, contentType string
	switch {
	case rel == layout.CheckpointPath:
		contentType = "text/plain; charset=utf-8"
		cacheControl = "no-cache"
	case canonicalTilePath(rel):
		contentType = "application/octet-stream"
		cacheControl = "public, max-age=31536000, immutable"
	default:
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(filepath.Join(h.dir, filepath.FromSlash(rel)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			http.NotFound(w, r)
			return
		}
		http.Error(w, "read error", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", cacheControl)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Modification times carry no meaning for immutable tiles and would
	// make the checkpoint conditional on a clock; serve without them.
	http.ServeContent(w, r, "", time.Time{}, f)
}

// canonicalTilePath reports whether p is exactly the tlog-tiles path of a
// hash tile or an entry bundle.
func canonicalTilePath(p string) bool {
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return false
	}
	if idx, ok := strings.CutPrefix(rest, "entries/"); ok {
		n, w, err := layout.ParseTileIndexPartial(idx)
		return err == nil && layout.EntriesPath(n, w) == p
	}
	level, idx, ok := strings.Cut(rest, "/")
	if !ok {
		return false
	}
	l, n, w, err := layout.ParseTileLevelIndexPartial(level, idx)
	return err == nil && layout.TilePath(l, n, w) == p
}
