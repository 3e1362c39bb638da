package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// replicas opens two stores over one fresh database, as two server
// replicas would; they migrate it concurrently.
func replicas(t *testing.T) [2]*DB {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	var rs [2]*DB
	var errs [2]error
	var wg sync.WaitGroup
	for i := range rs {
		wg.Go(func() { rs[i], errs[i] = Open(t.Context(), dsn) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(func() { rs[i].Close() })
	}
	return rs
}

// An enrollment token is spent by exactly one caller across replicas,
// whether alone or inside Atomic with the device and its audit entry.
func TestReplicasSpendTokenOnce(t *testing.T) {
	ctx := context.Background()
	rs := replicas(t)
	for round, inAtomic := range []bool{false, true} {
		hash := fmt.Sprint("tok-", round)
		if err := rs[0].CreateEnrollToken(ctx, store.EnrollToken{Hash: hash, HardwareID: "hw", Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var ok, used atomic.Int32
		var wg sync.WaitGroup
		for i := range 24 {
			wg.Go(func() {
				s := rs[i%2]
				id := fmt.Sprintf("dev-%d-%d", round, i)
				var err error
				if inAtomic {
					err = s.Atomic(ctx, func(tx store.Tx) error {
						tok, err := tx.ConsumeEnrollToken(ctx, hash, id, now)
						if err != nil {
							return err
						}
						if err := tx.CreateDevice(ctx, store.Device{ID: id, HardwareID: tok.HardwareID, CertSerial: id, EnrolledAt: now}); err != nil {
							return err
						}
						_, err = tx.AppendAudit(ctx, audit.Entry{Time: now, Actor: "device:" + id, Action: "enroll", Outcome: "ok"})
						return err
					})
				} else {
					_, err = s.ConsumeEnrollToken(ctx, hash, id, now)
				}
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, store.ErrUsed):
					used.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || used.Load() != 23 {
			t.Fatalf("atomic=%v: %d spent it, %d were refused", inAtomic, ok.Load(), used.Load())
		}
	}
	if n, _ := rs[1].CountDevices(ctx); n != 1 {
		t.Fatalf("%d devices enrolled with one token", n)
	}
	es, _ := rs[0].AuditEntries(ctx, 0, 100)
	if len(es) != 1 || audit.Verify(nil, es) != nil {
		t.Fatalf("%+v", es)
	}
}

// Every counter is sent to both replicas at once, in shuffled order: each
// is accepted at most once, the stored counter only grows, and it ends at
// the highest.
func TestReplicasReportCountersOnlyMoveForward(t *testing.T) {
	ctx := context.Background()
	rs := replicas(t)
	rs[0].CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now})
	const n = 60
	var accepted [n + 1]atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var backwards atomic.Bool
	// A watcher: the counter it reads never decreases.
	wg.Go(func() {
		var last uint64
		for {
			select {
			case <-stop:
				return
			default:
			}
			d, err := rs[1].Device(ctx, "d")
			if err != nil {
				t.Error(err)
				return
			}
			if d.ReportCounter < last {
				backwards.Store(true)
			}
			last = d.ReportCounter
		}
	})
	var senders sync.WaitGroup
	for w := range 8 {
		senders.Go(func() {
			for i := 0; i < n; i++ {
				c := uint64((i*7+w*13)%n + 1)
				err := rs[w%2].RecordReport(ctx, "d", store.Report{Counter: c, Status: "downloading", At: now})
				switch {
				case err == nil:
					accepted[c].Add(1)
				case !errors.Is(err, store.ErrReplay):
					t.Error(err)
				}
			}
		})
	}
	senders.Wait()
	close(stop)
	wg.Wait()
	total := 0
	for c := range accepted {
		if k := accepted[c].Load(); k > 1 {
			t.Errorf("counter %d accepted %d times", c, k)
		} else {
			total += int(k)
		}
	}
	if backwards.Load() {
		t.Error("the stored counter went backwards")
	}
	d, _ := rs[0].Device(ctx, "d")
	_, counts, err := rs[1].Reports(ctx, "d")
	if err != nil || d.ReportCounter != n || counts["downloading"] != uint64(total) {
		t.Fatalf("counter %d, counts %v (accepted %d): %v", d.ReportCounter, counts, total, err)
	}
}

// Actions and their audit entries commit together across replicas, some
// of the transactions failing after both, with plain appends in between:
// the log holds exactly the committed actions' entries, in one chain.
func TestReplicasActionAndAuditAtomic(t *testing.T) {
	ctx := context.Background()
	rs := replicas(t)
	for i := range 10 {
		rs[i%2].CreateDevice(ctx, store.Device{ID: fmt.Sprint("d", i), HardwareID: "hw", CertSerial: fmt.Sprint(i), EnrolledAt: now})
	}
	boom := errors.New("boom")
	var committed, plain atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			s := rs[i%2]
			dev := fmt.Sprint("d", i%10)
			target := fmt.Sprintf("fw/%d", i)
			err := s.Atomic(ctx, func(tx store.Tx) error {
				if _, err := tx.Assign(ctx, target, []string{dev}, now); err != nil {
					return err
				}
				if _, err := tx.AppendAudit(ctx, audit.Entry{Time: now, Actor: "token:admin", Action: "deploy", Subject: target, Outcome: "ok"}); err != nil {
					return err
				}
				if i%3 == 0 {
					return boom
				}
				return nil
			})
			switch {
			case err == nil:
				committed.Add(1)
			case !errors.Is(err, boom):
				t.Error(err)
			}
			if _, err := s.AppendAudit(ctx, audit.Entry{Time: now, Actor: "device:" + dev, Action: "report", Outcome: "ok"}); err != nil {
				t.Error(err)
			} else {
				plain.Add(1)
			}
		})
	}
	wg.Wait()
	es, err := rs[0].AuditEntries(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Verify(nil, es); err != nil {
		t.Fatal(err)
	}
	deploys := map[string]bool{}
	for _, e := range es {
		if e.Action == "deploy" {
			deploys[e.Subject] = true
		}
	}
	if len(deploys) != int(committed.Load()) || len(es) != int(committed.Load()+plain.Load()) {
		t.Fatalf("%d deploy entries for %d committed deployments; %d entries", len(deploys), committed.Load(), len(es))
	}
	// Each device's assignment is one whose deployment was committed.
	for i := range 10 {
		a, err := rs[1].Assignment(ctx, fmt.Sprint("d", i))
		if err != nil {
			t.Fatal(err)
		}
		if a.Target != "" && !deploys[a.Target] {
			t.Fatalf("device d%d is assigned %s, whose deployment was rolled back", i, a.Target)
		}
	}
}

// Atomic callbacks on different replicas are serialised: a read-modify-
// write of a device's tag inside one never loses another's update.
func TestReplicasAtomicIsSerialised(t *testing.T) {
	ctx := context.Background()
	rs := replicas(t)
	rs[0].CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			for range 5 {
				err := rs[i%2].Atomic(ctx, func(tx store.Tx) error {
					d, err := tx.Device(ctx, "d")
					if err != nil {
						return err
					}
					n, _ := strconv.Atoi(d.Tags["n"])
					_, err = tx.SetDeviceTags(ctx, "d", map[string]string{"n": strconv.Itoa(n + 1)}, nil)
					return err
				})
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if d, _ := rs[1].Device(ctx, "d"); d.Tags["n"] != "50" {
		t.Fatalf("n = %s after 50 increments", d.Tags["n"])
	}
}

// A callback of Atomic that writes through the Store, not its Tx, waits
// on its own transaction: it fails after the lock timeout (here set by
// the DSN) instead of hanging, and the transaction rolls back.
func TestAtomicSelfDeadlockTimesOut(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t) + "&lock_timeout=300"
	s := open(t, dsn)
	defer s.Close()
	start := time.Now()
	err := s.Atomic(ctx, func(tx store.Tx) error {
		if err := tx.CreateDevice(ctx, store.Device{ID: "a", HardwareID: "hw", CertSerial: "1", EnrolledAt: now}); err != nil {
			return err
		}
		return s.CreateDevice(ctx, store.Device{ID: "b", HardwareID: "hw", CertSerial: "2", EnrolledAt: now})
	})
	if err == nil || sqlState(err) != "55P03" || time.Since(start) > 10*time.Second {
		t.Fatalf("%v after %s", err, time.Since(start))
	}
	if n, _ := s.CountDevices(ctx); n != 0 {
		t.Fatalf("%d devices stored", n)
	}
}
