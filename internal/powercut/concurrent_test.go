package powercut_test

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rampartfw/rampart/internal/powercut"
)

// TestConcurrentWriteAtCut writes a device from several goroutines, as the
// installer does, with the power cut in the middle: exactly the writes
// before the cut happened, every later call fails with ErrPowerCut, and a
// restart keeps them (KeepAll) or not (DropUnsynced, no Sync). Run with
// -race.
func TestConcurrentWriteAtCut(t *testing.T) {
	const workers, chunks, chunk = 8, 32, 700 // chunks straddle sectors
	const cut = 100
	m := powercut.New()
	m.PutDevice("/dev/slot", workers*chunks*chunk)
	f := open(t, m, "/dev/slot", os.O_RDWR)
	m.CutAt(cut)
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for c := w; c < workers*chunks; c += workers {
				p := bytes.Repeat([]byte{byte(c%255 + 1)}, chunk)
				_, err := f.WriteAt(p, int64(c*chunk))
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, powercut.ErrPowerCut):
					failed.Add(1)
				default:
					t.Errorf("WriteAt chunk %d: %v", c, err)
				}
				// Reads race with the writes too.
				if _, err := f.ReadAt(make([]byte, 10), int64(c*chunk)); err != nil && !errors.Is(err, powercut.ErrPowerCut) {
					t.Errorf("ReadAt chunk %d: %v", c, err)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != cut-1 || failed.Load() != workers*chunks-(cut-1) || m.Ops() != cut-1 {
		t.Fatalf("%d writes succeeded, %d failed, Ops() = %d; want %d, %d, %d",
			ok.Load(), failed.Load(), m.Ops(), cut-1, workers*chunks-(cut-1), cut-1)
	}
	written := func(r *powercut.Model) int {
		img := must1(r.Get("/dev/slot"))
		n := 0
		for c := range workers * chunks {
			got := img[c*chunk : (c+1)*chunk]
			switch {
			case bytes.Equal(got, bytes.Repeat([]byte{byte(c%255 + 1)}, chunk)):
				n++
			case !bytes.Equal(got, make([]byte, chunk)):
				t.Fatalf("chunk %d is a mixture", c)
			}
		}
		return n
	}
	if n := written(m.Restart(powercut.KeepAll, 0)); n != cut-1 {
		t.Errorf("KeepAll kept %d chunks, want %d", n, cut-1)
	}
	if n := written(m.Restart(powercut.DropUnsynced, 0)); n != 0 {
		t.Errorf("DropUnsynced kept %d unsynced chunks", n)
	}
}
