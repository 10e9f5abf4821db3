//! The warm pool against the real engine: a create that fits adopts a started sandbox
//! (with its own env, files, labels and limits), the pool refills, pooled sandboxes are
//! invisible to tenants, never handed out twice, and a restart leaks none of them.

mod common;

use common::{cgroup_limits, docker, eventually, metric, spawn_with, test_config};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

fn pooled(data_dir: &std::path::Path, base: usize) -> berth::config::Config {
    let mut config = test_config(data_dir);
    config.pool = BTreeMap::from([("base".to_string(), base)]);
    if !config.defaults.runtime.updates_limits() {
        // gVisor cannot change a running sandbox's limits: only creates that ask for
        // the pool's own fit, so the pool is made with what the tests ask for.
        config.defaults.memory_mb = 256;
        config.defaults.pids = 64;
        config.defaults.cpu = 0.5;
    }
    config
}

async fn wait_ready(app: &common::TestApp, n: f64) {
    let ready = eventually(Duration::from_secs(60), || async {
        (metric(app, "berth_pool_ready{template=\"base\"}").await == Some(n)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the pool reached {n} ready sandboxes");
}

/// Containers and volumes of this server's instance, by name.
async fn owned(app: &common::TestApp) -> (Vec<String>, Vec<String>) {
    common::instance_objects(&app.data_dir)
}

#[tokio::test]
async fn a_create_that_fits_adopts_a_started_sandbox_and_the_pool_refills() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(pooled(temp.path(), 1)).await;
    wait_ready(&app, 1.0).await;
    // Ready, but nobody's: no tenant sees it, and it is not in the state counts.
    assert!(app.client.list_sandboxes("").await.unwrap().is_empty());
    let other = app.other_tenant("tenant-b").await;
    assert!(other.list_sandboxes("").await.unwrap().is_empty());
    assert_eq!(
        metric(&app, "berth_sandboxes{state=\"creating\"}").await,
        Some(0.0)
    );
    let (before, _) = owned(&app).await;
    assert_eq!(before.len(), 1);

    let sb = app
        .client
        .create_sandbox(
            &json!({"image": "base", "memory_mb": 256, "pids": 64, "cpu": 0.5,
            "env": {"GREETING": "hi"}, "labels": {"session": "s1"},
            "files": {"notes/a.txt": "from the request\n"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        metric(&app, "berth_pool_adopted_total").await,
        Some(1.0),
        "served by the pool"
    );
    assert_eq!(
        before[0],
        format!("berth-{}", sb.id),
        "the sandbox is the container that was waiting"
    );
    let out = app
        .client
        .sh(&sb.id, "echo $GREETING; cat notes/a.txt")
        .await
        .unwrap();
    assert_eq!(out.stdout, "hi\nfrom the request\n", "{out:?}");
    let limits = cgroup_limits(&app, &sb.id).await;
    assert_eq!(
        (limits.memory.as_str(), limits.pids.as_str()),
        ((256u64 * 1024 * 1024).to_string().as_str(), "64"),
        "the request's limits, not the pool's"
    );
    let quota: f64 = limits.cpu_quota.parse().unwrap();
    let period: f64 = limits.cpu_period.parse().unwrap();
    assert!((quota / period - 0.5).abs() < 0.01, "{limits:?}");
    let got = app.client.get_sandbox(&sb.id).await.unwrap();
    assert_eq!(got.state, "running");
    assert_eq!(got.labels.get("session").map(String::as_str), Some("s1"));
    assert_eq!(
        metric(&app, "berth_sandboxes{state=\"running\"}").await,
        Some(1.0)
    );
    // The pool starts another one.
    wait_ready(&app, 1.0).await;
    let (after, _) = owned(&app).await;
    assert_eq!(after.len(), 2);

    // Beyond the pool's limits, a named volume or another image: a cold start.
    // (gVisor sandboxes have no network: there the odd one out is a runc one.)
    let other = match common::test_runtime() {
        berth::domain::Runtime::Runc => json!({"image": "base", "network": "bridge"}),
        berth::domain::Runtime::Gvisor => json!({"image": "base", "runtime": "runc"}),
    };
    for body in [
        json!({"image": "base", "memory_mb": 4096}),
        other,
        json!({"image": "python"}),
    ] {
        let cold = app
            .client
            .create_sandbox(&body)
            .await
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        assert!(cold.id != sb.id);
    }
    assert_eq!(metric(&app, "berth_pool_adopted_total").await, Some(1.0));
    app.cleanup().await;
}

#[tokio::test]
async fn concurrent_claims_never_get_the_same_sandbox() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(pooled(temp.path(), 2)).await;
    wait_ready(&app, 2.0).await;
    let creates = (0..5).map(|i| {
        let client = app.client.clone();
        async move {
            client
                .create_sandbox(&json!({"image": "base", "labels": {"n": i.to_string()}}))
                .await
                .unwrap()
        }
    });
    let made = futures_util::future::join_all(creates).await;
    let ids: HashSet<_> = made.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids.len(), 5, "five different sandboxes");
    assert_eq!(metric(&app, "berth_pool_adopted_total").await, Some(2.0));
    assert_eq!(metric(&app, "berth_pool_missed_total").await, Some(3.0));
    // Each is its own container with its own label and files.
    for (i, sb) in made.iter().enumerate() {
        app.client
            .write_file(&sb.id, "mine.txt", format!("{i}").into_bytes())
            .await
            .unwrap();
    }
    for (i, sb) in made.iter().enumerate() {
        let out = app.client.sh(&sb.id, "cat mine.txt").await.unwrap();
        assert_eq!(out.stdout, i.to_string());
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_restart_with_a_full_pool_leaks_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let mut app = spawn_with(pooled(temp.path(), 2)).await;
    wait_ready(&app, 2.0).await;
    let kept = app
        .client
        .create_sandbox(&json!({"image": "base"}))
        .await
        .unwrap();
    wait_ready(&app, 2.0).await;
    let (old_containers, old_volumes) = owned(&app).await;
    assert_eq!(old_containers.len(), 3);
    app.stop_server().await;

    let app = spawn_with(pooled(temp.path(), 2)).await;
    wait_ready(&app, 2.0).await;
    let (containers, volumes) = owned(&app).await;
    assert_eq!(
        containers.len(),
        3,
        "the adopted one and two new: {containers:?}"
    );
    assert_eq!(volumes.len(), 3, "{volumes:?}");
    let old_pooled: Vec<_> = old_containers
        .iter()
        .filter(|c| !c.contains(kept.id.as_str()))
        .collect();
    for name in old_pooled {
        assert!(!containers.contains(name), "{name} was removed");
    }
    assert!(
        old_volumes.iter().filter(|v| volumes.contains(v)).count() == 1,
        "only the adopted sandbox's volume stays"
    );
    // The adopted sandbox is still its tenant's and still runs.
    let out = app.client.sh(&kept.id, "echo alive").await.unwrap();
    assert_eq!(out.stdout, "alive\n");
    app.cleanup().await;
}

#[tokio::test]
async fn a_create_refused_at_quota_leaves_the_pool_as_it_was() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = pooled(temp.path(), 1);
    config.limits.max_sandboxes_per_tenant = 1;
    let app = spawn_with(config).await;
    wait_ready(&app, 1.0).await;
    app.client
        .create_sandbox(&json!({"image": "base"}))
        .await
        .unwrap();
    wait_ready(&app, 1.0).await;
    for _ in 0..5 {
        let refused = app.client.create_sandbox(&json!({"image": "base"})).await;
        assert_eq!(
            refused.unwrap_err().status(),
            Some(reqwest::StatusCode::TOO_MANY_REQUESTS)
        );
    }
    assert_eq!(
        metric(&app, "berth_pool_ready{template=\"base\"}").await,
        Some(1.0)
    );
    let (containers, volumes) = owned(&app).await;
    assert_eq!(
        (containers.len(), volumes.len()),
        (2, 2),
        "the tenant's and the pool's one: {containers:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_pooled_sandbox_that_died_is_never_handed_out() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(pooled(temp.path(), 1)).await;
    wait_ready(&app, 1.0).await;
    let (dead, _) = owned(&app).await;
    let d = docker().await;
    d.kill_container::<String>(&dead[0], None).await.unwrap();
    let sb = app
        .client
        .create_sandbox(&json!({"image": "base"}))
        .await
        .unwrap();
    assert_ne!(format!("berth-{}", sb.id), dead[0]);
    let out = app.client.sh(&sb.id, "echo works").await.unwrap();
    assert_eq!(out.stdout, "works\n");
    // The dead one is gone, and no failed record was left for the tenant.
    let (containers, _) = owned(&app).await;
    assert!(!containers.contains(&dead[0]), "{containers:?}");
    let all = app.client.list_sandboxes("").await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    app.cleanup().await;
}
