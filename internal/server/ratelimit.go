package server

import (
	"sync"
	"time"
)

// keyedLimiter is a token bucket per key (a device id, an audit actor):
// burst events at once, then one per every. Keys are authenticated
// identities, never what a client names, and the map is bounded: when it
// holds maxKeys, keys whose bucket has refilled (idle long enough to be
// indistinguishable from new ones) are dropped first, and if none has,
// the event is refused, so that memory stays bounded whatever the number
// of identities. It is safe for concurrent use.
type keyedLimiter struct {
	burst   float64
	every   time.Duration
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newKeyedLimiter(burst int, every time.Duration, maxKeys int) *keyedLimiter {
	return &keyedLimiter{burst: float64(burst), every: every, maxKeys: maxKeys, now: time.Now, buckets: map[string]*bucket{}}
}

// allow takes a token from key's bucket; false (and the time until the
// next token) when there is none.
func (l *keyedLimiter) allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxKeys && !l.sweep(now) {
			return false, l.every
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.at))/float64(l.every))
	b.at = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(l.every))
	}
	b.tokens--
	return true, 0
}

// sweep drops the buckets that are full again; it says whether it freed
// any room.
func (l *keyedLimiter) sweep(now time.Time) bool {
	n := len(l.buckets)
	for k, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.at))/float64(l.every) >= l.burst {
			delete(l.buckets, k)
		}
	}
	return len(l.buckets) < n
}
