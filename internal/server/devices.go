package server

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/termsafe"
	"github.com/rampartfw/rampart/internal/verify"
)

const deviceCertValidity = 5 * 365 * 24 * time.Hour

type enrollTokenRequest struct {
	Hardware string `json:"hardware"`
	// TTLSeconds is nil when not given (then the default applies); a
	// given 0 is refused, not read as "default".
	TTLSeconds *int64 `json:"ttl_seconds"`
}

// Enrollment token lifetimes.
const (
	defaultEnrollTTL = 24 * time.Hour
	maxEnrollTTL     = 30 * 24 * time.Hour
)

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
	ttl := defaultEnrollTTL
	if req.TTLSeconds != nil {
		// Checked in seconds, before the multiplication could overflow.
		if n := *req.TTLSeconds; n < 1 || n > int64(maxEnrollTTL/time.Second) {
			writeError(w, errorf(http.StatusBadRequest, "bad-ttl", "ttl_seconds must be between 1 and %d, not %d (leave it out for %d)",
				int64(maxEnrollTTL/time.Second), n, int64(defaultEnrollTTL/time.Second)))
			return
		}
		ttl = time.Duration(*req.TTLSeconds) * time.Second
	}
	secret, hash := NewToken()
	exp := s.now().Add(ttl)
	err := s.atomically(r, func(tx store.Tx) (event, error) {
		return event{operatorActor(r), "create-enroll-token", req.Hardware, "ok", map[string]string{"expires": exp.Format(time.RFC3339), "token_id": enrollTokenID(hash)}},
			tx.CreateEnrollToken(r.Context(), store.EnrollToken{Hash: hash, HardwareID: req.Hardware, Expires: exp})
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"token": secret, "hardware": req.Hardware, "expires": exp})
}

// enrollTokenID names an enrollment token in the audit log: the start of
// the hash the store keeps, so the entry that created a token and the one
// of the enrollment that spent it can be matched without the secret.
func enrollTokenID(hash string) string { return hash[:16] }

// enrollRequest carries either a one-time token, or a manufacturer
// certificate chain (DER, leaf first). Hardware is the device's own
// hardware id: with a token the server refuses a token made for other
// hardware before spending it (optional for older agents); with a
// manufacturer certificate that names no hardware id, it is the hardware
// id.
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
	// actor names the credential in audit entries: never a name the
	// client chose.
	actor  string
	detail map[string]string
	// key is the device key to certify, once the CSR was checked.
	key crypto.PublicKey
	// spend consumes the credential inside the enrollment's transaction
	// (a one-time token); nil when there is nothing to consume.
	spend func(ctx context.Context, tx store.Tx) error
}

// handleEnroll exchanges a credential and a CSR (the device made its key
// locally) for a client certificate carrying the device id. The credential
// is a one-time enrollment token, or a certificate chain from a configured
// manufacturer CA whose subject names the device. The device record, the
// spent token and the audit entry commit in one transaction.
//
// Anyone can call this endpoint, so the cheapest checks come first and
// nothing costly happens for a request whose credential is not good:
// the request's syntax; then the credential (a token is looked up
// without writing; a manufacturer chain is bounded in count, size and
// key sizes before any signature is checked); then the CSR's key type
// and size (ECDSA P-256 or Ed25519); then its signature; and only in the
// transaction that spends the token, the signing of the certificate.
//
// What it records is bounded by authentication: a refusal before the
// credential is accepted (malformed request, bad, used or expired token,
// an unknown manufacturer CA, ...) is counted in
// rampart_verification_refusals_total and logged at most once per
// rateLogInterval, never audited, and the answer does not depend on
// whether the device id exists. Only after the credential is accepted
// does the server look at the device id (409 device-exists) and audit,
// with the credential as the actor (within its budget of audited
// refusals).
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req enrollRequest
	if err := decodeJSON(w, r, enrollBody, &req); err != nil {
		s.refuseEnrollment(w, r, nil, "", toAPIError(err))
		return
	}
	if err := pki.ValidateDeviceID(req.DeviceID); err != nil {
		s.refuseEnrollment(w, r, nil, "", errorf(http.StatusBadRequest, "bad-device-id", "%v", err))
		return
	}
	if s.deviceCA == nil {
		writeError(w, errorf(http.StatusServiceUnavailable, "no-device-ca", "this server has no device CA"))
		return
	}
	if req.Hardware != "" {
		if err := release.ValidateHardware(req.Hardware); err != nil {
			s.refuseEnrollment(w, r, nil, "", errorf(http.StatusBadRequest, "bad-hardware", "%v", err))
			return
		}
	}
	var en *enrollment
	var bad *apiError
	switch {
	case req.ManufacturerCertificates != nil && req.Token != "":
		bad = errorf(http.StatusBadRequest, "bad-enrollment", "give a token or manufacturer_certificates, not both")
	case req.ManufacturerCertificates != nil:
		en, bad = s.manufacturerEnrollment(req)
	default:
		en, bad = s.tokenEnrollment(r.Context(), req)
	}
	if bad == nil && en.key == nil {
		// The credential is good: the CSR, its key's type before its
		// signature.
		csr, err := pki.ParseDeviceCSR(req.CSR)
		switch {
		case errors.Is(err, pki.ErrUnsupportedKey):
			bad = errorf(http.StatusBadRequest, "unsupported-key", "%v", err)
		case err != nil:
			bad = errorf(http.StatusBadRequest, "bad-csr", "%v", err)
		default:
			en.key = csr.PublicKey
		}
	}
	if bad != nil {
		// en is set when the credential was accepted.
		s.refuseEnrollment(w, r, en, req.DeviceID, bad)
		return
	}
	var cert []byte
	var serial string
	authenticated := true
	err := s.atomically(r, func(tx store.Tx) (event, error) {
		if en.spend != nil {
			if err := en.spend(r.Context(), tx); err != nil {
				// Spent by a concurrent enrollment since the lookup.
				authenticated = false
				return event{}, err
			}
		}
		// Only now, with the credential accepted, may the answer depend
		// on the device id; a refusal rolls the spent token back.
		if _, err := tx.Device(r.Context(), req.DeviceID); err == nil {
			return event{}, errorf(http.StatusConflict, "device-exists", "device %s is already enrolled (an operator can remove its record: rampart device remove %s)", req.DeviceID, req.DeviceID)
		} else if !errors.Is(err, store.ErrNotFound) {
			return event{}, err
		}
		der, sn, err := s.deviceCA.IssueDeviceKey(en.key, req.DeviceID, deviceCertValidity)
		if err != nil {
			return event{}, err
		}
		cert, serial = der, sn.Text(16)
		if err := tx.CreateDevice(r.Context(), store.Device{ID: req.DeviceID, HardwareID: en.hardware, CertSerial: serial, EnrolledAt: s.now()}); err != nil {
			return event{}, err
		}
		en.detail["hardware"], en.detail["serial"] = en.hardware, serial
		return event{en.actor, "enroll", req.DeviceID, "ok", en.detail}, nil
	})
	if err != nil {
		if ae := refusal(err); ae != nil {
			if !authenticated {
				en = nil
			}
			s.refuseEnrollment(w, r, en, req.DeviceID, ae)
			return
		}
		s.fail(w, r, err)
		return
	}
	s.gate.enrolled(req.DeviceID, serial)
	writeJSON(w, http.StatusCreated, map[string]any{"device_id": req.DeviceID, "hardware": en.hardware, "certificate": string(pki.CertPEM(cert))})
}

// refuseEnrollment answers a refused enrollment. Before its credential
// was accepted (en nil) the refusal is only counted and logged at a
// bounded rate: whoever can reach the server could otherwise fill the
// audit log with names of their choosing. After, it is audited with the
// credential as the actor.
// enrollRefusalLog limits the log lines of refused enrollments. It is
// shared by the servers of a process (there is one, but in tests).
var enrollRefusalLog rateLog

func (s *Server) refuseEnrollment(w http.ResponseWriter, r *http.Request, en *enrollment, id string, ae *apiError) {
	s.metrics.refusals.WithLabelValues(ae.Code).Inc()
	if en == nil || en.actor == "" {
		enrollRefusalLog.log(s.logger, "enrollment refused before authentication", "code", ae.Code,
			"remote", r.RemoteAddr, "request_id", r.Header.Get("X-Request-Id"))
		writeError(w, ae)
		return
	}
	s.refuse(w, r, en.actor, "enroll", id, ae, nil)
}

// tokenEnrollment checks a one-time token without spending it (a read:
// a flood of wrong tokens costs no write), and returns the enrollment
// that spends it in the enrollment's transaction, where the token is
// checked again. The token says the hardware id. When the request names
// the device's hardware, a token made for other hardware is refused (422
// wrong-hardware) and stays unspent, and the device id stays free.
func (s *Server) tokenEnrollment(ctx context.Context, req enrollRequest) (*enrollment, *apiError) {
	refused := func(err error) *apiError {
		code := "bad-token"
		switch {
		case errors.Is(err, store.ErrUsed):
			code = "token-used"
		case errors.Is(err, store.ErrExpired):
			code = "token-expired"
		case !errors.Is(err, store.ErrNotFound):
			return toAPIError(err)
		}
		return errorf(http.StatusUnauthorized, code, "enrollment refused: %v", err)
	}
	if !strings.HasPrefix(req.Token, tokenPrefix) {
		return nil, refused(fmt.Errorf("enrollment token: %w", store.ErrNotFound))
	}
	hash := HashToken(req.Token)
	tok, err := s.store.EnrollToken(ctx, hash)
	switch {
	case err != nil:
		return nil, refused(err)
	case !tok.UsedAt.IsZero():
		return nil, refused(fmt.Errorf("enrollment token: %w", store.ErrUsed))
	case !s.now().Before(tok.Expires):
		return nil, refused(fmt.Errorf("enrollment token expired at %s: %w", tok.Expires.Format(time.RFC3339), store.ErrExpired))
	}
	en := &enrollment{actor: "enroll-token:" + enrollTokenID(hash), hardware: tok.HardwareID,
		detail: map[string]string{"method": "token", "token_id": enrollTokenID(hash)}}
	if req.Hardware != "" && req.Hardware != tok.HardwareID {
		return en, errorf(http.StatusUnprocessableEntity, "wrong-hardware", "this enrollment token is for hardware %s, the device is %s; the token was not spent: use a token made for %s (rampart device token --hardware %s)",
			tok.HardwareID, req.Hardware, req.Hardware, req.Hardware)
	}
	en.spend = func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.ConsumeEnrollToken(ctx, hash, req.DeviceID, s.now()); err != nil {
			return refused(err)
		}
		return nil
	}
	return en, nil
}

// manufacturerEnrollment checks a manufacturer certificate chain: it must
// chain to a configured manufacturer CA now, name the device in its
// subject, and certify the key that signed the CSR (the CSR's signature is
// the proof that the enrolling party holds the certificate's key, so a
// copied certificate is worthless). The device certificate then certifies
// that same key. The chain is bounded before any signature is checked
// (pki.VerifyManufacturerChain), and the CSR's key is compared with the
// certificate's before its signature is.
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
	// The credential is good from here on: a refusal names it (the
	// enrollment is returned with the refusal).
	en := &enrollment{actor: "manufacturer-cert:" + id.Leaf.SerialNumber.Text(16), key: id.Leaf.PublicKey, detail: map[string]string{
		"method":              "manufacturer-ca",
		"manufacturer_issuer": id.Leaf.Issuer.String(),
		"manufacturer_serial": id.Leaf.SerialNumber.Text(16),
	}}
	hw := id.HardwareID
	switch {
	case hw != "" && req.Hardware != "" && req.Hardware != hw:
		return en, errorf(http.StatusForbidden, "hardware-mismatch", "the manufacturer certificate says hardware %q, the request %q", hw, req.Hardware)
	case hw == "":
		hw = req.Hardware
	}
	if err := release.ValidateHardware(hw); err != nil {
		return en, errorf(http.StatusBadRequest, "bad-hardware", "%v; give hardware in the request when the manufacturer certificate has no %s URI", err, pki.HardwareURI("ID"))
	}
	en.hardware = hw
	return en, nil
}

// reportRequest is a device's report. Counters are int64 because the
// store keeps signed 64-bit integers: 2^63 or more is refused while
// decoding, naming the member, and negative values by checkReport.
type reportRequest = api.ReportRequest

// maxCounterStep is how far a report's counter may be above the last one
// accepted. The agent numbers reports one by one, and drops some when its
// outbox overflows while offline; a counter further ahead would only let a
// faulty or hostile device lock itself out of reporting (no counter above
// 2^63-1 exists).
const maxCounterStep = 1 << 20

// maxReasonBytes bounds a report's free-text reason; maxStoredReason is
// how much of it the report history and the audit log keep.
const (
	maxReasonBytes  = 1024
	maxStoredReason = 256
)

func checkReport(req reportRequest) *apiError {
	switch {
	case req.Counter < 1:
		return errorf(http.StatusBadRequest, "bad-json", "member \"counter\": %d is out of range (1 to %d)", req.Counter, int64(math.MaxInt64))
	case req.SecurityVersion < 0:
		return errorf(http.StatusBadRequest, "bad-json", "member \"security_version\": %d is out of range (0 to %d)", req.SecurityVersion, int64(math.MaxInt64))
	case !slices.Contains(api.ReportStatuses, req.Status):
		return errorf(http.StatusBadRequest, "bad-status", "status %q is not one of %v", req.Status, api.ReportStatuses)
	case req.Status.NeedsReason() && req.Reason == "":
		return errorf(http.StatusBadRequest, "no-reason", "status %s needs a reason code", req.Status)
	case req.Status == api.VerificationRefused && !slices.Contains(verify.Classes, verify.Class(req.Reason)):
		// Counted by class: only the known classes.
		return errorf(http.StatusBadRequest, "bad-reason", "reason %q is not a refusal class (%v)", termsafe.Bounded(req.Reason, 64), verify.Classes)
	case len(req.Reason) > maxReasonBytes:
		return errorf(http.StatusBadRequest, "bad-reason", "reason is %d bytes, more than %d", len(req.Reason), maxReasonBytes)
	}
	if req.Status == api.Installed {
		if err := release.ValidateVersion(req.Version); err != nil {
			return errorf(http.StatusBadRequest, "bad-version", "%v", err)
		}
	}
	return nil
}

// truncateUTF8 cuts s to at most n bytes, at a character boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// handleReport records a device's status. The device is who its
// certificate says; the counter must grow, so replays are refused, but by
// at most maxCounterStep. A report of "installed" must name a release the
// server published for the device's hardware, with that release's security
// version: otherwise it is refused (422) and counted as an anomaly of the
// device, since a device cannot have installed what does not exist.
//
// What one device's reports cost is bounded: they are rate limited per
// device (Limits.ReportBurst, Limits.ReportEvery; 429 beyond), checked
// before the body is read; the store keeps the device's latest
// store.ReportHistory reports (reason truncated to maxStoredReason bytes)
// and counts per status; and only a report that changes the device's
// state (its status, or the release it runs) is audited. Refused reports
// (replays, counter jumps) are counted, and audited within the device's
// budget of audited refusals.
func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) {
	id, ok := s.device(w, r)
	if !ok {
		return
	}
	if ok, wait := s.reportBudget.allow(id); !ok {
		s.metrics.refusals.WithLabelValues("rate-limited").Inc()
		secs := max(1, int64(math.Ceil(wait.Seconds())))
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		writeError(w, errorf(http.StatusTooManyRequests, "rate-limited", "device %s sent more than %d reports, then one every %s; send this one again in %d s",
			id, s.limits.ReportBurst, s.limits.ReportEvery, secs))
		return
	}
	var req reportRequest
	if err := decodeJSON(w, r, reportBody, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if bad := checkReport(req); bad != nil {
		writeError(w, bad)
		return
	}
	counter := strconv.FormatInt(req.Counter, 10)
	// A replay is refused as one before the report's content is judged.
	d, err := s.store.Device(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.deviceGone(w, r, id)
		return
	} else if err != nil {
		s.fail(w, r, err)
		return
	}
	if bad := checkCounter(d, req.Counter); bad != nil {
		s.metrics.refusals.WithLabelValues(bad.Code).Inc()
		s.refuse(w, r, "device:"+id, "report", id, bad, map[string]string{"counter": counter})
		return
	}
	if req.Status == api.Installed {
		anomaly, err := s.checkInstalled(r.Context(), d, req.Version, uint64(req.SecurityVersion))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if anomaly != nil {
			s.reportAnomaly(w, r, id, req, anomaly)
			return
		}
	}
	reason := truncateUTF8(req.Reason, maxStoredReason)
	detail := map[string]string{"status": string(req.Status), "counter": counter}
	if reason != "" {
		detail["reason"] = reason
	}
	if req.Version != "" {
		detail["version"] = req.Version
	}
	err = s.store.Atomic(r.Context(), func(tx store.Tx) error {
		// The counter is checked again in the report's transaction: no
		// other writer moves it meanwhile.
		d, err := tx.Device(r.Context(), id)
		if err != nil {
			return err
		}
		if bad := checkCounter(d, req.Counter); bad != nil {
			return bad
		}
		err = tx.RecordReport(r.Context(), id, store.Report{
			Counter: uint64(req.Counter), Status: string(req.Status), Reason: reason, Installed: req.Status == api.Installed,
			Version: req.Version, SecurityVersion: uint64(req.SecurityVersion), At: s.now(),
		})
		if err != nil {
			return err
		}
		changed := d.LastStatus != string(req.Status) ||
			req.Status == api.Installed && (d.Version != req.Version || d.SecurityVersion != uint64(req.SecurityVersion))
		if !changed {
			return nil
		}
		if _, err := tx.AppendAudit(r.Context(), s.entry(r, event{"device:" + id, "report", id, "ok", detail})); err != nil {
			return wrapf(err, "audit entry of report %s", id)
		}
		return nil
	})
	var ae *apiError
	switch {
	case errors.Is(err, store.ErrReplay):
		s.metrics.refusals.WithLabelValues("replayed-report").Inc()
		s.refuse(w, r, "device:"+id, "report", id, errorf(http.StatusConflict, "replayed-report", "%v", err),
			map[string]string{"counter": counter})
		return
	case errors.As(err, &ae):
		s.metrics.refusals.WithLabelValues(ae.Code).Inc()
		s.refuse(w, r, "device:"+id, "report", id, ae, map[string]string{"counter": counter})
		return
	case errors.Is(err, store.ErrRevoked), errors.Is(err, store.ErrNotFound):
		s.deviceGone(w, r, id)
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	if req.Status == api.VerificationRefused {
		s.metrics.refusals.WithLabelValues(req.Reason).Inc()
	}
	w.WriteHeader(http.StatusNoContent)
}

// checkCounter refuses a report counter that is not above the device's
// last one (a replay), or too far above it.
func checkCounter(d store.Device, counter int64) *apiError {
	c := uint64(counter)
	if c <= d.ReportCounter {
		return errorf(http.StatusConflict, "replayed-report", "device %s: report counter %d is not above %d", d.ID, c, d.ReportCounter)
	}
	if c-d.ReportCounter > maxCounterStep {
		return errorf(http.StatusConflict, "counter-jump", "report counter %d is more than %d above the last accepted counter %d; number reports one by one",
			c, maxCounterStep, d.ReportCounter)
	}
	return nil
}

// deviceGone answers a device whose record was revoked or removed (by
// another replica) since its connection was opened.
func (s *Server) deviceGone(w http.ResponseWriter, r *http.Request, id string) {
	s.gate.revoke(id, certSerial(r))
	writeError(w, errorf(http.StatusForbidden, "device-revoked", "device %s is revoked or removed", id))
}

// checkInstalled returns the refusal of an "installed" report that names
// a release the server did not publish for the device's hardware, or with
// another security version than that release's; nil when it is possible.
func (s *Server) checkInstalled(ctx context.Context, d store.Device, version string, sv uint64) (*apiError, error) {
	id := d.ID
	st, err := s.images.State(ctx)
	if err != nil {
		return nil, err
	}
	var svs []uint64
	for _, raw := range st.Roles {
		role, err := metadata.Targets().FromBytes(raw)
		if err != nil {
			return nil, err
		}
		for path, tf := range role.Signed.Targets {
			m, err := release.FromTarget(path, tf)
			if err != nil || m.Version != version || !m.Supports(d.HardwareID) {
				continue
			}
			if m.SecurityVersion == sv {
				return nil, nil
			}
			svs = append(svs, m.SecurityVersion)
		}
	}
	if len(svs) == 0 {
		return errorf(http.StatusUnprocessableEntity, "unknown-installed-release", "no published release of version %s is for hardware %s; the report is refused and counted as an anomaly of device %s", version, d.HardwareID, id), nil
	}
	return errorf(http.StatusUnprocessableEntity, "wrong-security-version", "release %s for hardware %s has security version %v, not %d; the report is refused and counted as an anomaly of device %s", version, d.HardwareID, svs, sv, id), nil
}

// reportAnomaly refuses an impossible report and counts it for the
// device, in one transaction with its audit entry. The counter is not
// spent.
func (s *Server) reportAnomaly(w http.ResponseWriter, r *http.Request, id string, req reportRequest, ae *apiError) {
	err := s.atomically(r, func(tx store.Tx) (event, error) {
		return event{"device:" + id, "report", id, "refused", map[string]string{
				"code": ae.Code, "counter": strconv.FormatInt(req.Counter, 10), "version": req.Version,
				"security_version": strconv.FormatInt(req.SecurityVersion, 10)}},
			tx.RecordAnomaly(r.Context(), id, ae.Code, s.now())
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.metrics.refusals.WithLabelValues(ae.Code).Inc()
	writeError(w, ae)
}

func (s *Server) handleGetDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.store.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	a, _ := s.store.Assignment(r.Context(), d.ID)
	reports, counts, err := s.store.Reports(r.Context(), d.ID)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	type report struct {
		Counter         uint64    `json:"counter"`
		Status          string    `json:"status"`
		Reason          string    `json:"reason,omitempty"`
		Version         string    `json:"version,omitempty"`
		SecurityVersion uint64    `json:"security_version,omitempty"`
		At              time.Time `json:"at"`
	}
	latest := make([]report, len(reports))
	for i, rp := range reports {
		latest[i] = report{rp.Counter, rp.Status, rp.Reason, rp.Version, rp.SecurityVersion, rp.At}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": d.ID, "hardware": d.HardwareID, "enrolled_at": d.EnrolledAt, "revoked": !d.RevokedAt.IsZero(),
		"version": d.Version, "security_version": d.SecurityVersion, "last_status": d.LastStatus, "last_seen": d.LastSeen,
		"assigned": a.Target, "anomalies": d.Anomalies, "last_anomaly": d.LastAnomaly,
		"reports": latest, "report_counts": counts,
	})
}

// handleRevokeDevice revokes a device. The revocation and its audit entry
// commit together; the in-memory gate learns of it before the answer, so
// the device's next TLS handshake is refused.
func (s *Server) handleRevokeDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var serial string
	ok := s.operatorAction(w, r, "revoke-device", id, func(tx store.Tx) (event, error) {
		d, err := tx.Device(r.Context(), id)
		if err != nil {
			return event{}, err
		}
		serial = d.CertSerial
		err = tx.RevokeDevice(r.Context(), id, s.now())
		if errors.Is(err, store.ErrRevoked) {
			return event{}, errorf(http.StatusConflict, "already-revoked", "device %s is already revoked", id)
		}
		return event{operatorActor(r), "revoke-device", id, "ok", nil}, err
	})
	if !ok {
		return
	}
	s.gate.revoke(id, serial)
	w.WriteHeader(http.StatusNoContent)
}

// handleRemoveDevice deletes a device's record and assignment, so that its
// id can enroll again (after an enrollment with the wrong token, say).
// The device's certificate is refused from its next TLS handshake, here
// at once and on other replicas within their refresh interval, and it
// stays refused: revocation is by certificate. The removal and its audit
// entry commit together; the audit log keeps the device's history.
func (s *Server) handleRemoveDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var removed store.Device
	ok := s.operatorAction(w, r, "remove-device", id, func(tx store.Tx) (event, error) {
		d, err := tx.RemoveDevice(r.Context(), id, s.now())
		if errors.Is(err, store.ErrNotFound) {
			return event{}, errorf(http.StatusNotFound, "not-found", "no device %s", id)
		}
		removed = d
		return event{operatorActor(r), "remove-device", id, "ok", map[string]string{
			"hardware": d.HardwareID, "serial": d.CertSerial, "was_revoked": strconv.FormatBool(!d.RevokedAt.IsZero())}}, err
	})
	if !ok {
		return
	}
	s.gate.revoke(id, removed.CertSerial)
	s.directors.Forget(id)
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
	// PRODUCT/VERSION names the release's only file; a full path works
	// too. A bare product is refused: it would pick whichever release
	// happens to be the product's only one.
	product, ok := deployTarget(req.Target)
	if !ok {
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

// deployTarget returns the product of a deployment's target when the
// target is PRODUCT/VERSION or PRODUCT/VERSION/FILE.
func deployTarget(target string) (product string, ok bool) {
	parts := strings.Split(target, "/")
	if len(parts) == 3 {
		p, _, _, err := release.ParseTargetPath(target)
		return p, err == nil
	}
	if len(parts) != 2 || release.ValidateProduct(parts[0]) != nil || release.ValidateVersion(parts[1]) != nil {
		return "", false
	}
	return parts[0], true
}
