-- Snapshots and archived volumes (zstd tars in the archive store). The whole record is
-- JSON in `data`; the columns beside it are what queries filter on.
CREATE TABLE snapshots (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    sandbox_id TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX snapshots_by_tenant ON snapshots(tenant_id, created_at);
