package server

import (
	"net/http"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/keys"
)

// handleRevokeKey revokes a key (fleet.Service.RevokeKey); a refusal is
// audited.
func (s *Server) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	var req api.RevokeKeyRequest
	if err := decodeJSON(w, r, smallBody, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	out, err := s.fleet.RevokeKey(r.Context(), op(r), req)
	if !s.operatorDone(w, r, "revoke-key", req.KeyID, err) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRedeploy puts the last known-good release back on the devices a
// revoked key's release reached (fleet.Service.Redeploy); a refusal is
// audited.
func (s *Server) handleRedeploy(w http.ResponseWriter, r *http.Request) {
	var req api.RedeployRequest
	if err := decodeJSON(w, r, smallBody, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	out, err := s.fleet.Redeploy(r.Context(), op(r), req)
	if !s.operatorDone(w, r, "redeploy", req.Release, err) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// onlineKeyIDs names the server's online keys by key id, current and
// previous: incident response recognises them.
func onlineKeyIDs(image []keys.Signer, dk, previous director.Keys) map[string]string {
	out := map[string]string{}
	add := func(name string, ss []keys.Signer) {
		for _, k := range ss {
			if k == nil {
				continue
			}
			if id, err := keys.ID(k.Public()); err == nil {
				out[id] = name
			}
		}
	}
	// image holds snapshot, timestamp, then the keys a rotation
	// replaced (Config.PreviousOnline).
	for i, k := range image {
		name := "previous"
		switch i {
		case 0:
			name = "snapshot"
		case 1:
			name = "timestamp"
		}
		add(name, []keys.Signer{k})
	}
	add("director-targets", dk.Targets)
	add("director-snapshot", dk.Snapshot)
	add("director-timestamp", dk.Timestamp)
	add("previous", previous.Targets)
	add("previous", previous.Snapshot)
	add("previous", previous.Timestamp)
	return out
}
