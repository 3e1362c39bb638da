package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/rampartfw/rampart/internal/store"
)

// RevokeKey implements store.Incidents.
func (s *conn) RevokeKey(ctx context.Context, k store.RevokedKey) error {
	_, err := s.exec(ctx, `INSERT INTO revoked_keys (key_id, kind, reason, revoked_by, revoked_at) VALUES (?, ?, ?, ?, ?)`,
		k.KeyID, k.Kind, k.Reason, k.RevokedBy, ns(k.RevokedAt))
	if err != nil && isConstraint(err) {
		return fmt.Errorf("key %s: %w", k.KeyID, store.ErrExists)
	}
	return err
}

// RevokedKeys implements store.Incidents.
func (s *conn) RevokedKeys(ctx context.Context) ([]store.RevokedKey, error) {
	return all(ctx, s.q, func(row interface{ Scan(...any) error }) (store.RevokedKey, error) {
		var k store.RevokedKey
		var at int64
		err := row.Scan(&k.KeyID, &k.Kind, &k.Reason, &k.RevokedBy, &at)
		k.RevokedAt = tm(at)
		return k, err
	}, `SELECT key_id, kind, reason, revoked_by, revoked_at FROM revoked_keys ORDER BY revoked_at, key_id`)
}

// AssignedDevices implements store.Incidents.
func (s *conn) AssignedDevices(ctx context.Context, target, after string, limit int) ([]string, error) {
	return all(ctx, s.q, func(row interface{ Scan(...any) error }) (string, error) {
		var id string
		return id, row.Scan(&id)
	}, `SELECT device_id FROM assignments WHERE target = ? AND device_id > ? ORDER BY device_id LIMIT ?`, target, after, limit)
}

// AssignedDeviceFacts implements store.Incidents.
func (s *conn) AssignedDeviceFacts(ctx context.Context, target, after string, limit int) ([]store.DeviceFacts, error) {
	return s.deviceFacts(ctx, limit, `SELECT d.id, d.hardware_id, d.version, d.security_version, d.tags FROM assignments a JOIN devices d ON d.id = a.device_id
		WHERE a.target = ? AND a.device_id > ? AND +d.revoked_at = 0 ORDER BY a.device_id LIMIT ?`, target, after, limit)
}

// DeviceCounts implements store.Incidents.
func (s *conn) DeviceCounts(ctx context.Context) (store.DeviceCounts, error) {
	out := store.DeviceCounts{ByVersion: map[string]int{}, BySecurityVersion: map[uint64]int{}}
	rows, err := s.q.QueryContext(ctx, `SELECT version, security_version, count(*) FROM devices WHERE revoked_at = 0 GROUP BY version, security_version`)
	if err != nil {
		return out, err
	}
	defer rows.Close()
	for rows.Next() {
		var v string
		var sv uint64
		var n int
		if err := rows.Scan(&v, &sv, &n); err != nil {
			return out, err
		}
		out.Devices += n
		out.ByVersion[v] += n
		out.BySecurityVersion[sv] += n
	}
	return out, rows.Err()
}

// RefusalCounts implements store.Incidents.
func (s *conn) RefusalCounts(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	rows, err := s.q.QueryContext(ctx, `SELECT class, n FROM refusal_counts`)
	if err != nil {
		return out, err
	}
	defer rows.Close()
	for rows.Next() {
		var c string
		var n int
		if err := rows.Scan(&c, &n); err != nil {
			return out, err
		}
		out[c] = n
	}
	return out, rows.Err()
}

// RolloutStats implements store.Incidents.
func (s *conn) RolloutStats(ctx context.Context, rolloutID string, limit int) (store.RolloutStats, error) {
	out := store.RolloutStats{Refusals: map[string]int{}}
	where, args := "", []any{}
	if rolloutID != "" {
		where, args = "rollout_id = ? AND ", []any{rolloutID}
	}
	err := s.q.QueryRowContext(ctx, `SELECT COALESCE(SUM(status = 'installed'), 0), COALESCE(SUM(failures), 0) FROM rollout_devices WHERE `+where+`1`,
		args...).Scan(&out.Installed, &out.Failures)
	if err != nil {
		return out, err
	}
	rows, err := s.q.QueryContext(ctx, `SELECT reason, count(*) FROM rollout_devices WHERE `+where+`status = 'refused' GROUP BY reason`, args...)
	if err != nil {
		return out, err
	}
	for rows.Next() {
		var r string
		var n int
		if err := rows.Scan(&r, &n); err != nil {
			rows.Close()
			return out, err
		}
		out.Refusals[r] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, err
	}
	out.InstallTimes, err = all(ctx, s.q, func(row interface{ Scan(...any) error }) (time.Duration, error) {
		var d int64
		return time.Duration(d), row.Scan(&d)
	}, `SELECT updated_at - offered_at FROM rollout_devices WHERE `+where+`status = 'installed' AND offered_at > 0 ORDER BY updated_at DESC LIMIT ?`,
		append(args, limit)...)
	return out, err
}

// OpenRecoveries implements store.Incidents: one prepared statement
// per batch of devices.
func (s *conn) OpenRecoveries(ctx context.Context, deviceIDs []string, rolloutID string, at time.Time) error {
	return s.atomic(ctx, func(tx *conn) error {
		for ids := deviceIDs; len(ids) > 0; {
			batch := ids[:min(len(ids), assignBatch)]
			ids = ids[len(batch):]
			list, err := json.Marshal(batch)
			if err != nil {
				return err
			}
			if _, err := tx.execHot(ctx, `INSERT INTO recoveries (device_id, rollout_id, opened_at) SELECT value, ?, ? FROM json_each(?) WHERE true
				ON CONFLICT (device_id) WHERE closed_at = 0 DO NOTHING`, rolloutID, ns(at), string(list)); err != nil {
				return err
			}
		}
		return nil
	})
}

// CloseRecovery implements store.Incidents.
func (s *conn) CloseRecovery(ctx context.Context, deviceID string, at time.Time) (bool, error) {
	res, err := s.exec(ctx, `UPDATE recoveries SET closed_at = max(?, opened_at + 1) WHERE device_id = ? AND closed_at = 0`, ns(at), deviceID)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// RecoveryStats implements store.Incidents.
func (s *conn) RecoveryStats(ctx context.Context, rolloutID string) (store.RecoveryStats, error) {
	var out store.RecoveryStats
	where, args := "", []any{}
	if rolloutID != "" {
		where, args = " WHERE rollout_id = ?", []any{rolloutID}
	}
	var total int64
	err := s.q.QueryRowContext(ctx, `SELECT COALESCE(SUM(closed_at > 0), 0), COALESCE(SUM(CASE WHEN closed_at > 0 THEN closed_at - opened_at ELSE 0 END), 0),
		COALESCE(SUM(closed_at = 0), 0) FROM recoveries`+where, args...).Scan(&out.Closed, &total, &out.Open)
	out.Total = time.Duration(total)
	return out, err
}
