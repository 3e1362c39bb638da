-- Migration 1: the schema of SQLite's migrations 1 to 8, in one step (a
-- PostgreSQL store has no older data to carry). Times are nanoseconds
-- since the Unix epoch, 0 for none, as in SQLite, so both stores share
-- their code's shape. Columns that are sorted or paged on use the "C"
-- collation: byte order, as SQLite sorts, whatever the database's locale.
CREATE TABLE metadata (
	repo TEXT COLLATE "C" NOT NULL, role TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, data BYTEA NOT NULL,
	PRIMARY KEY (repo, role, version)
);
CREATE TABLE devices (
	id TEXT COLLATE "C" PRIMARY KEY, hardware_id TEXT COLLATE "C" NOT NULL, cert_serial TEXT COLLATE "C" NOT NULL,
	enrolled_at BIGINT NOT NULL, revoked_at BIGINT NOT NULL DEFAULT 0,
	version TEXT NOT NULL DEFAULT '', security_version BIGINT NOT NULL DEFAULT 0,
	report_counter BIGINT NOT NULL DEFAULT 0, last_status TEXT NOT NULL DEFAULT '',
	last_seen BIGINT NOT NULL DEFAULT 0,
	anomalies BIGINT NOT NULL DEFAULT 0, last_anomaly TEXT NOT NULL DEFAULT '',
	tags TEXT NOT NULL DEFAULT '{}', last_refusal TEXT NOT NULL DEFAULT ''
);
CREATE INDEX devices_hardware ON devices (hardware_id);
CREATE TABLE enroll_tokens (
	hash TEXT COLLATE "C" PRIMARY KEY, hardware_id TEXT NOT NULL, expires BIGINT NOT NULL,
	used_at BIGINT NOT NULL DEFAULT 0, used_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE operator_tokens (
	hash TEXT COLLATE "C" PRIMARY KEY, name TEXT COLLATE "C" NOT NULL UNIQUE, role TEXT NOT NULL,
	created_at BIGINT NOT NULL, revoked_at BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE audit (seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, entry TEXT NOT NULL, at BIGINT NOT NULL);
CREATE TABLE audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL, pruned_at BIGINT NOT NULL);
CREATE TABLE log_entries (target TEXT COLLATE "C" PRIMARY KEY, idx BIGINT NOT NULL, leaf BYTEA NOT NULL);
CREATE TABLE assignments (
	device_id TEXT COLLATE "C" PRIMARY KEY REFERENCES devices (id), target TEXT NOT NULL,
	assigned_at BIGINT NOT NULL, seq BIGINT NOT NULL
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE chunks (hash TEXT COLLATE "C" PRIMARY KEY, blob TEXT COLLATE "C" NOT NULL, off BIGINT NOT NULL, length BIGINT NOT NULL);
CREATE TABLE revoked_certs (serial TEXT COLLATE "C" PRIMARY KEY, device_id TEXT NOT NULL, revoked_at BIGINT NOT NULL);
CREATE TABLE pending_push (id INTEGER PRIMARY KEY CHECK (id = 1), data BYTEA NOT NULL);
CREATE TABLE reports (
	device_id TEXT COLLATE "C" NOT NULL, counter BIGINT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
	version TEXT NOT NULL, security_version BIGINT NOT NULL, at BIGINT NOT NULL,
	PRIMARY KEY (device_id, counter)
);
CREATE TABLE report_counts (device_id TEXT COLLATE "C" NOT NULL, status TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (device_id, status));
CREATE TABLE rollouts (
	id TEXT COLLATE "C" PRIMARY KEY, seq BIGINT NOT NULL UNIQUE, target TEXT NOT NULL, security_version BIGINT NOT NULL,
	selector TEXT NOT NULL, spec BYTEA NOT NULL, state TEXT NOT NULL, phase INTEGER NOT NULL, phase_started BIGINT NOT NULL,
	threshold INTEGER NOT NULL, eligible INTEGER NOT NULL, paused_reason TEXT NOT NULL, created_by TEXT NOT NULL, approved_by TEXT NOT NULL,
	created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL
);
CREATE INDEX rollouts_state ON rollouts (state);
CREATE TABLE rollout_devices (
	rollout_id TEXT COLLATE "C" NOT NULL, device_id TEXT COLLATE "C" NOT NULL, status TEXT NOT NULL, offered_at BIGINT NOT NULL,
	failures INTEGER NOT NULL, cooldown_until BIGINT NOT NULL, reason TEXT COLLATE "C" NOT NULL, updated_at BIGINT NOT NULL,
	PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX rollout_devices_status ON rollout_devices (rollout_id, status);
CREATE INDEX rollout_devices_device ON rollout_devices (device_id);
