package sqlite

import (
	"sync"
	"sync/atomic"

	"github.com/rampartfw/rampart/internal/store"
)

// assignCache keeps each device's assignment in memory, so that a
// check-in, which reads its device's assignment every time, does not
// run a query while nothing was assigned. It was a quarter of the
// server's CPU per check-in (bench/checkin, docs/performance.md).
//
// It is exact for one process, which is what a SQLite store serves:
// every write to the assignments table runs in a transaction of this
// process that marks itself (conn.assignmentsChanged), and gen moves on
// after such a transaction commits. An entry holds the generation read
// before its query; one read before a change committed is never served
// after it, since gen moves only once the change is visible to queries.
type assignCache struct {
	gen atomic.Uint64
	mu  sync.Mutex
	m   map[string]cachedAssignment
}

type cachedAssignment struct {
	a   store.Assignment
	gen uint64
}

// maxCachedAssignments bounds the cache: past it, it starts afresh (a
// fleet larger than this reads from SQLite again, as without a cache).
const maxCachedAssignments = 1 << 20

// assignment returns deviceID's assignment, cached while no assignment
// changed, else from read.
func (c *assignCache) assignment(deviceID string, read func() (store.Assignment, error)) (store.Assignment, error) {
	g := c.gen.Load()
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
	if c.m == nil || len(c.m) >= maxCachedAssignments {
		c.m = map[string]cachedAssignment{}
	}
	c.m[deviceID] = cachedAssignment{a: a, gen: g}
	c.mu.Unlock()
	return a, nil
}

// changed ends every entry's validity; called after a transaction that
// wrote assignments has committed (or failed to).
func (c *assignCache) changed() { c.gen.Add(1) }

// after moves the cache on when the transaction that set *wrote did so;
// it runs once that transaction has committed or rolled back.
func (c *assignCache) after(wrote *bool) {
	if c != nil && *wrote {
		c.changed()
	}
}
