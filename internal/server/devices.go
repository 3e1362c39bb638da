package server

import (
	"context"
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
	err := s.atomically(r, func(tx store.Tx) (event, error) {
		return event{operatorActor(r), "create-enroll-token", req.Hardware, "ok", map[string]string{"expires": exp.Format(time.RFC3339)}},
			tx.CreateEnrollToken(r.Context(), store.EnrollToken{Hash: hash, HardwareID: req.Hardware, Expires: exp})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"token": secret, "hardware": req.Hardware, "expires": exp})
}

// enrollRequest carries either a one-time token, or a manufacturer
// certificate chain (DER, leaf first) and, when the certificate names no
// hardware id, the hardware id.
type enrollRequest struct {
	Token                    string   `json:"token,omitempty"`
	DeviceID                 string   `json:"device_id"`
	CSR                      []byte   `json:"csr"`
	ManufacturerCertificates [][]byte `json:"manufacturer_certificates,omitempty"`
	Hardware                 string   `json:"hardware,omitempty"`
}

// enrollment is who an accepted enrollment credential says the device is.
type enrollment struct {
	hardware string
	detail   map[string]string
	// spend consumes the credential inside the enrollment's transaction
	// (a one-time token); nil when there is nothing to spend.
	spend func(ctx context.Context, tx store.Tx) error
}

// handleEnroll exchanges a credential and a CSR (the device made its key
// locally) for a client certificate carrying the device id. The credential
// is a one-time enrollment token, or a certificate chain from a configured
// manufacturer CA whose subject names the device. The device record, the
// spent token and the audit entry commit in one transaction.
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
	// Check the CSR before spending a credential on it.
	if _, _, err := s.deviceCA.IssueDevice(req.CSR, req.DeviceID, time.Hour); err != nil {
		writeError(w, errorf(http.StatusBadRequest, "bad-csr", "%v", err))
		return
	}
	var en *enrollment
	var bad *apiError
	switch {
	case req.ManufacturerCertificates != nil && req.Token != "":
		bad = errorf(http.StatusBadRequest, "bad-enrollment", "give a token or manufacturer_certificates, not both")
	case req.ManufacturerCertificates != nil:
		en, bad = s.manufacturerEnrollment(req)
	case req.Hardware != "":
		bad = errorf(http.StatusBadRequest, "bad-enrollment", "hardware is given only with manufacturer_certificates; a token carries its hardware id")
	default:
		en = s.tokenEnrollment(req)
	}
	if bad != nil {
		s.refuseEnrollment(w, r, req.DeviceID, bad)
		return
	}
	var cert []byte
	var serial string
	err := s.atomically(r, func(tx store.Tx) (event, error) {
		if _, err := tx.Device(r.Context(), req.DeviceID); err == nil {
			return event{}, errorf(http.StatusConflict, "device-exists", "device %s is already enrolled", req.DeviceID)
		} else if !errors.Is(err, store.ErrNotFound) {
			return event{}, err
		}
		if en.spend != nil {
			if err := en.spend(r.Context(), tx); err != nil {
				return event{}, err
			}
		}
		der, sn, err := s.deviceCA.IssueDevice(req.CSR, req.DeviceID, deviceCertValidity)
		if err != nil {
			return event{}, err
		}
		cert, serial = der, sn.Text(16)
		if err := tx.CreateDevice(r.Context(), store.Device{ID: req.DeviceID, HardwareID: en.hardware, CertSerial: serial, EnrolledAt: s.now()}); err != nil {
			return event{}, err
		}
		en.detail["hardware"], en.detail["serial"] = en.hardware, serial
		return event{"device:" + req.DeviceID, "enroll", req.DeviceID, "ok", en.detail}, nil
	})
	if err != nil {
		if ae := refusal(err); ae != nil {
			s.refuseEnrollment(w, r, req.DeviceID, ae)
			return
		}
		s.fail(w, r, err)
		return
	}
	s.gate.enrolled(req.DeviceID, serial)
	writeJSON(w, http.StatusCreated, map[string]any{"device_id": req.DeviceID, "hardware": en.hardware, "certificate": string(pki.CertPEM(cert))})
}

func (s *Server) refuseEnrollment(w http.ResponseWriter, r *http.Request, id string, ae *apiError) {
	s.metrics.refusals.WithLabelValues(ae.Code).Inc()
	s.refuse(w, r, "device:"+id, "enroll", id, ae, nil)
}

// tokenEnrollment spends a one-time token; the token says the hardware id.
func (s *Server) tokenEnrollment(req enrollRequest) *enrollment {
	en := &enrollment{detail: map[string]string{"method": "token"}}
	en.spend = func(ctx context.Context, tx store.Tx) error {
		tok, err := tx.ConsumeEnrollToken(ctx, HashToken(req.Token), req.DeviceID, s.now())
		if err == nil {
			en.hardware = tok.HardwareID
			return nil
		}
		code := "bad-token"
		switch {
		case errors.Is(err, store.ErrUsed):
			code = "token-used"
		case errors.Is(err, store.ErrExpired):
			code = "token-expired"
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		return errorf(http.StatusUnauthorized, code, "enrollment refused: %v", err)
	}
	return en
}

// manufacturerEnrollment checks a manufacturer certificate chain: it must
// chain to a configured manufacturer CA now, name the device in its
// subject, and certify the key that signed the CSR (the CSR's signature is
// the proof that the enrolling party holds the certificate's key, so a
// copied certificate is worthless). The device certificate then certifies
// that same key.
func (s *Server) manufacturerEnrollment(req enrollRequest) (*enrollment, *apiError) {
	if s.manufacturers == nil {
		return nil, errorf(http.StatusForbidden, "no-manufacturer-ca", "this server accepts no manufacturer certificates (rampart-server serve --manufacturer-ca); enroll with a token")
	}
	id, err := pki.VerifyManufacturerChain(req.ManufacturerCertificates, s.manufacturers, s.now())
	switch {
	case errors.Is(err, pki.ErrUnknownCA):
		return nil, errorf(http.StatusUnauthorized, "manufacturer-unknown-ca", "%v", err)
	case errors.Is(err, pki.ErrCertExpired):
		return nil, errorf(http.StatusUnauthorized, "manufacturer-cert-expired", "%v", err)
	case err != nil:
		return nil, errorf(http.StatusBadRequest, "bad-manufacturer-cert", "%v", err)
	}
	if id.DeviceID != req.DeviceID {
		return nil, errorf(http.StatusForbidden, "device-id-mismatch", "the manufacturer certificate names device %q (subject serialNumber, else CommonName), not %q", id.DeviceID, req.DeviceID)
	}
	if err := pki.CheckCSRKey(req.CSR, id.Leaf.PublicKey); err != nil {
		return nil, errorf(http.StatusUnauthorized, "manufacturer-key-mismatch", "the csr must be signed with the manufacturer certificate's key: %v", err)
	}
	hw := id.HardwareID
	switch {
	case hw != "" && req.Hardware != "" && req.Hardware != hw:
		return nil, errorf(http.StatusForbidden, "hardware-mismatch", "the manufacturer certificate says hardware %q, the request %q", hw, req.Hardware)
	case hw == "":
		hw = req.Hardware
	}
	if err := release.ValidateHardware(hw); err != nil {
		return nil, errorf(http.StatusBadRequest, "bad-hardware", "%v; give hardware in the request when the manufacturer certificate has no %s URI", err, pki.HardwareURI("ID"))
	}
	return &enrollment{hardware: hw, detail: map[string]string{
		"method":              "manufacturer-ca",
		"manufacturer_issuer": id.Leaf.Issuer.String(),
		"manufacturer_serial": id.Leaf.SerialNumber.Text(16),
	}}, nil
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
	id, ok := s.device(w, r)
	if !ok {
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
	detail := map[string]string{"status": req.Status, "counter": strconv.FormatUint(req.Counter, 10)}
	if req.Reason != "" {
		detail["reason"] = req.Reason
	}
	if req.Version != "" {
		detail["version"] = req.Version
	}
	err := s.atomically(r, func(tx store.Tx) (event, error) {
		return event{"device:" + id, "report", id, "ok", detail}, tx.RecordReport(r.Context(), id, store.Report{
			Counter: req.Counter, Status: req.Status, Installed: req.Status == "installed",
			Version: req.Version, SecurityVersion: req.SecurityVersion, At: s.now(),
		})
	})
	switch {
	case errors.Is(err, store.ErrReplay):
		s.metrics.refusals.WithLabelValues("replayed-report").Inc()
		s.refuse(w, r, "device:"+id, "report", id, errorf(http.StatusConflict, "replayed-report", "%v", err),
			map[string]string{"counter": strconv.FormatUint(req.Counter, 10)})
		return
	case errors.Is(err, store.ErrRevoked):
		// Revoked by another replica since this connection was opened.
		s.gate.revoke(id)
		writeError(w, errorf(http.StatusForbidden, "device-revoked", "device %s is revoked", id))
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	if req.Status == "verification-refused" {
		s.metrics.refusals.WithLabelValues(req.Reason).Inc()
	}
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

// handleRevokeDevice revokes a device. The revocation and its audit entry
// commit together; the in-memory gate learns of it before the answer, so
// the device's next TLS handshake is refused.
func (s *Server) handleRevokeDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ok := s.operatorAction(w, r, "revoke-device", id, func(tx store.Tx) (event, error) {
		err := tx.RevokeDevice(r.Context(), id, s.now())
		if errors.Is(err, store.ErrRevoked) {
			return event{}, errorf(http.StatusConflict, "already-revoked", "device %s is already revoked", id)
		}
		return event{operatorActor(r), "revoke-device", id, "ok", nil}, err
	})
	if !ok {
		return
	}
	s.gate.revoke(id)
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
	// The devices are read in the deployment's transaction, so a device
	// revoked meanwhile is not assigned.
	var ids []string
	var n int
	err = s.atomically(r, func(tx store.Tx) (event, error) {
		devs, err := tx.DevicesByHardware(r.Context(), req.Hardware)
		if err != nil {
			return event{}, err
		}
		for _, d := range devs {
			if d.RevokedAt.IsZero() {
				ids = append(ids, d.ID)
			}
		}
		if n, err = tx.Assign(r.Context(), req.Target, ids, s.now()); err != nil {
			return event{}, err
		}
		return event{operatorActor(r), "deploy", req.Target, "ok", map[string]string{"hardware": req.Hardware, "devices": strconv.Itoa(len(ids)), "changed": strconv.Itoa(n)}}, nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"target": req.Target, "devices": len(ids), "changed": n})
}
