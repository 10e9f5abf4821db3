-- berth's embedded schema (SQLite). Append-only: new changes go in new files.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    hash TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    prefix TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- The whole sandbox record is kept as JSON in `data`; the columns beside it are the
-- ones queries filter on.
CREATE TABLE sandboxes (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    state TEXT NOT NULL,
    volume TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX sandboxes_by_tenant ON sandboxes(tenant_id, created_at);
CREATE INDEX sandboxes_by_state ON sandboxes(state);

CREATE TABLE volumes (
    name TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    created_at TEXT NOT NULL
);

CREATE TABLE idempotency_keys (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    sandbox_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
