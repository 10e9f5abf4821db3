//! `cargo bench --bench snapshots` (or `scripts/bench.sh`): snapshot and restore of a
//! ~1 GB volume of mixed files through berth against `docker run --rm -v VOL:/v
//! berth/base tar c /v | zstd` (and the reverse) on the same volume in the same run, the
//! supervisor's memory meanwhile, and resume → first exec of a stopped and of an archived
//! sandbox. Prints figures; asserts nothing. Needs the `zstd` command.
//!
//! BENCH_VOLUME_MB=N changes the volume's size (default 1024).

use berth::client::Client;
use berth::config::Config;
use berth::startup::{create_api_key, Application};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Server {
    client: Client,
    data_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn server(archive_after_s: u64) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        pool: Default::default(),
        reaper_interval_ms: 200,
        ..Default::default()
    };
    config.retention.archive_after_s = archive_after_s;
    let app = Application::build(config).await.expect("berth starts");
    let base = format!("http://{}", app.local_addr().unwrap());
    let service = app.service();
    let tenant = berth::domain::TenantId::parse("bench").unwrap();
    let key = create_api_key(service.store().as_ref(), &tenant)
        .await
        .unwrap()
        .expose()
        .to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Server {
        client: Client::new(base, Some(key)),
        data_dir: dir,
        stop: Some(stop),
        handle,
    }
}

impl Server {
    async fn shutdown(mut self) {
        for s in self.client.list_sandboxes("").await.unwrap_or_default() {
            let _ = self.client.delete(&s.id, false).await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.handle.await;
    }
}

fn sh(script: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    started.elapsed()
}

async fn snapshot(client: &Client, id: &str) -> Value {
    let resp = client
        .request(Method::POST, &format!("/v1/sandboxes/{id}/snapshots"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    resp.json().await.unwrap()
}

async fn until_state(client: &Client, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while client.get_sandbox(id).await.unwrap().state != want {
        assert!(Instant::now() < deadline, "{id} never became {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mb: u64 = std::env::var("BENCH_VOLUME_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    assert!(
        Command::new("zstd").arg("--version").output().is_ok(),
        "the peer needs the zstd command (apt-get install zstd)"
    );
    let s = server(0).await;
    let client = s.client.clone();
    let sb = client
        .create_sandbox(&json!({"image": "base", "memory_mb": 1024, "timeout_s": 7200}))
        .await
        .unwrap();

    // ~40% random (incompressible) 8 MiB files, ~40% base64 text in 1 MiB files,
    // ~20% small files of 16 KiB, in nested directories.
    let (big, text, small) = (mb * 2 / 5 / 8, mb * 2 / 5, mb * 1024 / 5 / 16);
    eprintln!(
        "making a volume of ~{mb} MB: {big} x 8 MiB random, {text} x 1 MiB text, {small} x 16 KiB"
    );
    let made = Instant::now();
    let script = format!(
        "set -e; mkdir -p bin txt small; \
         for i in $(seq {big}); do head -c 8M /dev/urandom > bin/$i.bin; done; \
         for i in $(seq {text}); do head -c 786432 /dev/urandom | base64 > txt/$i.txt; done; \
         for d in $(seq 0 99); do mkdir -p small/$d; done; \
         for i in $(seq {small}); do head -c 12288 /dev/urandom | base64 -w 0 > small/$((i % 100))/$i; done; \
         du -sb . | cut -f1"
    );
    let out = client
        .exec(
            &sb.id,
            &serde_json::from_value(json!({"command": script, "timeout_s": 3600.0})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    let bytes: u64 = out.stdout.trim().parse().unwrap();
    let mbytes = bytes as f64 / 1e6;
    eprintln!(
        "made {mbytes:.0} MB in {:.0}s",
        made.elapsed().as_secs_f64()
    );

    // Snapshot: berth vs docker run | zstd, on the same (running) volume.
    let rss_before = rss_kib("VmRSS:");
    let started = Instant::now();
    let snap = snapshot(&client, &sb.id).await;
    let berth_snap = started.elapsed();
    let rss_peak = rss_kib("VmHWM:");
    let compressed = snap["size_bytes"].as_u64().unwrap();
    let peer_file = s.data_dir.path().join("peer.tar.zst");
    let peer_snap = sh(&format!(
        "docker run --rm --network none -v {}:/v berth/base tar c -C /v . | zstd -3 -q -o {}",
        sb.volume,
        peer_file.display()
    ));
    let peer_size = std::fs::metadata(&peer_file).unwrap().len();

    // Restore: a fork from the snapshot vs zstd -d | docker run tar x into a new volume.
    let started = Instant::now();
    let fork = client
        .create_sandbox(&json!({"image": "base", "memory_mb": 1024, "from_snapshot": snap["id"]}))
        .await
        .unwrap();
    let berth_restore = started.elapsed();
    let check = client.sh(&fork.id, "du -sb . | cut -f1").await.unwrap();
    let peer_volume = format!("berth-bench-restore-{}", std::process::id());
    let peer_restore = sh(&format!(
        "docker volume create {peer_volume} >/dev/null && zstd -dc -q {} | \
         docker run -i --rm --network none -v {peer_volume}:/v berth/base tar x -C /v",
        peer_file.display()
    ));
    sh(&format!("docker volume rm -f {peer_volume} >/dev/null"));

    println!("snapshot/restore of {mbytes:.0} MB of mixed files (berth compresses with zstd -3 in the supervisor, one thread)");
    println!(
        "  snapshot  berth {:>7.1} MB/s ({:.1}s, {:.0} MB stored)   docker run tar | zstd -3 {:>7.1} MB/s ({:.1}s, {:.0} MB)",
        mbytes / berth_snap.as_secs_f64(),
        berth_snap.as_secs_f64(),
        compressed as f64 / 1e6,
        mbytes / peer_snap.as_secs_f64(),
        peer_snap.as_secs_f64(),
        peer_size as f64 / 1e6
    );
    println!(
        "  restore   berth {:>7.1} MB/s ({:.1}s, a new sandbox included)   zstd -d | docker run tar x {:>7.1} MB/s ({:.1}s)",
        mbytes / berth_restore.as_secs_f64(),
        berth_restore.as_secs_f64(),
        mbytes / peer_restore.as_secs_f64(),
        peer_restore.as_secs_f64()
    );
    println!(
        "  fork's volume {} bytes (source {bytes}); supervisor RSS {} MiB before, peak {} MiB",
        check.stdout.trim(),
        rss_before / 1024,
        rss_peak / 1024
    );
    client.delete(&fork.id, false).await.unwrap();
    client.delete(&sb.id, false).await.unwrap();

    // Resume of a stopped sandbox → first exec.
    let small_sb = client
        .create_sandbox(&json!({"image": "base", "files": {"a.txt": "a"}}))
        .await
        .unwrap();
    let mut resumes = Vec::new();
    for _ in 0..10 {
        client.stop(&small_sb.id).await.unwrap();
        let started = Instant::now();
        client.resume(&small_sb.id).await.unwrap();
        client.sh(&small_sb.id, "cat a.txt").await.unwrap();
        resumes.push(started.elapsed());
    }
    let mut peers = Vec::new();
    for _ in 0..10 {
        peers.push(sh(&format!(
            "docker run --rm --network none -v {}:/v berth/base cat /v/a.txt",
            small_sb.volume
        )));
    }
    println!(
        "resume → first exec, stopped sandbox: p50 {:.0} ms (max {:.0})   docker run on its volume: p50 {:.0} ms",
        ms(median(resumes.clone())),
        ms(*resumes.iter().max().unwrap()),
        ms(median(peers))
    );
    s.shutdown().await;

    // Resume of an archived sandbox → first exec (the archive restored on the way).
    let a = server(1).await;
    let mut archived = Vec::new();
    for size in [1u64, 100] {
        let sb = a
            .client
            .create_sandbox(&json!({"image": "base", "memory_mb": 512}))
            .await
            .unwrap();
        a.client
            .sh(&sb.id, &format!("head -c {size}M /dev/urandom > data.bin"))
            .await
            .unwrap();
        a.client.stop(&sb.id).await.unwrap();
        until_state(&a.client, &sb.id, "archived").await;
        let started = Instant::now();
        a.client.sh(&sb.id, "ls -l data.bin").await.unwrap();
        archived.push((size, started.elapsed()));
    }
    for (size, took) in archived {
        println!(
            "resume → first exec, archived sandbox of {size} MB (auto_resume): {:.0} ms",
            ms(took)
        );
    }
    a.shutdown().await;
}
