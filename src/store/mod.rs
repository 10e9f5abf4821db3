//! Persistent state behind one trait: tenants, API keys, sandboxes, volumes and
//! idempotency keys. The backend is chosen once, from the database URL: the embedded
//! SQLite file, or PostgreSQL for several nodes.

mod postgres;
mod records;
mod sqlite;

use crate::domain::{Sandbox, SandboxId, SandboxState, Snapshot, SnapshotId, TenantId, VolumeName};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error("{0} already exists")]
    Duplicate(String),
    /// The record to update is gone (pruned or deleted meanwhile).
    #[error("{0} is gone")]
    Missing(String),
    /// The write held an older fencing token than the record: another node took the
    /// sandbox over since this one read it.
    #[error(
        "sandbox {id} is now held at generation {current}, not {held}: another node took it over"
    )]
    Fenced { id: String, held: u64, current: u64 },
}

impl StoreError {
    pub(crate) fn from_sqlx(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(err)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Duplicate(db.message().to_string())
            }
            // PostgreSQL's connection exceptions (08…), shutdowns (57P…), too many
            // connections (53300) and a read-only server after a failover (25006): the
            // server, not the query, is the trouble.
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    c.starts_with("08") || c.starts_with("57P") || c == "53300" || c == "25006"
                }) =>
            {
                StoreError::Unavailable(err)
            }
            sqlx::Error::Protocol(_) => StoreError::Unavailable(err),
            _ => StoreError::Query(err),
        }
    }
}

/// An API key as listed: never the key, only its id (a prefix of its hash) and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub prefix: String,
    pub tenant: TenantId,
    pub created_at: String,
}

/// How an idempotent create begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// First use of the key: go ahead, then `finish`.
    Fresh,
    /// The first request with this key is still running.
    InFlight,
    /// The key was used with a different body.
    BodyMismatch,
    /// Already done: answer with this sandbox.
    Done(SandboxId),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;
    /// Makes every commit so far durable against a power cut (before berth removes data
    /// that a rolled-back commit would still need, such as an archived sandbox's volume).
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn ensure_tenant(&self, tenant: &TenantId) -> Result<(), StoreError>;
    async fn tenant_count(&self) -> Result<u64, StoreError>;
    async fn add_api_key(
        &self,
        tenant: &TenantId,
        key_hash: &str,
        prefix: &str,
    ) -> Result<(), StoreError>;
    async fn tenant_for_key(&self, key_hash: &str) -> Result<Option<TenantId>, StoreError>;
    async fn list_api_keys(&self) -> Result<Vec<KeyInfo>, StoreError>;
    /// Removes the keys whose hash starts with `hash_prefix`; returns how many.
    async fn revoke_api_keys(&self, hash_prefix: &str) -> Result<u64, StoreError>;

    async fn insert_sandbox(&self, sandbox: &Sandbox) -> Result<(), StoreError>;
    /// Saves `sandbox` if the record is still at its generation; `Fenced` otherwise.
    async fn update_sandbox(&self, sandbox: &Sandbox) -> Result<(), StoreError>;
    /// Saves `sandbox` (its node and a generation one above the record's) if the record
    /// is still `lost` at the generation below; false when another take-over came first,
    /// or its node took it up again.
    async fn take_over_sandbox(&self, sandbox: &Sandbox) -> Result<bool, StoreError>;
    /// Saves `sandbox` as its tenant's if it still belongs to `from`; false when it does
    /// not (another claim took it first). How a pooled sandbox is handed out once.
    async fn reassign_sandbox(
        &self,
        sandbox: &Sandbox,
        from: &TenantId,
    ) -> Result<bool, StoreError>;
    /// Forgets a record at once (a pooled sandbox that was removed unused).
    async fn delete_sandbox(&self, id: &SandboxId) -> Result<(), StoreError>;
    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError>;
    /// A tenant's sandboxes (all tenants' with `None`), newest first, optionally by state.
    async fn list_sandboxes(
        &self,
        tenant: Option<&TenantId>,
        state: Option<SandboxState>,
    ) -> Result<Vec<Sandbox>, StoreError>;
    /// Sandboxes of a tenant that hold resources: neither terminated nor failed.
    async fn count_live_sandboxes(&self, tenant: &TenantId) -> Result<u64, StoreError>;
    /// Sandboxes of every tenant by state.
    async fn count_by_state(&self) -> Result<Vec<(SandboxState, u64)>, StoreError>;
    /// Removes terminated and failed records that ended before `cutoff`; returns them.
    async fn prune_ended(&self, cutoff: DateTime<Utc>) -> Result<Vec<Sandbox>, StoreError>;
    /// Records activity times (kept in memory on the hot path, flushed in batches).
    async fn record_activity(&self, seen: &[(SandboxId, DateTime<Utc>)]) -> Result<(), StoreError>;

    async fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
    async fn update_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
    async fn get_snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>, StoreError>;
    /// A tenant's snapshots (every tenant's with `None`), newest first, archives included.
    async fn list_snapshots(&self, tenant: Option<&TenantId>) -> Result<Vec<Snapshot>, StoreError>;
    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), StoreError>;

    async fn insert_volume(&self, tenant: &TenantId, volume: &VolumeName)
        -> Result<(), StoreError>;
    async fn volume_tenant(&self, volume: &VolumeName) -> Result<Option<TenantId>, StoreError>;
    async fn list_volumes(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(VolumeName, DateTime<Utc>)>, StoreError>;
    async fn delete_volume(&self, volume: &VolumeName) -> Result<(), StoreError>;

    /// Takes `key` for a create by `node` ("" on a single node), or says how it was used.
    async fn idempotency_start(
        &self,
        tenant: &TenantId,
        key: &str,
        body_hash: &str,
        node: &str,
    ) -> Result<IdempotencyStart, StoreError>;
    async fn idempotency_finish(
        &self,
        tenant: &TenantId,
        key: &str,
        sandbox: &SandboxId,
    ) -> Result<(), StoreError>;
    async fn idempotency_abandon(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError>;
    /// Forgets `node`'s keys whose first request never finished (it stopped mid-create);
    /// other nodes' creates under way keep theirs.
    async fn idempotency_clear_in_flight(&self, node: &str) -> Result<u64, StoreError>;
}

/// Why an update of `sandbox` wrote nothing, given the record's generation now.
fn not_written(sandbox: &Sandbox, current: Option<i64>) -> StoreError {
    match current {
        Some(current) => StoreError::Fenced {
            id: sandbox.id.to_string(),
            held: sandbox.generation,
            current: current as u64,
        },
        None => StoreError::Missing(format!("sandbox {}", sandbox.id)),
    }
}

/// Opens the store named by `url` and brings its schema up to date.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

#[cfg(test)]
mod tests;
