package server

import (
	"fmt"
	"testing"
	"time"
)

// A key gets its burst, then one event per interval; the map never holds
// more than maxKeys, dropping refilled buckets first and refusing new
// keys while every bucket is in use.
func TestKeyedLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newKeyedLimiter(3, time.Minute, 4)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("event %d of the burst refused", i)
		}
	}
	ok, wait := l.allow("a")
	if ok || wait != time.Minute {
		t.Fatalf("over the burst: %v, wait %s", ok, wait)
	}
	now = now.Add(time.Minute)
	if ok, _ := l.allow("a"); !ok {
		t.Fatal("refilled token refused")
	}
	for i := range 3 {
		if ok, _ := l.allow(fmt.Sprint("k", i)); !ok {
			t.Fatalf("key %d refused", i)
		}
	}
	// Full, every bucket in use: a new key is refused, not tracked.
	if ok, _ := l.allow("new"); ok || len(l.buckets) != 4 {
		t.Fatalf("a fifth key: %v, %d tracked", ok, len(l.buckets))
	}
	// Once buckets have refilled they are dropped to make room.
	now = now.Add(3 * time.Minute)
	if ok, _ := l.allow("new"); !ok || len(l.buckets) != 1 {
		t.Fatalf("after refill: %v, %d tracked", ok, len(l.buckets))
	}
}
