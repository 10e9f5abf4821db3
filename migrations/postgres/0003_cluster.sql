-- A cluster's fencing and per-node bookkeeping. `generation` is the fencing token of a
-- sandbox's ownership: raised when another node takes it over, and required unchanged
-- by every write. `node` on an idempotency key is the node whose create holds it, so a
-- node that restarts forgets only its own unfinished keys.
ALTER TABLE sandboxes ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE idempotency_keys ADD COLUMN node TEXT COLLATE "C" NOT NULL DEFAULT '';
