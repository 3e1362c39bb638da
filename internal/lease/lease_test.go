package lease

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeStore grants leases like a store, and fails every call while down.
type fakeStore struct {
	mu      sync.Mutex
	down    bool
	holder  string
	expires time.Time
}

var errDown = errors.New("database unreachable")

func (f *fakeStore) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return false, "", errDown
	}
	now := time.Now()
	if f.holder != "" && f.holder != holder && now.Before(f.expires) {
		return false, f.holder, nil
	}
	f.holder, f.expires = holder, now.Add(ttl)
	return true, holder, nil
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
