package postgres

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

// benchDevices is how many enrolled, assigned devices the check-in
// benchmark reads from.
const benchDevices = 2000

// BenchmarkCheckinReads compares the reads of a device check-in (its
// record, then its assignment) on SQLite and on PostgreSQL (the pgtest
// server on loopback), one reader at a time and with as many readers as
// GOMAXPROCS × 8 (b.SetParallelism), in one run:
//
//	go test -run '^$' -bench CheckinReads -benchtime 3s ./internal/store/postgres/
func BenchmarkCheckinReads(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) store.Store
	}{
		{"sqlite", func(b *testing.B) store.Store {
			db, err := sqlite.Open(filepath.Join(b.TempDir(), "rampart.db"))
			if err != nil {
				b.Fatal(err)
			}
			return db
		}},
		{"postgres", func(b *testing.B) store.Store { return open(b, pgtest.NewDatabase(b)) }},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			ctx := context.Background()
			s := st.open(b)
			defer s.Close()
			now := time.Now()
			ids := make([]string, benchDevices)
			for i := range ids {
				ids[i] = fmt.Sprintf("gw-%05d", i)
				if err := s.CreateDevice(ctx, store.Device{ID: ids[i], HardwareID: "acme-gw", CertSerial: ids[i], EnrolledAt: now}); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := s.Assign(ctx, "acme-gw/1.0.0/fw.img", ids, now); err != nil {
				b.Fatal(err)
			}
			checkin := func(i int) {
				id := ids[i%len(ids)]
				if _, err := s.Device(ctx, id); err != nil {
					b.Fatal(err)
				}
				if a, err := s.Assignment(ctx, id); err != nil || a.Target == "" {
					b.Fatal(a, err)
				}
			}
			b.Run("serial", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					checkin(i * 7919)
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for i := 0; pb.Next(); i++ {
						checkin(i * 7919)
					}
				})
			})
		})
	}
}
