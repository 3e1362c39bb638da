package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progressReader reports how much of a large stream has been read, on
// stderr, when stderr is a terminal.
type progressReader struct {
	r    io.Reader
	n    atomic.Int64
	done chan struct{}
	wg   sync.WaitGroup
}

func startProgress(e *env, what string, r io.Reader, total int64) (io.Reader, func()) {
	if !isTerminal(e.stderr) {
		return r, func() {}
	}
	p := &progressReader{r: r, done: make(chan struct{})}
	draw := func() {
		n := p.n.Load()
		pct := 0.0
		if total > 0 {
			pct = 100 * float64(n) / float64(total)
		}
		fmt.Fprintf(e.stderr, "\r\033[K%s: %3.0f%% (%d of %d MiB)", what, pct, n>>20, total>>20)
	}
	// Draw before the first read, so even a short run shows what it does.
	draw()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				fmt.Fprintf(e.stderr, "\r\033[K")
				return
			case <-t.C:
				draw()
			}
		}
	}()
	return p, func() { close(p.done); p.wg.Wait() }
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

// startSpinner shows that a long step without a byte count is running.
func startSpinner(e *env, what string) func() {
	if !isTerminal(e.stderr) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	draw := func() { fmt.Fprintf(e.stderr, "\r\033[K%s… %.1fs", what, time.Since(start).Seconds()) }
	draw()
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintf(e.stderr, "\r\033[K")
				return
			case <-t.C:
				draw()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
