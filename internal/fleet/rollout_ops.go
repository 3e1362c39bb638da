package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/termsafe"
)

// maxActionReason bounds the reason an operator gives a state change.
const maxActionReason = 256

// RolloutAction changes a rollout's state with its audit entry: pause
// (a running or waiting rollout stops offering; devices in flight
// finish), resume (a paused one runs again; an aborted or completed one
// is refused: 409 rollout-state), abort (it stops for good) or approve
// (a second operator, not the creator, lets a critical rollout start or
// a rollout promote beyond its approve-after phase: the creator's own
// approval is 403 self-approval). Refusals are audited by the caller.
func (s *Service) RolloutAction(ctx context.Context, op Op, id, action, reason string) (api.Rollout, error) {
	if len(reason) > maxActionReason {
		return api.Rollout{}, refuse(Invalid, api.BadRollout, "the reason is %d bytes, more than %d", len(reason), maxActionReason)
	}
	reason = termsafe.Bounded(reason, maxActionReason)
	switch action {
	case "pause", "resume", "abort", "approve":
	default:
		return api.Rollout{}, refuse(NotFound, api.NotFound, "no rollout action %q (pause, resume, abort, approve)", termsafe.Bounded(action, 32))
	}
	err := s.atomically(ctx, op, func(tx store.Tx) (event, error) {
		r, err := tx.Rollout(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return event{}, refuse(NotFound, api.NotFound, "no rollout %s (rampart rollout list shows them)", id)
		} else if err != nil {
			return event{}, err
		}
		from := r.State
		if err := transition(&r, op.Actor, action, reason); err != nil {
			return event{}, err
		}
		if r.State == api.RolloutRunning && from != api.RolloutRunning && from != api.RolloutPaused {
			// Started or promoted by an approval: the phase's soak
			// starts now.
			r.PhaseStarted = s.now()
		}
		r.UpdatedAt = s.now()
		if err := tx.UpdateRollout(ctx, r); err != nil {
			return event{}, err
		}
		detail := map[string]string{"from": from, "to": r.State}
		if reason != "" {
			detail["reason"] = reason
		}
		return event{op.Actor, action + "-rollout", id, "ok", detail}, nil
	})
	if err != nil {
		return api.Rollout{}, err
	}
	s.invalidate()
	return s.ShowRollout(ctx, id)
}

// transition applies an operator's action to a rollout's state.
func transition(r *store.Rollout, actor, action, reason string) error {
	bad := func(format string, args ...any) error {
		return refuse(Conflict, api.RolloutState, "rollout %s is %s: "+format, append([]any{r.ID, r.State}, args...)...)
	}
	switch action {
	case "pause":
		if r.State != api.RolloutRunning && r.State != api.RolloutWaitingApproval {
			return bad("only a running or waiting rollout can be paused")
		}
		r.State, r.PausedReason = api.RolloutPaused, "paused by "+actor
		if reason != "" {
			r.PausedReason += ": " + reason
		}
	case "resume":
		if r.State != api.RolloutPaused {
			return bad("only a paused rollout can be resumed (an aborted one never runs again: create a new rollout)")
		}
		r.State, r.PausedReason = api.RolloutRunning, ""
		if r.ApprovedBy == "" && needsApproval(r) {
			r.State, r.PausedReason = api.RolloutWaitingApproval, approvalReason(r)
		}
	case "abort":
		if r.State == api.RolloutAborted || r.State == api.RolloutCompleted {
			return bad("it has ended")
		}
		r.State, r.PausedReason = api.RolloutAborted, "aborted by "+actor
		if reason != "" {
			r.PausedReason += ": " + reason
		}
	case "approve":
		if r.State != api.RolloutWaitingApproval {
			return bad("only a rollout waiting for approval can be approved")
		}
		if actor == r.CreatedBy {
			return refuse(Forbidden, api.SelfApproval, "%s created rollout %s and may not approve it: an operator with another token must (four eyes)", actor, r.ID)
		}
		r.ApprovedBy, r.State, r.PausedReason = actor, api.RolloutRunning, ""
	}
	return nil
}

// needsApproval reports whether a rollout waits for approval now: a
// critical one before it starts.
func needsApproval(r *store.Rollout) bool {
	var sp Spec
	json.Unmarshal(r.Spec, &sp)
	return sp.Critical
}

func approvalReason(r *store.Rollout) string {
	return "a critical rollout starts only when an operator other than its creator approves it"
}

// ShowRollout returns a rollout with its devices counted by status.
func (s *Service) ShowRollout(ctx context.Context, id string) (api.Rollout, error) {
	r, err := s.store.Rollout(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return api.Rollout{}, refuse(NotFound, api.NotFound, "no rollout %s (rampart rollout list shows them)", id)
	} else if err != nil {
		return api.Rollout{}, err
	}
	v, err := s.view(ctx, r, true)
	if err != nil {
		return api.Rollout{}, err
	}
	st, err := s.rolloutStats(ctx, r.ID)
	if err != nil {
		return api.Rollout{}, err
	}
	v.Stats = &st
	return v, nil
}

// ListRollouts returns the newest rollouts (at most 1000) with their
// counts.
func (s *Service) ListRollouts(ctx context.Context) (api.RolloutList, error) {
	rs, err := s.store.ListRollouts(ctx, maxRollouts)
	if err != nil {
		return api.RolloutList{}, err
	}
	out := api.RolloutList{Rollouts: []api.Rollout{}}
	for _, r := range rs {
		v, err := s.view(ctx, r, false)
		if err != nil {
			return api.RolloutList{}, err
		}
		out.Rollouts = append(out.Rollouts, v)
	}
	return out, nil
}

func (s *Service) view(ctx context.Context, r store.Rollout, reasons bool) (api.Rollout, error) {
	var sp Spec
	if err := json.Unmarshal(r.Spec, &sp); err != nil {
		return api.Rollout{}, fmt.Errorf("rollout %s: stored spec: %w", r.ID, err)
	}
	counts, err := s.store.RolloutCounts(ctx, r.ID)
	if err != nil {
		return api.Rollout{}, err
	}
	c := counts.ByStatus
	v := api.Rollout{ID: r.ID, Release: r.Target, State: r.State, Phase: r.Phase, Phases: sp.phaseNames(),
		Counts: api.RolloutCounts{Downloading: c["downloading"], Installing: c["installing"], Installed: c["installed"],
			RolledBack: c["rolled-back"], Failed: c["failed"], Refused: c["refused"], PolicyDenied: c[PolicyDenied]},
		PausedReason: r.PausedReason, FailureReasons: map[string]int{}, CreatedBy: r.CreatedBy, ApprovedBy: r.ApprovedBy,
		Select: r.Selector, SecurityVersion: r.SecurityVersion, Soak: sp.Soak.String(),
		MaxFailureRate: strconv.FormatFloat(sp.MaxFailureRate*100, 'f', -1, 64) + "%", MinSuccess: sp.MinSuccess,
		MaxConcurrent: sp.MaxConcurrent, Critical: sp.Critical, Eligible: r.Eligible, CreatedAt: r.CreatedAt, PhaseStarted: r.PhaseStarted}
	v.Window = sp.Window
	v.WindowOpen, v.WindowOpens = s.windowState(sp, s.now())
	if sp.ApproveAfter > 0 {
		v.ApproveAfter = sp.Phases[sp.ApproveAfter-1].String()
	}
	offered := 0
	for _, n := range c {
		offered += n
	}
	v.Counts.Pending = max(0, r.Eligible-offered)
	if reasons {
		if v.FailureReasons, err = s.store.RolloutReasons(ctx, r.ID, maxReasons); err != nil {
			return api.Rollout{}, err
		}
	}
	return v, nil
}

// rolloutReport moves a device's progress in the rollouts that handed it
// a release, inside its report's transaction. A final report ends its
// flight: installed (a confirmed boot of the rollout's version), or a
// failure (rolled-back, failed), which clears its assignment so that it
// stays on what it runs; after maxFailures it cools down for Cooldown.
// A refusal of tampered data is counted as refused, never as a failure.
func (s *Service) rolloutReport(ctx context.Context, tx store.Tx, id string, req api.ReportRequest, now time.Time) (final bool, err error) {
	rds, err := tx.DeviceRollouts(ctx, id)
	if err != nil {
		return false, err
	}
	for _, rd := range rds {
		if rd.Status != "downloading" && rd.Status != "installing" {
			continue
		}
		r, err := tx.Rollout(ctx, rd.RolloutID)
		if err != nil {
			return false, err
		}
		switch req.Status {
		case api.Downloading:
			continue
		case api.Installing, api.InstalledPendingReboot:
			rd.Status = "installing"
		case api.Installed:
			if !releaseIs(r.Target, req.Version) {
				continue // a confirmed boot of something else
			}
			rd.Status = "installed"
		case api.RolledBack, api.Failed:
			rd.Status, rd.Reason = string(req.Status), truncateUTF8(req.Reason, maxStoredReason)
			rd.Failures++
			if rd.Failures >= maxFailures {
				rd.CooldownUntil = now.Add(Cooldown)
			}
			if _, err := tx.Assign(ctx, "", []string{id}, now); err != nil {
				return false, err
			}
		case api.VerificationRefused:
			rd.Status, rd.Reason = "refused", req.Reason
		}
		rd.UpdatedAt = now
		if err := tx.PutRolloutDevice(ctx, rd); err != nil {
			return false, err
		}
		final = final || rd.Status != "installing"
	}
	return final, nil
}

// releaseIs reports whether target is a release of version.
func releaseIs(target, version string) bool {
	_, v, _, err := parseTarget(target)
	return err == nil && v == version
}
