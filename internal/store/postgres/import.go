package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ImportTables are the tables Import copies, parents before the tables
// that reference them. Leases are not copied (they are a live server's),
// nor the schema version (each store has its own migrations).
// TestImportCoversEveryTable fails when a migration adds a table that is
// missing here.
var ImportTables = []string{
	"metadata", "devices", "enroll_tokens", "operator_tokens", "audit", "audit_anchor",
	"log_entries", "assignments", "counters", "chunks", "revoked_certs", "pending_push",
	"reports", "report_counts", "rollouts", "rollout_devices", "revoked_keys",
	"refusal_counts", "recoveries",
}

// ErrImportNotEmpty means Import was given a database that holds data.
var ErrImportNotEmpty = errors.New("the PostgreSQL store is not empty")

// Source is where Import reads rows: a *sql.DB, or a *sql.Tx for one
// consistent snapshot of the whole store.
type Source interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Import copies every row of src, a store with the same tables and
// columns (a SQLite store at its newest schema, read with database/sql),
// into db, which must be empty: one transaction, so the
// copy is whole or absent. It returns the rows copied per table, counted
// again in db before the commit.
//
// Values keep their meaning across the two engines: both stores keep
// times as nanoseconds in integers, and a value SQLite holds as text in a
// column PostgreSQL keeps as bytes (or the other way round) is converted.
func (db *DB) Import(ctx context.Context, src Source) (map[string]int64, error) {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it does nothing
	// One importer at a time, and no server writing meanwhile.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writerLock); err != nil {
		return nil, err
	}
	copied := map[string]int64{}
	for _, table := range ImportTables {
		cols, types, err := columns(ctx, tx, table)
		if err != nil {
			return nil, err
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, fmt.Errorf("%w: table %s has %d rows; copy into a new, empty database", ErrImportNotEmpty, table, n)
		}
		rows, err := src.QueryContext(ctx, `SELECT "`+strings.Join(cols, `", "`)+`" FROM "`+table+`"`)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", table, err)
		}
		it := &rowIter{rows: rows, types: types, vals: make([]any, len(cols))}
		n, err = tx.CopyFrom(ctx, pgx.Identifier{table}, cols, it)
		rows.Close()
		if err == nil {
			err = it.err
		}
		if err != nil {
			return nil, fmt.Errorf("copying %s: %w", table, err)
		}
		var got, want int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&got); err != nil {
			return nil, err
		}
		if err := src.QueryRowContext(ctx, `SELECT count(*) FROM "`+table+`"`).Scan(&want); err != nil {
			return nil, err
		}
		if got != want || n != want {
			return nil, fmt.Errorf("copying %s: %d rows in the source, %d copied, %d in PostgreSQL", table, want, n, got)
		}
		copied[table] = n
	}
	// Replicas already serving this database (with nothing in it) drop
	// whatever they kept of its assignments.
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, assignChannel); err != nil {
		return nil, err
	}
	err = tx.Commit(ctx)
	db.assign.Changed()
	return copied, err
}

// columns returns table's columns in PostgreSQL and their data types.
func columns(ctx context.Context, tx pgx.Tx, table string) ([]string, []string, error) {
	rows, err := tx.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var cols, types []string
	for rows.Next() {
		var c, t string
		if err := rows.Scan(&c, &t); err != nil {
			return nil, nil, err
		}
		cols, types = append(cols, c), append(types, t)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	if len(cols) == 0 {
		return nil, nil, fmt.Errorf("table %s is not in the PostgreSQL store's schema", table)
	}
	return cols, types, nil
}

// rowIter is pgx.CopyFromSource over database/sql rows.
type rowIter struct {
	rows  *sql.Rows
	types []string
	vals  []any
	err   error
}

func (r *rowIter) Next() bool {
	if !r.rows.Next() {
		r.err = r.rows.Err()
		return false
	}
	ptrs := make([]any, len(r.vals))
	for i := range r.vals {
		ptrs[i] = &r.vals[i]
	}
	if err := r.rows.Scan(ptrs...); err != nil {
		r.err = err
		return false
	}
	for i, v := range r.vals {
		switch x := v.(type) {
		case string:
			if r.types[i] == "bytea" {
				r.vals[i] = []byte(x)
			}
		case []byte:
			if r.types[i] == "text" {
				r.vals[i] = string(x)
			} else {
				r.vals[i] = append([]byte(nil), x...) // Scan's bytes are reused
			}
		}
	}
	return true
}

func (r *rowIter) Values() ([]any, error) { return r.vals, r.err }
func (r *rowIter) Err() error             { return r.err }
