-- A cluster's fencing and per-node bookkeeping (as in the PostgreSQL schema; a single
-- node keeps them at their defaults). `generation` is the fencing token of a sandbox's
-- ownership; `node` on an idempotency key is the node whose create holds it.
ALTER TABLE sandboxes ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE idempotency_keys ADD COLUMN node TEXT NOT NULL DEFAULT '';
