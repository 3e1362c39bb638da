package fleet_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

// catalog publishes one release, acme-gw/2.0.0/fw.img for hardware hw,
// security version 2 (unsigned: the fleet reads, it does not verify).
type catalog struct{ pub fleet.Published }

func (c catalog) Published(context.Context) (fleet.Published, error) { return c.pub, nil }

func newCatalog(t testing.TB) catalog {
	m := &release.Meta{Product: "acme-gw", Version: "2.0.0", SecurityVersion: 2, HardwareIDs: []string{"hw"}, Created: time.Now().UTC(),
		Index: release.IndexRef{SHA256: fmt.Sprintf("%064x", 1), Length: 1, ChunkSize: 1 << 20}}
	custom, err := m.Custom()
	if err != nil {
		t.Fatal(err)
	}
	role := metadata.Targets(time.Now().Add(time.Hour))
	tf, err := metadata.TargetFile().FromBytes("acme-gw/2.0.0/fw.img", []byte("image"), "sha256")
	if err != nil {
		t.Fatal(err)
	}
	tf.Custom = custom
	role.Signed.Targets["acme-gw/2.0.0/fw.img"] = tf
	b, err := role.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	return catalog{fleet.Published{Roles: map[string][]byte{"acme-gw": b}}}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRollout100k: a rollout over 100,000 devices created directly
// in the store decides every device's assignment (one check-in each: the
// 1% of the first phase are handed the release, the rest are decided
// against and memoised) and advances a phase (a batched scan of the
// fleet). It reports the server CPU (user + system) of the whole
// operation: the target is under 2 s.
//
//	go test -run XXX -bench Rollout100k -benchtime 1x ./internal/fleet
func BenchmarkRollout100k(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		db, err := sqlite.Open(filepath.Join(b.TempDir(), "rampart.db"))
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now().UTC()
		err = db.Atomic(ctx, func(tx store.Tx) error {
			for i := range n {
				d := store.Device{ID: fmt.Sprintf("dev-%06d", i), HardwareID: "hw", CertSerial: fmt.Sprint(i), EnrolledAt: now, SecurityVersion: 1, Version: "1.0.0"}
				if err := tx.CreateDevice(ctx, d); err != nil {
					return err
				}
				if i%10 == 0 {
					if _, err := tx.SetDeviceTags(ctx, d.ID, map[string]string{"site": "lab"}, nil); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		clock := now
		svc := fleet.New(fleet.Config{Store: db, Catalog: newCatalog(b), Now: func() time.Time { return clock }})
		op := fleet.Op{Actor: "token:bench"}
		runtime.GC() // the setup's garbage is not the rollout's
		cpu0, wall0 := cpuTime(), time.Now()
		b.StartTimer()

		c, err := svc.CreateRollout(ctx, op, api.RolloutRequest{Release: "acme-gw/2.0.0", Select: `hardware == "hw" && tags.site != "lab"`,
			Phases: "1%,10%,100%", Soak: "1m", MinSuccess: 1})
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			if err := svc.Decide(ctx, fmt.Sprintf("dev-%06d", i)); err != nil {
				b.Fatal(err)
			}
		}
		r, err := svc.ShowRollout(ctx, c.ID)
		if err != nil || r.Counts.Downloading == 0 {
			b.Fatalf("%+v %v", r, err)
		}
		// One confirmed install passes the first gate; the soak ends.
		db.PutRolloutDevice(ctx, store.RolloutDevice{RolloutID: c.ID, DeviceID: "x", Status: "installed", UpdatedAt: clock})
		clock = clock.Add(2 * time.Minute)
		if err := svc.Step(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu, wall := cpuTime()-cpu0, time.Since(wall0)
		r, _ = svc.ShowRollout(ctx, c.ID)
		if r.Phase != 2 {
			b.Fatalf("not promoted: %+v", r)
		}
		b.ReportMetric(cpu.Seconds(), "cpu-s")
		b.ReportMetric(wall.Seconds(), "wall-s")
		b.ReportMetric(float64(r.Counts.Downloading), "offered")
		b.ReportMetric(float64(r.Eligible), "phase2-devices")
		db.Close()
		b.StartTimer()
	}
}
