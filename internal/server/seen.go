package server

import (
	"errors"
	"sync"
	"sync/atomic"
)

// seenSet remembers keys already checked (target names found published,
// chunks whose stored bytes matched), so that hot paths skip the check.
// Forgetting is always safe, it only costs a check again, so the set is
// bounded: when it reaches limit keys it starts over, and a catalogue
// larger than the limit cannot grow the server's memory without bound.
type seenSet struct {
	m     sync.Map
	n     atomic.Int64
	limit int64
	// checking holds the checks in progress (see check).
	checking sync.Map
}

// seenLimit bounds each seenSet: about 10 MB of keys.
const seenLimit = 100_000

func (s *seenSet) has(k string) bool {
	_, ok := s.m.Load(k)
	return ok
}

func (s *seenSet) add(k string) {
	if _, loaded := s.m.LoadOrStore(k, struct{}{}); loaded {
		return
	}
	limit := s.limit
	if limit <= 0 {
		limit = seenLimit
	}
	if s.n.Add(1) > limit {
		s.m.Clear()
		s.n.Store(0)
	}
}

// pendingCheck is one run of a check that concurrent callers wait for.
type pendingCheck struct {
	done chan struct{}
	err  error
}

// check runs fn for k unless k was seen, adds k when fn succeeds, and
// returns fn's error. Concurrent callers for one k share one run of fn, so
// a check that costs (hashing a large payload) is not repeated by every
// request that arrives while it runs. A failed check is not remembered:
// the next call runs fn again.
func (s *seenSet) check(k string, fn func() error) error {
	if s.has(k) {
		return nil
	}
	c := &pendingCheck{done: make(chan struct{}), err: errors.New("the check did not finish")}
	if other, running := s.checking.LoadOrStore(k, c); running {
		oc := other.(*pendingCheck)
		<-oc.done
		return oc.err
	}
	defer func() {
		s.checking.Delete(k)
		close(c.done)
	}()
	if s.has(k) {
		return nil
	}
	if c.err = fn(); c.err == nil {
		s.add(k)
	}
	return c.err
}
