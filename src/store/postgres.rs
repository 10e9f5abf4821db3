//! The PostgreSQL store (`BERTH_DATABASE_URL=postgres://…`): the same tables and queries as
//! the SQLite store, in PostgreSQL's dialect. One node per database for now: start-up
//! reconciliation still treats every in-flight create in it as its own (issue 10).

use super::records::{
    decode, decode_snapshot, encode, encode_snapshot, idempotency_seen, kind_str, now,
    IDEMPOTENCY_TTL_HOURS,
};
use super::{IdempotencyStart, KeyInfo, Store, StoreError};
use crate::domain::{Sandbox, SandboxId, SandboxState, Snapshot, SnapshotId, TenantId, VolumeName};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Postgres;
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database `url` names, made first if it does not exist yet (and the
    /// role may create one), and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::from_sqlx)?;
        let connect = || {
            PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
        };
        // The database itself first: a role may connect to nothing else.
        let pool = match connect().await {
            Ok(pool) => pool,
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("3D000") => {
                // Missing: made through the `postgres` database. Another node may make it
                // meanwhile; then connecting works all the same.
                let made = Postgres::create_database(url).await;
                match connect().await {
                    Ok(pool) => pool,
                    Err(e) => return Err(StoreError::Unavailable(made.err().unwrap_or(e))),
                }
            }
            Err(e) => return Err(StoreError::Unavailable(e)),
        };
        // Nodes starting at once take turns: sqlx holds an advisory lock while it migrates.
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(PostgresStore { pool })
    }
}

#[async_trait]
impl Store for PostgresStore {
    // `sync`: PostgreSQL's commits are durable when they return (synchronous_commit).

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(())
    }

    async fn ensure_tenant(&self, tenant: &TenantId) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT(id) DO NOTHING",
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
            "INSERT INTO api_keys (hash, tenant_id, prefix, created_at) VALUES ($1, $2, $3, $4)",
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
        let row = sqlx::query("SELECT tenant_id FROM api_keys WHERE hash = $1")
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
        let done = sqlx::query("DELETE FROM api_keys WHERE substr(hash, 1, $1::int) = $2")
            .bind(hash_prefix.len() as i64)
            .bind(hash_prefix)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn insert_sandbox(&self, sandbox: &Sandbox) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO sandboxes (id, tenant_id, state, volume, created_at, data, generation) VALUES ($1, $2, $3, $4, $5, $6, $7)")
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
            "UPDATE sandboxes SET state = $1, volume = $2, data = $3 WHERE id = $4 AND generation = $5",
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
                sqlx::query_scalar("SELECT generation FROM sandboxes WHERE id = $1")
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
            "UPDATE sandboxes SET state = $1, volume = $2, data = $3, generation = $4 WHERE id = $5 AND generation = $6 AND state = 'lost'",
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
            "UPDATE sandboxes SET tenant_id = $1, state = $2, volume = $3, created_at = $4, data = $5 \
             WHERE id = $6 AND tenant_id = $7",
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
        sqlx::query("DELETE FROM sandboxes WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        let row = sqlx::query("SELECT data FROM sandboxes WHERE id = $1")
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
            "SELECT data FROM sandboxes WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR state = $2) \
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
            "SELECT COUNT(*) AS n FROM sandboxes WHERE tenant_id = $1 AND state NOT IN ('terminated', 'failed')",
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
             AND COALESCE(data::jsonb ->> 'stopped_at', created_at) < $1 RETURNING data",
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
                "UPDATE sandboxes SET data = jsonb_set(data::jsonb, '{last_activity_at}', to_jsonb($1::text))::text \
                 WHERE id = $2 AND (data::jsonb ->> 'last_activity_at' IS NULL OR data::jsonb ->> 'last_activity_at' < $3)",
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
        sqlx::query("INSERT INTO snapshots (id, tenant_id, sandbox_id, kind, state, created_at, data) VALUES ($1, $2, $3, $4, $5, $6, $7)")
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
        let done =
            sqlx::query("UPDATE snapshots SET kind = $1, state = $2, data = $3 WHERE id = $4")
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
        let row = sqlx::query("SELECT data FROM snapshots WHERE id = $1")
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
                    "SELECT data FROM snapshots WHERE tenant_id = $1 ORDER BY created_at DESC",
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
        sqlx::query("DELETE FROM snapshots WHERE id = $1")
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
        sqlx::query("INSERT INTO volumes (name, tenant_id, created_at) VALUES ($1, $2, $3) ON CONFLICT(name) DO NOTHING")
            .bind(volume.as_str())
            .bind(tenant.as_str())
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn volume_tenant(&self, volume: &VolumeName) -> Result<Option<TenantId>, StoreError> {
        let row = sqlx::query("SELECT tenant_id FROM volumes WHERE name = $1")
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
            "SELECT name, created_at FROM volumes WHERE tenant_id = $1 ORDER BY created_at DESC",
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
        sqlx::query("DELETE FROM volumes WHERE name = $1")
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
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(&cutoff)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        // The key may go between the two statements (abandoned, expired or cleared by
        // another request): then it is taken again, a few times at most.
        for _ in 0..3 {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (tenant_id, key, body_hash, sandbox_id, created_at, node) VALUES ($1, $2, $3, NULL, $4, $5) \
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
                "SELECT body_hash, sandbox_id FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
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
        sqlx::query(
            "UPDATE idempotency_keys SET sandbox_id = $1 WHERE tenant_id = $2 AND key = $3",
        )
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
            sqlx::query("DELETE FROM idempotency_keys WHERE sandbox_id IS NULL AND node = $1")
                .bind(node)
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn idempotency_abandon(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND sandbox_id IS NULL",
        )
        .bind(tenant.as_str())
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }
}
