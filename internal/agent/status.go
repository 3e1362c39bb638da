package agent

import (
	"errors"
	"os"
)

// Status is what rampart-agent status shows.
type Status struct {
	DeviceID        string      `json:"device_id"`
	HardwareID      string      `json:"hardware_id"`
	Enrolled        bool        `json:"enrolled"`
	BootedSlot      string      `json:"booted_slot,omitempty"`
	CommittedSlot   string      `json:"committed_slot,omitempty"`
	Running         *Release    `json:"running,omitempty"`
	Other           *Release    `json:"other,omitempty"`
	SecurityCounter uint64      `json:"security_counter"`
	Pending         *Pending    `json:"pending,omitempty"`
	LastError       *Event      `json:"last_error,omitempty"`
	QueuedReports   int         `json:"queued_reports"`
	ReportCounter   uint64      `json:"report_counter"`
	Boot            *BootStatus `json:"boot,omitempty"`
}

// BootStatus is the bootloader's view.
type BootStatus struct {
	Order    []string       `json:"order"`
	Attempts map[string]int `json:"attempts"`
	Error    string         `json:"error,omitempty"`
}

// Status reads the state without changing anything.
func (a *Agent) Status() (*Status, error) {
	st, err := loadState(a.FS, a.stateDir())
	if errors.Is(err, ErrStateDamaged) {
		st, err = recoverState(a.FS, a.stateDir(), err, a.now(), false)
	}
	if err != nil {
		return nil, err
	}
	s := &Status{DeviceID: a.Config.Device.ID, HardwareID: a.Config.Device.HardwareID,
		CommittedSlot: st.Slot, Running: st.Running, Other: st.Other, SecurityCounter: st.SecurityCounter,
		Pending: st.Pending, LastError: st.LastError, QueuedReports: len(st.Outbox), ReportCounter: st.ReportCounter}
	if _, err := os.Stat(a.Config.Device.Certificate); err == nil {
		s.Enrolled = true
	}
	if a.BootedSlot != nil {
		if b, err := a.BootedSlot(); err == nil {
			s.BootedSlot = string(b)
		}
	}
	if a.Bootloader != nil {
		bs, err := a.Bootloader.State()
		s.Boot = &BootStatus{Attempts: map[string]int{}}
		for _, sl := range bs.Order {
			s.Boot.Order = append(s.Boot.Order, string(sl))
			s.Boot.Attempts[string(sl)] = bs.Attempts[sl]
		}
		if err != nil {
			s.Boot.Error = err.Error()
		}
	}
	return s, nil
}
