// Package lease holds named leases in the metadata store (store.Leases)
// for a replica, so that work meant to happen once across several
// rampart-server replicas over one database (the background work, a
// push) is done by one of them at a time.
//
// A lease's expiry is counted by the store (the database's clock). A
// holder must stop acting on it before the store can give it to another
// replica, even when the holder has lost the database and cannot learn
// that it lost the lease: so a Lease counts its own deadline, on this
// process's monotonic clock, from the moment it sent the acquiring or
// renewing request, which is never later than the moment the store
// counts the expiry from. Held is false from that deadline on, and the
// work checks Held before each step (fencing by time). A step already
// running when the deadline passes (the holder paused by a long garbage
// collection or a stopped virtual machine) is closed by the store: the
// work's writes carry the term they were started under (Fenced), and the
// store commits them only while that term lasts, and begins no new term
// while one is being written (store.Leases).
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rampartfw/rampart/internal/store"
)

// Store is what a lease needs of the metadata store (store.Leases).
type Store interface {
	Lease(ctx context.Context, name, holder string, ttl time.Duration) (store.LeaseState, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// DefaultTTL is a lease's lifetime when none is configured: a replica
// that dies holding one is replaced after at most this long (and a
// renewal period, TTL/3).
const DefaultTTL = 30 * time.Second

// safety is the share of the TTL a holder gives up at the end of each
// term, against the two clocks running at slightly different rates.
const safety = 10

// NewHolderID returns a name for this replica as a lease holder: its
// host name and process id, which say where to look, and random bytes,
// so that a restarted process is not taken for the one before it.
func NewHolderID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Lease is one named lease as one holder sees it. It is safe for
// concurrent use.
type Lease struct {
	store  Store
	name   string
	holder string
	ttl    time.Duration

	mu       sync.Mutex
	deadline time.Time // monotonic; zero when not held
	owner    string    // the holder the store last named
	token    int64     // the term's, while held
}

// New returns the lease name for holder, not yet acquired.
func New(s Store, name, holder string, ttl time.Duration) *Lease {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Lease{store: s, name: name, holder: holder, ttl: ttl}
}

// Name returns the lease's name.
func (l *Lease) Name() string { return l.name }

// Holder returns this replica's holder id.
func (l *Lease) Holder() string { return l.holder }

// TTL returns the lease's lifetime.
func (l *Lease) TTL() time.Duration { return l.ttl }

// Acquire acquires the lease, or renews it when held, and reports
// whether it is held now. When another holder has it, Owner names it.
// An error (the store unreachable) leaves the deadline of an earlier
// term as it was: the lease is held until then and not after.
func (l *Lease) Acquire(ctx context.Context) (bool, error) {
	start := time.Now()
	st, err := l.store.Lease(ctx, l.name, l.holder, l.ttl)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		return l.heldLocked(), fmt.Errorf("lease %s: %w", l.name, err)
	}
	l.owner = st.Owner
	if !st.Held {
		l.deadline = time.Time{}
		return false, nil
	}
	l.deadline = start.Add(l.ttl - l.ttl/safety)
	l.token = st.Token
	return true, nil
}

// Fenced returns ctx carrying the lease's current term (store.WithFence):
// the store commits the writes made with it only while that term lasts,
// and refuses them with store.ErrFenced once it has ended, even when
// this replica has not noticed yet. Work derives its context from
// Fenced once, when it starts, so that all of it belongs to one term.
// When the lease is not held, every write made with the context fails.
func (l *Lease) Fenced(ctx context.Context) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := store.Fence{Lease: l.name, Holder: l.holder}
	if l.heldLocked() {
		f.Token = l.token
	}
	return store.WithFence(ctx, f)
}

// Held reports whether the lease is held now: acquired or renewed less
// than its TTL (less the safety margin) ago, counted from the request.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heldLocked()
}

func (l *Lease) heldLocked() bool {
	return !l.deadline.IsZero() && time.Now().Before(l.deadline)
}

// Owner returns the holder the store named at the last acquisition: this
// replica's id when it holds the lease, another's when that one does, ""
// when none was known.
func (l *Lease) Owner() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.owner
}

// Release gives the lease up, so that another replica may take it at
// once. Held is false from now on, whether or not the store answered.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	l.deadline = time.Time{}
	l.mu.Unlock()
	if err := l.store.ReleaseLease(ctx, l.name, l.holder); err != nil {
		return fmt.Errorf("lease %s: %w", l.name, err)
	}
	return nil
}

// Keep renews the lease every TTL/3 until ctx ends, acquiring it whenever
// it is free, and calls acquired (when not nil) each time it goes from
// not held to held, so that the holder's work can start at once. Errors
// are passed to onErr (when not nil); the lease stays held until its
// deadline and is tried again at the next period. When ctx ends the
// lease is released, so a replica shutting down gracefully hands it over
// at once; one that dies leaves it to expire.
func (l *Lease) Keep(ctx context.Context, acquired func(), onErr func(error)) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	was := false
	for {
		held, err := l.Acquire(ctx)
		if err != nil && ctx.Err() == nil && onErr != nil {
			onErr(err)
		}
		if held && !was && acquired != nil {
			acquired()
		}
		was = held
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			l.Release(rctx)
			cancel()
			return
		case <-t.C:
		}
	}
}

// Hold acquires the lease for the length of one piece of work (a push)
// and keeps renewing it in the background until the returned release
// is called, which gives it up. held is false (and release a no-op) when
// another holder has it: Owner names it.
func (l *Lease) Hold(ctx context.Context) (held bool, release func(), err error) {
	held, err = l.Acquire(ctx)
	if err != nil || !held {
		return held && err == nil, func() {}, err
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(l.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-kctx.Done():
				return
			case <-t.C:
				l.Acquire(kctx)
			}
		}
	}()
	var once sync.Once
	return true, func() {
		once.Do(func() {
			cancel()
			<-done
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			l.Release(rctx)
			rcancel()
		})
	}, nil
}
