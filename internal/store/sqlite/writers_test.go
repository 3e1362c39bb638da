package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/store"
)

// Many concurrent writers all get in, in bounded time: before the writer
// gate, SQLite's polling busy handler starved some past its 10 s timeout
// (59 of 7,172 writes by 64 writers over 20 s failed with SQLITE_BUSY at
// load 7.5, the longest wait 10.6 s; with the gate 0 of 11,109, the
// longest wait 0.5 s).
func TestConcurrentWritersAllGetIn(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var done, maxWait atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				start := time.Now()
				err := db.PutDocs(ctx, store.Doc{Repo: fmt.Sprintf("r/%d", w), Role: "timestamp", Version: int64(i + 1), Data: []byte("x")})
				if err != nil {
					t.Error(err)
					return
				}
				for d := int64(time.Since(start)); d > maxWait.Load(); {
					if maxWait.CompareAndSwap(maxWait.Load(), d) {
						break
					}
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d writes by 64 writers in 3 s, the longest wait %s", done.Load(), time.Duration(maxWait.Load()))
	if time.Duration(maxWait.Load()) > writerWait/2 {
		t.Errorf("a writer waited %s", time.Duration(maxWait.Load()))
	}
}

// A write through the database from inside Atomic's callback waits on
// its own transaction: it fails after writerWait rather than hanging.
func TestWriteInsideAtomicFailsNotHangs(t *testing.T) {
	defer func(d time.Duration) { writerWait = d }(writerWait)
	writerWait = 200 * time.Millisecond
	db, err := Open(filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	err = db.Atomic(ctx, func(tx store.Tx) error {
		return db.PutDocs(ctx, store.Doc{Repo: "r", Role: "timestamp", Version: 1, Data: []byte("x")})
	})
	if err == nil || !strings.Contains(err.Error(), "database is locked") {
		t.Fatalf("got %v, want a refusal naming the lock", err)
	}
	// And the gate is free again.
	if err := db.PutDocs(ctx, store.Doc{Repo: "r", Role: "timestamp", Version: 1, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}
