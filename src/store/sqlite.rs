//! The embedded SQLite store (WAL mode, one file in the data dir).

use super::records::{
    decode, decode_snapshot, encode, encode_snapshot, idempotency_seen, kind_str, now,
    IDEMPOTENCY_TTL_HOURS,
};
use super::{IdempotencyStart, KeyInfo, Store, StoreError};
use crate::domain::{Sandbox, SandboxId, SandboxState, Snapshot, SnapshotId, TenantId, VolumeName};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::from_sqlx)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(StoreError::Unavailable)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(SqliteStore { pool })
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// In WAL mode with `synchronous = NORMAL` a commit is durable once the WAL is
    /// synced, which a checkpoint does first.
    async fn sync(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(())
    }

    async fn ensure_tenant(&self, tenant: &TenantId) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tenants (id, created_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn tenant_count(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM tenants")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(row.get::<i64, _>("n") as u64)
    }

    async fn add_api_key(
        &self,
        tenant: &TenantId,
        key_hash: &str,
        prefix: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (hash, tenant_id, prefix, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(key_hash)
        .bind(tenant.as_str())
        .bind(prefix)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn tenant_for_key(&self, key_hash: &str) -> Result<Option<TenantId>, StoreError> {
        let row = sqlx::query("SELECT tenant_id FROM api_keys WHERE hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.map(|r| TenantId::parse(r.get("tenant_id")).map_err(StoreError::Corrupt))
            .transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT hash, prefix, tenant_id, created_at FROM api_keys ORDER BY tenant_id, created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|r| {
                let hash: String = r.get("hash");
                Ok(KeyInfo {
                    id: hash[..hash.len().min(12)].to_string(),
                    prefix: r.get("prefix"),
                    tenant: TenantId::parse(r.get("tenant_id")).map_err(StoreError::Corrupt)?,
                    created_at: r.get("created_at"),
                })
            })
            .collect()
    }

    async fn revoke_api_keys(&self, hash_prefix: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM api_keys WHERE substr(hash, 1, ?) = ?")
            .bind(hash_prefix.len() as i64)
            .bind(hash_prefix)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn insert_sandbox(&self, sandbox: &Sandbox) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO sandboxes (id, tenant_id, state, volume, created_at, data, generation) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(sandbox.id.as_str())
            .bind(sandbox.tenant.as_str())
            .bind(sandbox.state.as_str())
            .bind(sandbox.volume.as_str())
            .bind(sandbox.created_at.to_rfc3339())
            .bind(encode(sandbox)?)
            .bind(sandbox.generation as i64)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn update_sandbox(&self, sandbox: &Sandbox) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE sandboxes SET state = ?, volume = ?, data = ? WHERE id = ? AND generation = ?",
        )
        .bind(sandbox.state.as_str())
        .bind(sandbox.volume.as_str())
        .bind(encode(sandbox)?)
        .bind(sandbox.id.as_str())
        .bind(sandbox.generation as i64)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            let current: Option<i64> =
                sqlx::query_scalar("SELECT generation FROM sandboxes WHERE id = ?")
                    .bind(sandbox.id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
            return Err(super::not_written(sandbox, current));
        }
        Ok(())
    }

    async fn take_over_sandbox(&self, sandbox: &Sandbox) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sandboxes SET state = ?, volume = ?, data = ?, generation = ? WHERE id = ? AND generation = ? AND state = 'lost'",
        )
        .bind(sandbox.state.as_str())
        .bind(sandbox.volume.as_str())
        .bind(encode(sandbox)?)
        .bind(sandbox.generation as i64)
        .bind(sandbox.id.as_str())
        .bind(sandbox.generation as i64 - 1)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    async fn reassign_sandbox(
        &self,
        sandbox: &Sandbox,
        from: &TenantId,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sandboxes SET tenant_id = ?, state = ?, volume = ?, created_at = ?, data = ? \
             WHERE id = ? AND tenant_id = ?",
        )
        .bind(sandbox.tenant.as_str())
        .bind(sandbox.state.as_str())
        .bind(sandbox.volume.as_str())
        .bind(sandbox.created_at.to_rfc3339())
        .bind(encode(sandbox)?)
        .bind(sandbox.id.as_str())
        .bind(from.as_str())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_sandbox(&self, id: &SandboxId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sandboxes WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        let row = sqlx::query("SELECT data FROM sandboxes WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.map(|r| decode(r.get("data"))).transpose()
    }

    async fn list_sandboxes(
        &self,
        tenant: Option<&TenantId>,
        state: Option<SandboxState>,
    ) -> Result<Vec<Sandbox>, StoreError> {
        let rows = sqlx::query(
            "SELECT data FROM sandboxes WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR state = ?2) \
             ORDER BY created_at DESC, id",
        )
        .bind(tenant.map(|t| t.as_str().to_string()))
        .bind(state.map(|s| s.as_str()))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(|r| decode(r.get("data"))).collect()
    }

    async fn count_live_sandboxes(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM sandboxes WHERE tenant_id = ? AND state NOT IN ('terminated', 'failed')",
        )
        .bind(tenant.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(row.get::<i64, _>("n") as u64)
    }

    async fn count_by_state(&self) -> Result<Vec<(SandboxState, u64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM sandboxes GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|r| {
                let state: String = r.get("state");
                let state = SandboxState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown state {state:?}")))?;
                Ok((state, r.get::<i64, _>("n") as u64))
            })
            .collect()
    }

    async fn prune_ended(&self, cutoff: DateTime<Utc>) -> Result<Vec<Sandbox>, StoreError> {
        let cutoff = cutoff.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let rows = sqlx::query(
            "DELETE FROM sandboxes WHERE state IN ('terminated', 'failed') \
             AND COALESCE(json_extract(data, '$.stopped_at'), created_at) < ? RETURNING data",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(|r| decode(r.get("data"))).collect()
    }

    async fn record_activity(&self, seen: &[(SandboxId, DateTime<Utc>)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        for (id, at) in seen {
            sqlx::query(
                "UPDATE sandboxes SET data = json_set(data, '$.last_activity_at', ?) WHERE id = ? \
                 AND (json_extract(data, '$.last_activity_at') IS NULL OR json_extract(data, '$.last_activity_at') < ?)",
            )
            .bind(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .bind(id.as_str())
            .bind(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        }
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO snapshots (id, tenant_id, sandbox_id, kind, state, created_at, data) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(snapshot.id.as_str())
            .bind(snapshot.tenant.as_str())
            .bind(snapshot.sandbox_id.as_str())
            .bind(kind_str(snapshot))
            .bind(snapshot.state.as_str())
            .bind(snapshot.created_at.to_rfc3339())
            .bind(encode_snapshot(snapshot)?)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn update_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE snapshots SET kind = ?, state = ?, data = ? WHERE id = ?")
            .bind(kind_str(snapshot))
            .bind(snapshot.state.as_str())
            .bind(encode_snapshot(snapshot)?)
            .bind(snapshot.id.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Missing(format!("snapshot {}", snapshot.id)));
        }
        Ok(())
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query("SELECT data FROM snapshots WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.map(|r| decode_snapshot(r.get("data"))).transpose()
    }

    async fn list_snapshots(&self, tenant: Option<&TenantId>) -> Result<Vec<Snapshot>, StoreError> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(
                    "SELECT data FROM snapshots WHERE tenant_id = ? ORDER BY created_at DESC",
                )
                .bind(t.as_str())
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query("SELECT data FROM snapshots ORDER BY created_at DESC")
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|r| decode_snapshot(r.get("data")))
            .collect()
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM snapshots WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn insert_volume(
        &self,
        tenant: &TenantId,
        volume: &VolumeName,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO volumes (name, tenant_id, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING")
            .bind(volume.as_str())
            .bind(tenant.as_str())
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn volume_tenant(&self, volume: &VolumeName) -> Result<Option<TenantId>, StoreError> {
        let row = sqlx::query("SELECT tenant_id FROM volumes WHERE name = ?")
            .bind(volume.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.map(|r| TenantId::parse(r.get("tenant_id")).map_err(StoreError::Corrupt))
            .transpose()
    }

    async fn list_volumes(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(VolumeName, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, created_at FROM volumes WHERE tenant_id = ? ORDER BY created_at DESC",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|r| {
                let name = VolumeName::parse(r.get("name")).map_err(StoreError::Corrupt)?;
                let at = DateTime::parse_from_rfc3339(r.get("created_at"))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?
                    .with_timezone(&Utc);
                Ok((name, at))
            })
            .collect()
    }

    async fn delete_volume(&self, volume: &VolumeName) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM volumes WHERE name = ?")
            .bind(volume.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn idempotency_start(
        &self,
        tenant: &TenantId,
        key: &str,
        body_hash: &str,
        node: &str,
    ) -> Result<IdempotencyStart, StoreError> {
        let cutoff = (Utc::now() - chrono::Duration::hours(IDEMPOTENCY_TTL_HOURS)).to_rfc3339();
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(&cutoff)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        // The key may go between the two statements (abandoned, expired or cleared by
        // another request): then it is taken again, a few times at most.
        for _ in 0..3 {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (tenant_id, key, body_hash, sandbox_id, created_at, node) VALUES (?, ?, ?, NULL, ?, ?) \
                 ON CONFLICT(tenant_id, key) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(key)
            .bind(body_hash)
            .bind(now())
            .bind(node)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
            if inserted.rows_affected() == 1 {
                return Ok(IdempotencyStart::Fresh);
            }
            let row = sqlx::query(
                "SELECT body_hash, sandbox_id FROM idempotency_keys WHERE tenant_id = ? AND key = ?",
            )
            .bind(tenant.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
            if let Some(row) = row {
                return Ok(idempotency_seen(
                    row.get("body_hash"),
                    row.get("sandbox_id"),
                    body_hash,
                ));
            }
        }
        Err(StoreError::Missing(format!(
            "idempotency key {key:?} (it kept going)"
        )))
    }

    async fn idempotency_finish(
        &self,
        tenant: &TenantId,
        key: &str,
        sandbox: &SandboxId,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE idempotency_keys SET sandbox_id = ? WHERE tenant_id = ? AND key = ?")
            .bind(sandbox.as_str())
            .bind(tenant.as_str())
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn idempotency_clear_in_flight(&self, node: &str) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM idempotency_keys WHERE sandbox_id IS NULL AND node = ?")
                .bind(node)
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn idempotency_abandon(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ? AND sandbox_id IS NULL",
        )
        .bind(tenant.as_str())
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }
}
