package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rampartfw/rampart/internal/store"
)

// RevokeKey implements store.Incidents.
func (s *conn) RevokeKey(ctx context.Context, k store.RevokedKey) error {
	_, err := s.exec(ctx, `INSERT INTO revoked_keys (key_id, kind, reason, revoked_by, revoked_at) VALUES ($1, $2, $3, $4, $5)`,
		k.KeyID, k.Kind, k.Reason, k.RevokedBy, ns(k.RevokedAt))
	if isUnique(err) {
		return fmt.Errorf("key %s: %w", k.KeyID, store.ErrExists)
	}
	return err
}

// RevokedKeys implements store.Incidents.
func (s *conn) RevokedKeys(ctx context.Context) ([]store.RevokedKey, error) {
	return all(ctx, s.q, func(row pgx.Row) (store.RevokedKey, error) {
		var k store.RevokedKey
		var at int64
		err := row.Scan(&k.KeyID, &k.Kind, &k.Reason, &k.RevokedBy, &at)
		k.RevokedAt = tm(at)
		return k, err
	}, `SELECT key_id, kind, reason, revoked_by, revoked_at FROM revoked_keys ORDER BY revoked_at, key_id`)
}

// AssignedDevices implements store.Incidents.
func (s *conn) AssignedDevices(ctx context.Context, target, after string, limit int) ([]string, error) {
	return all(ctx, s.q, scanString,
		`SELECT device_id FROM assignments WHERE target = $1 AND device_id > $2 ORDER BY device_id LIMIT $3`, target, after, limit)
}

// AssignedDeviceFacts implements store.Incidents.
func (s *conn) AssignedDeviceFacts(ctx context.Context, target, after string, limit int) ([]store.DeviceFacts, error) {
	return deviceFacts(ctx, s.q, limit, `SELECT d.id, d.hardware_id, d.version, d.security_version, d.tags FROM assignments a JOIN devices d ON d.id = a.device_id
		WHERE a.target = $1 AND a.device_id > $2 AND d.revoked_at = 0 ORDER BY a.device_id LIMIT $3`, target, after, limit)
}

// DeviceCounts implements store.Incidents.
func (s *conn) DeviceCounts(ctx context.Context) (store.DeviceCounts, error) {
	out := store.DeviceCounts{ByVersion: map[string]int{}, BySecurityVersion: map[uint64]int{}}
	type group struct {
		version string
		sv      uint64
		n       int
	}
	groups, err := all(ctx, s.q, func(row pgx.Row) (group, error) {
		var g group
		var sv int64
		err := row.Scan(&g.version, &sv, &g.n)
		g.sv = uint64(sv)
		return g, err
	}, `SELECT version, security_version, count(*) FROM devices WHERE revoked_at = 0 GROUP BY version, security_version`)
	for _, g := range groups {
		out.Devices += g.n
		out.ByVersion[g.version] += g.n
		out.BySecurityVersion[g.sv] += g.n
	}
	return out, err
}

// counts scans rows of (name, count) into a map.
func counts(ctx context.Context, q querier, query string, args ...any) (map[string]int, error) {
	type kv struct {
		k string
		n int
	}
	rows, err := all(ctx, q, func(row pgx.Row) (kv, error) {
		var r kv
		return r, row.Scan(&r.k, &r.n)
	}, query, args...)
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.k] = r.n
	}
	return out, err
}

// RefusalCounts implements store.Incidents.
func (s *conn) RefusalCounts(ctx context.Context) (map[string]int, error) {
	return counts(ctx, s.q, `SELECT class, n FROM refusal_counts`)
}

// RolloutStats implements store.Incidents.
func (s *conn) RolloutStats(ctx context.Context, rolloutID string, limit int) (store.RolloutStats, error) {
	out := store.RolloutStats{Refusals: map[string]int{}}
	// rollout_id = '' matches nothing: "every rollout" is the second
	// branch of each condition.
	const which = `($1 = '' OR rollout_id = $1)`
	err := s.q.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'installed'), COALESCE(SUM(failures), 0) FROM rollout_devices WHERE `+which,
		rolloutID).Scan(&out.Installed, &out.Failures)
	if err != nil {
		return out, err
	}
	if out.Refusals, err = counts(ctx, s.q, `SELECT reason, count(*) FROM rollout_devices WHERE `+which+` AND status = 'refused' GROUP BY reason`, rolloutID); err != nil {
		return out, err
	}
	out.InstallTimes, err = all(ctx, s.q, func(row pgx.Row) (time.Duration, error) {
		var d int64
		return time.Duration(d), row.Scan(&d)
	}, `SELECT updated_at - offered_at FROM rollout_devices WHERE `+which+` AND status = 'installed' AND offered_at > 0
		ORDER BY updated_at DESC LIMIT $2`, rolloutID, limit)
	return out, err
}

// OpenRecoveries implements store.Incidents.
func (s *conn) OpenRecoveries(ctx context.Context, deviceIDs []string, rolloutID string, at time.Time) error {
	_, err := s.exec(ctx, `INSERT INTO recoveries (device_id, rollout_id, opened_at) SELECT unnest($1::text[]), $2, $3
		ON CONFLICT (device_id) WHERE closed_at = 0 DO NOTHING`, deviceIDs, rolloutID, ns(at))
	return err
}

// CloseRecovery implements store.Incidents.
func (s *conn) CloseRecovery(ctx context.Context, deviceID string, at time.Time) (bool, error) {
	n, err := s.exec(ctx, `UPDATE recoveries SET closed_at = GREATEST($1, opened_at + 1) WHERE device_id = $2 AND closed_at = 0`, ns(at), deviceID)
	return n == 1, err
}

// RecoveryStats implements store.Incidents.
func (s *conn) RecoveryStats(ctx context.Context, rolloutID string) (store.RecoveryStats, error) {
	var out store.RecoveryStats
	var total int64
	err := s.q.QueryRow(ctx, `SELECT count(*) FILTER (WHERE closed_at > 0), COALESCE(SUM(closed_at - opened_at) FILTER (WHERE closed_at > 0), 0),
		count(*) FILTER (WHERE closed_at = 0) FROM recoveries WHERE ($1 = '' OR rollout_id = $1)`, rolloutID).Scan(&out.Closed, &total, &out.Open)
	out.Total = time.Duration(total)
	return out, err
}
