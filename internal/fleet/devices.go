package fleet

import (
	"context"
	"errors"
	"strconv"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/store"
)

// Device returns a device as the operator API shows it: its record, its
// assignment and its kept reports with the counts per status.
func (s *Service) Device(ctx context.Context, id string) (api.Device, error) {
	d, err := s.store.Device(ctx, id)
	if err != nil {
		return api.Device{}, err
	}
	a, _ := s.store.Assignment(ctx, d.ID)
	reports, counts, err := s.store.Reports(ctx, d.ID)
	if err != nil {
		return api.Device{}, err
	}
	latest := make([]api.Report, len(reports))
	for i, rp := range reports {
		latest[i] = api.Report{Counter: rp.Counter, Status: rp.Status, Reason: rp.Reason, Version: rp.Version, SecurityVersion: rp.SecurityVersion, At: rp.At}
	}
	return api.Device{
		ID: d.ID, Hardware: d.HardwareID, EnrolledAt: d.EnrolledAt, Revoked: !d.RevokedAt.IsZero(),
		Version: d.Version, SecurityVersion: d.SecurityVersion, LastStatus: d.LastStatus, LastSeen: d.LastSeen, State: deviceState(&d),
		Assigned: a.Target, Anomalies: d.Anomalies, LastAnomaly: d.LastAnomaly, Tags: d.Tags, LastRefusal: d.LastRefusal,
		Reports: latest, ReportCounts: counts,
	}, nil
}

// RevokeDevice revokes a device, with its audit entry, and returns the
// serial of the certificate that must be refused from now on.
func (s *Service) RevokeDevice(ctx context.Context, op Op, id string) (serial string, err error) {
	defer s.forget(id)
	err = s.atomically(ctx, op, func(tx store.Tx) (event, error) {
		d, err := tx.Device(ctx, id)
		if err != nil {
			return event{}, err
		}
		serial = d.CertSerial
		err = tx.RevokeDevice(ctx, id, s.now())
		if errors.Is(err, store.ErrRevoked) {
			return event{}, refuse(Conflict, api.AlreadyRevoked, "device %s is already revoked", id)
		}
		return event{op.Actor, "revoke-device", id, "ok", nil}, err
	})
	return serial, err
}

// RemoveDevice deletes a device's record and assignment, so that its id
// can enroll again (after an enrollment with the wrong token, say), with
// its audit entry; the audit log keeps the device's history. It returns
// the record removed: its certificate must be refused from now on
// (revocation is by certificate).
func (s *Service) RemoveDevice(ctx context.Context, op Op, id string) (store.Device, error) {
	// Its id may enroll again: that device is decided afresh.
	defer s.forget(id)
	var removed store.Device
	err := s.atomically(ctx, op, func(tx store.Tx) (event, error) {
		d, err := tx.RemoveDevice(ctx, id, s.now())
		if errors.Is(err, store.ErrNotFound) {
			return event{}, refuse(NotFound, api.NotFound, "no device %s", id)
		}
		removed = d
		return event{op.Actor, "remove-device", id, "ok", map[string]string{
			"hardware": d.HardwareID, "serial": d.CertSerial, "was_revoked": strconv.FormatBool(!d.RevokedAt.IsZero())}}, err
	})
	return removed, err
}
