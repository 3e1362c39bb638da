package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
)

// The database going away mid-operation gives errors, commits nothing
// half-way, and the same Store works again once it is back, without
// being reopened.
func TestDatabaseOutageAndRecovery(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	p := pgtest.NewCutProxy(t)
	dsn = p.Through(dsn) + "&connect_timeout=2"
	s := open(t, dsn)
	defer s.Close()
	if err := s.CreateDevice(ctx, store.Device{ID: "d", HardwareID: "hw", CertSerial: "1", EnrolledAt: now}); err != nil {
		t.Fatal(err)
	}
	// Cut while an Atomic transaction has written but not committed.
	err := s.Atomic(ctx, func(tx store.Tx) error {
		if err := tx.CreateDevice(ctx, store.Device{ID: "half", HardwareID: "hw", CertSerial: "2", EnrolledAt: now}); err != nil {
			return err
		}
		p.Cut()
		return tx.CreateEnrollToken(ctx, store.EnrollToken{Hash: "h", HardwareID: "hw", Expires: now.Add(time.Hour)})
	})
	if err == nil {
		t.Fatal("a transaction committed through a cut connection")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a transaction cut mid-way: %v, want store.ErrUnavailable", err)
	}
	if _, err := s.Device(ctx, "d"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("read through a cut database: %v, want store.ErrUnavailable", err)
	}
	if err := s.CreateDevice(ctx, store.Device{ID: "x", HardwareID: "hw", CertSerial: "9", EnrolledAt: now}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("write through a cut database: %v, want store.ErrUnavailable", err)
	}
	if _, err := s.Lease(ctx, "work", "a", time.Second); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("lease through a cut database: %v, want store.ErrUnavailable", err)
	}
	p.Restore()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Device(ctx, "d")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not recover: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, _ := s.CountDevices(ctx); n != 1 {
		t.Fatalf("%d devices: the cut transaction was half committed", n)
	}
	if err := s.CreateDevice(ctx, store.Device{ID: "after", HardwareID: "hw", CertSerial: "3", EnrolledAt: now}); err != nil {
		t.Fatal(err)
	}
}
