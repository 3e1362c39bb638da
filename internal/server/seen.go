package server

import (
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
