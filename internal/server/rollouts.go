package server

import (
	"context"
	"net/http"

	"github.com/rampartfw/rampart/internal/api"
)

// rolloutBody holds a rollout request: a selector of up to
// fleet.MaxExprBytes and the flags.
const rolloutBody = 8 << 10

// StepRollouts runs the rollout engine once (fleet.Service.Step): Run
// calls it every interval; tests call it after moving their clock.
func (s *Server) StepRollouts(ctx context.Context) error { return s.fleet.Step(ctx) }

// handleCreateRollout creates a rollout; a refusal is audited.
func (s *Server) handleCreateRollout(w http.ResponseWriter, r *http.Request) {
	var req api.RolloutRequest
	if err := decodeJSON(w, r, rolloutBody, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	out, err := s.fleet.CreateRollout(r.Context(), op(r), req)
	if !s.operatorDone(w, r, "create-rollout", req.Release, err) {
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleListRollouts(w http.ResponseWriter, r *http.Request) {
	out, err := s.fleet.ListRollouts(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleShowRollout(w http.ResponseWriter, r *http.Request) {
	out, err := s.fleet.ShowRollout(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRolloutAction pauses, resumes, aborts or approves a rollout; a
// refusal (approving your own rollout, resuming an aborted one) is
// audited.
func (s *Server) handleRolloutAction(w http.ResponseWriter, r *http.Request) {
	id, action := r.PathValue("id"), r.PathValue("action")
	var req api.RolloutAction
	if r.ContentLength != 0 { // the body, with its reason, is optional
		if err := decodeJSON(w, r, smallBody, &req); err != nil {
			writeError(w, toAPIError(err))
			return
		}
	}
	out, err := s.fleet.RolloutAction(r.Context(), op(r), id, action, req.Reason)
	if !s.operatorDone(w, r, action+"-rollout", id, err) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}
