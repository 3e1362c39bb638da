package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/rampartfw/rampart/internal/bootloader"
)

// trial is the first boot of a freshly installed slot.
func (a *Agent) trial(ctx context.Context, st *State, slot bootloader.Slot) (*Outcome, error) {
	p := st.Pending
	if err := a.health(ctx); err != nil {
		reason := "health-check-failed"
		var te *TimeoutError
		if errors.As(err, &te) {
			reason = "health-check-timeout"
		}
		a.Log.Warn("trial boot unhealthy, rolling back", "target", p.Target, "err", err)
		a.lastError(st, err)
		p.Phase, p.Reason = PhaseRollingBack, reason
		if err := a.save(st); err != nil {
			return nil, err
		}
		return a.rollback(ctx, st, slot, reason)
	}
	// Commit: the bootloader first, then the state. A cut in between
	// finds the trial phase again and repeats both.
	if err := a.Bootloader.MarkGood(slot); err != nil {
		return nil, fmt.Errorf("committing slot %s: %w", slot, err)
	}
	rel := p.Release
	st.Other, st.Running = st.Running, &rel
	if st.Slot == string(slot) {
		st.Other = nil // reinstall into the committed slot: nothing known about the other
	}
	st.Slot = string(slot)
	st.SecurityCounter = max(st.SecurityCounter, rel.SecurityVersion)
	st.Pending = nil
	delete(st.Failed, rel.SHA256)
	st.LastError = nil
	st.queue(Report{Status: "installed", Version: rel.Version, SecurityVersion: rel.SecurityVersion})
	if err := a.save(st); err != nil {
		return nil, err
	}
	a.Log.Info("committed", "target", rel.Target, "slot", slot, "security_counter", st.SecurityCounter)
	if err := a.pruneFallback(st, slot); err != nil {
		return nil, err
	}
	return &Outcome{Action: "committed", Target: rel.Target, Slot: string(slot)}, nil
}
