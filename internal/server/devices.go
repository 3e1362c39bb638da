package server

import (
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
)

// The fleet's routes: enrollment tokens, enrollment, reports, devices and
// deployments. What they decide is package fleet's; here are the
// decoding, the authentication (operator roles in Handler, the device's
// certificate in device), the refusals' audit budget, rate limits,
// metrics and the in-memory certificate gate.

// op is who asks, for the fleet's audit entries.
func op(r *http.Request) fleet.Op {
	return fleet.Op{Actor: operatorActor(r), RequestID: r.Header.Get("X-Request-Id")}
}

// handleEnrollToken creates a one-time, expiring enrollment token for a
// hardware id; the secret is returned once and only its hash is stored.
func (s *Server) handleEnrollToken(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollTokenRequest
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	tok, err := s.fleet.CreateEnrollToken(r.Context(), op(r), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, tok)
}

// enrollRefusalLog limits the log lines of refused enrollments. It is
// shared by the servers of a process (there is one, but in tests).
var enrollRefusalLog rateLog

// handleEnroll exchanges a credential and a CSR for a device certificate
// (fleet.Service.Enroll). Anyone can call it, so what it records is
// bounded by authentication: a refusal before the credential is accepted
// (malformed request, bad, used or expired token, an unknown
// manufacturer CA, ...) is counted in rampart_verification_refusals_total
// and logged at most once per rateLogInterval, never audited. After the
// credential is accepted a refusal is audited with the credential as the
// actor (within its budget of audited refusals).
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	if err := decodeJSON(w, r, enrollBody, &req); err != nil {
		s.refuseEnrollment(w, r, "", "", toAPIError(err))
		return
	}
	en, err := s.fleet.Enroll(r.Context(), r.Header.Get("X-Request-Id"), req)
	if err != nil {
		var fr *fleet.Refusal
		if errors.As(err, &fr) && fr.Code == api.NoDeviceCA {
			writeError(w, toAPIError(err))
			return
		}
		if ae := refusal(err); ae != nil {
			actor := ""
			if fr != nil {
				actor = fr.Actor
			}
			s.refuseEnrollment(w, r, actor, req.DeviceID, ae)
			return
		}
		s.fail(w, r, err)
		return
	}
	s.gate.enrolled(en.DeviceID, en.Serial)
	writeJSON(w, http.StatusCreated, en.Enrolled)
}

// refuseEnrollment answers a refused enrollment. Before its credential
// was accepted (actor "") the refusal is only counted and logged at a
// bounded rate: whoever can reach the server could otherwise fill the
// audit log with names of their choosing. After, it is audited with the
// credential as the actor.
func (s *Server) refuseEnrollment(w http.ResponseWriter, r *http.Request, actor, id string, ae *apiError) {
	s.metrics.refusals.WithLabelValues(ae.Code).Inc()
	if actor == "" {
		enrollRefusalLog.log(s.logger, "enrollment refused before authentication", "code", ae.Code,
			"remote", r.RemoteAddr, "request_id", r.Header.Get("X-Request-Id"))
		writeError(w, ae)
		return
	}
	s.refuse(w, r, actor, "enroll", id, ae, nil)
}

// handleReport records a device's status (fleet.Service.Report). The
// device is who its certificate says. What one device's reports cost is
// bounded here: they are rate limited per device (Limits.ReportBurst,
// Limits.ReportEvery; 429 beyond), checked before the body is read.
// Refused reports (replays, counter jumps, impossible installs) are
// counted, and audited within the device's budget of audited refusals.
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
	var req api.ReportRequest
	if err := decodeJSON(w, r, reportBody, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	// A report malformed in itself is answered, not counted or audited.
	if err := fleet.CheckReport(req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	err := s.fleet.Report(r.Context(), r.Header.Get("X-Request-Id"), id, req)
	var fr *fleet.Refusal
	switch {
	case errors.Is(err, fleet.ErrDeviceGone):
		s.deviceGone(w, r, id)
		return
	case errors.As(err, &fr):
		ae := toAPIError(err)
		s.metrics.refusals.WithLabelValues(ae.Code).Inc()
		if fr.Audited {
			writeError(w, ae)
		} else {
			s.refuse(w, r, "device:"+id, "report", id, ae, map[string]string{"counter": strconv.FormatInt(req.Counter, 10)})
		}
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

// deviceGone answers a device whose record was revoked or removed (by
// another replica) since its connection was opened.
func (s *Server) deviceGone(w http.ResponseWriter, r *http.Request, id string) {
	s.gate.revoke(id, certSerial(r))
	writeError(w, errorf(http.StatusForbidden, "device-revoked", "device %s is revoked or removed", id))
}

func (s *Server) handleGetDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.fleet.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// handleRevokeDevice revokes a device. The revocation and its audit entry
// commit together; the in-memory gate learns of it before the answer, so
// the device's next TLS handshake is refused.
func (s *Server) handleRevokeDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	serial, err := s.fleet.RevokeDevice(r.Context(), op(r), id)
	if !s.operatorDone(w, r, "revoke-device", id, err) {
		return
	}
	s.gate.revoke(id, serial)
	w.WriteHeader(http.StatusNoContent)
}

// handleRemoveDevice deletes a device's record and assignment, so that its
// id can enroll again. The device's certificate is refused from its next
// TLS handshake, here at once and on other replicas within their refresh
// interval, and it stays refused: revocation is by certificate.
func (s *Server) handleRemoveDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	removed, err := s.fleet.RemoveDevice(r.Context(), op(r), id)
	if !s.operatorDone(w, r, "remove-device", id, err) {
		return
	}
	s.gate.revoke(id, removed.CertSerial)
	s.directors.Forget(id)
	w.WriteHeader(http.StatusNoContent)
}

// handleDeploy assigns a published release to every enrolled, unrevoked
// device of a hardware id (fleet.Service.Deploy).
func (s *Server) handleDeploy(w http.ResponseWriter, r *http.Request) {
	var req api.DeployRequest
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	out, err := s.fleet.Deploy(r.Context(), op(r), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
