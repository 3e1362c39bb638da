package fleet_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

// countingStore counts the transactions the fleet opens.
type countingStore struct {
	*sqlite.DB
	atomic atomic.Int64
}

func (c *countingStore) Atomic(ctx context.Context, f func(tx store.Tx) error) error {
	c.atomic.Add(1)
	return c.DB.Atomic(ctx, f)
}

// Deciding again for devices whose decision changes nothing writes
// nothing: devices in flight, devices the concurrency limit holds back,
// devices the policy denies again for the same rule. What is decided is
// what the transactions would decide.
func TestDecideAgainWritesNothing(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cs := &countingStore{DB: db}
	now := time.Now().UTC()
	const n = 60
	for i := range n {
		id := fmt.Sprintf("d%02d", i)
		if err := db.CreateDevice(ctx, store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			db.SetDeviceTags(ctx, id, map[string]string{"site": "lab"}, nil)
		}
	}
	svc := fleet.New(fleet.Config{Store: cs, Catalog: newCatalog(t), Now: func() time.Time { return now }})
	op := fleet.Op{Actor: "token:alice"}
	if _, err := svc.SetPolicy(ctx, op, "rules:\n  - name: no-lab\n    deny: device.tags.site == \"lab\"\n"); err != nil {
		t.Fatal(err)
	}
	ro, err := svc.CreateRollout(ctx, op, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%", MaxConcurrent: 5})
	if err != nil {
		t.Fatal(err)
	}
	decideAll := func() int64 {
		before := cs.atomic.Load()
		for i := range n {
			if err := svc.Decide(ctx, fmt.Sprintf("d%02d", i)); err != nil {
				t.Fatal(err)
			}
		}
		return cs.atomic.Load() - before
	}
	// The first pass: 20 lab devices denied, 5 offered, each in a
	// transaction; the other 35 wait for a slot without one.
	if w := decideAll(); w != 25 {
		t.Fatalf("first pass: %d transactions, want 25", w)
	}
	check := func() {
		t.Helper()
		r, err := svc.ShowRollout(ctx, ro.ID)
		if err != nil || r.Counts.Downloading != 5 || r.Counts.PolicyDenied != 20 {
			t.Fatalf("%+v %v", r.Counts, err)
		}
	}
	check()
	// Every device decides again (the policy is set again: a new
	// version, the same rules): nothing to write.
	if _, err := svc.SetPolicy(ctx, op, "rules:\n  - name: no-lab\n    deny: device.tags.site == \"lab\"\n"); err != nil {
		t.Fatal(err)
	}
	if w := decideAll(); w != 0 {
		t.Fatalf("second pass: %d transactions, want 0", w)
	}
	check()
	// A device in flight fails: its slot is free, and one waiting
	// device takes it.
	if err := svc.Report(ctx, "req-1", "d01", api.ReportRequest{Counter: 1, Status: api.Failed, Reason: "disk"}); err != nil {
		t.Fatal(err)
	}
	if w := decideAll(); w != 1 {
		t.Fatalf("after a freed slot: %d transactions, want 1", w)
	}
	check()
}
