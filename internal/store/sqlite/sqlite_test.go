package sqlite

import (
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		db, err := Open(filepath.Join(t.TempDir(), "rampart.db"))
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rampart.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutDocs(t.Context(), store.Doc{Repo: "image", Role: "root", Version: 1, Data: []byte("r")}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if d, err := db.Doc(t.Context(), "image", "root", 0); err != nil || string(d.Data) != "r" {
		t.Fatalf("%+v %v", d, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rampart.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	db.db.Exec(`PRAGMA user_version = 99`)
	db.Close()
	if _, err := Open(p); !errors.Is(err, store.ErrSchemaTooNew) || !strings.Contains(err.Error(), "upgrade rampart-server") {
		t.Fatalf("opened a database with a newer schema: %v", err)
	}
}

// An action and its audit entry commit together or not at all. A trigger
// in the real database file makes one of the two inserts fail; after
// reopening the file, the other is not there either.
func TestActionAndAuditAreOneTransaction(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	p := filepath.Join(t.TempDir(), "rampart.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateDevice(ctx, store.Device{ID: "gw-1", HardwareID: "hw", CertSerial: "01", EnrolledAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AppendAudit(ctx, audit.Entry{Time: now, Actor: "device:gw-1", Action: "enroll", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	entry := func(action string) audit.Entry {
		return audit.Entry{Time: now, Actor: "token:admin", Action: action, Outcome: "ok"}
	}

	// The audit insert fails: none of these actions may be committed.
	exec(t, db, `CREATE TRIGGER audit_fails BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END`)
	actions := map[string]func(tx store.Tx) error{
		"create-token": func(tx store.Tx) error {
			return tx.CreateOperatorToken(ctx, store.OperatorToken{Hash: "h", Name: "ci", Role: "admin", CreatedAt: now})
		},
		"revoke-device": func(tx store.Tx) error { return tx.RevokeDevice(ctx, "gw-1", now) },
		"deploy": func(tx store.Tx) error {
			_, err := tx.Assign(ctx, "acme-gw/1.0.0/fw.img", []string{"gw-1"}, now)
			return err
		},
		"push": func(tx store.Tx) error {
			return tx.PutDocs(ctx, store.Doc{Repo: "image", Role: "root", Version: 1, Data: []byte("r")})
		},
	}
	for name, act := range actions {
		err := db.Atomic(ctx, func(tx store.Tx) error {
			if err := act(tx); err != nil {
				return err
			}
			_, err := tx.AppendAudit(ctx, entry(name))
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "injected audit failure") {
			t.Fatalf("%s: %v, want the injected audit failure", name, err)
		}
	}
	exec(t, db, `DROP TRIGGER audit_fails`)

	// The action fails after its audit entry was appended: the entry must
	// not be committed.
	exec(t, db, `CREATE TRIGGER enroll_fails BEFORE INSERT ON devices BEGIN SELECT RAISE(ABORT, 'injected device failure'); END`)
	err = db.Atomic(ctx, func(tx store.Tx) error {
		if _, err := tx.AppendAudit(ctx, audit.Entry{Time: now, Actor: "device:gw-2", Action: "enroll", Outcome: "ok"}); err != nil {
			return err
		}
		return tx.CreateDevice(ctx, store.Device{ID: "gw-2", HardwareID: "hw", CertSerial: "02", EnrolledAt: now})
	})
	if err == nil || !strings.Contains(err.Error(), "injected device failure") {
		t.Fatalf("enroll: %v, want the injected device failure", err)
	}
	exec(t, db, `DROP TRIGGER enroll_fails`)
	db.Close()

	db, err = Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.OperatorToken(ctx, "h"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("token created without its audit entry: %v", err)
	}
	if d, err := db.Device(ctx, "gw-1"); err != nil || !d.RevokedAt.IsZero() {
		t.Errorf("device revoked without its audit entry: %+v %v", d, err)
	}
	if a, err := db.Assignment(ctx, "gw-1"); err != nil || a.Target != "" {
		t.Errorf("deployment without its audit entry: %+v %v", a, err)
	}
	if _, err := db.Doc(ctx, "image", "root", 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("push without its audit entry: %v", err)
	}
	if _, err := db.Device(ctx, "gw-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("enrollment stored: %v", err)
	}
	es, err := db.AuditEntries(ctx, 0, 100)
	if err != nil || len(es) != 1 || es[0].Action != "enroll" || es[0].Actor != "device:gw-1" {
		t.Fatalf("audit entries of uncommitted actions are stored: %+v %v", es, err)
	}
	// With the faults gone, the same action commits with its entry.
	err = db.Atomic(ctx, func(tx store.Tx) error {
		if err := tx.RevokeDevice(ctx, "gw-1", now); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, entry("revoke-device"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	es, _ = db.AuditEntries(ctx, 0, 100)
	if d, _ := db.Device(ctx, "gw-1"); d.RevokedAt.IsZero() || len(es) != 2 || audit.Verify(nil, es) != nil {
		t.Fatalf("%+v %+v", d, es)
	}
}

func exec(t *testing.T, db *DB, q string) {
	t.Helper()
	if _, err := db.db.Exec(q); err != nil {
		t.Fatal(err)
	}
}

// The retention migration dates entries written before it from their
// JSON, nanoseconds and all, and an undatable one as now (never pruned
// early).
func TestAuditTimeBackfill(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "rampart.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got, bad int64
	err = db.db.QueryRow(`SELECT COALESCE(CAST(unixepoch(json_extract('{"time":"2026-11-25T12:00:00.123456789Z"}', '$.time')) AS INTEGER), 0),
		COALESCE(CAST(unixepoch(json_extract('{"time":"garbage"}', '$.time')) AS INTEGER), CAST(unixepoch() AS INTEGER))`).Scan(&got, &bad)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).Unix(); got != want {
		t.Fatalf("dated %d, want %d", got, want)
	}
	if d := time.Since(time.Unix(bad, 0)); d < 0 || d > time.Minute {
		t.Fatalf("an undatable entry got %s", time.Unix(bad, 0))
	}
}

// A data directory written by the first release (schema version 1) opens
// with this one: every later migration runs, and its data stays readable.
func TestUpgradeFromVersion1(t *testing.T) {
	ctx := t.Context()
	p := filepath.Join(t.TempDir(), "rampart.db")
	raw, err := sql.Open("sqlite", "file:"+p)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{migrations[0], `PRAGMA user_version = 1`,
		`INSERT INTO devices (id, hardware_id, cert_serial, enrolled_at, report_counter) VALUES ('gw-1', 'hw', '01', 1764072000000000000, 7)`,
		`INSERT INTO operator_tokens (hash, name, role, created_at) VALUES ('h', 'admin', 'admin', 1764072000000000000)`,
		`INSERT INTO metadata (repo, role, version, data) VALUES ('image', 'root', 1, x'72')`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	e, err := audit.Append(nil, audit.Entry{Time: time.Date(2025, 11, 25, 12, 0, 0, 0, time.UTC), Actor: "token:admin", Action: "init", Outcome: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(e)
	if _, err := raw.Exec(`INSERT INTO audit (seq, hash, entry) VALUES (?, ?, ?)`, e.Seq, e.Hash, string(b)); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	db.db.QueryRow(`PRAGMA user_version`).Scan(&v)
	if v != len(migrations) {
		t.Fatalf("schema version %d, want %d", v, len(migrations))
	}
	if d, err := db.Device(ctx, "gw-1"); err != nil || d.ReportCounter != 7 || d.Tags != nil {
		t.Fatalf("%+v %v", d, err)
	}
	if tok, err := db.OperatorToken(ctx, "h"); err != nil || tok.Name != "admin" {
		t.Fatalf("%+v %v", tok, err)
	}
	if d, err := db.Doc(ctx, "image", "root", 0); err != nil || string(d.Data) != "r" {
		t.Fatalf("%+v %v", d, err)
	}
	// The entry was dated by the retention migration and the chain goes on.
	if n, _, err := db.PruneAudit(ctx, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), 10); err != nil || n != 0 {
		t.Fatalf("pruned %d: %v", n, err)
	}
	if _, err := db.AppendAudit(ctx, audit.Entry{Time: time.Now(), Actor: "token:admin", Action: "push", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	es, err := db.AuditEntries(ctx, 0, 10)
	if err != nil || len(es) != 2 || audit.Verify(nil, es) != nil {
		t.Fatalf("%+v %v", es, err)
	}
	if _, err := db.RolloutsInState(ctx, "running"); err != nil {
		t.Fatal(err)
	}
}
