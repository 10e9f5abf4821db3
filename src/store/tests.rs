//! The store's contract, checked against each backend: SQLite always, and PostgreSQL on
//! the server `BERTH_TEST_POSTGRES_URL` names (`postgres://USER@HOST:PORT`, no database:
//! each test makes a database of its own there). `scripts/test.sh` starts a private one;
//! under CI a missing server is a failure, not a skip.

use super::{open, IdempotencyStart, Store, StoreError};
use crate::domain::{
    Sandbox, SandboxId, SandboxState, Snapshot, SnapshotId, SnapshotKind, SnapshotState, TenantId,
    VolumeName,
};
use chrono::{Duration, Utc};
use std::sync::Arc;

/// One backend under test; the temp dir or database goes with it.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("berth.db").display());
    let mut all = vec![Backend {
        name: "sqlite",
        store: open(&url).await.unwrap(),
        _dir: Some(dir),
    }];
    match std::env::var("BERTH_TEST_POSTGRES_URL") {
        Ok(server) => all.push(Backend {
            name: "postgres",
            store: open(&fresh_database(&server)).await.unwrap(),
            _dir: None,
        }),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI runs the store's tests on PostgreSQL too: set BERTH_TEST_POSTGRES_URL")
        }
        Err(_) => eprintln!("BERTH_TEST_POSTGRES_URL is not set: PostgreSQL not tested"),
    }
    all
}

/// A database on `server` that does not exist yet (the store makes it); its URL.
fn fresh_database(server: &str) -> String {
    let name = uuid::Uuid::new_v4().simple();
    format!("{}/berth_test_{name}", server.trim_end_matches('/'))
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// A sandbox of `owner`, made `ago` before now.
fn sandbox(owner: &str, ago: Duration) -> Sandbox {
    let mut sandbox = Sandbox::example(&SandboxId::generate());
    sandbox.tenant = tenant(owner);
    sandbox.created_at = Utc::now() - ago;
    sandbox
}

fn snapshot(owner: &str, of: &SandboxId, ago: Duration) -> Snapshot {
    Snapshot {
        id: SnapshotId::generate(),
        tenant: tenant(owner),
        sandbox_id: of.clone(),
        kind: SnapshotKind::Snapshot,
        state: SnapshotState::Creating,
        label: Some("before".into()),
        size_bytes: 0,
        sha256: None,
        workdir: "/workspace".into(),
        created_at: Utc::now() - ago,
        reason: None,
    }
}

#[tokio::test]
async fn tenants_and_keys() {
    for Backend { name, store, .. } in backends().await {
        let a = tenant("acme");
        store.ensure_tenant(&a).await.unwrap();
        store.ensure_tenant(&a).await.unwrap();
        assert_eq!(store.tenant_count().await.unwrap(), 1, "{name}");
        store
            .add_api_key(&a, "abcdef0123456789", "bk_ab")
            .await
            .unwrap();
        let again = store.add_api_key(&a, "abcdef0123456789", "bk_ab").await;
        assert!(
            matches!(again, Err(StoreError::Duplicate(_))),
            "{name}: {again:?}"
        );
        assert_eq!(
            store.tenant_for_key("abcdef0123456789").await.unwrap(),
            Some(a.clone())
        );
        assert_eq!(store.tenant_for_key("nope").await.unwrap(), None, "{name}");
        let keys = store.list_api_keys().await.unwrap();
        assert_eq!(keys.len(), 1, "{name}");
        assert_eq!(
            (keys[0].id.as_str(), keys[0].prefix.as_str()),
            ("abcdef012345", "bk_ab")
        );
        assert_eq!(store.revoke_api_keys("abcdef").await.unwrap(), 1, "{name}");
        assert_eq!(store.revoke_api_keys("abcdef").await.unwrap(), 0, "{name}");
        assert_eq!(
            store.tenant_for_key("abcdef0123456789").await.unwrap(),
            None,
            "{name}"
        );
    }
}

#[tokio::test]
async fn sandboxes_are_kept_whole_listed_newest_first_and_counted() {
    for Backend { name, store, .. } in backends().await {
        for t in ["t", "u"] {
            store.ensure_tenant(&tenant(t)).await.unwrap();
        }
        let old = sandbox("t", Duration::hours(2));
        let new = sandbox("t", Duration::hours(1));
        let other = sandbox("u", Duration::minutes(1));
        for sb in [&old, &new, &other] {
            store.insert_sandbox(sb).await.unwrap();
        }
        let dup = store.insert_sandbox(&old).await;
        assert!(
            matches!(dup, Err(StoreError::Duplicate(_))),
            "{name}: {dup:?}"
        );
        assert_eq!(
            store.get_sandbox(&old.id).await.unwrap().as_ref(),
            Some(&old),
            "{name}"
        );
        assert_eq!(
            store.get_sandbox(&SandboxId::generate()).await.unwrap(),
            None
        );

        let mut stopped = new.clone();
        stopped.state = SandboxState::Stopped;
        stopped.reason = Some("idle".into());
        store.update_sandbox(&stopped).await.unwrap();
        assert_eq!(
            store.get_sandbox(&new.id).await.unwrap(),
            Some(stopped.clone())
        );
        let gone = store.update_sandbox(&sandbox("t", Duration::zero())).await;
        assert!(
            matches!(gone, Err(StoreError::Missing(_))),
            "{name}: {gone:?}"
        );

        let ids = |list: Vec<Sandbox>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
        let all = store.list_sandboxes(None, None).await.unwrap();
        assert_eq!(
            ids(all),
            [other.id.clone(), new.id.clone(), old.id.clone()],
            "{name}"
        );
        let of_t = store
            .list_sandboxes(Some(&tenant("t")), None)
            .await
            .unwrap();
        assert_eq!(ids(of_t), [new.id.clone(), old.id.clone()], "{name}");
        let stopped_of_t = store
            .list_sandboxes(Some(&tenant("t")), Some(SandboxState::Stopped))
            .await
            .unwrap();
        assert_eq!(ids(stopped_of_t), std::slice::from_ref(&new.id), "{name}");

        let mut ended = old.clone();
        ended.state = SandboxState::Terminated;
        store.update_sandbox(&ended).await.unwrap();
        assert_eq!(
            store.count_live_sandboxes(&tenant("t")).await.unwrap(),
            1,
            "{name}"
        );
        let mut by_state = store.count_by_state().await.unwrap();
        by_state.sort_by_key(|(s, _)| s.as_str());
        assert_eq!(
            by_state,
            [
                (SandboxState::Running, 1),
                (SandboxState::Stopped, 1),
                (SandboxState::Terminated, 1)
            ],
            "{name}"
        );

        // A pooled sandbox goes to one claimant only.
        let mut claimed = other.clone();
        claimed.tenant = tenant("t");
        assert!(
            !store
                .reassign_sandbox(&claimed, &tenant("t"))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            store
                .reassign_sandbox(&claimed, &tenant("u"))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .reassign_sandbox(&claimed, &tenant("u"))
                .await
                .unwrap(),
            "{name}"
        );
        assert_eq!(
            store.get_sandbox(&other.id).await.unwrap().unwrap().tenant,
            tenant("t")
        );

        store.delete_sandbox(&other.id).await.unwrap();
        assert_eq!(store.get_sandbox(&other.id).await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn ended_sandboxes_are_pruned_after_the_cutoff_and_activity_only_moves_forward() {
    for Backend { name, store, .. } in backends().await {
        store.ensure_tenant(&tenant("t")).await.unwrap();
        let mut long_ago = sandbox("t", Duration::days(3));
        long_ago.state = SandboxState::Terminated;
        long_ago.stopped_at = Some(Utc::now() - Duration::days(2));
        let mut lately = sandbox("t", Duration::days(3));
        lately.state = SandboxState::Failed;
        lately.stopped_at = Some(Utc::now() - Duration::minutes(5));
        let mut live = sandbox("t", Duration::days(3));
        live.stopped_at = Some(Utc::now() - Duration::days(2));
        for sb in [&long_ago, &lately, &live] {
            store.insert_sandbox(sb).await.unwrap();
        }
        let pruned = store
            .prune_ended(Utc::now() - Duration::days(1))
            .await
            .unwrap();
        assert_eq!(pruned, [long_ago.clone()], "{name}");
        assert_eq!(
            store.get_sandbox(&long_ago.id).await.unwrap(),
            None,
            "{name}"
        );
        assert!(
            store.get_sandbox(&lately.id).await.unwrap().is_some(),
            "{name}"
        );

        let later = Utc::now();
        let earlier = later - Duration::minutes(10);
        store
            .record_activity(&[(live.id.clone(), later)])
            .await
            .unwrap();
        store
            .record_activity(&[(live.id.clone(), earlier)])
            .await
            .unwrap();
        let seen = store.get_sandbox(&live.id).await.unwrap().unwrap();
        assert_eq!(
            seen.last_activity_at.map(|t| t.timestamp_millis()),
            Some(later.timestamp_millis()),
            "{name}"
        );
        assert_eq!(
            seen.limits, live.limits,
            "{name}: the rest of the record is intact"
        );
    }
}

#[tokio::test]
async fn snapshots_and_volumes() {
    for Backend { name, store, .. } in backends().await {
        for t in ["t", "u"] {
            store.ensure_tenant(&tenant(t)).await.unwrap();
        }
        let of = SandboxId::generate();
        let first = snapshot("t", &of, Duration::hours(1));
        let second = snapshot("t", &of, Duration::minutes(1));
        let theirs = snapshot("u", &of, Duration::minutes(2));
        for s in [&first, &second, &theirs] {
            store.insert_snapshot(s).await.unwrap();
        }
        let mut ready = first.clone();
        ready.state = SnapshotState::Ready;
        ready.size_bytes = 1 << 30;
        ready.sha256 = Some("ab".repeat(32));
        store.update_snapshot(&ready).await.unwrap();
        assert_eq!(
            store.get_snapshot(&first.id).await.unwrap(),
            Some(ready),
            "{name}"
        );
        let missing = store
            .update_snapshot(&snapshot("t", &of, Duration::zero()))
            .await;
        assert!(
            matches!(missing, Err(StoreError::Missing(_))),
            "{name}: {missing:?}"
        );
        let listed: Vec<SnapshotId> = store
            .list_snapshots(Some(&tenant("t")))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(listed, [second.id.clone(), first.id.clone()], "{name}");
        assert_eq!(store.list_snapshots(None).await.unwrap().len(), 3, "{name}");
        store.delete_snapshot(&second.id).await.unwrap();
        assert_eq!(
            store.get_snapshot(&second.id).await.unwrap(),
            None,
            "{name}"
        );

        let volume = VolumeName::parse("data-1").unwrap();
        store.insert_volume(&tenant("t"), &volume).await.unwrap();
        // A second claim does not move it to another tenant.
        store.insert_volume(&tenant("u"), &volume).await.unwrap();
        assert_eq!(
            store.volume_tenant(&volume).await.unwrap(),
            Some(tenant("t")),
            "{name}"
        );
        let listed = store.list_volumes(&tenant("t")).await.unwrap();
        assert_eq!(listed.len(), 1, "{name}");
        assert_eq!(listed[0].0, volume, "{name}");
        assert!(
            store.list_volumes(&tenant("u")).await.unwrap().is_empty(),
            "{name}"
        );
        store.delete_volume(&volume).await.unwrap();
        assert_eq!(store.volume_tenant(&volume).await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn an_idempotency_key_is_taken_once_even_by_racing_requests() {
    for Backend { name, store, .. } in backends().await {
        let t = tenant("t");
        store.ensure_tenant(&t).await.unwrap();
        // Sixteen requests with one key at once (on PostgreSQL, as from several nodes):
        // exactly one goes ahead.
        let mut racing = Vec::new();
        for _ in 0..16 {
            let (store, t) = (store.clone(), t.clone());
            racing.push(tokio::spawn(async move {
                store
                    .idempotency_start(&t, "k1", "body", "n1")
                    .await
                    .unwrap()
            }));
        }
        let mut fresh = 0;
        for run in racing {
            match run.await.unwrap() {
                IdempotencyStart::Fresh => fresh += 1,
                IdempotencyStart::InFlight => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(fresh, 1, "{name}");
        let mismatch = store
            .idempotency_start(&t, "k1", "other", "n1")
            .await
            .unwrap();
        assert_eq!(mismatch, IdempotencyStart::BodyMismatch, "{name}");
        let id = SandboxId::generate();
        store.idempotency_finish(&t, "k1", &id).await.unwrap();
        let done = store
            .idempotency_start(&t, "k1", "body", "n1")
            .await
            .unwrap();
        assert_eq!(done, IdempotencyStart::Done(id), "{name}");
        // A finished key is not abandoned; an in-flight one is, and so are those left
        // in flight by a server that stopped.
        store.idempotency_abandon(&t, "k1").await.unwrap();
        assert!(matches!(
            store
                .idempotency_start(&t, "k1", "body", "n1")
                .await
                .unwrap(),
            IdempotencyStart::Done(_)
        ));
        assert_eq!(
            store.idempotency_start(&t, "k2", "b", "n1").await.unwrap(),
            IdempotencyStart::Fresh
        );
        store.idempotency_abandon(&t, "k2").await.unwrap();
        assert_eq!(
            store.idempotency_start(&t, "k2", "b", "n1").await.unwrap(),
            IdempotencyStart::Fresh
        );
        // Another node's restart leaves n1's create under way alone; n1's own clears it.
        assert_eq!(
            store.idempotency_start(&t, "k3", "b", "n2").await.unwrap(),
            IdempotencyStart::Fresh
        );
        assert_eq!(
            store.idempotency_clear_in_flight("n2").await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            store.idempotency_start(&t, "k2", "b", "n2").await.unwrap(),
            IdempotencyStart::InFlight,
            "{name}"
        );
        assert_eq!(
            store.idempotency_clear_in_flight("n1").await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            store.idempotency_start(&t, "k2", "c", "n1").await.unwrap(),
            IdempotencyStart::Fresh
        );
        store.ping().await.unwrap();
        store.sync().await.unwrap();
    }
}

#[tokio::test]
async fn a_write_holding_an_older_generation_is_fenced() {
    for Backend { name, store, .. } in backends().await {
        let t = tenant("t");
        store.ensure_tenant(&t).await.unwrap();
        let mut sb = sandbox("t", Duration::zero());
        sb.node = Some("node-b".into());
        sb.state = SandboxState::Lost;
        store.insert_sandbox(&sb).await.unwrap();
        // B's copy as it read it, then C takes it over (generation 1).
        let stale = sb.clone();
        let mut taken = sb.clone();
        taken.node = Some("node-c".into());
        taken.generation = 1;
        assert!(store.take_over_sandbox(&taken).await.unwrap(), "{name}");
        // A second take-over from the same generation loses.
        let mut late = sb.clone();
        late.node = Some("node-d".into());
        late.generation = 1;
        assert!(!store.take_over_sandbox(&late).await.unwrap(), "{name}");
        // B's write with what it read is refused, naming both generations; nothing changed.
        let mut b_write = stale.clone();
        b_write.state = SandboxState::Stopped;
        match store.update_sandbox(&b_write).await {
            Err(StoreError::Fenced {
                held: 0,
                current: 1,
                ..
            }) => {}
            other => panic!("{name}: {other:?}"),
        }
        let now = store.get_sandbox(&sb.id).await.unwrap().unwrap();
        assert_eq!(
            (now.node.as_deref(), now.generation, now.state),
            (Some("node-c"), 1, sb.state),
            "{name}"
        );
        // C's writes at its generation go through.
        let mut c_write = now.clone();
        c_write.state = SandboxState::Stopped;
        store.update_sandbox(&c_write).await.unwrap();
        // Only a lost sandbox is taken over (its node may have taken it up again).
        let mut again = c_write.clone();
        again.node = Some("node-d".into());
        again.generation = 2;
        assert!(!store.take_over_sandbox(&again).await.unwrap(), "{name}");
        // A record that is gone is Missing, not Fenced.
        store.delete_sandbox(&sb.id).await.unwrap();
        assert!(
            matches!(
                store.update_sandbox(&c_write).await,
                Err(StoreError::Missing(_))
            ),
            "{name}"
        );
    }
}
