package server

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
)

// Device report statuses. Only "installed", sent after a confirmed boot
// and health check, changes what the server records a device runs.
var reportStatuses = []string{"downloading", "installing", "installed-pending-reboot", "installed", "rolled-back", "failed", "verification-refused"}

const deviceCertValidity = 5 * 365 * 24 * time.Hour

type enrollTokenRequest struct {
	Hardware   string `json:"hardware"`
	TTLSeconds int64  `json:"ttl_seconds"`
}

// handleEnrollToken creates a one-time, expiring enrollment token for a
// hardware id; the secret is returned once and only its hash is stored.
func (s *Server) handleEnrollToken(w http.ResponseWriter, r *http.Request) {
	var req enrollTokenRequest
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if err := release.ValidateHardware(req.Hardware); err != nil {
		writeError(w, errorf(http.StatusBadRequest, "bad-hardware", "%v", err))
		return
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if req.TTLSeconds == 0 {
		ttl = 24 * time.Hour
	}
	if ttl <= 0 || ttl > 30*24*time.Hour {
		writeError(w, errorf(http.StatusBadRequest, "bad-ttl", "ttl_seconds must be between 1 and %d", 30*24*3600))
		return
	}
	secret, hash := NewToken()
	exp := s.now().Add(ttl)
	if err := s.store.CreateEnrollToken(r.Context(), store.EnrollToken{Hash: hash, HardwareID: req.Hardware, Expires: exp}); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	s.audit(r, "token:"+operator(r.Context()).Name, "create-enroll-token", req.Hardware, "ok", map[string]string{"expires": exp.Format(time.RFC3339)})
	writeJSON(w, http.StatusCreated, map[string]any{"token": secret, "hardware": req.Hardware, "expires": exp})
}

type enrollRequest struct {
	Token    string `json:"token"`
	DeviceID string `json:"device_id"`
	CSR      []byte `json:"csr"`
}

// handleEnroll exchanges a one-time token and a CSR (the device made its
// key locally) for a client certificate carrying the device id.
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req enrollRequest
	if err := decodeJSON(w, r, 64<<10, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if err := pki.ValidateDeviceID(req.DeviceID); err != nil {
		writeError(w, errorf(http.StatusBadRequest, "bad-device-id", "%v", err))
		return
	}
	if s.deviceCA == nil {
		writeError(w, errorf(http.StatusServiceUnavailable, "no-device-ca", "this server has no device CA"))
		return
	}
	if _, err := s.store.Device(r.Context(), req.DeviceID); err == nil {
		writeError(w, errorf(http.StatusConflict, "device-exists", "device %s is already enrolled", req.DeviceID))
		return
	}
	// Check the CSR before spending the token on it.
	if _, _, err := s.deviceCA.IssueDevice(req.CSR, req.DeviceID, time.Hour); err != nil {
		writeError(w, errorf(http.StatusBadRequest, "bad-csr", "%v", err))
		return
	}
	tok, err := s.store.ConsumeEnrollToken(r.Context(), HashToken(req.Token), req.DeviceID, s.now())
	if err != nil {
		code := "bad-token"
		switch {
		case errors.Is(err, store.ErrUsed):
			code = "token-used"
		case errors.Is(err, store.ErrExpired):
			code = "token-expired"
		case !errors.Is(err, store.ErrNotFound):
			writeError(w, toAPIError(err))
			return
		}
		s.metrics.refusals.WithLabelValues(code).Inc()
		s.audit(r, "device:"+req.DeviceID, "enroll", req.DeviceID, "refused", map[string]string{"code": code})
		writeError(w, errorf(http.StatusUnauthorized, code, "enrollment refused: %v", err))
		return
	}
	der, serial, err := s.deviceCA.IssueDevice(req.CSR, req.DeviceID, deviceCertValidity)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if err := s.store.CreateDevice(r.Context(), store.Device{ID: req.DeviceID, HardwareID: tok.HardwareID, CertSerial: serial.Text(16), EnrolledAt: s.now()}); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	s.audit(r, "device:"+req.DeviceID, "enroll", req.DeviceID, "ok", map[string]string{"hardware": tok.HardwareID, "serial": serial.Text(16)})
	writeJSON(w, http.StatusCreated, map[string]any{"device_id": req.DeviceID, "hardware": tok.HardwareID, "certificate": string(pki.CertPEM(der))})
}

type reportRequest struct {
	Counter         uint64 `json:"counter"`
	Status          string `json:"status"`
	Reason          string `json:"reason,omitempty"`
	Version         string `json:"version,omitempty"`
	SecurityVersion uint64 `json:"security_version,omitempty"`
}

// handleReport records a device's status. The device is who its
// certificate says; the counter must grow, so replays are refused.
func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) {
	id, ok := pki.DeviceFromRequest(r)
	if !ok {
		writeError(w, errorf(http.StatusUnauthorized, "no-device-certificate", "device endpoints need the device's client certificate"))
		return
	}
	var req reportRequest
	if err := decodeJSON(w, r, 16<<10, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if !slices.Contains(reportStatuses, req.Status) {
		writeError(w, errorf(http.StatusBadRequest, "bad-status", "status %q is not one of %v", req.Status, reportStatuses))
		return
	}
	if (req.Status == "failed" || req.Status == "rolled-back" || req.Status == "verification-refused") && req.Reason == "" {
		writeError(w, errorf(http.StatusBadRequest, "no-reason", "status %s needs a reason code", req.Status))
		return
	}
	if req.Status == "installed" {
		if err := release.ValidateVersion(req.Version); err != nil {
			writeError(w, errorf(http.StatusBadRequest, "bad-version", "%v", err))
			return
		}
	}
	err := s.store.RecordReport(r.Context(), id, store.Report{
		Counter: req.Counter, Status: req.Status, Installed: req.Status == "installed",
		Version: req.Version, SecurityVersion: req.SecurityVersion, At: s.now(),
	})
	if errors.Is(err, store.ErrReplay) {
		s.metrics.refusals.WithLabelValues("replayed-report").Inc()
		s.audit(r, "device:"+id, "report", id, "refused", map[string]string{"code": "replayed-report", "counter": strconv.FormatUint(req.Counter, 10)})
		writeError(w, errorf(http.StatusConflict, "replayed-report", "%v", err))
		return
	}
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if req.Status == "verification-refused" {
		s.metrics.refusals.WithLabelValues(req.Reason).Inc()
	}
	detail := map[string]string{"status": req.Status, "counter": strconv.FormatUint(req.Counter, 10)}
	if req.Reason != "" {
		detail["reason"] = req.Reason
	}
	if req.Version != "" {
		detail["version"] = req.Version
	}
	s.audit(r, "device:"+id, "report", id, "ok", detail)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleGetDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.store.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	a, _ := s.store.Assignment(r.Context(), d.ID)
	writeJSON(w, http.StatusOK, map[string]any{
		"id": d.ID, "hardware": d.HardwareID, "enrolled_at": d.EnrolledAt, "revoked": !d.RevokedAt.IsZero(),
		"version": d.Version, "security_version": d.SecurityVersion, "last_status": d.LastStatus, "last_seen": d.LastSeen,
		"assigned": a.Target,
	})
}

func (s *Server) handleRevokeDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.store.RevokeDevice(r.Context(), id, s.now()); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	s.audit(r, "token:"+operator(r.Context()).Name, "revoke-device", id, "ok", nil)
	w.WriteHeader(http.StatusNoContent)
}

type deployRequest struct {
	Target   string `json:"target"`
	Hardware string `json:"hardware"`
}

// handleDeploy assigns a published release to every enrolled, unrevoked
// device of a hardware id. (Phased rollouts will refine this.)
func (s *Server) handleDeploy(w http.ResponseWriter, r *http.Request) {
	var req deployRequest
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	// PRODUCT/VERSION names the release's only file; a full path works too.
	product, _, _ := strings.Cut(req.Target, "/")
	if release.ValidateProduct(product) != nil {
		writeError(w, errorf(http.StatusBadRequest, "bad-target", "%q is not PRODUCT/VERSION or PRODUCT/VERSION/FILE", req.Target))
		return
	}
	role, err := s.productRole(r.Context(), product)
	if err != nil {
		writeError(w, errorf(http.StatusNotFound, "unknown-release", "no published release %s", req.Target))
		return
	}
	var matches []string
	for path := range role.Signed.Targets {
		if path == req.Target || strings.HasPrefix(path, req.Target+"/") {
			matches = append(matches, path)
		}
	}
	if len(matches) != 1 {
		if len(matches) == 0 {
			writeError(w, errorf(http.StatusNotFound, "unknown-release", "no published release %s", req.Target))
		} else {
			writeError(w, errorf(http.StatusBadRequest, "ambiguous-target", "%s names several files: %v; give one", req.Target, matches))
		}
		return
	}
	req.Target = matches[0]
	tf := role.Signed.Targets[req.Target]
	meta, err := release.FromTarget(req.Target, tf)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if !meta.Supports(req.Hardware) {
		writeError(w, errorf(http.StatusUnprocessableEntity, "wrong-hardware", "release %s is for %v, not %s", req.Target, meta.HardwareIDs, req.Hardware))
		return
	}
	devs, err := s.store.DevicesByHardware(r.Context(), req.Hardware)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	var ids []string
	for _, d := range devs {
		if d.RevokedAt.IsZero() {
			ids = append(ids, d.ID)
		}
	}
	n, err := s.store.Assign(r.Context(), req.Target, ids, s.now())
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	s.audit(r, "token:"+operator(r.Context()).Name, "deploy", req.Target, "ok", map[string]string{"hardware": req.Hardware, "devices": strconv.Itoa(len(ids)), "changed": strconv.Itoa(n)})
	writeJSON(w, http.StatusOK, map[string]any{"target": req.Target, "devices": len(ids), "changed": n})
}
