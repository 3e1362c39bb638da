-- Migration 4: each term of a lease gets a token larger than the last
-- (store.Leases), which writes made under a lease check (store.WithFence).
-- A released lease keeps its row, expired, so its tokens never go back.
ALTER TABLE leases ADD COLUMN token BIGINT NOT NULL DEFAULT 1;
