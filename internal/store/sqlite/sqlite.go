// Package sqlite is the embedded, default implementation of store.Store: one
// SQLite database file (pure Go, modernc.org/sqlite) in WAL mode with full
// synchronous commits, so that anything acknowledged survives kill -9 and
// power loss. The schema is migrated in code at Open.
package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/assigncache"
)

// DB is a SQLite-backed store. It is safe for concurrent use.
type DB struct {
	conn
}

var (
	_ store.Store = (*DB)(nil)
	_ store.Tx    = (*conn)(nil)
)

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// conn implements every store method over either the database or one
// transaction, so the same code serves DB and the Tx of DB.Atomic.
type conn struct {
	q  querier
	db *sql.DB // nil inside a transaction
	// savepoints numbers the savepoints of a transaction.
	savepoints *atomic.Uint64
	// stmts holds the prepared statements of hot reads (shared by the
	// database and its transactions); tx is set inside a transaction.
	stmts *stmtCache
	tx    *sql.Tx
	// gate is the database's writer queue (nil inside a transaction,
	// which has passed it); enterGate checks a fenced write's lease
	// term there.
	gate   writerGate
	leases *leases
	// assign is the database's assignment cache: set on the database,
	// read through only there (a transaction reads its own writes).
	// Inside a transaction, wrote records that the transaction changed
	// assignments, so that the cache moves on once it commits.
	assign *assigncache.Cache
	wrote  *bool
}

// assignmentsChanged marks the transaction c is in as one that wrote
// the assignments table.
func (c *conn) assignmentsChanged() {
	if c.wrote != nil {
		*c.wrote = true
	}
}

// writerGate queues this process's writers in Go, one at a time.
// SQLite itself lets one writer in and makes the others poll (its busy
// handler sleeps up to 100 ms between tries), which is no queue: with 64
// concurrent writers on a loaded machine some waited past the 10 s busy
// timeout while others got in hundreds of times, and 59 of 7,172 writes
// failed with SQLITE_BUSY (an enrollment answered 500 in rampart demo,
// a check-in in bench/checkin). A channel's waiters are served in
// order. busy_timeout still covers other processes (the CLI reading the
// database while the server runs).
type writerGate chan struct{}

// writerWait bounds the wait for the gate like busy_timeout bounds
// SQLite's, so a caller that writes through the database from inside
// Atomic's callback (a bug: it waits on its own transaction) fails
// instead of hanging.
var writerWait = 10 * time.Second

func (g writerGate) enter(ctx context.Context) error {
	t := time.NewTimer(writerWait)
	defer t.Stop()
	select {
	case g <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("database is locked: no write got in for %s (a write held it that long, or one runs inside Atomic without its Tx)", writerWait)
	}
}

func (g writerGate) leave() { <-g }

// enterGate takes the writer gate for a write and checks the lease term
// the write's context carries, if any (leases.fence): a write for an
// ended term fails with store.ErrFenced and leaves the gate at once.
func (c *conn) enterGate(ctx context.Context) error {
	if err := c.gate.enter(ctx); err != nil {
		return err
	}
	if err := c.leases.fence(ctx); err != nil {
		c.gate.leave()
		return err
	}
	return nil
}

// exec runs one writing statement: through the writer gate on the
// database, as is inside a transaction.
func (s *conn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s.db == nil {
		return s.q.ExecContext(ctx, query, args...)
	}
	if err := s.enterGate(ctx); err != nil {
		return nil, err
	}
	defer s.gate.leave()
	return s.q.ExecContext(ctx, query, args...)
}

// stmtCache keeps prepared statements for the life of the database:
// parsing a query's SQL was most of the cost of the reads a check-in
// makes (a device, its assignment).
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func (c *stmtCache) get(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]*sql.Stmt{}
	}
	c.m[query] = st
	return st, nil
}

func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

// stmtRow runs a hot one-row statement through its prepared statement
// (see stmtCache), in the transaction when there is one; unlike queryRow
// it may write, so outside a transaction it must run inside atomic.
func (c *conn) stmtRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return c.q.QueryRowContext(ctx, query, args...)
}

// queryRow runs a hot read through its prepared statement (see
// stmtCache), in the transaction when there is one.
func (c *conn) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if c.stmts == nil {
		return c.q.QueryRowContext(ctx, query, args...)
	}
	st, err := c.stmts.get(ctx, query)
	if err != nil {
		return c.q.QueryRowContext(ctx, query, args...)
	}
	if c.tx != nil {
		return c.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// stmt returns the prepared statement of a hot query (see stmtCache),
// bound to the transaction when there is one; nil when there is none
// (the caller then runs the query as is).
func (c *conn) stmt(ctx context.Context, query string) *sql.Stmt {
	if c.stmts == nil {
		return nil
	}
	st, err := c.stmts.get(ctx, query)
	if err != nil {
		return nil
	}
	if c.tx != nil {
		return c.tx.StmtContext(ctx, st)
	}
	return st
}

// query runs a hot listing through its prepared statement.
func (c *conn) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return c.q.QueryContext(ctx, query, args...)
}

// execHot runs a hot writing statement through its prepared statement
// (and the writer gate, outside a transaction).
func (c *conn) execHot(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if c.db != nil {
		if err := c.enterGate(ctx); err != nil {
			return nil, err
		}
		defer c.gate.leave()
	}
	if st := c.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return c.q.ExecContext(ctx, query, args...)
}

// migrations are applied in order; PRAGMA user_version records how many
// have run. Never edit one that has shipped: append a new one.
var migrations = []string{
	`CREATE TABLE metadata (
		repo TEXT NOT NULL, role TEXT NOT NULL, version INTEGER NOT NULL, data BLOB NOT NULL,
		PRIMARY KEY (repo, role, version)
	);
	CREATE TABLE devices (
		id TEXT PRIMARY KEY, hardware_id TEXT NOT NULL, cert_serial TEXT NOT NULL,
		enrolled_at INTEGER NOT NULL, revoked_at INTEGER NOT NULL DEFAULT 0,
		version TEXT NOT NULL DEFAULT '', security_version INTEGER NOT NULL DEFAULT 0,
		report_counter INTEGER NOT NULL DEFAULT 0, last_status TEXT NOT NULL DEFAULT '',
		last_seen INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX devices_hardware ON devices (hardware_id);
	CREATE TABLE enroll_tokens (
		hash TEXT PRIMARY KEY, hardware_id TEXT NOT NULL, expires INTEGER NOT NULL,
		used_at INTEGER NOT NULL DEFAULT 0, used_by TEXT NOT NULL DEFAULT ''
	);
	CREATE TABLE operator_tokens (
		hash TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
		created_at INTEGER NOT NULL, revoked_at INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE audit (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, entry TEXT NOT NULL);`,
	`CREATE TABLE log_entries (target TEXT PRIMARY KEY, idx INTEGER NOT NULL, leaf BLOB NOT NULL);`,
	`CREATE TABLE assignments (
		device_id TEXT PRIMARY KEY REFERENCES devices (id), target TEXT NOT NULL,
		assigned_at INTEGER NOT NULL, seq INTEGER NOT NULL
	);
	CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);`,
	`CREATE TABLE chunks (
		hash TEXT PRIMARY KEY, blob TEXT NOT NULL, off INTEGER NOT NULL, length INTEGER NOT NULL
	);`,
	`ALTER TABLE devices ADD COLUMN anomalies INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE devices ADD COLUMN last_anomaly TEXT NOT NULL DEFAULT '';
	CREATE TABLE revoked_certs (serial TEXT PRIMARY KEY, device_id TEXT NOT NULL, revoked_at INTEGER NOT NULL);
	CREATE TABLE pending_push (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);`,
	// Retention: the audit log is pruned by age (at, in ns; entries of
	// older versions get the time their JSON records, or now if it does
	// not parse, so nothing is pruned early) from its start, the last
	// pruned entry kept as the anchor; a device's reports are kept as its
	// latest ReportHistory and counts per status.
	`ALTER TABLE audit ADD COLUMN at INTEGER NOT NULL DEFAULT 0;
	UPDATE audit SET at = COALESCE(CAST(unixepoch(json_extract(entry, '$.time')) AS INTEGER), CAST(unixepoch() AS INTEGER)) * 1000000000;
	CREATE TABLE audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL, pruned_at INTEGER NOT NULL);
	CREATE TABLE reports (
		device_id TEXT NOT NULL, counter INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
		version TEXT NOT NULL, security_version INTEGER NOT NULL, at INTEGER NOT NULL,
		PRIMARY KEY (device_id, counter)
	) WITHOUT ROWID;
	CREATE TABLE report_counts (device_id TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (device_id, status)) WITHOUT ROWID;`,
	// Inventory: operator-set tags (a JSON object) and the class of the
	// device's last verification refusal.
	`ALTER TABLE devices ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
	ALTER TABLE devices ADD COLUMN last_refusal TEXT NOT NULL DEFAULT '';`,
	// Rollouts and each device's progress in them; counted by status per
	// rollout (the index), never by walking the fleet.
	`CREATE TABLE rollouts (
		id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, target TEXT NOT NULL, security_version INTEGER NOT NULL,
		selector TEXT NOT NULL, spec BLOB NOT NULL, state TEXT NOT NULL, phase INTEGER NOT NULL, phase_started INTEGER NOT NULL,
		threshold INTEGER NOT NULL, eligible INTEGER NOT NULL, paused_reason TEXT NOT NULL, created_by TEXT NOT NULL, approved_by TEXT NOT NULL,
		created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
	);
	CREATE INDEX rollouts_state ON rollouts (state);
	CREATE TABLE rollout_devices (
		rollout_id TEXT NOT NULL, device_id TEXT NOT NULL, status TEXT NOT NULL, offered_at INTEGER NOT NULL,
		failures INTEGER NOT NULL, cooldown_until INTEGER NOT NULL, reason TEXT NOT NULL, updated_at INTEGER NOT NULL,
		PRIMARY KEY (rollout_id, device_id)
	) WITHOUT ROWID;
	CREATE INDEX rollout_devices_status ON rollout_devices (rollout_id, status);
	CREATE INDEX rollout_devices_device ON rollout_devices (device_id);`,
	// Incident response and fleet statistics: revoked keys, devices
	// by assignment and by what they run, verification refusals by
	// class, recoveries from failed deployments.
	`CREATE TABLE revoked_keys (
		key_id TEXT PRIMARY KEY, kind TEXT NOT NULL, reason TEXT NOT NULL, revoked_by TEXT NOT NULL, revoked_at INTEGER NOT NULL
	);
	CREATE INDEX assignments_target ON assignments (target, device_id);
	CREATE INDEX devices_version ON devices (revoked_at, version, security_version);
	CREATE INDEX rollout_devices_installed ON rollout_devices (status, updated_at);
	CREATE TABLE refusal_counts (class TEXT PRIMARY KEY, n INTEGER NOT NULL);
	CREATE TABLE recoveries (
		device_id TEXT NOT NULL, rollout_id TEXT NOT NULL, opened_at INTEGER NOT NULL, closed_at INTEGER NOT NULL DEFAULT 0
	);
	CREATE UNIQUE INDEX recoveries_open ON recoveries (device_id) WHERE closed_at = 0;
	CREATE INDEX recoveries_rollout ON recoveries (rollout_id, closed_at);`,
}

// maxIdleConns is how many connections stay open between bursts of
// requests; SQLite connections cost little memory (about its page cache).
const maxIdleConns = 64

// Open opens (creating if needed) the database at path and migrates it.
func Open(path string) (*DB, error) {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	// Writers take the lock when their transaction begins, so
	// read-then-write transactions cannot deadlock on upgrade.
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	// Keep connections open once made: database/sql keeps only 2 idle by
	// default, so under concurrent requests it would open and close
	// connections all the time, and each new one re-runs the pragmas and
	// re-reads the schema (a third of a check-in's cost when measured).
	// The number open stays unlimited, so nothing can wait on the pool.
	db.SetMaxIdleConns(maxIdleConns)
	s := &DB{conn: conn{q: db, db: db, stmts: &stmtCache{db: db}, gate: make(writerGate, 1), leases: &leases{}, assign: &assigncache.Cache{}}}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func (s *DB) migrate() error {
	var v int
	if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("%w: version %d, this program knows up to %d; upgrade rampart-server", store.ErrSchemaTooNew, v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		tx, err := s.db.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the database.
func (s *DB) Close() error {
	s.stmts.close()
	return s.db.Close()
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func tm(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Atomic implements store.Store. The transaction begins IMMEDIATE (see
// Open), so it holds the write lock from its start.
func (s *DB) Atomic(ctx context.Context, f func(tx store.Tx) error) error {
	if err := s.enterGate(ctx); err != nil {
		return err
	}
	defer s.gate.leave()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	c := &conn{q: tx, savepoints: new(atomic.Uint64), stmts: s.stmts, tx: tx, wrote: new(bool)}
	defer s.assign.After(c.wrote)
	if err := f(c); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// atomic runs f so that its writes apply all or none: in a transaction of
// its own, or, inside Atomic's transaction, under a savepoint that is
// rolled back if f fails, so a failed method leaves the caller's
// transaction as it was.
func (c *conn) atomic(ctx context.Context, f func(c *conn) error) error {
	if c.db != nil {
		if err := c.enterGate(ctx); err != nil {
			return err
		}
		defer c.gate.leave()
		tx, err := c.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		wrote := new(bool)
		defer c.assign.After(wrote)
		if err := f(&conn{q: tx, savepoints: new(atomic.Uint64), stmts: c.stmts, tx: tx, wrote: wrote}); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	}
	sp := fmt.Sprintf("sp%d", c.savepoints.Add(1))
	if _, err := c.q.ExecContext(ctx, `SAVEPOINT `+sp); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	if err := f(c); err != nil {
		if _, rerr := c.q.ExecContext(ctx, `ROLLBACK TO `+sp); rerr != nil {
			return errors.Join(err, fmt.Errorf("rollback to savepoint: %w", rerr))
		}
		c.q.ExecContext(ctx, `RELEASE `+sp)
		return err
	}
	if _, err := c.q.ExecContext(ctx, `RELEASE `+sp); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

// PutDocs implements store.Metadata.
func (s *conn) PutDocs(ctx context.Context, docs ...store.Doc) error {
	return s.atomic(ctx, func(tx *conn) error {
		for _, d := range docs {
			var old []byte
			err := tx.q.QueryRowContext(ctx, `SELECT data FROM metadata WHERE repo = ? AND role = ? AND version = ?`, d.Repo, d.Role, d.Version).Scan(&old)
			switch {
			case err == nil:
				if !bytes.Equal(old, d.Data) {
					return fmt.Errorf("%s %s version %d: %w", d.Repo, d.Role, d.Version, store.ErrConflict)
				}
			case errors.Is(err, sql.ErrNoRows):
				if _, err := tx.q.ExecContext(ctx, `INSERT INTO metadata (repo, role, version, data) VALUES (?, ?, ?, ?)`, d.Repo, d.Role, d.Version, d.Data); err != nil {
					return err
				}
			default:
				return err
			}
		}
		return nil
	})
}

// Doc implements store.Metadata.
func (s *conn) Doc(ctx context.Context, repo, role string, version int64) (store.Doc, error) {
	d := store.Doc{Repo: repo, Role: role}
	var err error
	if version == 0 {
		err = s.q.QueryRowContext(ctx, `SELECT version, data FROM metadata WHERE repo = ? AND role = ? ORDER BY version DESC LIMIT 1`, repo, role).Scan(&d.Version, &d.Data)
	} else {
		d.Version = version
		err = s.q.QueryRowContext(ctx, `SELECT data FROM metadata WHERE repo = ? AND role = ? AND version = ?`, repo, role, version).Scan(&d.Data)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("%s %s version %d: %w", repo, role, version, store.ErrNotFound)
	}
	return d, err
}

// CreateDevice implements store.Devices.
func (s *conn) CreateDevice(ctx context.Context, d store.Device) error {
	_, err := s.exec(ctx, `INSERT INTO devices (id, hardware_id, cert_serial, enrolled_at) VALUES (?, ?, ?, ?)`, d.ID, d.HardwareID, d.CertSerial, ns(d.EnrolledAt))
	if err != nil && isConstraint(err) {
		return fmt.Errorf("device %s: %w", d.ID, store.ErrExists)
	}
	return err
}

const deviceCols = `id, hardware_id, cert_serial, enrolled_at, revoked_at, version, security_version, report_counter, last_status, last_seen, anomalies, last_anomaly, tags, last_refusal`

// all runs a listing query and scans every row with scan: the loop every
// listing shares, closing the rows and reporting the iteration's error.
func all[T any](ctx context.Context, q querier, scan func(interface{ Scan(...any) error }) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func scanDevice(row interface{ Scan(...any) error }) (store.Device, error) {
	var d store.Device
	var enrolled, revoked, seen int64
	var tags string
	err := row.Scan(&d.ID, &d.HardwareID, &d.CertSerial, &enrolled, &revoked, &d.Version, &d.SecurityVersion, &d.ReportCounter, &d.LastStatus, &seen, &d.Anomalies, &d.LastAnomaly, &tags, &d.LastRefusal)
	d.EnrolledAt, d.RevokedAt, d.LastSeen = tm(enrolled), tm(revoked), tm(seen)
	if err == nil {
		err = decodeTags(tags, &d)
	}
	return d, err
}

func decodeTags(raw string, d *store.Device) error {
	if raw == "{}" || raw == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(raw), &d.Tags); err != nil {
		return fmt.Errorf("device %s: stored tags: %w", d.ID, err)
	}
	return nil
}

// ListDevices implements store.Devices.
func (s *conn) ListDevices(ctx context.Context, after string, limit int) ([]store.Device, error) {
	return all(ctx, s.q, scanDevice, `SELECT `+deviceCols+` FROM devices WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
}

// ListDeviceFacts implements store.Devices. (+revoked_at keeps SQLite
// from reading the devices through the version index, which would sort
// the whole fleet for every page.)
func (s *conn) ListDeviceFacts(ctx context.Context, after string, limit int) ([]store.DeviceFacts, error) {
	return s.deviceFacts(ctx, limit, `SELECT id, hardware_id, version, security_version, tags FROM devices
		WHERE id > ? AND +revoked_at = 0 ORDER BY id LIMIT ?`, after, limit)
}

// deviceFacts reads a page of device facts; devices with equal tags
// share one decoded map.
func (s *conn) deviceFacts(ctx context.Context, limit int, query string, args ...any) ([]store.DeviceFacts, error) {
	rows, err := s.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return store.ScanDeviceFacts(rows, limit)
}

// SetDeviceTags implements store.Devices.
func (s *conn) SetDeviceTags(ctx context.Context, id string, set map[string]string, unset []string) (map[string]string, error) {
	var out map[string]string
	err := s.atomic(ctx, func(tx *conn) error {
		d, err := tx.Device(ctx, id)
		if err != nil {
			return err
		}
		out = map[string]string{}
		for k, v := range d.Tags {
			out[k] = v
		}
		for _, k := range unset {
			delete(out, k)
		}
		for k, v := range set {
			out[k] = v
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		_, err = tx.q.ExecContext(ctx, `UPDATE devices SET tags = ? WHERE id = ?`, string(b), id)
		return err
	})
	return out, err
}

// Device implements store.Devices.
func (s *conn) Device(ctx context.Context, id string) (store.Device, error) {
	d, err := scanDevice(s.queryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("device %s: %w", id, store.ErrNotFound)
	}
	return d, err
}

// DevicesByHardware implements store.Devices.
func (s *conn) DevicesByHardware(ctx context.Context, hw string) ([]store.Device, error) {
	return all(ctx, s.q, scanDevice, `SELECT `+deviceCols+` FROM devices WHERE hardware_id = ? ORDER BY id`, hw)
}

// CountDevices implements store.Devices.
func (s *conn) CountDevices(ctx context.Context) (int, error) {
	var n int
	err := s.q.QueryRowContext(ctx, `SELECT count(*) FROM devices`).Scan(&n)
	return n, err
}

// RevokeDevice implements store.Devices.
func (s *conn) RevokeDevice(ctx context.Context, id string, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE devices SET revoked_at = ? WHERE id = ? AND revoked_at = 0`, ns(at), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.Device(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("device %s: %w", id, store.ErrRevoked)
	}
	return nil
}

// RevokedCertificates implements store.Devices.
func (s *conn) RevokedCertificates(ctx context.Context) ([]string, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT cert_serial FROM devices WHERE revoked_at != 0
		UNION SELECT serial FROM revoked_certs ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// RemoveDevice implements store.Devices.
func (s *conn) RemoveDevice(ctx context.Context, id string, at time.Time) (store.Device, error) {
	var d store.Device
	err := s.atomic(ctx, func(tx *conn) error {
		var err error
		if d, err = tx.Device(ctx, id); err != nil {
			return err
		}
		if _, err := tx.q.ExecContext(ctx, `INSERT INTO revoked_certs (serial, device_id, revoked_at) VALUES (?, ?, ?) ON CONFLICT (serial) DO NOTHING`, d.CertSerial, id, ns(at)); err != nil {
			return err
		}
		tx.assignmentsChanged()
		for _, q := range []string{`DELETE FROM assignments WHERE device_id = ?`, `DELETE FROM reports WHERE device_id = ?`, `DELETE FROM report_counts WHERE device_id = ?`} {
			if _, err := tx.q.ExecContext(ctx, q, id); err != nil {
				return err
			}
		}
		_, err = tx.q.ExecContext(ctx, `DELETE FROM devices WHERE id = ?`, id)
		return err
	})
	return d, err
}

// RecordAnomaly implements store.Devices.
func (s *conn) RecordAnomaly(ctx context.Context, id, reason string, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE devices SET anomalies = anomalies + 1, last_anomaly = ?, last_seen = ? WHERE id = ?`, reason, ns(at), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("device %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// RecordReport implements store.Devices. The counter check and the update
// are one statement, so two replicas cannot both accept the same counter;
// the history and the counts change under a savepoint with it.
func (s *conn) RecordReport(ctx context.Context, id string, r store.Report) error {
	return s.atomic(ctx, func(tx *conn) error {
		q := `UPDATE devices SET report_counter = ?, last_status = ?, last_seen = ?`
		args := []any{r.Counter, r.Status, ns(r.At)}
		if r.Installed {
			q += `, version = ?, security_version = ?`
			args = append(args, r.Version, r.SecurityVersion)
		}
		if r.Refusal != "" {
			q += `, last_refusal = ?`
			args = append(args, r.Refusal)
		}
		q += ` WHERE id = ? AND report_counter < ? AND revoked_at = 0`
		args = append(args, id, r.Counter)
		res, err := tx.q.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			d, err := tx.Device(ctx, id)
			if err != nil {
				return err
			}
			if !d.RevokedAt.IsZero() {
				return fmt.Errorf("device %s: %w", id, store.ErrRevoked)
			}
			return fmt.Errorf("device %s: report counter %d is not above %d: %w", id, r.Counter, d.ReportCounter, store.ErrReplay)
		}
		if _, err := tx.q.ExecContext(ctx, `INSERT INTO reports (device_id, counter, status, reason, version, security_version, at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			id, r.Counter, r.Status, r.Reason, r.Version, r.SecurityVersion, ns(r.At)); err != nil {
			return err
		}
		if _, err := tx.q.ExecContext(ctx, `DELETE FROM reports WHERE device_id = ? AND counter <= (
			SELECT counter FROM reports WHERE device_id = ? ORDER BY counter DESC LIMIT 1 OFFSET ?)`, id, id, store.ReportHistory); err != nil {
			return err
		}
		if _, err := tx.q.ExecContext(ctx, `INSERT INTO report_counts (device_id, status, n) VALUES (?, ?, 1)
			ON CONFLICT (device_id, status) DO UPDATE SET n = n + 1`, id, r.Status); err != nil {
			return err
		}
		if r.Refusal == "" {
			return nil
		}
		_, err = tx.q.ExecContext(ctx, `INSERT INTO refusal_counts (class, n) VALUES (?, 1)
			ON CONFLICT (class) DO UPDATE SET n = n + 1`, r.Refusal)
		return err
	})
}

// Reports implements store.Devices.
func (s *conn) Reports(ctx context.Context, id string) ([]store.Report, map[string]uint64, error) {
	if _, err := s.Device(ctx, id); err != nil {
		return nil, nil, err
	}
	rows, err := s.q.QueryContext(ctx, `SELECT counter, status, reason, version, security_version, at FROM reports WHERE device_id = ? ORDER BY counter DESC`, id)
	if err != nil {
		return nil, nil, err
	}
	var out []store.Report
	for rows.Next() {
		var r store.Report
		var at int64
		if err := rows.Scan(&r.Counter, &r.Status, &r.Reason, &r.Version, &r.SecurityVersion, &at); err != nil {
			rows.Close()
			return nil, nil, err
		}
		r.At, r.Installed = tm(at), r.Status == "installed"
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	counts := map[string]uint64{}
	rows, err = s.q.QueryContext(ctx, `SELECT status, n FROM report_counts WHERE device_id = ?`, id)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var st string
		var n uint64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, nil, err
		}
		counts[st] = n
	}
	return out, counts, rows.Err()
}

// CreateEnrollToken implements store.Tokens.
func (s *conn) CreateEnrollToken(ctx context.Context, t store.EnrollToken) error {
	_, err := s.exec(ctx, `INSERT INTO enroll_tokens (hash, hardware_id, expires) VALUES (?, ?, ?)`, t.Hash, t.HardwareID, ns(t.Expires))
	if err != nil && isConstraint(err) {
		return fmt.Errorf("enrollment token: %w", store.ErrExists)
	}
	return err
}

// ConsumeEnrollToken implements store.Tokens: one conditional UPDATE, so
// exactly one concurrent caller wins.
func (s *conn) ConsumeEnrollToken(ctx context.Context, hash, deviceID string, now time.Time) (store.EnrollToken, error) {
	var t store.EnrollToken
	res, err := s.exec(ctx, `UPDATE enroll_tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at = 0 AND expires > ?`, ns(now), deviceID, hash, ns(now))
	if err != nil {
		return t, err
	}
	n, _ := res.RowsAffected()
	var expires, used int64
	err = s.q.QueryRowContext(ctx, `SELECT hash, hardware_id, expires, used_at, used_by FROM enroll_tokens WHERE hash = ?`, hash).Scan(&t.Hash, &t.HardwareID, &expires, &used, &t.UsedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("enrollment token: %w", store.ErrNotFound)
	}
	if err != nil {
		return t, err
	}
	t.Expires, t.UsedAt = tm(expires), tm(used)
	if n == 1 {
		return t, nil
	}
	if used != 0 {
		return t, fmt.Errorf("enrollment token: %w", store.ErrUsed)
	}
	return t, fmt.Errorf("enrollment token expired at %s: %w", t.Expires.Format(time.RFC3339), store.ErrExpired)
}

// EnrollToken implements store.Tokens.
func (s *conn) EnrollToken(ctx context.Context, hash string) (store.EnrollToken, error) {
	var t store.EnrollToken
	var expires, used int64
	err := s.q.QueryRowContext(ctx, `SELECT hash, hardware_id, expires, used_at, used_by FROM enroll_tokens WHERE hash = ?`, hash).Scan(&t.Hash, &t.HardwareID, &expires, &used, &t.UsedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("enrollment token: %w", store.ErrNotFound)
	}
	t.Expires, t.UsedAt = tm(expires), tm(used)
	return t, err
}

// CreateOperatorToken implements store.Tokens.
func (s *conn) CreateOperatorToken(ctx context.Context, t store.OperatorToken) error {
	_, err := s.exec(ctx, `INSERT INTO operator_tokens (hash, name, role, created_at) VALUES (?, ?, ?, ?)`, t.Hash, t.Name, t.Role, ns(t.CreatedAt))
	if err != nil && isConstraint(err) {
		return fmt.Errorf("operator token %s: %w", t.Name, store.ErrExists)
	}
	return err
}

const tokenCols = `hash, name, role, created_at, revoked_at`

func scanToken(row interface{ Scan(...any) error }) (store.OperatorToken, error) {
	var t store.OperatorToken
	var created, revoked int64
	err := row.Scan(&t.Hash, &t.Name, &t.Role, &created, &revoked)
	t.CreatedAt, t.RevokedAt = tm(created), tm(revoked)
	return t, err
}

// OperatorToken implements store.Tokens.
func (s *conn) OperatorToken(ctx context.Context, hash string) (store.OperatorToken, error) {
	t, err := scanToken(s.q.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM operator_tokens WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("operator token: %w", store.ErrNotFound)
	}
	if err != nil {
		return t, err
	}
	if !t.RevokedAt.IsZero() {
		return t, fmt.Errorf("operator token %s: %w", t.Name, store.ErrRevoked)
	}
	return t, nil
}

// OperatorTokens implements store.Tokens.
func (s *conn) OperatorTokens(ctx context.Context) ([]store.OperatorToken, error) {
	return all(ctx, s.q, scanToken, `SELECT `+tokenCols+` FROM operator_tokens ORDER BY name`)
}

// tokenMissOrRevoked explains why an UPDATE of a live token by name
// changed nothing.
func (s *conn) tokenMissOrRevoked(ctx context.Context, name string) error {
	var revoked int64
	err := s.q.QueryRowContext(ctx, `SELECT revoked_at FROM operator_tokens WHERE name = ?`, name).Scan(&revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("operator token %s: %w", name, store.ErrNotFound)
	case err != nil:
		return err
	}
	return fmt.Errorf("operator token %s: %w", name, store.ErrRevoked)
}

// SetOperatorTokenRole implements store.Tokens.
func (s *conn) SetOperatorTokenRole(ctx context.Context, name, role string) error {
	res, err := s.exec(ctx, `UPDATE operator_tokens SET role = ? WHERE name = ? AND revoked_at = 0`, role, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return s.tokenMissOrRevoked(ctx, name)
	}
	return nil
}

// RevokeOperatorToken implements store.Tokens.
func (s *conn) RevokeOperatorToken(ctx context.Context, name string, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE operator_tokens SET revoked_at = ? WHERE name = ? AND revoked_at = 0`, ns(at), name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return s.tokenMissOrRevoked(ctx, name)
	}
	return nil
}

// AppendAudit implements store.Audit. The transaction begins IMMEDIATE, so
// reading the head and inserting the next entry cannot interleave with
// another writer.
func (s *conn) AppendAudit(ctx context.Context, e audit.Entry) (audit.Entry, error) {
	var out audit.Entry
	err := s.atomic(ctx, func(tx *conn) error {
		var prev *audit.Entry
		var raw string
		err := tx.q.QueryRowContext(ctx, `SELECT entry FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&raw)
		switch {
		case err == nil:
			var p audit.Entry
			if err := json.Unmarshal([]byte(raw), &p); err != nil {
				return fmt.Errorf("audit head: %w", err)
			}
			prev = &p
		case !errors.Is(err, sql.ErrNoRows):
			return err
		default:
			// Pruned to nothing is impossible (the head stays), but an
			// anchor without entries would still be where to chain.
			a, err := tx.AuditAnchor(ctx)
			if err != nil {
				return err
			}
			if a.Seq > 0 {
				prev = &audit.Entry{Seq: a.Seq, Hash: a.Hash}
			}
		}
		n, err := audit.Append(prev, e)
		if err != nil {
			return err
		}
		b, err := json.Marshal(n)
		if err != nil {
			return err
		}
		if _, err := tx.q.ExecContext(ctx, `INSERT INTO audit (seq, hash, entry, at) VALUES (?, ?, ?, ?)`, n.Seq, n.Hash, string(b), ns(n.Time)); err != nil {
			return err
		}
		out = n
		return nil
	})
	return out, err
}

// AuditEntries implements store.Audit.
func (s *conn) AuditEntries(ctx context.Context, after uint64, limit int) ([]audit.Entry, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT entry FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		var e audit.Entry
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			return nil, fmt.Errorf("audit entry: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// AuditRaw implements store.Audit.
func (s *conn) AuditRaw(ctx context.Context, after uint64, limit int, maxBytes int64, fn func(seq uint64, raw []byte) error) (int, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT seq, entry FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	var total int64
	for rows.Next() {
		var seq uint64
		var raw sql.RawBytes
		if err := rows.Scan(&seq, &raw); err != nil {
			return n, err
		}
		if n > 0 && total+int64(len(raw)) > maxBytes {
			break
		}
		if err := fn(seq, raw); err != nil {
			return n, err
		}
		n++
		total += int64(len(raw))
	}
	return n, rows.Err()
}

// AuditAnchor implements store.Audit.
func (s *conn) AuditAnchor(ctx context.Context) (store.AuditAnchor, error) {
	a := store.AuditAnchor{Hash: audit.Genesis}
	var at int64
	err := s.q.QueryRowContext(ctx, `SELECT seq, hash, pruned_at FROM audit_anchor WHERE id = 1`).Scan(&a.Seq, &a.Hash, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return a, nil
	}
	a.At = tm(at)
	return a, err
}

// PruneAudit implements store.Audit.
func (s *conn) PruneAudit(ctx context.Context, before time.Time, limit int) (int, store.AuditAnchor, error) {
	var n int
	var a store.AuditAnchor
	err := s.atomic(ctx, func(tx *conn) error {
		// The prefix ends before the first entry that is not old enough,
		// and before the head.
		var head uint64
		if err := tx.q.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit`).Scan(&head); err != nil {
			return err
		}
		rows, err := tx.q.QueryContext(ctx, `SELECT seq, hash, at FROM audit ORDER BY seq LIMIT ?`, limit)
		if err != nil {
			return err
		}
		var last uint64
		var lastHash string
		for rows.Next() {
			var seq uint64
			var hash string
			var at int64
			if err := rows.Scan(&seq, &hash, &at); err != nil {
				rows.Close()
				return err
			}
			if seq >= head || at >= ns(before) {
				break
			}
			last, lastHash = seq, hash
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if n == 0 {
			a, err = tx.AuditAnchor(ctx)
			return err
		}
		if _, err := tx.q.ExecContext(ctx, `DELETE FROM audit WHERE seq <= ?`, last); err != nil {
			return err
		}
		a = store.AuditAnchor{Seq: last, Hash: lastHash, At: time.Now().UTC()}
		_, err = tx.q.ExecContext(ctx, `INSERT INTO audit_anchor (id, seq, hash, pruned_at) VALUES (1, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, pruned_at = excluded.pruned_at`, a.Seq, a.Hash, ns(a.At))
		return err
	})
	return n, a, err
}

// PutLogEntry implements store.Releases.
func (s *conn) PutLogEntry(ctx context.Context, e store.LogEntry) error {
	_, err := s.exec(ctx, `INSERT INTO log_entries (target, idx, leaf) VALUES (?, ?, ?)`, e.Target, e.Index, e.Leaf)
	if err != nil && isConstraint(err) {
		return fmt.Errorf("log entry of %s: %w", e.Target, store.ErrExists)
	}
	return err
}

// LogEntry implements store.Releases.
func (s *conn) LogEntry(ctx context.Context, target string) (store.LogEntry, error) {
	e := store.LogEntry{Target: target}
	err := s.q.QueryRowContext(ctx, `SELECT idx, leaf FROM log_entries WHERE target = ?`, target).Scan(&e.Index, &e.Leaf)
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("log entry of %s: %w", target, store.ErrNotFound)
	}
	return e, err
}

// PutChunks implements store.Releases.
func (s *conn) PutChunks(ctx context.Context, refs []store.ChunkRef) error {
	return s.atomic(ctx, func(tx *conn) error {
		for _, c := range refs {
			_, err := tx.q.ExecContext(ctx, `INSERT INTO chunks (hash, blob, off, length) VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING`,
				c.Hash, c.Blob, c.Offset, c.Length)
			if err != nil {
				return fmt.Errorf("chunk %s: %w", c.Hash, err)
			}
		}
		return nil
	})
}

// Chunk implements store.Releases.
func (s *conn) Chunk(ctx context.Context, hash string) (store.ChunkRef, error) {
	c := store.ChunkRef{Hash: hash}
	err := s.q.QueryRowContext(ctx, `SELECT blob, off, length FROM chunks WHERE hash = ?`, hash).Scan(&c.Blob, &c.Offset, &c.Length)
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("chunk %s: %w", hash, store.ErrNotFound)
	}
	return c, err
}

// ChunkBlobs implements store.Releases.
func (s *conn) ChunkBlobs(ctx context.Context) ([]string, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT DISTINCT blob FROM chunks`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var b string
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// PutPendingPush implements store.Releases.
func (s *conn) PutPendingPush(ctx context.Context, data []byte) error {
	_, err := s.exec(ctx, `INSERT INTO pending_push (id, data) VALUES (1, ?)`, data)
	if err != nil && isConstraint(err) {
		return fmt.Errorf("pending push: %w", store.ErrExists)
	}
	return err
}

// PendingPush implements store.Releases.
func (s *conn) PendingPush(ctx context.Context) ([]byte, error) {
	var data []byte
	err := s.q.QueryRowContext(ctx, `SELECT data FROM pending_push WHERE id = 1`).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("pending push: %w", store.ErrNotFound)
	}
	return data, err
}

// DeletePendingPush implements store.Releases.
func (s *conn) DeletePendingPush(ctx context.Context) error {
	_, err := s.exec(ctx, `DELETE FROM pending_push WHERE id = 1`)
	return err
}

// assignBatch bounds the device ids one statement of Assign changes.
const assignBatch = 5000

// Assign implements store.Assignments: one prepared statement per batch
// of devices, which changes only those whose target differs.
func (s *conn) Assign(ctx context.Context, target string, deviceIDs []string, at time.Time) (int, error) {
	changed := 0
	err := s.atomic(ctx, func(tx *conn) error {
		changed = 0
		var seq uint64
		err := tx.stmtRow(ctx, `UPDATE counters SET value = value + 1 WHERE name = 'assignment' RETURNING value`).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			seq = 1
			if _, err := tx.q.ExecContext(ctx, `INSERT INTO counters (name, value) VALUES ('assignment', 1)`); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		tx.assignmentsChanged()
		for ids := deviceIDs; len(ids) > 0; {
			batch := ids[:min(len(ids), assignBatch)]
			ids = ids[len(batch):]
			list, err := json.Marshal(batch)
			if err != nil {
				return err
			}
			// A device listed twice is inserted, then left as it is.
			res, err := tx.execHot(ctx, `INSERT INTO assignments (device_id, target, assigned_at, seq) SELECT value, ?, ?, ? FROM json_each(?) WHERE true
				ON CONFLICT (device_id) DO UPDATE SET target = excluded.target, assigned_at = excluded.assigned_at, seq = excluded.seq
				WHERE assignments.target != excluded.target`, target, ns(at), seq, string(list))
			if err != nil {
				if strings.Contains(err.Error(), "FOREIGN KEY") {
					return unknownDevice(ctx, tx, batch, err)
				}
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			changed += int(n)
		}
		return nil
	})
	return changed, err
}

// unknownDevice names the first of ids that is not a device (the
// statement failed on a foreign key).
func unknownDevice(ctx context.Context, tx *conn, ids []string, err error) error {
	for _, id := range ids {
		if _, derr := tx.Device(ctx, id); errors.Is(derr, store.ErrNotFound) {
			return derr
		}
	}
	return err
}

// Assignment implements store.Assignments, from the cache outside a
// transaction (assigncache.Cache).
func (s *conn) Assignment(ctx context.Context, deviceID string) (store.Assignment, error) {
	if s.assign != nil {
		return s.assign.Get(deviceID, func() (store.Assignment, error) { return s.readAssignment(ctx, deviceID) })
	}
	return s.readAssignment(ctx, deviceID)
}

func (s *conn) readAssignment(ctx context.Context, deviceID string) (store.Assignment, error) {
	a := store.Assignment{DeviceID: deviceID}
	var at int64
	err := s.queryRow(ctx, `SELECT target, assigned_at, seq FROM assignments WHERE device_id = ?`, deviceID).Scan(&a.Target, &at, &a.Seq)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := s.Device(ctx, deviceID); err != nil {
			return a, err
		}
		return a, nil
	}
	a.AssignedAt = tm(at)
	return a, err
}

func isConstraint(err error) bool {
	// modernc.org/sqlite reports constraint violations with this text;
	// matching it avoids importing the driver's internal error codes.
	return err != nil && (bytes.Contains([]byte(err.Error()), []byte("UNIQUE constraint failed")) || bytes.Contains([]byte(err.Error()), []byte("PRIMARY KEY")))
}

const rolloutCols = `id, seq, target, security_version, selector, spec, state, phase, phase_started, threshold, eligible, paused_reason, created_by, approved_by, created_at, updated_at`

func scanRollout(row interface{ Scan(...any) error }) (store.Rollout, error) {
	var r store.Rollout
	var started, created, updated int64
	err := row.Scan(&r.ID, &r.Seq, &r.Target, &r.SecurityVersion, &r.Selector, &r.Spec, &r.State, &r.Phase, &started, &r.Threshold, &r.Eligible,
		&r.PausedReason, &r.CreatedBy, &r.ApprovedBy, &created, &updated)
	r.PhaseStarted, r.CreatedAt, r.UpdatedAt = tm(started), tm(created), tm(updated)
	return r, err
}

// CreateRollout implements store.Rollouts.
func (s *conn) CreateRollout(ctx context.Context, r store.Rollout) (store.Rollout, error) {
	err := s.atomic(ctx, func(tx *conn) error {
		if err := tx.q.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM rollouts`).Scan(&r.Seq); err != nil {
			return err
		}
		_, err := tx.q.ExecContext(ctx, `INSERT INTO rollouts (`+rolloutCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.Seq, r.Target, r.SecurityVersion, r.Selector, r.Spec, r.State, r.Phase, ns(r.PhaseStarted), r.Threshold, r.Eligible,
			r.PausedReason, r.CreatedBy, r.ApprovedBy, ns(r.CreatedAt), ns(r.UpdatedAt))
		if err != nil && isConstraint(err) {
			return fmt.Errorf("rollout %s: %w", r.ID, store.ErrExists)
		}
		return err
	})
	return r, err
}

// Rollout implements store.Rollouts.
func (s *conn) Rollout(ctx context.Context, id string) (store.Rollout, error) {
	r, err := scanRollout(s.q.QueryRowContext(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("rollout %s: %w", id, store.ErrNotFound)
	}
	return r, err
}

func (s *conn) rollouts(ctx context.Context, q string, args ...any) ([]store.Rollout, error) {
	return all(ctx, s.q, scanRollout, `SELECT `+rolloutCols+` FROM rollouts `+q, args...)
}

// ListRollouts implements store.Rollouts.
func (s *conn) ListRollouts(ctx context.Context, limit int) ([]store.Rollout, error) {
	return s.rollouts(ctx, `ORDER BY seq DESC LIMIT ?`, limit)
}

// RolloutsInState implements store.Rollouts.
func (s *conn) RolloutsInState(ctx context.Context, states ...string) ([]store.Rollout, error) {
	if len(states) == 0 {
		return nil, nil
	}
	args := make([]any, len(states))
	for i, st := range states {
		args[i] = st
	}
	return s.rollouts(ctx, `WHERE state IN (?`+strings.Repeat(", ?", len(states)-1)+`) ORDER BY seq`, args...)
}

// UpdateRollout implements store.Rollouts.
func (s *conn) UpdateRollout(ctx context.Context, r store.Rollout) error {
	res, err := s.exec(ctx, `UPDATE rollouts SET state = ?, phase = ?, phase_started = ?, threshold = ?, eligible = ?, paused_reason = ?, approved_by = ?, updated_at = ? WHERE id = ?`,
		r.State, r.Phase, ns(r.PhaseStarted), r.Threshold, r.Eligible, r.PausedReason, r.ApprovedBy, ns(r.UpdatedAt), r.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("rollout %s: %w", r.ID, store.ErrNotFound)
	}
	return nil
}

const rolloutDeviceCols = `rollout_id, device_id, status, offered_at, failures, cooldown_until, reason, updated_at`

func scanRolloutDevice(row interface{ Scan(...any) error }) (store.RolloutDevice, error) {
	var d store.RolloutDevice
	var offered, cool, updated int64
	err := row.Scan(&d.RolloutID, &d.DeviceID, &d.Status, &offered, &d.Failures, &cool, &d.Reason, &updated)
	d.OfferedAt, d.CooldownUntil, d.UpdatedAt = tm(offered), tm(cool), tm(updated)
	return d, err
}

// RolloutDevice implements store.Rollouts.
func (s *conn) RolloutDevice(ctx context.Context, rolloutID, deviceID string) (store.RolloutDevice, error) {
	d, err := scanRolloutDevice(s.queryRow(ctx, `SELECT `+rolloutDeviceCols+` FROM rollout_devices WHERE rollout_id = ? AND device_id = ?`, rolloutID, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("device %s in rollout %s: %w", deviceID, rolloutID, store.ErrNotFound)
	}
	return d, err
}

// PutRolloutDevice implements store.Rollouts.
func (s *conn) PutRolloutDevice(ctx context.Context, d store.RolloutDevice) error {
	_, err := s.execHot(ctx, `INSERT INTO rollout_devices (`+rolloutDeviceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (rollout_id, device_id) DO UPDATE SET status = excluded.status, offered_at = excluded.offered_at, failures = excluded.failures,
		cooldown_until = excluded.cooldown_until, reason = excluded.reason, updated_at = excluded.updated_at`,
		d.RolloutID, d.DeviceID, d.Status, ns(d.OfferedAt), d.Failures, ns(d.CooldownUntil), d.Reason, ns(d.UpdatedAt))
	return err
}

// DeviceRollouts implements store.Rollouts.
func (s *conn) DeviceRollouts(ctx context.Context, deviceID string) ([]store.RolloutDevice, error) {
	return all(ctx, s.q, scanRolloutDevice, `SELECT `+rolloutDeviceCols+` FROM rollout_devices WHERE device_id = ? ORDER BY rollout_id`, deviceID)
}

// RolloutCounts implements store.Rollouts.
func (s *conn) RolloutCounts(ctx context.Context, rolloutID string) (store.RolloutCounts, error) {
	out := store.RolloutCounts{ByStatus: map[string]int{}}
	rows, err := s.q.QueryContext(ctx, `SELECT status, count(*), SUM(failures) FROM rollout_devices WHERE rollout_id = ? GROUP BY status`, rolloutID)
	if err != nil {
		return out, err
	}
	defer rows.Close()
	for rows.Next() {
		var st string
		var n, f int
		if err := rows.Scan(&st, &n, &f); err != nil {
			return out, err
		}
		out.ByStatus[st] = n
		out.Failures += f
	}
	return out, rows.Err()
}

// RolloutInFlight implements store.Rollouts (a covering index:
// rollout_devices_status).
func (s *conn) RolloutInFlight(ctx context.Context, rolloutID string) (int, error) {
	var n int
	err := s.stmtRow(ctx, `SELECT count(*) FROM rollout_devices WHERE rollout_id = ? AND status IN ('downloading', 'installing')`, rolloutID).Scan(&n)
	return n, err
}

// RolloutReasons implements store.Rollouts.
func (s *conn) RolloutReasons(ctx context.Context, rolloutID string, limit int) (map[string]int, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT reason, count(*) AS n FROM rollout_devices WHERE rollout_id = ? AND failures > 0 AND reason != ''
		GROUP BY reason ORDER BY n DESC, reason LIMIT ?`, rolloutID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var r string
		var n int
		if err := rows.Scan(&r, &n); err != nil {
			return nil, err
		}
		out[r] = n
	}
	return out, rows.Err()
}
