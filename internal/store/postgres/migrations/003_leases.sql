-- Migration 3: leases (store.Leases), so that work meant to happen once
-- across replicas (the background work, a push) has one holder at a
-- time. Expiry is the database's clock, so replicas whose clocks
-- disagree agree on who holds a lease.
CREATE TABLE leases (
	name TEXT COLLATE "C" PRIMARY KEY, holder TEXT COLLATE "C" NOT NULL, expires_at TIMESTAMPTZ NOT NULL
);
