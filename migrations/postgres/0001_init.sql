-- berth's schema on PostgreSQL, the same tables as migrations/sqlite/0001_init.sql.
-- Append-only: new changes go in new files. Times are RFC 3339 text, as in SQLite, so
-- both backends order and compare them the same way.
CREATE TABLE tenants (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE api_keys (
    hash TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    prefix TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);

-- The whole sandbox record is kept as JSON in `data`; the columns beside it are the
-- ones queries filter on.
CREATE TABLE sandboxes (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    state TEXT NOT NULL,
    volume TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX sandboxes_by_tenant ON sandboxes(tenant_id, created_at);
CREATE INDEX sandboxes_by_state ON sandboxes(state);

CREATE TABLE volumes (
    name TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE idempotency_keys (
    tenant_id TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    body_hash TEXT NOT NULL,
    sandbox_id TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
