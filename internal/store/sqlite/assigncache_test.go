package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/store"
)

// A check-in's read of its assignment is served from memory: a change
// made behind the store's back (no write of this process) is not seen
// until one is. The conformance suite (storetest) checks that every
// write through the store is.
func TestAssignmentReadsFromMemory(t *testing.T) {
	ctx := context.Background()
	db := tempDB(t)
	if err := db.CreateDevice(ctx, store.Device{ID: "gw-1", HardwareID: "hw", CertSerial: "01", EnrolledAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Assign(ctx, "p/1.0.0/fw.img", []string{"gw-1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if a, err := db.Assignment(ctx, "gw-1"); err != nil || a.Target != "p/1.0.0/fw.img" {
		t.Fatalf("%+v %v", a, err)
	}
	if _, err := db.db.ExecContext(ctx, `UPDATE assignments SET target = 'p/6.6.6/fw.img'`); err != nil {
		t.Fatal(err)
	}
	if a, _ := db.Assignment(ctx, "gw-1"); a.Target != "p/1.0.0/fw.img" {
		t.Fatalf("read %q: not from memory", a.Target)
	}
	if _, err := db.Assign(ctx, "p/1.1.0/fw.img", []string{"gw-1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if a, _ := db.Assignment(ctx, "gw-1"); a.Target != "p/1.1.0/fw.img" {
		t.Fatalf("read %q after an assignment", a.Target)
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
