package fleet_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

// BenchmarkFleetStats100k: the fleet statistics (GET /api/v1/fleet/stats,
// and what /metrics exports every 15 s at most) over 100,000 devices on
// five releases, each with a confirmed install in a rollout (so 100,000
// install times, of which the percentiles read the latest 10,000), 1,000 recoveries and
// refusals. Everything else is a grouped query over an index.
//
//	go test -run XXX -bench FleetStats100k -benchtime 10x ./internal/fleet
func BenchmarkFleetStats100k(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(b.TempDir(), "rampart.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	err = db.Atomic(ctx, func(tx store.Tx) error {
		var ids []string
		for i := range n {
			id := fmt.Sprintf("dev-%06d", i)
			if err := tx.CreateDevice(ctx, store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now}); err != nil {
				return err
			}
			v := fmt.Sprintf("1.0.%d", i%5)
			if err := tx.RecordReport(ctx, id, store.Report{Counter: 1, Status: "installed", Installed: true, Version: v, SecurityVersion: uint64(i % 5), At: now}); err != nil {
				return err
			}
			if i%100 == 0 {
				if err := tx.RecordReport(ctx, id, store.Report{Counter: 2, Status: "verification-refused", Reason: "rollback", Refusal: "rollback", At: now}); err != nil {
					return err
				}
				ids = append(ids, id)
			}
			if err := tx.PutRolloutDevice(ctx, store.RolloutDevice{RolloutID: fmt.Sprintf("ro-%d", i%5), DeviceID: id, Status: "installed",
				OfferedAt: now, UpdatedAt: now.Add(time.Duration(i) * time.Millisecond)}); err != nil {
				return err
			}
		}
		if err := tx.OpenRecoveries(ctx, ids, "ro-1", now); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.CloseRecovery(ctx, id, now.Add(time.Minute)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	svc := fleet.New(fleet.Config{Store: db, Catalog: newCatalog(b), Now: func() time.Time { return now }})
	b.ResetTimer()
	for b.Loop() {
		st, err := svc.FleetStats(ctx)
		if err != nil || st.Devices != n || *st.MTTR != 60 || st.TamperDetections["rollback"] != n/100 || st.TimeToInstallP95 == nil {
			b.Fatalf("%+v %v", st, err)
		}
	}
}
