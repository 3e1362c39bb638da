// Package postgres is the PostgreSQL implementation of store.Store
// (github.com/jackc/pgx/v5), for a server that outgrows one machine or
// must survive losing one: several rampart-server replicas share one
// database. It owns the PostgreSQL schema and its versioned migrations
// (migrations/*.sql, recorded in the schema_version table), and the
// locking that keeps the store's atomicity promises across replicas.
//
// Concurrency, across any number of replicas (Store values) over one
// database:
//
//   - Every write runs in a READ COMMITTED transaction that first takes a
//     transaction-scoped advisory lock, the writer lock, in shared mode;
//     Store.Atomic takes it in exclusive mode. So Atomic's callbacks are
//     serialised with every other writer, on every replica, as SQLite's
//     single writer serialises them: reads inside a callback see a state
//     no other writer changes before its commit. Writers outside Atomic
//     (check-in reports, for one) run concurrently with each other.
//     Because an Atomic transaction holds the writer lock before it takes
//     any row lock, and no other writer holds a row lock while it waits,
//     an Atomic transaction can neither deadlock nor fail to serialise,
//     so its callback runs exactly once and needs not be idempotent.
//   - One-time tokens and report counters are conditional UPDATEs
//     (used_at = 0, report_counter < new): in READ COMMITTED PostgreSQL
//     re-checks the condition on the row a concurrent writer committed,
//     so exactly one caller spends a token, and a counter only grows.
//   - Audit appends take a second advisory lock, the audit lock, before
//     reading the chain's head, so entries get consecutive sequence
//     numbers and chain in one total order across replicas.
//   - A writer that is not Atomic's (each is one store method, with no
//     effect outside the database) is retried on a serialisation failure
//     or a deadlock (SQLSTATE 40001, 40P01).
//
// Reads take no lock; outside Atomic each reads the latest committed
// state (MVCC).
package postgres

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/assigncache"
)

// Advisory lock keys ("rampart" and a number); advisory locks are per
// database, so other databases on the same server are unaffected.
const (
	writerLock  int64 = 0x72616d7061727401
	auditLock   int64 = 0x72616d7061727402
	migrateLock int64 = 0x72616d7061727403
)

// Errors Open returns, wrapped with detail.
var (
	// ErrDSN: the DSN does not parse (a configuration error).
	ErrDSN = errors.New("invalid PostgreSQL DSN")
	// ErrUnreachable: the database did not answer or refused us.
	ErrUnreachable = errors.New("cannot connect to PostgreSQL")
	// ErrSchema: the database's schema is newer than this program
	// (store.ErrSchemaTooNew).
	ErrSchema = store.ErrSchemaTooNew
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one step of the schema, numbered from 1.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations are the files migrations/NNN_name.sql in order; the
// schema_version table records the last one applied. Never edit one that
// has shipped: add a new file.
var migrations = func() []migration {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		panic(err)
	}
	sort.Strings(names)
	var out []migration
	for i, n := range names {
		b, err := migrationFS.ReadFile(n)
		if err != nil {
			panic(err)
		}
		base := path.Base(n)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil || v != i+1 {
			panic(fmt.Sprintf("migration %s: want number %03d", base, i+1))
		}
		out = append(out, migration{version: v, name: base, sql: string(b)})
	}
	return out
}()

// SchemaVersion is the schema version this program migrates to.
var SchemaVersion = len(migrations)

// DB is a PostgreSQL-backed store. It is safe for concurrent use, and
// any number of DBs, in any processes, may share one database.
type DB struct {
	conn
	pool   *pgxpool.Pool
	listen *listener
}

var (
	_ store.Store = (*DB)(nil)
	_ store.Tx    = (*conn)(nil)
)

// querier is what *pgxpool.Pool and pgx.Tx share.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// conn implements every store method over either the pool or one
// transaction, so the same code serves DB and the Tx of DB.Atomic.
type conn struct {
	q    querier
	pool *pgxpool.Pool // nil inside a transaction
	// savepoints numbers the savepoints of a transaction.
	savepoints *atomic.Uint64
	// assign is the database's assignment cache: set on the database,
	// read through only there (a transaction reads its own writes).
	// Inside a transaction, wrote records that the transaction changed
	// assignments (assignments.go).
	assign *assigncache.Cache
	wrote  *bool
}

// defaultMaxConns is the pool size when the DSN does not set
// pool_max_conns: enough for a busy server's concurrent requests, few
// enough for several replicas within PostgreSQL's default 100.
const defaultMaxConns = 20

// defaultLockTimeout bounds every lock wait (PostgreSQL's lock_timeout):
// longer than any writer holds the writer lock.
const defaultLockTimeout = "30s"

// Redact returns dsn with its password, if any, replaced by "xxxxx":
// what may be logged or shown.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return "(a PostgreSQL DSN that is not a URL)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// IsDSN reports whether s names a PostgreSQL database
// (postgres://... or postgresql://...).
func IsDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Open connects to the database dsn names (a postgres:// URL; see
// pgxpool.ParseConfig for its parameters) and migrates its schema. It
// fails with ErrDSN, ErrUnreachable or ErrSchema, never naming the
// password.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if !IsDSN(dsn) {
		return nil, fmt.Errorf("%w %s: want postgres://USER:PASSWORD@HOST:PORT/DATABASE", ErrDSN, Redact(dsn))
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message quotes the DSN with its password hidden; the
		// cause alone is enough next to ours.
		cause := err
		if u := errors.Unwrap(err); u != nil {
			cause = u
		}
		return nil, fmt.Errorf("%w %s: %v", ErrDSN, Redact(dsn), cause)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	// A writer waits for the writer lock at most this long: a callback
	// of Atomic that writes through the Store instead of its Tx waits on
	// its own transaction, and fails after it rather than hanging (as
	// SQLite's busy timeout makes it fail). The DSN may set its own
	// (lock_timeout=MILLISECONDS).
	if _, ok := cfg.ConnConfig.RuntimeParams["lock_timeout"]; !ok {
		cfg.ConnConfig.RuntimeParams["lock_timeout"] = defaultLockTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrDSN, Redact(dsn), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, Redact(dsn), redactErr(err, cfg.ConnConfig.Password))
	}
	if err := migrate(ctx, pool, migrations); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: %w", Redact(dsn), err)
	}
	// The cache serves nothing until the listener listens.
	cache := &assigncache.Cache{}
	cache.Suspend()
	lctx, stop := context.WithCancel(context.Background())
	l := &listener{stop: stop, done: make(chan struct{})}
	go l.listen(lctx, cfg.ConnConfig.Copy(), cache)
	return &DB{conn: conn{q: classified{pool}, pool: pool, assign: cache}, pool: pool, listen: l}, nil
}

// redactErr hides pw in err's message, in case a driver ever quotes it.
func redactErr(err error, pw string) error {
	if pw == "" || !strings.Contains(err.Error(), pw) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), pw, "xxxxx"))
}

// migrate brings the schema to the last of ms in one transaction, under
// an advisory lock, so replicas starting together migrate once.
func migrate(ctx context.Context, pool *pgxpool.Pool, ms []migration) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var v int
	err = tx.QueryRow(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&v)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if v > len(ms) {
		return fmt.Errorf("%w: the database is at version %d, this program knows up to %d; upgrade rampart-server (every replica) to the version that migrated it", ErrSchema, v, len(ms))
	}
	if v == len(ms) {
		return nil
	}
	for _, m := range ms[v:] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_version (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = excluded.version`, len(ms)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Close stops the listener and closes the pool.
func (s *DB) Close() error {
	s.listen.close()
	s.pool.Close()
	return nil
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

// nonNil stores an empty value as empty bytes, not NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isUnique(err error) bool     { return sqlState(err) == "23505" }
func isForeignKey(err error) bool { return sqlState(err) == "23503" }
func retryable(err error) bool {
	c := sqlState(err)
	return c == "40001" || c == "40P01"
}

// Atomic implements store.Store: f runs in one READ COMMITTED transaction
// that holds the writer lock exclusively (see the package comment), so
// no other writer on any replica runs until it commits or rolls back.
// f runs once.
func (s *DB) Atomic(ctx context.Context, f func(tx store.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", unavailable(err))
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writerLock); err != nil {
		tx.Rollback(ctx)
		return fmt.Errorf("writer lock: %w", unavailable(err))
	}
	if err := fence(ctx, tx); err != nil {
		tx.Rollback(ctx)
		return err
	}
	wrote := new(bool)
	defer s.assign.After(wrote)
	if err := f(&conn{q: classified{tx}, savepoints: new(atomic.Uint64), wrote: wrote}); err != nil {
		tx.Rollback(ctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", unavailable(err))
	}
	return nil
}

// maxRetries bounds the retries of a method's transaction.
const maxRetries = 20

// atomic runs f so that its writes apply all or none: in a transaction of
// its own that holds the writer lock shared (retried on a serialisation
// failure or deadlock, so f must set its results afresh on each run), or,
// inside Atomic's transaction, under a savepoint that is rolled back if f
// fails, so a failed method leaves the caller's transaction as it was
// (PostgreSQL would otherwise refuse every later statement of it).
func (c *conn) atomic(ctx context.Context, f func(c *conn) error) error {
	if c.pool != nil {
		for attempt := 0; ; attempt++ {
			err := c.txOnce(ctx, f)
			if err == nil || !retryable(err) || attempt >= maxRetries {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(attempt+1) * time.Millisecond):
			}
		}
	}
	sp := fmt.Sprintf("sp%d", c.savepoints.Add(1))
	if _, err := c.q.Exec(ctx, `SAVEPOINT `+sp); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	if err := f(c); err != nil {
		if _, rerr := c.q.Exec(ctx, `ROLLBACK TO SAVEPOINT `+sp); rerr != nil {
			return errors.Join(err, fmt.Errorf("rollback to savepoint: %w", rerr))
		}
		c.q.Exec(ctx, `RELEASE SAVEPOINT `+sp)
		return err
	}
	if _, err := c.q.Exec(ctx, `RELEASE SAVEPOINT `+sp); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

func (c *conn) txOnce(ctx context.Context, f func(c *conn) error) error {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", unavailable(err))
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, writerLock); err != nil {
		tx.Rollback(ctx)
		return fmt.Errorf("writer lock: %w", unavailable(err))
	}
	if err := fence(ctx, tx); err != nil {
		tx.Rollback(ctx)
		return err
	}
	wrote := new(bool)
	defer c.assign.After(wrote)
	if err := f(&conn{q: classified{tx}, savepoints: new(atomic.Uint64), wrote: wrote}); err != nil {
		tx.Rollback(ctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", unavailable(err))
	}
	return nil
}

// exec runs one writing statement atomically (see atomic).
func (c *conn) exec(ctx context.Context, q string, args ...any) (int64, error) {
	var n int64
	err := c.atomic(ctx, func(tx *conn) error {
		tag, err := tx.q.Exec(ctx, q, args...)
		n = tag.RowsAffected()
		return err
	})
	return n, err
}

// PutDocs implements store.Metadata.
func (s *conn) PutDocs(ctx context.Context, docs ...store.Doc) error {
	return s.atomic(ctx, func(tx *conn) error {
		for _, d := range docs {
			tag, err := tx.q.Exec(ctx, `INSERT INTO metadata (repo, role, version, data) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, d.Repo, d.Role, d.Version, nonNil(d.Data))
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				continue
			}
			var old []byte
			if err := tx.q.QueryRow(ctx, `SELECT data FROM metadata WHERE repo = $1 AND role = $2 AND version = $3`, d.Repo, d.Role, d.Version).Scan(&old); err != nil {
				return err
			}
			if !bytes.Equal(old, d.Data) {
				return fmt.Errorf("%s %s version %d: %w", d.Repo, d.Role, d.Version, store.ErrConflict)
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
		err = s.q.QueryRow(ctx, `SELECT version, data FROM metadata WHERE repo = $1 AND role = $2 ORDER BY version DESC LIMIT 1`, repo, role).Scan(&d.Version, &d.Data)
	} else {
		d.Version = version
		err = s.q.QueryRow(ctx, `SELECT data FROM metadata WHERE repo = $1 AND role = $2 AND version = $3`, repo, role, version).Scan(&d.Data)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("%s %s version %d: %w", repo, role, version, store.ErrNotFound)
	}
	return d, err
}

// CreateDevice implements store.Devices.
func (s *conn) CreateDevice(ctx context.Context, d store.Device) error {
	_, err := s.exec(ctx, `INSERT INTO devices (id, hardware_id, cert_serial, enrolled_at) VALUES ($1, $2, $3, $4)`, d.ID, d.HardwareID, d.CertSerial, ns(d.EnrolledAt))
	if isUnique(err) {
		return fmt.Errorf("device %s: %w", d.ID, store.ErrExists)
	}
	return err
}

const deviceCols = `id, hardware_id, cert_serial, enrolled_at, revoked_at, version, security_version, report_counter, last_status, last_seen, anomalies, last_anomaly, tags, last_refusal`

// all runs a listing query and scans every row with scan.
func all[T any](ctx context.Context, q querier, scan func(pgx.Row) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
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

func scanDevice(row pgx.Row) (store.Device, error) {
	var d store.Device
	var enrolled, revoked, seen int64
	var tags string
	err := row.Scan(&d.ID, &d.HardwareID, &d.CertSerial, &enrolled, &revoked, &d.Version, &d.SecurityVersion, &d.ReportCounter, &d.LastStatus, &seen, &d.Anomalies, &d.LastAnomaly, &tags, &d.LastRefusal)
	d.EnrolledAt, d.RevokedAt, d.LastSeen = tm(enrolled), tm(revoked), tm(seen)
	if err == nil && tags != "{}" && tags != "" {
		if err := json.Unmarshal([]byte(tags), &d.Tags); err != nil {
			return d, fmt.Errorf("device %s: stored tags: %w", d.ID, err)
		}
	}
	return d, err
}

// ListDevices implements store.Devices.
func (s *conn) ListDevices(ctx context.Context, after string, limit int) ([]store.Device, error) {
	return all(ctx, s.q, scanDevice, `SELECT `+deviceCols+` FROM devices WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
}

// ListDeviceFacts implements store.Devices.
func (s *conn) ListDeviceFacts(ctx context.Context, after string, limit int) ([]store.DeviceFacts, error) {
	return deviceFacts(ctx, s.q, limit, `SELECT id, hardware_id, version, security_version, tags FROM devices
		WHERE id > $1 AND revoked_at = 0 ORDER BY id LIMIT $2`, after, limit)
}

// deviceFacts reads a page of device facts; devices with equal tags
// share one decoded map.
func deviceFacts(ctx context.Context, q querier, limit int, query string, args ...any) ([]store.DeviceFacts, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return store.ScanDeviceFacts(rows, limit)
}

// SetDeviceTags implements store.Devices: the row is locked between
// reading the tags and writing them, so concurrent changes all apply.
func (s *conn) SetDeviceTags(ctx context.Context, id string, set map[string]string, unset []string) (map[string]string, error) {
	var out map[string]string
	err := s.atomic(ctx, func(tx *conn) error {
		d, err := scanDevice(tx.q.QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("device %s: %w", id, store.ErrNotFound)
		}
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
		_, err = tx.q.Exec(ctx, `UPDATE devices SET tags = $1 WHERE id = $2`, string(b), id)
		return err
	})
	return out, err
}

// Device implements store.Devices.
func (s *conn) Device(ctx context.Context, id string) (store.Device, error) {
	d, err := scanDevice(s.q.QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("device %s: %w", id, store.ErrNotFound)
	}
	return d, err
}

// DevicesByHardware implements store.Devices.
func (s *conn) DevicesByHardware(ctx context.Context, hw string) ([]store.Device, error) {
	return all(ctx, s.q, scanDevice, `SELECT `+deviceCols+` FROM devices WHERE hardware_id = $1 ORDER BY id`, hw)
}

// CountDevices implements store.Devices.
func (s *conn) CountDevices(ctx context.Context) (int, error) {
	var n int
	err := s.q.QueryRow(ctx, `SELECT count(*) FROM devices`).Scan(&n)
	return n, err
}

// RevokeDevice implements store.Devices.
func (s *conn) RevokeDevice(ctx context.Context, id string, at time.Time) error {
	return s.atomic(ctx, func(tx *conn) error {
		tag, err := tx.q.Exec(ctx, `UPDATE devices SET revoked_at = $1 WHERE id = $2 AND revoked_at = 0`, ns(at), id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			if _, err := tx.Device(ctx, id); err != nil {
				return err
			}
			return fmt.Errorf("device %s: %w", id, store.ErrRevoked)
		}
		return nil
	})
}

func scanString(row pgx.Row) (string, error) {
	var s string
	err := row.Scan(&s)
	return s, err
}

// RevokedCertificates implements store.Devices.
func (s *conn) RevokedCertificates(ctx context.Context) ([]string, error) {
	return all(ctx, s.q, scanString, `SELECT cert_serial FROM devices WHERE revoked_at != 0
		UNION SELECT serial FROM revoked_certs ORDER BY 1`)
}

// RemoveDevice implements store.Devices.
func (s *conn) RemoveDevice(ctx context.Context, id string, at time.Time) (store.Device, error) {
	var d store.Device
	err := s.atomic(ctx, func(tx *conn) error {
		var err error
		d, err = scanDevice(tx.q.QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("device %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := tx.q.Exec(ctx, `INSERT INTO revoked_certs (serial, device_id, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (serial) DO NOTHING`, d.CertSerial, id, ns(at)); err != nil {
			return err
		}
		if err := tx.assignmentsChanged(ctx); err != nil {
			return err
		}
		for _, q := range []string{`DELETE FROM assignments WHERE device_id = $1`, `DELETE FROM reports WHERE device_id = $1`, `DELETE FROM report_counts WHERE device_id = $1`, `DELETE FROM devices WHERE id = $1`} {
			if _, err := tx.q.Exec(ctx, q, id); err != nil {
				return err
			}
		}
		return nil
	})
	return d, err
}

// RecordAnomaly implements store.Devices.
func (s *conn) RecordAnomaly(ctx context.Context, id, reason string, at time.Time) error {
	n, err := s.exec(ctx, `UPDATE devices SET anomalies = anomalies + 1, last_anomaly = $1, last_seen = $2 WHERE id = $3`, reason, ns(at), id)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("device %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// RecordReport implements store.Devices. The counter check and the update
// are one statement, which PostgreSQL re-checks against the row another
// replica committed meanwhile, so no two callers accept the same counter
// and the counter never goes back; the history and the counts change in
// the same transaction.
func (s *conn) RecordReport(ctx context.Context, id string, r store.Report) error {
	return s.atomic(ctx, func(tx *conn) error {
		q := `UPDATE devices SET report_counter = $1, last_status = $2, last_seen = $3`
		args := []any{r.Counter, r.Status, ns(r.At)}
		if r.Installed {
			q += `, version = $4, security_version = $5`
			args = append(args, r.Version, r.SecurityVersion)
		}
		if r.Refusal != "" {
			args = append(args, r.Refusal)
			q += fmt.Sprintf(`, last_refusal = $%d`, len(args))
		}
		args = append(args, id, r.Counter)
		q += fmt.Sprintf(` WHERE id = $%d AND report_counter < $%d AND revoked_at = 0`, len(args)-1, len(args))
		tag, err := tx.q.Exec(ctx, q, args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			d, err := tx.Device(ctx, id)
			if err != nil {
				return err
			}
			if !d.RevokedAt.IsZero() {
				return fmt.Errorf("device %s: %w", id, store.ErrRevoked)
			}
			return fmt.Errorf("device %s: report counter %d is not above %d: %w", id, r.Counter, d.ReportCounter, store.ErrReplay)
		}
		if _, err := tx.q.Exec(ctx, `INSERT INTO reports (device_id, counter, status, reason, version, security_version, at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			id, r.Counter, r.Status, r.Reason, r.Version, r.SecurityVersion, ns(r.At)); err != nil {
			return err
		}
		if _, err := tx.q.Exec(ctx, `DELETE FROM reports WHERE device_id = $1 AND counter <= (
			SELECT counter FROM reports WHERE device_id = $1 ORDER BY counter DESC LIMIT 1 OFFSET $2)`, id, store.ReportHistory); err != nil {
			return err
		}
		if _, err := tx.q.Exec(ctx, `INSERT INTO report_counts (device_id, status, n) VALUES ($1, $2, 1)
			ON CONFLICT (device_id, status) DO UPDATE SET n = report_counts.n + 1`, id, r.Status); err != nil {
			return err
		}
		if r.Refusal == "" {
			return nil
		}
		_, err = tx.q.Exec(ctx, `INSERT INTO refusal_counts (class, n) VALUES ($1, 1)
			ON CONFLICT (class) DO UPDATE SET n = refusal_counts.n + 1`, r.Refusal)
		return err
	})
}

// Reports implements store.Devices.
func (s *conn) Reports(ctx context.Context, id string) ([]store.Report, map[string]uint64, error) {
	if _, err := s.Device(ctx, id); err != nil {
		return nil, nil, err
	}
	out, err := all(ctx, s.q, func(row pgx.Row) (store.Report, error) {
		var r store.Report
		var at int64
		err := row.Scan(&r.Counter, &r.Status, &r.Reason, &r.Version, &r.SecurityVersion, &at)
		r.At, r.Installed = tm(at), r.Status == "installed"
		return r, err
	}, `SELECT counter, status, reason, version, security_version, at FROM reports WHERE device_id = $1 ORDER BY counter DESC`, id)
	if err != nil {
		return nil, nil, err
	}
	type count struct {
		st string
		n  uint64
	}
	cs, err := all(ctx, s.q, func(row pgx.Row) (count, error) {
		var c count
		err := row.Scan(&c.st, &c.n)
		return c, err
	}, `SELECT status, n FROM report_counts WHERE device_id = $1`, id)
	if err != nil {
		return nil, nil, err
	}
	counts := map[string]uint64{}
	for _, c := range cs {
		counts[c.st] = c.n
	}
	return out, counts, nil
}

// CreateEnrollToken implements store.Tokens.
func (s *conn) CreateEnrollToken(ctx context.Context, t store.EnrollToken) error {
	_, err := s.exec(ctx, `INSERT INTO enroll_tokens (hash, hardware_id, expires) VALUES ($1, $2, $3)`, t.Hash, t.HardwareID, ns(t.Expires))
	if isUnique(err) {
		return fmt.Errorf("enrollment token: %w", store.ErrExists)
	}
	return err
}

const enrollCols = `hash, hardware_id, expires, used_at, used_by`

func scanEnroll(row pgx.Row) (store.EnrollToken, error) {
	var t store.EnrollToken
	var expires, used int64
	err := row.Scan(&t.Hash, &t.HardwareID, &expires, &used, &t.UsedBy)
	t.Expires, t.UsedAt = tm(expires), tm(used)
	return t, err
}

// ConsumeEnrollToken implements store.Tokens: one conditional UPDATE,
// which PostgreSQL re-checks against a concurrent spender's committed
// row, so exactly one caller on any replica wins.
func (s *conn) ConsumeEnrollToken(ctx context.Context, hash, deviceID string, now time.Time) (store.EnrollToken, error) {
	var t store.EnrollToken
	err := s.atomic(ctx, func(tx *conn) error {
		var err error
		t, err = scanEnroll(tx.q.QueryRow(ctx, `UPDATE enroll_tokens SET used_at = $1, used_by = $2 WHERE hash = $3 AND used_at = 0 AND expires > $1 RETURNING `+enrollCols, ns(now), deviceID, hash))
		if err == nil {
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		t, err = scanEnroll(tx.q.QueryRow(ctx, `SELECT `+enrollCols+` FROM enroll_tokens WHERE hash = $1`, hash))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("enrollment token: %w", store.ErrNotFound)
		case err != nil:
			return err
		case !t.UsedAt.IsZero():
			return fmt.Errorf("enrollment token: %w", store.ErrUsed)
		}
		return fmt.Errorf("enrollment token expired at %s: %w", t.Expires.Format(time.RFC3339), store.ErrExpired)
	})
	return t, err
}

// EnrollToken implements store.Tokens.
func (s *conn) EnrollToken(ctx context.Context, hash string) (store.EnrollToken, error) {
	t, err := scanEnroll(s.q.QueryRow(ctx, `SELECT `+enrollCols+` FROM enroll_tokens WHERE hash = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("enrollment token: %w", store.ErrNotFound)
	}
	return t, err
}

// CreateOperatorToken implements store.Tokens.
func (s *conn) CreateOperatorToken(ctx context.Context, t store.OperatorToken) error {
	_, err := s.exec(ctx, `INSERT INTO operator_tokens (hash, name, role, created_at) VALUES ($1, $2, $3, $4)`, t.Hash, t.Name, t.Role, ns(t.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("operator token %s: %w", t.Name, store.ErrExists)
	}
	return err
}

const tokenCols = `hash, name, role, created_at, revoked_at`

func scanToken(row pgx.Row) (store.OperatorToken, error) {
	var t store.OperatorToken
	var created, revoked int64
	err := row.Scan(&t.Hash, &t.Name, &t.Role, &created, &revoked)
	t.CreatedAt, t.RevokedAt = tm(created), tm(revoked)
	return t, err
}

// OperatorToken implements store.Tokens.
func (s *conn) OperatorToken(ctx context.Context, hash string) (store.OperatorToken, error) {
	t, err := scanToken(s.q.QueryRow(ctx, `SELECT `+tokenCols+` FROM operator_tokens WHERE hash = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
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

// updateLiveToken runs an UPDATE of a live token by name and explains
// why it changed nothing.
func (s *conn) updateLiveToken(ctx context.Context, name, q string, args ...any) error {
	return s.atomic(ctx, func(tx *conn) error {
		tag, err := tx.q.Exec(ctx, q, args...)
		if err != nil || tag.RowsAffected() > 0 {
			return err
		}
		var revoked int64
		err = tx.q.QueryRow(ctx, `SELECT revoked_at FROM operator_tokens WHERE name = $1`, name).Scan(&revoked)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("operator token %s: %w", name, store.ErrNotFound)
		case err != nil:
			return err
		}
		return fmt.Errorf("operator token %s: %w", name, store.ErrRevoked)
	})
}

// SetOperatorTokenRole implements store.Tokens.
func (s *conn) SetOperatorTokenRole(ctx context.Context, name, role string) error {
	return s.updateLiveToken(ctx, name, `UPDATE operator_tokens SET role = $1 WHERE name = $2 AND revoked_at = 0`, role, name)
}

// RevokeOperatorToken implements store.Tokens.
func (s *conn) RevokeOperatorToken(ctx context.Context, name string, at time.Time) error {
	return s.updateLiveToken(ctx, name, `UPDATE operator_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at = 0`, ns(at), name)
}

// AppendAudit implements store.Audit. The audit lock, taken before the
// head is read, makes appends from every replica one total order: each
// entry's Seq is its predecessor's plus one and it names its hash, as in
// SQLite.
func (s *conn) AppendAudit(ctx context.Context, e audit.Entry) (audit.Entry, error) {
	var out audit.Entry
	err := s.atomic(ctx, func(tx *conn) error {
		if _, err := tx.q.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, auditLock); err != nil {
			return err
		}
		var prev *audit.Entry
		var p audit.Entry
		err := tx.q.QueryRow(ctx, `SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&p.Seq, &p.Hash)
		switch {
		case err == nil:
			prev = &p
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		default:
			// An anchor without entries would still be where to chain.
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
		if _, err := tx.q.Exec(ctx, `INSERT INTO audit (seq, hash, entry, at) VALUES ($1, $2, $3, $4)`, n.Seq, n.Hash, string(b), ns(n.Time)); err != nil {
			return err
		}
		out = n
		return nil
	})
	return out, err
}

// AuditEntries implements store.Audit.
func (s *conn) AuditEntries(ctx context.Context, after uint64, limit int) ([]audit.Entry, error) {
	return all(ctx, s.q, func(row pgx.Row) (audit.Entry, error) {
		var raw []byte
		var e audit.Entry
		if err := row.Scan(&raw); err != nil {
			return e, err
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			return e, fmt.Errorf("audit entry: %w", err)
		}
		return e, nil
	}, `SELECT entry FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
}

// AuditRaw implements store.Audit.
func (s *conn) AuditRaw(ctx context.Context, after uint64, limit int, maxBytes int64, fn func(seq uint64, raw []byte) error) (int, error) {
	rows, err := s.q.Query(ctx, `SELECT seq, entry FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	var total int64
	for rows.Next() {
		var seq uint64
		if err := rows.Scan(&seq, nil); err != nil {
			return n, err
		}
		// The row's own buffer: valid until the next row.
		raw := rows.RawValues()[1]
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
	err := s.q.QueryRow(ctx, `SELECT seq, hash, pruned_at FROM audit_anchor WHERE id = 1`).Scan(&a.Seq, &a.Hash, &at)
	if errors.Is(err, pgx.ErrNoRows) {
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
		n = 0
		if _, err := tx.q.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, auditLock); err != nil {
			return err
		}
		var head uint64
		if err := tx.q.QueryRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit`).Scan(&head); err != nil {
			return err
		}
		type row struct {
			seq  uint64
			hash string
			at   int64
		}
		rs, err := all(ctx, tx.q, func(r pgx.Row) (row, error) {
			var x row
			err := r.Scan(&x.seq, &x.hash, &x.at)
			return x, err
		}, `SELECT seq, hash, at FROM audit ORDER BY seq LIMIT $1`, limit)
		if err != nil {
			return err
		}
		var last uint64
		var lastHash string
		for _, r := range rs {
			if r.seq >= head || r.at >= ns(before) {
				break
			}
			last, lastHash = r.seq, r.hash
			n++
		}
		if n == 0 {
			a, err = tx.AuditAnchor(ctx)
			return err
		}
		if _, err := tx.q.Exec(ctx, `DELETE FROM audit WHERE seq <= $1`, last); err != nil {
			return err
		}
		a = store.AuditAnchor{Seq: last, Hash: lastHash, At: time.Now().UTC()}
		_, err = tx.q.Exec(ctx, `INSERT INTO audit_anchor (id, seq, hash, pruned_at) VALUES (1, $1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, pruned_at = excluded.pruned_at`, a.Seq, a.Hash, ns(a.At))
		return err
	})
	return n, a, err
}

// PutLogEntry implements store.Releases.
func (s *conn) PutLogEntry(ctx context.Context, e store.LogEntry) error {
	_, err := s.exec(ctx, `INSERT INTO log_entries (target, idx, leaf) VALUES ($1, $2, $3)`, e.Target, e.Index, nonNil(e.Leaf))
	if isUnique(err) {
		return fmt.Errorf("log entry of %s: %w", e.Target, store.ErrExists)
	}
	return err
}

// LogEntry implements store.Releases.
func (s *conn) LogEntry(ctx context.Context, target string) (store.LogEntry, error) {
	e := store.LogEntry{Target: target}
	err := s.q.QueryRow(ctx, `SELECT idx, leaf FROM log_entries WHERE target = $1`, target).Scan(&e.Index, &e.Leaf)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, fmt.Errorf("log entry of %s: %w", target, store.ErrNotFound)
	}
	return e, err
}

// PutChunks implements store.Releases.
func (s *conn) PutChunks(ctx context.Context, refs []store.ChunkRef) error {
	return s.atomic(ctx, func(tx *conn) error {
		for _, c := range refs {
			_, err := tx.q.Exec(ctx, `INSERT INTO chunks (hash, blob, off, length) VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING`,
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
	err := s.q.QueryRow(ctx, `SELECT blob, off, length FROM chunks WHERE hash = $1`, hash).Scan(&c.Blob, &c.Offset, &c.Length)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("chunk %s: %w", hash, store.ErrNotFound)
	}
	return c, err
}

// ChunkBlobs implements store.Releases.
func (s *conn) ChunkBlobs(ctx context.Context) ([]string, error) {
	return all(ctx, s.q, scanString, `SELECT DISTINCT blob FROM chunks`)
}

// PutPendingPush implements store.Releases.
func (s *conn) PutPendingPush(ctx context.Context, data []byte) error {
	_, err := s.exec(ctx, `INSERT INTO pending_push (id, data) VALUES (1, $1)`, nonNil(data))
	if isUnique(err) {
		return fmt.Errorf("pending push: %w", store.ErrExists)
	}
	return err
}

// PendingPush implements store.Releases.
func (s *conn) PendingPush(ctx context.Context) ([]byte, error) {
	var data []byte
	err := s.q.QueryRow(ctx, `SELECT data FROM pending_push WHERE id = 1`).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pending push: %w", store.ErrNotFound)
	}
	return data, err
}

// DeletePendingPush implements store.Releases.
func (s *conn) DeletePendingPush(ctx context.Context) error {
	_, err := s.exec(ctx, `DELETE FROM pending_push WHERE id = 1`)
	return err
}

// next increments and returns a named counter (from 1); the row's lock
// orders concurrent callers until they commit.
func (s *conn) next(ctx context.Context, name string) (uint64, error) {
	var v uint64
	err := s.q.QueryRow(ctx, `INSERT INTO counters (name, value) VALUES ($1, 1)
		ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value`, name).Scan(&v)
	return v, err
}

// assignBatch bounds the device ids one statement of Assign changes.
const assignBatch = 5000

// Assign implements store.Assignments: one statement per batch of
// devices (a round trip each, not one per device), which changes only
// those whose target differs.
func (s *conn) Assign(ctx context.Context, target string, deviceIDs []string, at time.Time) (int, error) {
	changed := 0
	err := s.atomic(ctx, func(tx *conn) error {
		changed = 0
		seq, err := tx.next(ctx, "assignment")
		if err != nil {
			return err
		}
		if err := tx.assignmentsChanged(ctx); err != nil {
			return err
		}
		for ids := deviceIDs; len(ids) > 0; {
			batch := ids[:min(len(ids), assignBatch)]
			ids = ids[len(batch):]
			// An unknown device is named before anything is written (a
			// failed statement would abort the transaction).
			var missing string
			err := tx.q.QueryRow(ctx, `SELECT u.id FROM unnest($1::text[]) AS u(id) WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = u.id) LIMIT 1`,
				batch).Scan(&missing)
			if err == nil {
				return fmt.Errorf("device %s: %w", missing, store.ErrNotFound)
			} else if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			// DISTINCT: one statement may not change a row twice (a
			// device listed twice is changed once).
			tag, err := tx.q.Exec(ctx, `INSERT INTO assignments (device_id, target, assigned_at, seq) SELECT DISTINCT u.id, $2, $3::bigint, $4::bigint FROM unnest($1::text[]) AS u(id)
				ON CONFLICT (device_id) DO UPDATE SET target = excluded.target, assigned_at = excluded.assigned_at, seq = excluded.seq
				WHERE assignments.target IS DISTINCT FROM excluded.target`, batch, target, ns(at), seq)
			if isForeignKey(err) {
				return fmt.Errorf("a device of the deployment (removed meanwhile): %w", store.ErrNotFound)
			}
			if err != nil {
				return err
			}
			changed += int(tag.RowsAffected())
		}
		return nil
	})
	return changed, err
}

// Assignment implements store.Assignments.
// The database's reads go through its cache (assignments.go); a
// transaction's read the database.
func (s *conn) Assignment(ctx context.Context, deviceID string) (store.Assignment, error) {
	if s.assign != nil {
		return s.assign.Get(deviceID, func() (store.Assignment, error) { return s.readAssignment(ctx, deviceID) })
	}
	return s.readAssignment(ctx, deviceID)
}

func (s *conn) readAssignment(ctx context.Context, deviceID string) (store.Assignment, error) {
	a := store.Assignment{DeviceID: deviceID}
	var at int64
	err := s.q.QueryRow(ctx, `SELECT target, assigned_at, seq FROM assignments WHERE device_id = $1`, deviceID).Scan(&a.Target, &at, &a.Seq)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := s.Device(ctx, deviceID); err != nil {
			return a, err
		}
		return a, nil
	}
	a.AssignedAt = tm(at)
	return a, err
}

const rolloutCols = `id, seq, target, security_version, selector, spec, state, phase, phase_started, threshold, eligible, paused_reason, created_by, approved_by, created_at, updated_at`

func scanRollout(row pgx.Row) (store.Rollout, error) {
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
		var err error
		if r.Seq, err = tx.next(ctx, "rollout"); err != nil {
			return err
		}
		_, err = tx.q.Exec(ctx, `INSERT INTO rollouts (`+rolloutCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
			r.ID, r.Seq, r.Target, r.SecurityVersion, r.Selector, nonNil(r.Spec), r.State, r.Phase, ns(r.PhaseStarted), r.Threshold, r.Eligible,
			r.PausedReason, r.CreatedBy, r.ApprovedBy, ns(r.CreatedAt), ns(r.UpdatedAt))
		if isUnique(err) {
			return fmt.Errorf("rollout %s: %w", r.ID, store.ErrExists)
		}
		return err
	})
	if err != nil {
		r.Seq = 0
	}
	return r, err
}

// Rollout implements store.Rollouts.
func (s *conn) Rollout(ctx context.Context, id string) (store.Rollout, error) {
	r, err := scanRollout(s.q.QueryRow(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("rollout %s: %w", id, store.ErrNotFound)
	}
	return r, err
}

// ListRollouts implements store.Rollouts.
func (s *conn) ListRollouts(ctx context.Context, limit int) ([]store.Rollout, error) {
	return all(ctx, s.q, scanRollout, `SELECT `+rolloutCols+` FROM rollouts ORDER BY seq DESC LIMIT $1`, limit)
}

// RolloutsInState implements store.Rollouts.
func (s *conn) RolloutsInState(ctx context.Context, states ...string) ([]store.Rollout, error) {
	if len(states) == 0 {
		return nil, nil
	}
	return all(ctx, s.q, scanRollout, `SELECT `+rolloutCols+` FROM rollouts WHERE state = ANY($1) ORDER BY seq`, states)
}

// UpdateRollout implements store.Rollouts.
func (s *conn) UpdateRollout(ctx context.Context, r store.Rollout) error {
	n, err := s.exec(ctx, `UPDATE rollouts SET state = $1, phase = $2, phase_started = $3, threshold = $4, eligible = $5, paused_reason = $6, approved_by = $7, updated_at = $8 WHERE id = $9`,
		r.State, r.Phase, ns(r.PhaseStarted), r.Threshold, r.Eligible, r.PausedReason, r.ApprovedBy, ns(r.UpdatedAt), r.ID)
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("rollout %s: %w", r.ID, store.ErrNotFound)
	}
	return nil
}

const rolloutDeviceCols = `rollout_id, device_id, status, offered_at, failures, cooldown_until, reason, updated_at`

func scanRolloutDevice(row pgx.Row) (store.RolloutDevice, error) {
	var d store.RolloutDevice
	var offered, cool, updated int64
	err := row.Scan(&d.RolloutID, &d.DeviceID, &d.Status, &offered, &d.Failures, &cool, &d.Reason, &updated)
	d.OfferedAt, d.CooldownUntil, d.UpdatedAt = tm(offered), tm(cool), tm(updated)
	return d, err
}

// RolloutDevice implements store.Rollouts.
func (s *conn) RolloutDevice(ctx context.Context, rolloutID, deviceID string) (store.RolloutDevice, error) {
	d, err := scanRolloutDevice(s.q.QueryRow(ctx, `SELECT `+rolloutDeviceCols+` FROM rollout_devices WHERE rollout_id = $1 AND device_id = $2`, rolloutID, deviceID))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("device %s in rollout %s: %w", deviceID, rolloutID, store.ErrNotFound)
	}
	return d, err
}

// PutRolloutDevice implements store.Rollouts.
func (s *conn) PutRolloutDevice(ctx context.Context, d store.RolloutDevice) error {
	_, err := s.exec(ctx, `INSERT INTO rollout_devices (`+rolloutDeviceCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (rollout_id, device_id) DO UPDATE SET status = excluded.status, offered_at = excluded.offered_at, failures = excluded.failures,
		cooldown_until = excluded.cooldown_until, reason = excluded.reason, updated_at = excluded.updated_at`,
		d.RolloutID, d.DeviceID, d.Status, ns(d.OfferedAt), d.Failures, ns(d.CooldownUntil), d.Reason, ns(d.UpdatedAt))
	return err
}

// DeviceRollouts implements store.Rollouts.
func (s *conn) DeviceRollouts(ctx context.Context, deviceID string) ([]store.RolloutDevice, error) {
	return all(ctx, s.q, scanRolloutDevice, `SELECT `+rolloutDeviceCols+` FROM rollout_devices WHERE device_id = $1 ORDER BY rollout_id`, deviceID)
}

// RolloutInFlight implements store.Rollouts (the index
// rollout_devices_status).
func (s *conn) RolloutInFlight(ctx context.Context, rolloutID string) (int, error) {
	var n int
	err := s.q.QueryRow(ctx, `SELECT count(*) FROM rollout_devices WHERE rollout_id = $1 AND status IN ('downloading', 'installing')`, rolloutID).Scan(&n)
	return n, err
}

// RolloutCounts implements store.Rollouts.
func (s *conn) RolloutCounts(ctx context.Context, rolloutID string) (store.RolloutCounts, error) {
	out := store.RolloutCounts{ByStatus: map[string]int{}}
	type row struct {
		st   string
		n, f int
	}
	rs, err := all(ctx, s.q, func(r pgx.Row) (row, error) {
		var x row
		err := r.Scan(&x.st, &x.n, &x.f)
		return x, err
	}, `SELECT status, count(*), SUM(failures)::BIGINT FROM rollout_devices WHERE rollout_id = $1 GROUP BY status`, rolloutID)
	for _, r := range rs {
		out.ByStatus[r.st] = r.n
		out.Failures += r.f
	}
	return out, err
}

// RolloutReasons implements store.Rollouts.
func (s *conn) RolloutReasons(ctx context.Context, rolloutID string, limit int) (map[string]int, error) {
	type row struct {
		r string
		n int
	}
	rs, err := all(ctx, s.q, func(r pgx.Row) (row, error) {
		var x row
		err := r.Scan(&x.r, &x.n)
		return x, err
	}, `SELECT reason, count(*) AS n FROM rollout_devices WHERE rollout_id = $1 AND failures > 0 AND reason != ''
		GROUP BY reason ORDER BY n DESC, reason LIMIT $2`, rolloutID, limit)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, r := range rs {
		out[r.r] = r.n
	}
	return out, nil
}
