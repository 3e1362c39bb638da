package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rampartfw/rampart/internal/store"
)

// Leases are rows (name, holder, expires_at, token) with the expiry on
// the database's clock (clock_timestamp(), not the transaction's start),
// so every replica measures it the same way whatever its own clock says.
// Each call is one statement: INSERT ... ON CONFLICT DO UPDATE locks the
// row and, in READ COMMITTED, re-checks its condition against a
// concurrent caller's committed row, so two replicas racing for an
// expired lease cannot both get it. A lease takes no writer lock: it
// touches only its own table, and its renewal must not wait behind a
// long Atomic transaction, or its holder could lose it for no reason.
//
// A term begins when a holder takes a lease that was free, expired or
// another's: its token is the last term's plus one. A released lease
// keeps its row, expired, so tokens never go back. Fenced writes (fence,
// below) lock the row FOR SHARE, so a new term waits for them.

// Lease implements store.Leases.
func (s *DB) Lease(ctx context.Context, name, holder string, ttl time.Duration) (store.LeaseState, error) {
	if ttl <= 0 {
		return store.LeaseState{}, fmt.Errorf("lease %s: ttl %v is not positive", name, ttl)
	}
	var st store.LeaseState
	err := s.q.QueryRow(ctx, `INSERT INTO leases (name, holder, expires_at, token) VALUES ($1, $2, clock_timestamp() + $3 * interval '1 microsecond', 1)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
			token = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > clock_timestamp() THEN leases.token ELSE leases.token + 1 END
		WHERE leases.holder = excluded.holder OR leases.expires_at <= clock_timestamp()
		RETURNING holder, token`, name, holder, ttl.Microseconds()).Scan(&st.Owner, &st.Token)
	if err == nil {
		st.Held = true
		return st, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return store.LeaseState{}, fmt.Errorf("lease %s: %w", name, err)
	}
	// Another holder's unexpired lease: say whose. It may have expired or
	// been released since; the caller tries again at its next renewal.
	err = s.q.QueryRow(ctx, `SELECT holder FROM leases WHERE name = $1`, name).Scan(&st.Owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.LeaseState{}, nil
	}
	if err != nil {
		return store.LeaseState{}, fmt.Errorf("lease %s: %w", name, err)
	}
	return st, nil
}

// ReleaseLease implements store.Leases: the lease expires now, so that
// anyone may take it at once, and keeps its token.
func (s *DB) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.q.Exec(ctx, `UPDATE leases SET expires_at = clock_timestamp() WHERE name = $1 AND holder = $2 AND expires_at > clock_timestamp()`, name, holder); err != nil {
		return fmt.Errorf("releasing lease %s: %w", name, err)
	}
	return nil
}

// fence checks, inside a write transaction, the lease term ctx carries
// (store.WithFence), if any: the lease's row must name its holder and
// token and be unexpired. FOR SHARE holds the row until the transaction
// ends, so no new term (an UPDATE of the row) begins before this write
// has committed or rolled back.
func fence(ctx context.Context, tx pgx.Tx) error {
	f, ok := store.FenceFrom(ctx)
	if !ok {
		return nil
	}
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp() FOR SHARE`,
		f.Lease, f.Holder, f.Token).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("lease %s, term %d of %s: %w", f.Lease, f.Token, f.Holder, store.ErrFenced)
	}
	if err != nil {
		return fmt.Errorf("checking lease %s: %w", f.Lease, unavailable(err))
	}
	return nil
}
