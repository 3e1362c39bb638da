package server

import (
	"strconv"
	"sync"
	"testing"
)

func TestSeenSetBounded(t *testing.T) {
	s := &seenSet{limit: 10}
	for i := range 10 {
		s.add(strconv.Itoa(i))
		s.add(strconv.Itoa(i)) // again: not counted twice
	}
	for i := range 10 {
		if !s.has(strconv.Itoa(i)) {
			t.Fatalf("key %d forgotten below the limit", i)
		}
	}
	s.add("10") // the 11th key: the set starts over
	if s.has("0") || s.has("9") {
		t.Error("the set kept growing past its limit")
	}
	n := 0
	s.m.Range(func(any, any) bool { n++; return true })
	if n > 10 {
		t.Errorf("%d keys held, limit 10", n)
	}
}

func TestSeenSetConcurrent(t *testing.T) {
	s := &seenSet{limit: 100}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				k := strconv.Itoa(g*1000 + i)
				s.add(k)
				s.has(k)
			}
		}()
	}
	wg.Wait()
	n := 0
	s.m.Range(func(any, any) bool { n++; return true })
	if n > 2*100 { // adds racing a clear may go uncounted until the next one
		t.Errorf("%d keys held, limit 100", n)
	}
}
