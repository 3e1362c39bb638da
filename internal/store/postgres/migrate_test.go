package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
)

func pool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func schemaVersion(t *testing.T, p *pgxpool.Pool) int {
	t.Helper()
	var v int
	if err := p.QueryRow(context.Background(), `SELECT version FROM schema_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// A database at schema version 1 is migrated forward with its data, and
// one migrated by a newer program is refused with a clear error.
func TestUpgradeFromVersion1(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	p := pool(t, dsn)
	if err := migrate(ctx, p, migrations[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Exec(ctx, `INSERT INTO devices (id, hardware_id, cert_serial, enrolled_at) VALUES ('gw-1', 'hw', '01', 1)`); err != nil {
		t.Fatal(err)
	}
	// Opening with this program's migrations keeps the data.
	db := open(t, dsn)
	if d, err := db.Device(ctx, "gw-1"); err != nil || d.CertSerial != "01" {
		t.Fatalf("%+v %v", d, err)
	}
	db.Close()
	if v := schemaVersion(t, p); v != SchemaVersion {
		t.Fatalf("schema version %d, want %d", v, SchemaVersion)
	}
	// A later program adds a migration: it runs once, on the data.
	next := append(append([]migration{}, migrations...), migration{version: SchemaVersion + 1, name: "test_note.sql",
		sql: `ALTER TABLE devices ADD COLUMN note TEXT NOT NULL DEFAULT 'migrated'`})
	for range 2 {
		if err := migrate(ctx, p, next); err != nil {
			t.Fatal(err)
		}
	}
	var note string
	if err := p.QueryRow(ctx, `SELECT note FROM devices WHERE id = 'gw-1'`).Scan(&note); err != nil || note != "migrated" {
		t.Fatalf("%q %v", note, err)
	}
	if v := schemaVersion(t, p); v != SchemaVersion+1 {
		t.Fatalf("schema version %d", v)
	}
	// This program refuses the newer schema, and changes nothing.
	_, err := Open(ctx, dsn)
	if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "upgrade rampart-server") {
		t.Fatalf("opened a newer schema: %v", err)
	}
	if v := schemaVersion(t, p); v != SchemaVersion+1 {
		t.Fatalf("schema version %d after a refused open", v)
	}
}

// A failing migration leaves the schema as it was.
func TestFailedMigrationChangesNothing(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	p := pool(t, dsn)
	bad := append(append([]migration{}, migrations...), migration{version: SchemaVersion + 1, name: "bad.sql", sql: `CREATE TABLE x (a INT); SELECT nonsense`})
	if err := migrate(ctx, p, bad); err == nil {
		t.Fatal("a failing migration succeeded")
	}
	var n int
	p.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name IN ('devices', 'x', 'schema_version')`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d tables left by a failed migration", n)
	}
	open(t, dsn).Close()
}

func TestOpenErrorsHidePassword(t *testing.T) {
	ctx := context.Background()
	const pw = "s3cr3t-pw"
	for _, c := range []struct {
		dsn  string
		want error
	}{
		{"postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", ErrUnreachable},
		{"postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=bogus", ErrDSN},
		{"postgres://u@127.0.0.1:1/db?password=" + pw + "&sslmode=disable&connect_timeout=2", ErrUnreachable},
		{"mysql://u:" + pw + "@host/db", ErrDSN},
	} {
		_, err := Open(ctx, c.dsn)
		if !errors.Is(err, c.want) || strings.Contains(err.Error(), pw) {
			t.Errorf("%s: %v, want %v without the password", Redact(c.dsn), err, c.want)
		}
	}
	if r := Redact("postgres://u:" + pw + "@h/db?password=" + pw); strings.Contains(r, pw) {
		t.Fatal(r)
	}
	// A wrong database name is an error naming it.
	dsn := strings.Replace(pgtest.AdminDSN(t), "/postgres?", "/no_such_db?", 1)
	if _, err := Open(ctx, dsn); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "no_such_db") {
		t.Fatalf("%v", err)
	}
	var _ store.Store = (*DB)(nil)
}
