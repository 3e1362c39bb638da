-- Migration 2 (SQLite's migration 9): incident response and fleet
-- statistics: revoked keys, devices by assignment and by what they run,
-- verification refusals by class, recoveries from failed deployments.
CREATE TABLE revoked_keys (
	key_id TEXT COLLATE "C" PRIMARY KEY, kind TEXT NOT NULL, reason TEXT NOT NULL, revoked_by TEXT NOT NULL, revoked_at BIGINT NOT NULL
);
CREATE INDEX assignments_target ON assignments (target, device_id);
CREATE INDEX devices_version ON devices (revoked_at, version, security_version);
CREATE INDEX rollout_devices_installed ON rollout_devices (status, updated_at);
CREATE TABLE refusal_counts (class TEXT COLLATE "C" PRIMARY KEY, n BIGINT NOT NULL);
CREATE TABLE recoveries (
	device_id TEXT COLLATE "C" NOT NULL, rollout_id TEXT COLLATE "C" NOT NULL, opened_at BIGINT NOT NULL, closed_at BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX recoveries_open ON recoveries (device_id) WHERE closed_at = 0;
CREATE INDEX recoveries_rollout ON recoveries (rollout_id, closed_at);
