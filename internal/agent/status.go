package agent

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/pki"
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

// EnrollError is the server refusing an enrollment, with its error code.
type EnrollError struct {
	Status int
	Code   string
	Msg    string
}

func (e *EnrollError) Error() string {
	return fmt.Sprintf("enrollment refused (HTTP %d %s): %s", e.Status, e.Code, e.Msg)
}

// Enroll makes the device key here, on the device, sends only a CSR with
// the one-time token, and stores the certificate the server issues. It
// never overwrites an existing key: a device enrolls once.
func Enroll(ctx context.Context, cfg *Config, token string) (*Enrolled, error) {
	if cfg.Server.URL == "" {
		return nil, &ConfigError{Msg: "server.url is required to enroll"}
	}
	if _, err := os.Stat(cfg.Device.Certificate); err == nil {
		return nil, fmt.Errorf("%s exists: this device is already enrolled", cfg.Device.Certificate)
	}
	// A key without a certificate is a device whose earlier enrollment
	// was cut short: enroll that key rather than strand it.
	var key crypto.Signer
	fresh := false
	if b, err := os.ReadFile(cfg.Device.Key); err == nil {
		if key, err = pki.ParseKeyPEM(b); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Device.Key, err)
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		if key, err = pki.GenerateDeviceKey(); err != nil {
			return nil, err
		}
		fresh = true
	} else {
		return nil, err
	}
	csr, err := pki.NewDeviceCSR(key, cfg.Device.ID)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	noCert := *cfg
	noCert.Device.Certificate = ""
	client, err := NewHTTPClient(&noCert)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]any{"token": token, "device_id": cfg.Device.ID, "csr": csr})
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Server.URL+"/api/v1/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enrolling with %s: %w", cfg.Server.URL, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Error struct {
				Code string `json:"code"`
				Msg  string `json:"message"`
			} `json:"error"`
		}
		json.Unmarshal(rb, &e)
		ee := &EnrollError{Status: resp.StatusCode, Code: e.Error.Code, Msg: e.Error.Msg}
		if ee.Msg == "" {
			ee.Msg = string(bytes.TrimSpace(rb))
		}
		return nil, ee
	}
	var out struct {
		DeviceID    string `json:"device_id"`
		Hardware    string `json:"hardware"`
		Certificate string `json:"certificate"`
	}
	if err := json.Unmarshal(rb, &out); err != nil {
		return nil, fmt.Errorf("enrollment answer: %w", err)
	}
	cert, err := pki.ParseCertPEM([]byte(out.Certificate))
	if err != nil {
		return nil, fmt.Errorf("enrollment answer: %w", err)
	}
	if id, err := pki.DeviceIDFromCert(cert); err != nil || id != cfg.Device.ID {
		return nil, fmt.Errorf("the server issued a certificate for %q, this device is %q", id, cfg.Device.ID)
	}
	if out.Hardware != cfg.Device.HardwareID {
		return nil, fmt.Errorf("the token is for hardware %q, this device is %q (device.hardware_id)", out.Hardware, cfg.Device.HardwareID)
	}
	for _, d := range []string{filepath.Dir(cfg.Device.Key), filepath.Dir(cfg.Device.Certificate)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if fresh {
		if err := atomicfile.CreateNew(cfg.Device.Key, keyPEM, 0o600); err != nil {
			return nil, err
		}
	}
	if err := atomicfile.WriteFile(cfg.Device.Certificate, []byte(out.Certificate), 0o644); err != nil {
		return nil, err
	}
	return &Enrolled{DeviceID: out.DeviceID, Hardware: out.Hardware, NotAfter: cert.NotAfter}, nil
}

// Enrolled is the identity the server certified.
type Enrolled struct {
	DeviceID string    `json:"device_id"`
	Hardware string    `json:"hardware"`
	NotAfter time.Time `json:"not_after"`
}
