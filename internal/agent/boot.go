package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/rampartfw/rampart/internal/bootloader"
)

// Boot runs once early at every boot: it finishes a trial (health check,
// then commit or roll back), notices a fallback the bootloader made on its
// own, and confirms a healthy committed slot to the bootloader.
func (a *Agent) Boot(ctx context.Context) (*Outcome, error) {
	st, err := a.open()
	if err != nil {
		return nil, err
	}
	out, err := a.settle(ctx, st, true)
	if out == nil && err == nil {
		out = &Outcome{Action: "booted"}
		if b, berr := a.BootedSlot(); berr == nil {
			out.Slot = string(b)
		}
	}
	if a.HTTP != nil {
		a.flush(ctx, st)
	}
	return out, err
}

// settle brings the state in line with the slot that booted. It returns a
// non-nil Outcome when it committed, rolled back or must reboot; with
// confirm it also health-checks a committed slot and marks it good.
func (a *Agent) settle(ctx context.Context, st *State, confirm bool) (*Outcome, error) {
	booted, err := a.BootedSlot()
	if err != nil {
		return nil, err
	}
	p := st.Pending
	if p != nil {
		ps := bootloader.Slot(p.Slot)
		switch {
		case booted == ps && (p.Phase == PhaseTrial || p.Phase == PhaseWritten):
			return a.trial(ctx, st, booted)
		case booted == ps && p.Phase == PhaseRollingBack:
			return a.rollback(ctx, st, booted, p.Reason)
		case booted == ps:
			// Running a slot the agent never finished writing: the boot
			// state was lost or tampered with. Get out of it.
			return a.rollback(ctx, st, booted, "booted-incomplete-slot")
		case p.Phase == PhaseTrial:
			// The trial never confirmed: the bootloader fell back.
			return a.fellBack(ctx, st, booted, ps, "trial-boot-failed", confirm)
		case p.Phase == PhaseRollingBack:
			return a.fellBack(ctx, st, booted, ps, p.Reason, confirm)
		}
		// installing or written on the old slot: Run resumes it.
	}
	if st.Slot != "" && booted != bootloader.Slot(st.Slot) && (p == nil || p.Slot != string(booted)) {
		// The committed slot failed its boots and the bootloader fell back
		// to the other one, which holds st.Other if anything known.
		a.Log.Warn("the committed slot did not boot; running the fallback", "committed", st.Slot, "booted", booted)
		st.Slot = string(booted)
		st.Running, st.Other = st.Other, nil
		st.queue(Report{Status: "rolled-back", Reason: "committed-slot-failed", Version: st.versionOrEmpty()})
		if err := a.save(st); err != nil {
			return nil, err
		}
	}
	if st.Slot == "" {
		st.Slot = string(booted) // first boot: the factory slot
		if err := a.save(st); err != nil {
			return nil, err
		}
	}
	if !confirm {
		return nil, nil
	}
	return a.confirmRunning(ctx, st, booted)
}

// confirmRunning health-checks the committed slot the device runs on and
// confirms it to the bootloader, which counts every boot: a slot left
// unconfirmed loses an attempt at each power-on (with GRUB's one try, the
// next power-on already finds it out of attempts). It returns an
// "unhealthy" Outcome when the check fails, nil otherwise.
func (a *Agent) confirmRunning(ctx context.Context, st *State, booted bootloader.Slot) (*Outcome, error) {
	if err := a.health(ctx); err != nil {
		a.lastError(st, err)
		st.queue(Report{Status: "failed", Reason: "health-check", Version: st.versionOrEmpty()})
		if serr := a.save(st); serr != nil {
			return nil, errors.Join(err, serr)
		}
		return &Outcome{Action: "unhealthy", Slot: string(booted), Reason: err.Error()}, err
	}
	if err := a.Bootloader.MarkGood(booted); err != nil {
		return nil, fmt.Errorf("confirming slot %s to the bootloader: %w", booted, err)
	}
	return nil, a.pruneFallback(st, booted)
}

// fellBack handles a boot of the old slot while an update of the other
// slot (failed) was on trial or being rolled back: the bootloader fell
// back by itself (the new image never came up, or the reboot after a
// failed health check happened). It records the rollback and then, like
// every boot, health-checks the slot it runs on and confirms it, so that
// the next power-on boots it again. A cut between the two finds no pending
// update and confirms the slot as on a normal boot.
func (a *Agent) fellBack(ctx context.Context, st *State, booted, failed bootloader.Slot, reason string, confirm bool) (*Outcome, error) {
	out, err := a.rolledBack(ctx, st, failed, reason)
	if err != nil || !confirm {
		return out, err
	}
	if unhealthy, err := a.confirmRunning(ctx, st, booted); err != nil {
		if unhealthy != nil {
			// The rollback stands; the old slot stays unconfirmed, as any
			// committed slot whose health check fails.
			out.Action, out.Reason = unhealthy.Action, reason+"; then the running slot failed its health check: "+unhealthy.Reason
		}
		return out, err
	}
	return out, nil
}

func (s *State) versionOrEmpty() string {
	if s.Running == nil {
		return ""
	}
	return s.Running.Version
}

// pruneFallback keeps the other slot bootable only when it holds a verified
// release at or above the security counter.
func (a *Agent) pruneFallback(st *State, running bootloader.Slot) error {
	if p := st.Pending; p != nil && p.Slot == string(other(running)) {
		return nil // being installed: already out of the order
	}
	if st.Other != nil && st.Other.SecurityVersion >= st.SecurityCounter {
		return nil
	}
	return a.unbootable(other(running))
}

func (a *Agent) health(ctx context.Context) error {
	h := a.Config.Health
	return a.Exec(ctx, h.Command, h.Timeout.Duration)
}
