package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/store"
)

// The assignment cache serves what a query would: after an assignment
// commits (alone, in Atomic, under a savepoint), after one rolls back,
// after a device is removed or enrolled; and it serves from memory while
// nothing changes.
func TestAssignmentCacheFollowsWrites(t *testing.T) {
	ctx := context.Background()
	db := tempDB(t)
	now := time.Now()
	var err error
	want := func(id, target string) {
		t.Helper()
		a, err := db.Assignment(ctx, id)
		if err != nil || a.Target != target {
			t.Fatalf("assignment of %s: %+v %v, want target %q", id, a, err, target)
		}
	}
	if _, err := db.Assignment(ctx, "gw-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	if err := db.CreateDevice(ctx, store.Device{ID: "gw-1", HardwareID: "hw", CertSerial: "01", EnrolledAt: now}); err != nil {
		t.Fatal(err)
	}
	want("gw-1", "") // an unknown device's refusal was not cached

	if _, err := db.Assign(ctx, "p/1.0.0/fw.img", []string{"gw-1"}, now); err != nil {
		t.Fatal(err)
	}
	want("gw-1", "p/1.0.0/fw.img")
	gen := db.assign.gen.Load()
	for range 3 {
		want("gw-1", "p/1.0.0/fw.img")
	}
	if db.assign.gen.Load() != gen {
		t.Fatal("reads moved the generation")
	}

	// In Atomic, then under a savepoint in Atomic.
	err = db.Atomic(ctx, func(tx store.Tx) error {
		_, err := tx.Assign(ctx, "p/1.1.0/fw.img", []string{"gw-1"}, now)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want("gw-1", "p/1.1.0/fw.img")
	// A transaction that assigns and then fails changes nothing.
	boom := errors.New("boom")
	err = db.Atomic(ctx, func(tx store.Tx) error {
		if _, err := tx.Assign(ctx, "p/9.9.9/fw.img", []string{"gw-1"}, now); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	want("gw-1", "p/1.1.0/fw.img")

	// Removed: refused again, as a query would.
	if _, err := db.RemoveDevice(ctx, "gw-1", now); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Assignment(ctx, "gw-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed device: %v", err)
	}
}

// Readers racing an assignment never see the old target once Assign has
// returned (run with -race).
func TestAssignmentCacheConcurrentReaders(t *testing.T) {
	ctx := context.Background()
	db := tempDB(t)
	if err := db.CreateDevice(ctx, store.Device{ID: "gw-1", HardwareID: "hw", CertSerial: "01", EnrolledAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	committed := "" // the last target whose Assign returned
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				floor := committed
				mu.Unlock()
				a, err := db.Assignment(ctx, "gw-1")
				if err != nil {
					errs <- err
					return
				}
				// Targets go up: v0, v1, ...; a read after Assign of vN
				// returned sees vN or later.
				if floor != "" && a.Target < floor {
					errs <- fmt.Errorf("read %q after %q was committed", a.Target, floor)
					return
				}
			}
		}()
	}
	for i := range 50 {
		target := fmt.Sprintf("p/v%03d/fw.img", i)
		if _, err := db.Assign(ctx, target, []string{"gw-1"}, time.Now()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		committed = target
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// tempDB is a new store in a temporary directory, closed when t ends.
func tempDB(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
