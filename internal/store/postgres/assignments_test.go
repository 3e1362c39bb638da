package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
)

// notifyBound is what the tests allow for another replica's assignment
// to reach a replica's cache: a notification on loopback takes well
// under a millisecond; the rest is slack for a loaded machine.
const notifyBound = 2 * time.Second

// listening waits until db's listener listens and returns its server
// process.
func listening(t *testing.T, db *DB) uint32 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pid := db.listen.pid.Load(); pid != 0 {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatal("the assignment listener does not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventually waits until db serves target for id, within notifyBound.
func eventually(t *testing.T, db *DB, id, target string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		a, err := db.Assignment(context.Background(), id)
		if err == nil && a.Target == target {
			return time.Since(start)
		}
		if time.Since(start) > notifyBound {
			t.Fatalf("%s: served %q (%v) %v after %q was committed on another replica", id, a.Target, err, notifyBound, target)
		}
		time.Sleep(time.Millisecond)
	}
}

func enroll(t *testing.T, db *DB, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := db.CreateDevice(context.Background(), store.Device{ID: id, HardwareID: "hw", CertSerial: id, EnrolledAt: now}); err != nil {
			t.Fatal(err)
		}
	}
}

// A replica serves its devices' assignments from memory, and an
// assignment or a removal committed on another replica, alone or in
// Atomic, reaches it within the notification's time.
func TestReplicaCacheFollowsOtherReplicas(t *testing.T) {
	ctx := context.Background()
	rs := replicas(t)
	listening(t, rs[0])
	listening(t, rs[1])
	enroll(t, rs[0], "d1", "d2")
	if a, err := rs[1].Assignment(ctx, "d1"); err != nil || a.Target != "" {
		t.Fatalf("%+v %v", a, err)
	}
	// From memory: a change behind every replica's back (no
	// notification) is not seen.
	if _, err := rs[0].pool.Exec(ctx, `INSERT INTO assignments (device_id, target, assigned_at, seq) VALUES ('d1', 'p/6.6.6/fw.img', 1, 1)`); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if a, _ := rs[1].Assignment(ctx, "d1"); a.Target != "" {
			t.Fatalf("read %q: not from memory", a.Target)
		}
	}
	var worst time.Duration
	for i := range 20 {
		target := fmt.Sprintf("p/1.%d.0/fw.img", i)
		var err error
		if i%2 == 0 {
			_, err = rs[0].Assign(ctx, target, []string{"d1", "d2"}, now)
		} else {
			err = rs[0].Atomic(ctx, func(tx store.Tx) error {
				_, err := tx.Assign(ctx, target, []string{"d1", "d2"}, now)
				return err
			})
		}
		if err != nil {
			t.Fatal(err)
		}
		worst = max(worst, eventually(t, rs[1], "d1", target))
		eventually(t, rs[1], "d2", target)
	}
	t.Logf("slowest assignment to reach the other replica: %v", worst)

	// Removed on one replica: refused on the other.
	if _, err := rs[0].RemoveDevice(ctx, "d2", now); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		_, err := rs[1].Assignment(ctx, "d2")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Since(start) > notifyBound {
			t.Fatalf("a device removed on another replica is still served: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	// A transaction that assigned and rolled back notifies nothing
	// that matters: the old target is still served, read again.
	boom := errors.New("boom")
	err := rs[0].Atomic(ctx, func(tx store.Tx) error {
		if _, err := tx.Assign(ctx, "p/9.9.9/fw.img", []string{"d1"}, now); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if a, _ := rs[1].Assignment(ctx, "d1"); a.Target != "p/1.19.0/fw.img" {
		t.Fatalf("after a rolled-back assignment: %q", a.Target)
	}
}

// While a replica's listening connection is down it serves no
// assignment from memory (it cannot know of other replicas' changes):
// through a cut database a check-in's read fails as unavailable, never
// with a target that another replica has replaced. Once the database is
// back the listener listens again and the new target is served.
func TestReplicaCacheSuspendedWithoutListener(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	p := pgtest.NewCutProxy(t)
	direct := open(t, dsn)
	t.Cleanup(func() { direct.Close() })
	cut := open(t, p.Through(dsn)+"&connect_timeout=2")
	t.Cleanup(func() { cut.Close() })
	listening(t, direct)
	listening(t, cut)
	enroll(t, direct, "d1")
	if _, err := direct.Assign(ctx, "p/1.0.0/fw.img", []string{"d1"}, now); err != nil {
		t.Fatal(err)
	}
	eventually(t, cut, "d1", "p/1.0.0/fw.img")
	// Kept in memory: read until no notification moved the cache on
	// since the read that kept it.
	for {
		g := cut.assign.Generation()
		if a, err := cut.Assignment(ctx, "d1"); err != nil || a.Target != "p/1.0.0/fw.img" {
			t.Fatalf("%+v %v", a, err)
		}
		time.Sleep(20 * time.Millisecond)
		if cut.assign.Generation() == g {
			break
		}
	}

	p.Cut()
	deadline := time.Now().Add(10 * time.Second)
	for cut.listen.pid.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the listener did not notice its connection was cut")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := direct.Assign(ctx, "p/2.0.0/fw.img", []string{"d1"}, now); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		a, err := cut.Assignment(ctx, "d1")
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("through a cut database, without a listener: %q %v, want store.ErrUnavailable", a.Target, err)
		}
	}
	p.Restore()
	listening(t, cut)
	eventually(t, cut, "d1", "p/2.0.0/fw.img")
}
