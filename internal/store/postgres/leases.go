package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leases are rows (name, holder, expires_at) with the expiry on the
// database's clock (clock_timestamp(), not the transaction's start), so
// every replica measures it the same way whatever its own clock says.
// Each call is one statement: INSERT ... ON CONFLICT DO UPDATE locks the
// row and, in READ COMMITTED, re-checks its condition against a
// concurrent caller's committed row, so two replicas racing for an
// expired lease cannot both get it. A lease takes no writer lock: it
// touches only its own table, and its renewal must not wait behind a
// long Atomic transaction, or its holder could lose it for no reason.

// Lease implements store.Leases.
func (s *DB) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, string, error) {
	if ttl <= 0 {
		return false, "", fmt.Errorf("lease %s: ttl %v is not positive", name, ttl)
	}
	var got string
	err := s.q.QueryRow(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, clock_timestamp() + $3 * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leases.holder = excluded.holder OR leases.expires_at <= clock_timestamp()
		RETURNING holder`, name, holder, ttl.Microseconds()).Scan(&got)
	if err == nil {
		return true, got, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return false, "", fmt.Errorf("lease %s: %w", name, err)
	}
	// Another holder's unexpired lease: say whose. It may have expired or
	// been released since; the caller tries again at its next renewal.
	err = s.q.QueryRow(ctx, `SELECT holder FROM leases WHERE name = $1`, name).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("lease %s: %w", name, err)
	}
	return false, got, nil
}

// ReleaseLease implements store.Leases.
func (s *DB) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.q.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("releasing lease %s: %w", name, err)
	}
	return nil
}
