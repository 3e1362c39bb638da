package fleet_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/api"
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

// BenchmarkRevokeKey100k: revoking a release signer whose release runs
// on 10,000 of 100,000 devices and is assigned to 10,000 more (in flight
// in its rollout): one transaction that aborts the rollout, scans the
// fleet in batches of 5,000 for the devices running it, reads the
// assigned ones from the assignments' index, unassigns them and opens
// the recoveries.
//
//	go test -run XXX -bench RevokeKey100k -benchtime 1x ./internal/fleet
func BenchmarkRevokeKey100k(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		db, err := sqlite.Open(filepath.Join(b.TempDir(), "rampart.db"))
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now().UTC()
		cat := twoReleases(b, db)
		var assigned []string
		err = db.Atomic(ctx, func(tx store.Tx) error {
			for i := range n {
				id := fmt.Sprintf("dev-%06d", i)
				v := "1.0.0"
				if i%10 == 0 {
					v = "2.0.0"
				} else if i%10 == 1 {
					assigned = append(assigned, id)
				}
				if err := tx.CreateDevice(ctx, store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now}); err != nil {
					return err
				}
				if err := tx.RecordReport(ctx, id, store.Report{Counter: 1, Status: "installed", Installed: true, Version: v, SecurityVersion: 1, At: now}); err != nil {
					return err
				}
			}
			_, err := tx.Assign(ctx, "acme-gw/2.0.0/fw.img", assigned, now)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		svc := fleet.New(fleet.Config{Store: db, Catalog: cat, Now: func() time.Time { return now }})
		if _, err := svc.CreateRollout(ctx, fleet.Op{Actor: "token:x"}, api.RolloutRequest{Release: "acme-gw/2.0.0", Phases: "100%"}); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		cpu0, wall0 := cpuTime(), time.Now()
		b.StartTimer()
		out, err := svc.RevokeKey(ctx, fleet.Op{Actor: "token:x"}, api.RevokeKeyRequest{KeyID: keyB, Reason: "bench"})
		b.StopTimer()
		cpu, wall := cpuTime()-cpu0, time.Since(wall0)
		if err != nil || len(out.HaltedRollouts) != 1 || len(out.Devices) != api.MaxAffectedDevices || out.DevicesMore != 2*n/10-api.MaxAffectedDevices {
			b.Fatalf("%d devices, %d more, %v", len(out.Devices), out.DevicesMore, err)
		}
		b.ReportMetric(cpu.Seconds(), "cpu-s")
		b.ReportMetric(wall.Seconds(), "wall-s")
		db.Close()
		b.StartTimer()
	}
}
