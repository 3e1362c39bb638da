package sqlite

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rampartfw/rampart/internal/store"
)

// leases implements store.Leases for one process: a SQLite store has one
// server process, so the leases live in its memory, with the semantics a
// shared store gives them across replicas (a holder, an expiry on the
// monotonic clock, renewal by the holder, release, a token per term,
// fenced writes). A restart forgets them, which loses nothing: the
// process that held them is gone, and so are its writes under way.
//
// A fenced write checks its term as it passes the writer gate (fence);
// a new term begins only inside the gate (take), so it waits for the
// write under way, as a PostgreSQL row lock makes it wait there.
type leases struct {
	mu sync.Mutex
	m  map[string]lease
}

type lease struct {
	holder  string
	expires time.Time // carries the monotonic reading of time.Now
	token   int64
}

// Lease implements store.Leases.
func (s *DB) Lease(ctx context.Context, name, holder string, ttl time.Duration) (store.LeaseState, error) {
	if err := ctx.Err(); err != nil {
		return store.LeaseState{}, err
	}
	if ttl <= 0 {
		return store.LeaseState{}, fmt.Errorf("lease %s: ttl %v is not positive", name, ttl)
	}
	if st, ok := s.leases.current(name, holder, ttl); ok {
		return st, nil
	}
	if err := s.gate.enter(ctx); err != nil {
		return store.LeaseState{}, fmt.Errorf("lease %s: %w", name, err)
	}
	defer s.gate.leave()
	if st, ok := s.leases.current(name, holder, ttl); ok {
		return st, nil // taken or renewed while this call waited
	}
	l := s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]lease{}
	}
	tok := l.m[name].token + 1
	l.m[name] = lease{holder: holder, expires: time.Now().Add(ttl), token: tok}
	return store.LeaseState{Held: true, Owner: holder, Token: tok}, nil
}

// current answers a call to Lease that begins no new term: holder's
// renewal of its unexpired lease, or another's unexpired lease. ok is
// false when the lease is free (absent, expired or released).
func (l *leases) current(name, holder string, ttl time.Duration) (st store.LeaseState, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	cur, found := l.m[name]
	if !found || !now.Before(cur.expires) {
		return store.LeaseState{}, false
	}
	if cur.holder != holder {
		return store.LeaseState{Owner: cur.holder}, true
	}
	cur.expires = now.Add(ttl)
	l.m[name] = cur
	return store.LeaseState{Held: true, Owner: holder, Token: cur.token}, true
}

// ReleaseLease implements store.Leases: the lease expires now and keeps
// its token.
func (s *DB) ReleaseLease(ctx context.Context, name, holder string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l := s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if cur, ok := l.m[name]; ok && cur.holder == holder && now.Before(cur.expires) {
		cur.expires = now
		l.m[name] = cur
	}
	return nil
}

// fence checks the lease term ctx carries (store.WithFence), if any, for
// a write that has passed the writer gate.
func (l *leases) fence(ctx context.Context) error {
	f, ok := store.FenceFrom(ctx)
	if !ok {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.m[f.Lease]
	if cur.holder != f.Holder || cur.token != f.Token || !time.Now().Before(cur.expires) {
		return fmt.Errorf("lease %s, term %d of %s: %w", f.Lease, f.Token, f.Holder, store.ErrFenced)
	}
	return nil
}
