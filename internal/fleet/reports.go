package fleet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/termsafe"
)

// MaxCounterStep is how far a report's counter may be above the last one
// accepted. The agent numbers reports one by one, and drops some when its
// outbox overflows while offline; a counter further ahead would only let a
// faulty or hostile device lock itself out of reporting (no counter above
// 2^63-1 exists).
const MaxCounterStep = 1 << 20

// maxReasonBytes bounds a report's free-text reason; maxStoredReason is
// how much of it the report history and the audit log keep.
const (
	maxReasonBytes  = 1024
	maxStoredReason = 256
)

// CheckReport refuses a report that is malformed in itself, before any
// state is read. Counters are int64 because the store keeps signed 64-bit
// integers: 2^63 or more is refused while decoding, naming the member,
// and negative values here.
func CheckReport(req api.ReportRequest) error {
	switch {
	case req.Counter < 1:
		return refuse(Invalid, api.BadJSON, "member \"counter\": %d is out of range (1 to %d)", req.Counter, int64(math.MaxInt64))
	case req.SecurityVersion < 0:
		return refuse(Invalid, api.BadJSON, "member \"security_version\": %d is out of range (0 to %d)", req.SecurityVersion, int64(math.MaxInt64))
	case !slices.Contains(api.ReportStatuses, req.Status):
		return refuse(Invalid, api.BadStatus, "status %q is not one of %v", req.Status, api.ReportStatuses)
	case req.Status.NeedsReason() && req.Reason == "":
		return refuse(Invalid, api.NoReason, "status %s needs a reason code", req.Status)
	case req.Status == api.VerificationRefused && !slices.Contains(api.RefusalClasses, api.RefusalClass(req.Reason)):
		// Counted by class: only the known classes.
		return refuse(Invalid, api.BadReason, "reason %q is not a refusal class (%v)", termsafe.Bounded(req.Reason, 64), api.RefusalClasses)
	case len(req.Reason) > maxReasonBytes:
		return refuse(Invalid, api.BadReason, "reason is %d bytes, more than %d", len(req.Reason), maxReasonBytes)
	}
	if req.Status == api.Installed {
		if err := release.ValidateVersion(req.Version); err != nil {
			return refuse(Invalid, api.BadVersion, "%v", err)
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

// Report records a device's status. The device is who its certificate
// says (the HTTP layer's job); the counter must grow, so replays are
// refused, but by at most MaxCounterStep. A report of "installed" must
// name a release the server published for the device's hardware, with
// that release's security version: otherwise it is refused (422) and
// counted as an anomaly of the device, in one transaction with its audit
// entry (the refusal is then Audited), since a device cannot have
// installed what does not exist.
//
// The store keeps the device's latest store.ReportHistory reports (reason
// truncated to maxStoredReason bytes) and counts per status; only a
// report that changes the device's state (its status, or the release it
// runs) is audited. ErrDeviceGone when the device was revoked or removed.
func (s *Service) Report(ctx context.Context, requestID, id string, req api.ReportRequest) error {
	if err := CheckReport(req); err != nil {
		return err
	}
	actor := "device:" + id
	op := Op{Actor: actor, RequestID: requestID}
	counter := strconv.FormatInt(req.Counter, 10)
	// A replay is refused as one before the report's content is judged.
	d, err := s.store.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return ErrDeviceGone
	} else if err != nil {
		return err
	}
	if err := checkCounter(d, req.Counter); err != nil {
		return err
	}
	if req.Status == api.Installed {
		anomaly, err := s.checkInstalled(ctx, d, req.Version, uint64(req.SecurityVersion))
		if err != nil {
			return err
		}
		if anomaly != nil {
			return s.recordAnomaly(ctx, op, id, req, anomaly)
		}
	}
	// A confirmed boot of a release signed with no revoked key ends the
	// device's recovery from a failed deployment (mttr), if it has one.
	good := false
	if req.Status == api.Installed {
		if good, err = s.goodInstall(ctx, d.HardwareID, req.Version); err != nil {
			return err
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
	final := false
	err = s.store.Atomic(ctx, func(tx store.Tx) error {
		// The counter is checked again in the report's transaction: no
		// other writer moves it meanwhile.
		d, err := tx.Device(ctx, id)
		if err != nil {
			return err
		}
		if err := checkCounter(d, req.Counter); err != nil {
			return err
		}
		err = tx.RecordReport(ctx, id, store.Report{
			Counter: uint64(req.Counter), Status: string(req.Status), Reason: reason, Installed: req.Status == api.Installed,
			Version: req.Version, SecurityVersion: uint64(req.SecurityVersion), At: s.now(),
			Refusal: refusalClass(req),
		})
		if err != nil {
			return err
		}
		if final, err = s.rolloutReport(ctx, tx, id, req, s.now()); err != nil {
			return err
		}
		if good {
			if _, err := tx.CloseRecovery(ctx, id, s.now()); err != nil {
				return err
			}
		}
		changed := d.LastStatus != string(req.Status) ||
			req.Status == api.Installed && (d.Version != req.Version || d.SecurityVersion != uint64(req.SecurityVersion))
		if !changed {
			return nil
		}
		if _, err := tx.AppendAudit(ctx, s.entry(op, event{actor, "report", id, "ok", detail})); err != nil {
			return fmt.Errorf("audit entry of report %s: %w", id, err)
		}
		return nil
	})
	if err == nil {
		// Its next check-in decides again; a final report frees a
		// concurrency slot, which any device may take.
		s.forget(id)
		if final {
			s.bump()
		}
	}
	switch {
	case errors.Is(err, store.ErrReplay):
		return refuse(Conflict, api.ReplayedReport, "%v", err)
	case errors.Is(err, store.ErrRevoked), errors.Is(err, store.ErrNotFound):
		return ErrDeviceGone
	}
	return err
}

// checkCounter refuses a report counter that is not above the device's
// last one (a replay), or too far above it.
func checkCounter(d store.Device, counter int64) *Refusal {
	c := uint64(counter)
	if c <= d.ReportCounter {
		return refuse(Conflict, api.ReplayedReport, "device %s: report counter %d is not above %d", d.ID, c, d.ReportCounter)
	}
	if c-d.ReportCounter > MaxCounterStep {
		return refuse(Conflict, api.CounterJump, "report counter %d is more than %d above the last accepted counter %d; number reports one by one",
			c, MaxCounterStep, d.ReportCounter)
	}
	return nil
}

// checkInstalled returns the refusal of an "installed" report that names
// a release the server did not publish for the device's hardware, or with
// another security version than that release's; nil when it is possible.
func (s *Service) checkInstalled(ctx context.Context, d store.Device, version string, sv uint64) (*Refusal, error) {
	id := d.ID
	roles, err := s.productRoles(ctx)
	if err != nil {
		return nil, err
	}
	var svs []uint64
	for _, role := range roles {
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
		return refuse(Unprocessable, api.UnknownInstalled, "no published release of version %s is for hardware %s; the report is refused and counted as an anomaly of device %s", version, d.HardwareID, id), nil
	}
	return refuse(Unprocessable, api.WrongSecurityVersion, "release %s for hardware %s has security version %v, not %d; the report is refused and counted as an anomaly of device %s", version, d.HardwareID, svs, sv, id), nil
}

// recordAnomaly counts an impossible report for the device, in one
// transaction with its audit entry, and returns its refusal (Audited).
// The counter is not spent.
func (s *Service) recordAnomaly(ctx context.Context, op Op, id string, req api.ReportRequest, r *Refusal) error {
	err := s.atomically(ctx, op, func(tx store.Tx) (event, error) {
		return event{op.Actor, "report", id, "refused", map[string]string{
				"code": string(r.Code), "counter": strconv.FormatInt(req.Counter, 10), "version": req.Version,
				"security_version": strconv.FormatInt(req.SecurityVersion, 10)}},
			tx.RecordAnomaly(ctx, id, string(r.Code), s.now())
	})
	if err != nil {
		return err
	}
	r.Audited = true
	return r
}

// refusalClass is the refusal class a report carries ("" unless it is a
// verification refusal, whose reason CheckReport made a known class).
func refusalClass(req api.ReportRequest) string {
	if req.Status == api.VerificationRefused {
		return req.Reason
	}
	return ""
}
