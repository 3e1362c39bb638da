package server

import (
	"net/http"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
)

// policyBody holds a policy file of fleet.MaxPolicyBytes as a JSON
// string, escapes included.
const policyBody = 4 * fleet.MaxPolicyBytes

// handleSetPolicy stores a new version of the fleet policy; a refusal
// (a rule that does not compile, with its line and column) is audited.
func (s *Server) handleSetPolicy(w http.ResponseWriter, r *http.Request) {
	var req api.PolicySet
	if err := decodeJSON(w, r, policyBody, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	out, err := s.fleet.SetPolicy(r.Context(), op(r), req.Source)
	if !s.operatorDone(w, r, "set-policy", "policy", err) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleShowPolicy(w http.ResponseWriter, r *http.Request) {
	out, err := s.fleet.ShowPolicy(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleExplainPolicy says whether the policy lets a device take a
// release: ?device=ID&release=PRODUCT/VERSION[&critical=true].
func (s *Server) handleExplainPolicy(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	device, rel := q.Get("device"), q.Get("release")
	if device == "" || rel == "" {
		writeError(w, errorf(http.StatusBadRequest, string(api.BadPolicy), "give ?device=ID&release=PRODUCT/VERSION"))
		return
	}
	critical := false
	switch q.Get("critical") {
	case "", "false":
	case "true":
		critical = true
	default:
		writeError(w, errorf(http.StatusBadRequest, string(api.BadPolicy), "critical is true or false"))
		return
	}
	out, err := s.fleet.ExplainPolicy(r.Context(), device, rel, critical)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
