package lease

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/store"
)

// fakeStore grants leases like a store, and fails every call while down.
type fakeStore struct {
	mu      sync.Mutex
	down    bool
	holder  string
	expires time.Time
	token   int64
}

var errDown = errors.New("database unreachable")

func (f *fakeStore) Lease(ctx context.Context, name, holder string, ttl time.Duration) (store.LeaseState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return store.LeaseState{}, errDown
	}
	now := time.Now()
	unexpired := f.holder != "" && now.Before(f.expires)
	if unexpired && f.holder != holder {
		return store.LeaseState{Owner: f.holder}, nil
	}
	if !unexpired {
		f.token++
	}
	f.holder, f.expires = holder, now.Add(ttl)
	return store.LeaseState{Held: true, Owner: holder, Token: f.token}, nil
}

func (f *fakeStore) ReleaseLease(ctx context.Context, name, holder string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errDown
	}
	if f.holder == holder {
		f.holder = ""
	}
	return nil
}

// A holder that can no longer reach the store stops holding the lease
// before the store would give it to another: Held turns false no later
// than the store's expiry, and the other holder gets it only after.
func TestHolderCutOffStopsBeforeTheStoreFreesTheLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := &fakeStore{}
	const ttl = 200 * time.Millisecond
	a, b := New(st, "work", "a", ttl), New(st, "work", "b", ttl)
	if held, err := a.Acquire(ctx); !held || err != nil {
		t.Fatalf("a: %v %v", held, err)
	}
	if held, _ := b.Acquire(ctx); held || b.Owner() != "a" {
		t.Fatalf("b got a held lease (owner %q)", b.Owner())
	}
	st.mu.Lock()
	st.down = true
	storeExpiry := st.expires
	st.mu.Unlock()
	if held, err := a.Acquire(ctx); !held || !errors.Is(err, errDown) {
		t.Fatalf("a renewal failing within the term: held %v, %v; want held and the error", held, err)
	}
	// a's deadline, counted from before its last successful request,
	// comes before the store's expiry, counted from when the store
	// served it; from the deadline on a holds nothing.
	a.mu.Lock()
	deadline := a.deadline
	a.mu.Unlock()
	if !deadline.Before(storeExpiry) {
		t.Fatalf("a holds the lease until %v, not before the store's expiry %v", deadline, storeExpiry)
	}
	time.Sleep(time.Until(deadline))
	if a.Held() {
		t.Fatal("a still holds the lease past its deadline, cut off from the store")
	}
	st.mu.Lock()
	st.down = false
	st.mu.Unlock()
	if held, _ := b.Acquire(ctx); held && time.Now().Before(storeExpiry) {
		t.Fatal("b took the lease before it expired")
	}
	time.Sleep(time.Until(storeExpiry))
	if held, err := b.Acquire(ctx); !held || err != nil {
		t.Fatalf("b after the expiry: %v %v", held, err)
	}
	if held, _ := a.Acquire(ctx); held || a.Held() || a.Owner() != "b" {
		t.Fatalf("a back: held %v, owner %q", a.Held(), a.Owner())
	}
}

// Hold keeps renewing for the length of the work, past the TTL, and its
// release frees the lease at once.
func TestHoldRenewsUntilReleased(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := &fakeStore{}
	const ttl = 300 * time.Millisecond
	a, b := New(st, "push", "a", ttl), New(st, "push", "b", ttl)
	held, release, err := a.Hold(ctx)
	if !held || err != nil {
		t.Fatal(held, err)
	}
	end := time.Now().Add(3 * ttl)
	for time.Now().Before(end) {
		if !a.Held() {
			t.Fatal("a lost a lease it holds for its work")
		}
		if held, _ := b.Acquire(ctx); held {
			t.Fatal("b took a lease held for a piece of work")
		}
		time.Sleep(ttl / 9)
	}
	release()
	if a.Held() {
		t.Fatal("held after release")
	}
	if held, _ := b.Acquire(ctx); !held {
		t.Fatal("a released lease is not free at once")
	}
	if held, rel, _ := a.Hold(ctx); held {
		rel()
		t.Fatal("a got b's lease")
	}
}

// Fenced carries the term held when it is called: the same token for
// every write of one piece of work, a new one once the lease was lost
// and taken again, and token 0 (which fences every write) when not held.
func TestFencedCarriesTheTerm(t *testing.T) {
	ctx := context.Background()
	f := &fakeStore{}
	l := New(f, "work", "a", time.Hour)
	fence := func() store.Fence {
		t.Helper()
		fc, ok := store.FenceFrom(l.Fenced(ctx))
		if !ok || fc.Lease != "work" || fc.Holder != "a" {
			t.Fatalf("fence %+v (%v)", fc, ok)
		}
		return fc
	}
	if fc := fence(); fc.Token != 0 {
		t.Fatalf("before acquiring: token %d, want 0", fc.Token)
	}
	if held, err := l.Acquire(ctx); !held || err != nil {
		t.Fatal(held, err)
	}
	t1 := fence().Token
	l.Acquire(ctx) // a renewal
	if t1 == 0 || fence().Token != t1 {
		t.Fatalf("tokens %d then %d, want one nonzero token for the term", t1, fence().Token)
	}
	f.mu.Lock()
	f.expires = time.Now() // the term ends in the store
	f.mu.Unlock()
	l.Acquire(ctx)
	if t2 := fence().Token; t2 <= t1 {
		t.Fatalf("a new term's token %d, after %d", t2, t1)
	}
	l.Release(ctx)
	if fc := fence(); fc.Token != 0 {
		t.Fatalf("after release: token %d, want 0", fc.Token)
	}
}
