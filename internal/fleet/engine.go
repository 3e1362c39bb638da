package fleet

import (
	"context"
	"fmt"
	"strconv"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/store"
)

// Step is the rollout engine's periodic work: for each running rollout
// it reads its devices' counts (one indexed query), pauses it when its
// failure-rate gate is breached, and when the phase's soak is over and
// its gates pass promotes it to the next phase (or completes it, or
// waits for approval beyond its approve-after phase). Its cost is
// bounded by the number of running rollouts; only a phase start reads
// the fleet, in batches. Every change is audited (actor "server").
func (s *Service) Step(ctx context.Context) error {
	if err := s.stepPolicy(ctx); err != nil {
		return err
	}
	rs, err := s.store.RolloutsInState(ctx, api.RolloutRunning)
	if err != nil {
		return err
	}
	changed := false
	for _, r := range rs {
		c, err := s.step(ctx, r)
		if err != nil {
			return fmt.Errorf("rollout %s: %w", r.ID, err)
		}
		changed = changed || c
	}
	if changed {
		s.invalidate()
	}
	return nil
}

// Gates decides a phase's gates from its devices' counts: how many
// installs it needs (min-success, or every device the phases so far
// hold when they are fewer), and whether the failure rate (rollbacks and
// failed installs among the outcomes; refusals of tampered data are not
// failures) is over the limit once that many outcomes are in.
func Gates(sp Spec, eligible int, c store.RolloutCounts) (need int, breached bool, rate float64) {
	need = min(sp.MinSuccess, eligible)
	failures := c.Failures
	outcomes := c.ByStatus["installed"] + failures
	if outcomes > 0 {
		rate = float64(failures) / float64(outcomes)
	}
	return need, outcomes >= max(need, 1) && rate > sp.MaxFailureRate, rate
}

func (s *Service) step(ctx context.Context, r store.Rollout) (bool, error) {
	a, err := parseActive(r)
	if err != nil {
		return false, err
	}
	c, err := s.store.RolloutCounts(ctx, r.ID)
	if err != nil {
		return false, err
	}
	now := s.now()
	phase := r.Phase
	// Devices the policy denies never install: the gates count
	// without them.
	need, breached, rate := Gates(a.spec, max(0, r.Eligible-c.ByStatus[PolicyDenied]), c)
	ev := audit.Entry{Actor: "server", Subject: r.ID, Outcome: "ok"}
	switch {
	case breached:
		r.State = api.RolloutPaused
		r.PausedReason = fmt.Sprintf("gate: failure rate %.1f%% (%d failures, rollbacks included, against %d confirmed installs) is over %.1f%% in phase %d (%s)",
			rate*100, c.Failures, c.ByStatus["installed"], a.spec.MaxFailureRate*100, r.Phase, a.spec.Phases[r.Phase-1])
		ev.Action, ev.Detail = "pause-rollout", map[string]string{"reason": r.PausedReason}
	case now.Sub(r.PhaseStarted) < a.spec.Soak || c.ByStatus["installed"] < need:
		return false, nil
	case !s.rolloutOpen(a, now):
		// Outside its window the phase holds: it is not promoted
		// (nor completed) until the window opens.
		return false, nil
	case r.Phase == len(a.spec.Phases):
		r.State, r.PausedReason = api.RolloutCompleted, ""
		ev.Action, ev.Detail = "complete-rollout", map[string]string{"installed": strconv.Itoa(c.ByStatus["installed"])}
	case r.Phase == a.spec.ApproveAfter && r.ApprovedBy == "":
		r.State = api.RolloutWaitingApproval
		r.PausedReason = fmt.Sprintf("promotion beyond phase %d (%s) needs the approval of an operator other than %s", r.Phase, a.spec.Phases[r.Phase-1], r.CreatedBy)
		ev.Action, ev.Detail = "await-approval", map[string]string{"phase": strconv.Itoa(r.Phase)}
	default:
		hw, err := s.hardwareOf(ctx, a)
		if err != nil {
			return false, err
		}
		if _, _, err := s.startPhase(ctx, a, r.Phase+1, hw); err != nil {
			return false, err
		}
		r = a.r
		ev.Action, ev.Detail = "promote-rollout", map[string]string{"phase": strconv.Itoa(r.Phase), "eligible": strconv.Itoa(r.Eligible)}
	}
	r.UpdatedAt = now
	ev.Time = now
	err = s.store.Atomic(ctx, func(tx store.Tx) error {
		// Only from the state read: an operator may have paused or
		// aborted it meanwhile.
		cur, err := tx.Rollout(ctx, r.ID)
		if err != nil || cur.State != api.RolloutRunning || cur.Phase != phase {
			return err
		}
		if err := tx.UpdateRollout(ctx, r); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, ev)
		return err
	})
	return err == nil, err
}
