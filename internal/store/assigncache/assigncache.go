// Package assigncache owns a store's in-memory copy of its devices'
// assignments, so that a check-in, which reads its device's assignment
// every time, does not run a query while nothing was assigned. The query
// was a quarter of one server's CPU per check-in (bench/checkin,
// docs/performance.md).
//
// The cache knows nothing of databases: its store tells it when an
// assignment may have changed (Changed, after a writing transaction has
// committed or rolled back) and when it cannot know (Suspend, while a
// PostgreSQL replica is not listening for other replicas' changes), and
// every entry is tagged with the generation read before its query. An
// entry read before a change is never served after the change was
// reported, since the generation moves only once the change is visible
// to queries.
package assigncache

import (
	"sync"
	"sync/atomic"

	"github.com/rampartfw/rampart/internal/store"
)

// Cache is the assignments of a store's devices. The zero Cache is on:
// it serves entries until Suspend.
type Cache struct {
	gen atomic.Uint64
	// off is set while changes may go unreported (Suspend): every read
	// goes to the store and nothing is kept.
	off atomic.Bool
	mu  sync.Mutex
	m   map[string]entry
}

type entry struct {
	a   store.Assignment
	gen uint64
}

// maxEntries bounds the cache: past it, it starts afresh (a fleet larger
// than this reads from its store again, as without a cache).
const maxEntries = 1 << 20

// Get returns deviceID's assignment: the cached one while no change was
// reported since it was read, else read's, which it keeps.
func (c *Cache) Get(deviceID string, read func() (store.Assignment, error)) (store.Assignment, error) {
	g := c.gen.Load()
	if c.off.Load() {
		return read()
	}
	c.mu.Lock()
	e, ok := c.m[deviceID]
	c.mu.Unlock()
	if ok && e.gen == g {
		return e.a, nil
	}
	a, err := read()
	if err != nil {
		// Not cached: an unknown device may enroll, which changes no
		// assignment.
		return a, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxEntries {
		c.m = map[string]entry{}
	}
	c.m[deviceID] = entry{a: a, gen: g}
	c.mu.Unlock()
	return a, nil
}

// Changed ends every entry's validity. Call it once a change to any
// assignment is visible to the store's queries (after its transaction
// committed, or failed to).
func (c *Cache) Changed() { c.gen.Add(1) }

// After calls Changed when *wrote is set; defer it, with the flag a
// transaction sets when it writes assignments, before the transaction
// commits or rolls back.
func (c *Cache) After(wrote *bool) {
	if c != nil && *wrote {
		c.Changed()
	}
}

// Suspend stops serving entries until Resume: changes made from now on
// may not be reported.
func (c *Cache) Suspend() {
	c.off.Store(true)
	c.gen.Add(1)
}

// Resume serves entries again. Call it once every later change will be
// reported: what was kept before is not served.
func (c *Cache) Resume() {
	c.gen.Add(1)
	c.off.Store(false)
}

// Generation is the number of changes and suspensions seen: tests use it
// to tell a cached read from a query.
func (c *Cache) Generation() uint64 { return c.gen.Load() }
