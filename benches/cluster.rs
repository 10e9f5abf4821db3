//! `cargo bench --bench cluster` (or `scripts/bench-cluster.sh`, which starts a private
//! Redis and PostgreSQL for it): three berth nodes in this process on one Redis and one
//! PostgreSQL database (sharing this host's Docker engine). Exec round trips through the
//! node that holds the sandbox and through another one (the proxy hop's cost, p50/p99),
//! and creates per second through one node alone against through all three (placement
//! spreading them). Prints figures; asserts nothing.
//!
//! Needs BENCH_REDIS_URL and BENCH_POSTGRES_URL (a server where it may create a
//! database). BENCH_ITERATIONS=N changes the exec sample count (default 200),
//! BENCH_CREATES=N the creates per run (default 12).

use berth::client::Client;
use berth::cluster::hop::Secret;
use berth::config::Config;
use berth::startup::{create_api_key, Application};
use berth_runtime::wire::ExecRequest;
use serde_json::json;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Node {
    client: Client,
    _data_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn node(name: &str, redis: &str, database: &str, key: Option<String>) -> (Node, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        pool: Default::default(),
        database_url: Some(database.to_string()),
        ..Default::default()
    };
    config.limits.max_sandboxes_per_tenant = 1000;
    config.cluster.redis_url = Some(redis.to_string());
    config.cluster.node_name = Some(name.to_string());
    config.cluster.secret = Some(Secret("a benchmark cluster's secret of 32+ chars".into()));
    let app = Application::build(config).await.expect("berth starts");
    let base = format!("http://{}", app.local_addr().unwrap());
    let key = match key {
        Some(key) => key,
        None => {
            let tenant = berth::domain::TenantId::parse("bench").unwrap();
            create_api_key(app.service().store().as_ref(), &tenant)
                .await
                .unwrap()
                .expose()
                .to_string()
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let node = Node {
        client: Client::new(base, Some(key.clone())),
        _data_dir: dir,
        stop: Some(stop),
        handle,
    };
    (node, key)
}

impl Node {
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.handle.await;
    }
}

async fn until_nodes(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: serde_json::Value = client
            .request(reqwest::Method::GET, "/v1/nodes")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if body["nodes"].as_array().map_or(0, |a| a.len()) == n {
            return;
        }
        assert!(Instant::now() < deadline, "the nodes never all showed up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exec `true` `n` times through `client`: sorted round trips.
async fn exec_round_trips(client: &Client, id: &str, n: usize) -> Vec<Duration> {
    let request: ExecRequest = serde_json::from_value(json!({"cmd": ["true"]})).unwrap();
    for _ in 0..10 {
        client.exec(id, &request).await.unwrap();
    }
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client.exec(id, &request).await.unwrap();
        took.push(started.elapsed());
    }
    took.sort();
    took
}

/// Makes `n` sandboxes, 6 at a time, through `clients` in turn; creates per second,
/// and the sandboxes by node.
async fn creates(clients: &[&Client], n: usize) -> (f64, Vec<(String, String)>) {
    let started = Instant::now();
    let mut made = Vec::new();
    for batch in (0..n).collect::<Vec<_>>().chunks(6) {
        let runs = batch.iter().map(|i| {
            let client = clients[i % clients.len()];
            async move {
                let sb = client
                    .create_sandbox(&json!({"image": "base", "memory_mb": 128, "cpu": 0.1}))
                    .await
                    .unwrap();
                (sb.id, sb.node.unwrap_or_default())
            }
        });
        made.extend(futures_util::future::join_all(runs).await);
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    (rate, made)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (Ok(redis), Ok(postgres)) = (
        std::env::var("BENCH_REDIS_URL"),
        std::env::var("BENCH_POSTGRES_URL"),
    ) else {
        eprintln!("needs BENCH_REDIS_URL and BENCH_POSTGRES_URL: run scripts/bench-cluster.sh");
        return;
    };
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let n_creates: usize = std::env::var("BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let database = format!(
        "{}/berth_bench_{}",
        postgres.trim_end_matches('/'),
        std::process::id()
    );

    // One node alone first (its cluster of one), for creates per second.
    let (solo, key) = node("solo", &redis, &database, None).await;
    until_nodes(&solo.client, 1).await;
    let (solo_rate, made) = creates(&[&solo.client], n_creates).await;
    for (id, _) in &made {
        solo.client.delete(id, false).await.unwrap();
    }
    solo.shutdown().await;
    // Its heartbeat lapses before the three start, so they are three.
    tokio::time::sleep(berth::cluster::LEASE + Duration::from_secs(1)).await;

    let (a, _) = node("node-a", &redis, &database, Some(key.clone())).await;
    let (b, _) = node("node-b", &redis, &database, Some(key.clone())).await;
    let (c, _) = node("node-c", &redis, &database, Some(key)).await;
    until_nodes(&a.client, 3).await;
    until_nodes(&c.client, 3).await;
    let sb = a
        .client
        .create_sandbox(&json!({"image": "base", "node": "node-b"}))
        .await
        .unwrap();
    let direct = exec_round_trips(&b.client, &sb.id, iterations).await;
    let hop = exec_round_trips(&c.client, &sb.id, iterations).await;
    println!("exec `true` round trip, {iterations} each (sandbox on node-b):");
    for (label, took) in [
        ("through node-b (holds it)", &direct),
        ("through node-c (one hop)", &hop),
    ] {
        println!(
            "  {label:<28} p50 {:>7.2} ms   p99 {:>7.2} ms",
            ms(percentile(took, 0.5)),
            ms(percentile(took, 0.99))
        );
    }
    println!(
        "  the hop adds                 p50 {:>7.2} ms   p99 {:>7.2} ms",
        ms(percentile(&hop, 0.5)) - ms(percentile(&direct, 0.5)),
        ms(percentile(&hop, 0.99)) - ms(percentile(&direct, 0.99))
    );
    a.client.delete(&sb.id, false).await.unwrap();

    let (spread_rate, made) = creates(&[&a.client, &b.client, &c.client], n_creates).await;
    let mut by_node = std::collections::BTreeMap::<String, usize>::new();
    for (_, node) in &made {
        *by_node.entry(node.clone()).or_default() += 1;
    }
    println!("creates ({n_creates}, 6 at a time, one Docker engine under every node):");
    println!("  through one node alone       {solo_rate:>7.2} /s");
    println!("  through three nodes          {spread_rate:>7.2} /s   placed {by_node:?}");
    for (id, _) in &made {
        a.client.delete(id, false).await.unwrap();
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
