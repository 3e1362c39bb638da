package server

import (
	"net/http"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
)

// maxAfter bounds the ?after= cursor of a device listing: a device id
// (pki.ValidateDeviceID allows far less).
const maxAfter = 256

// handleListDevices lists the devices a CEL selector (?select=) picks, a
// bounded page at a time (fleet.Service.ListDevices).
func (s *Server) handleListDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, bad := parseQueryInt(r, "limit", 1, fleet.MaxListLimit, fleet.DefaultListLimit)
	if bad != nil {
		writeError(w, bad)
		return
	}
	after := q.Get("after")
	if len(after) > maxAfter {
		writeError(w, errorf(http.StatusBadRequest, "bad-after", "after is %d bytes; give the id the previous page's next named", len(after)))
		return
	}
	out, err := s.fleet.ListDevices(r.Context(), q.Get("select"), after, int(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleSetTags changes a device's operator-set tags.
func (s *Server) handleSetTags(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req api.TagsRequest
	if err := decodeJSON(w, r, smallBody, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	tags, err := s.fleet.SetTags(r.Context(), op(r), id, req)
	if !s.operatorDone(w, r, "tag-device", id, err) {
		return
	}
	if tags == nil {
		tags = map[string]string{}
	}
	writeJSON(w, http.StatusOK, api.Tags{Tags: tags})
}

// handleReleases lists the published releases (?product= narrows them).
func (s *Server) handleReleases(w http.ResponseWriter, r *http.Request) {
	out, err := s.fleet.Releases(r.Context(), r.URL.Query().Get("product"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
