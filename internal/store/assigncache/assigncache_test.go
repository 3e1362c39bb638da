package assigncache

import (
	"errors"
	"testing"

	"github.com/rampartfw/rampart/internal/store"
)

// reader counts the queries the cache makes; its target is what the
// store holds.
type reader struct {
	target  string
	queries int
	during  func() // runs inside the query, after it read target
	err     error
}

func (r *reader) read() (store.Assignment, error) {
	r.queries++
	a := store.Assignment{DeviceID: "d1", Target: r.target}
	if r.during != nil {
		r.during()
		r.during = nil
	}
	return a, r.err
}

func get(t *testing.T, c *Cache, r *reader, want string, queries int) {
	t.Helper()
	a, err := c.Get("d1", r.read)
	if err != nil || a.Target != want || r.queries != queries {
		t.Fatalf("got %q (%v) after %d queries, want %q after %d", a.Target, err, r.queries, want, queries)
	}
}

func TestCacheServesUntilChanged(t *testing.T) {
	var c Cache
	r := &reader{target: "v1"}
	get(t, &c, r, "v1", 1)
	get(t, &c, r, "v1", 1)
	r.target = "v2"
	c.Changed()
	get(t, &c, r, "v2", 2)
	get(t, &c, r, "v2", 2)
	var wrote bool
	c.After(&wrote)
	get(t, &c, r, "v2", 2)
	wrote, r.target = true, "v3"
	c.After(&wrote)
	get(t, &c, r, "v3", 3)
}

// A change reported while its query ran: what the query read may be
// older than the change, so it is not served afterwards.
func TestCacheDropsWhatWasReadDuringAChange(t *testing.T) {
	var c Cache
	r := &reader{target: "v1"}
	r.during = func() { r.target = "v2"; c.Changed() }
	get(t, &c, r, "v1", 1)
	get(t, &c, r, "v2", 2)
	get(t, &c, r, "v2", 2)
}

func TestCacheKeepsNoError(t *testing.T) {
	var c Cache
	r := &reader{err: store.ErrNotFound}
	if _, err := c.Get("d1", r.read); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	r.err = nil
	get(t, &c, r, "", 2)
	get(t, &c, r, "", 2)
}

// Suspended, every read is a query and nothing kept then is served
// after Resume, nor is what was kept before.
func TestCacheSuspended(t *testing.T) {
	var c Cache
	r := &reader{target: "v1"}
	get(t, &c, r, "v1", 1)
	c.Suspend()
	r.target = "v2" // a change nobody reported
	get(t, &c, r, "v2", 2)
	get(t, &c, r, "v2", 3)
	// Resumed: served again.
	c.Resume()
	get(t, &c, r, "v2", 4)
	get(t, &c, r, "v2", 4)
	// Suspended while a query ran: what it kept is not served after
	// Resume, though a change made meanwhile went unreported.
	r.during = func() { c.Suspend() }
	c.Changed()
	get(t, &c, r, "v2", 5)
	r.target = "v3"
	c.Resume()
	get(t, &c, r, "v3", 6)
	get(t, &c, r, "v3", 6)
}
