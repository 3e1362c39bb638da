package agent

import (
	"context"
	"fmt"

	"github.com/rampartfw/rampart/internal/bootloader"
)

// rollback takes the running (trial) slot out of the boot order and reboots
// into the other one.
func (a *Agent) rollback(ctx context.Context, st *State, slot bootloader.Slot, reason string) (*Outcome, error) {
	if err := a.unbootable(slot); err != nil {
		return nil, err
	}
	out, err := a.rolledBack(ctx, st, slot, reason)
	if err != nil {
		return nil, err
	}
	out.Reboot = true
	if err := a.Exec(ctx, a.Config.Reboot.Command, a.Config.Reboot.Timeout.Duration); err != nil {
		return out, fmt.Errorf("reboot command: %w", err)
	}
	return out, nil
}

// rolledBack records a finished rollback of the pending update in slot.
func (a *Agent) rolledBack(ctx context.Context, st *State, slot bootloader.Slot, reason string) (*Outcome, error) {
	if err := a.unbootable(slot); err != nil {
		return nil, err
	}
	p := st.Pending
	st.fail(p.SHA256, reason)
	st.Pending = nil
	st.queue(Report{Status: "rolled-back", Reason: reason, Version: p.Version, SecurityVersion: p.SecurityVersion})
	if err := a.save(st); err != nil {
		return nil, err
	}
	a.Log.Warn("rolled back", "target", p.Target, "reason", reason)
	return &Outcome{Action: "rolled-back", Target: p.Target, Reason: reason, Slot: string(other(slot))}, nil
}
