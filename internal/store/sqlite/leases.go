package sqlite

import (
	"context"
	"sync"
	"time"
)

// leases implements store.Leases for one process: a SQLite store has one
// server process, so the leases live in its memory, with the semantics a
// shared store gives them across replicas (a holder, an expiry on the
// monotonic clock, renewal by the holder, release). A restart forgets
// them, which loses nothing: the process that held them is gone.
type leases struct {
	mu sync.Mutex
	m  map[string]lease
}

type lease struct {
	holder  string
	expires time.Time // carries the monotonic reading of time.Now
}

// Lease implements store.Leases.
func (s *DB) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, string, error) {
	if err := ctx.Err(); err != nil {
		return false, "", err
	}
	l := &s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if cur, ok := l.m[name]; ok && cur.holder != holder && now.Before(cur.expires) {
		return false, cur.holder, nil
	}
	if l.m == nil {
		l.m = map[string]lease{}
	}
	l.m[name] = lease{holder: holder, expires: now.Add(ttl)}
	return true, holder, nil
}

// ReleaseLease implements store.Leases.
func (s *DB) ReleaseLease(ctx context.Context, name, holder string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l := &s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.m[name]; ok && cur.holder == holder {
		delete(l.m, name)
	}
	return nil
}
