//! `cargo bench --bench isolation` (part of `scripts/bench.sh`): what isolation costs.
//! create → first exec and exec `true` (p50/p99) under runc and gVisor, each with the
//! disk quota (a loop-backed ext4 volume) and without (a plain Docker volume), all in one
//! run, beside a raw `docker exec` of `true` under each runtime. Prints; asserts nothing.
//! gVisor rows are skipped, with a note, where the engine has no `runsc` runtime.
//! Then under load: 10 sandboxes of one tenant spin their CPUs and fill their disks while
//! another tenant runs 1000 execs; its exec latency, and health, list and create, against
//! the same measured on an idle host first. `BENCH_ONLY=load` runs only that part,
//! `BENCH_ONLY=runc` or `gvisor` only that runtime's rows;
//! `BENCH_LOAD=cpu|disk` makes the noise spin or fill only (both by default).

use berth::client::Client;
use berth::config::{Config, DiskQuotas};
use berth::domain::Runtime;
use berth::startup::{create_api_key, Application};
use serde_json::json;
use std::time::{Duration, Instant};

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index].as_secs_f64() * 1e3
}

fn report(name: &str, samples: &mut [Duration]) {
    let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
    println!(
        "{name:<48} n={:<4} p50={p50:>8.2} ms  p99={p99:>8.2} ms",
        samples.len()
    );
}

async fn variant(runtime: Runtime, quotas: DiskQuotas, creates: usize, execs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        pool: Default::default(),
        disk_quotas: quotas,
        ..Default::default()
    };
    config.defaults.runtime = runtime;
    let app = Application::build(config).await.expect("berth starts");
    let base = format!("http://{}", app.local_addr().unwrap());
    let tenant = berth::domain::TenantId::parse("bench").unwrap();
    let key = create_api_key(app.service().store().as_ref(), &tenant)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = Client::new(base, Some(key.expose().to_string()));
    let label = format!(
        "{}, {}",
        match runtime {
            Runtime::Runc => "runc",
            Runtime::Gvisor => "gvisor",
        },
        match quotas {
            DiskQuotas::Off => "no disk quota",
            _ => "disk quota",
        }
    );
    let body = json!({"image": "base", "memory_mb": 256, "disk_mb": 1024});
    let mut created = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..creates {
        let started = Instant::now();
        let sb = client.create_sandbox(&body).await.unwrap();
        let out = client.sh(&sb.id, "true").await.unwrap();
        assert_eq!(out.exit_code, Some(0));
        created.push(started.elapsed());
        ids.push(sb.id);
    }
    report(&format!("create -> first exec ({label})"), &mut created);
    let mut exec = Vec::new();
    for _ in 0..execs {
        let started = Instant::now();
        client.sh(&ids[0], "true").await.unwrap();
        exec.push(started.elapsed());
    }
    report(&format!("exec `true` via berth ({label})"), &mut exec);
    if quotas == DiskQuotas::Off {
        let mut raw = Vec::new();
        let container = format!("berth-{}", ids[0]);
        for _ in 0..execs.min(50) {
            let started = Instant::now();
            let status = std::process::Command::new("docker")
                .args(["exec", &container, "true"])
                .status()
                .unwrap();
            assert!(status.success());
            raw.push(started.elapsed());
        }
        report(
            &format!("`docker exec true` CLI, same container ({label})"),
            &mut raw,
        );
    }
    for id in &ids {
        let _ = client.delete(id, false).await;
    }
    let _ = stop.send(());
    let _ = task.await;
}

/// Another tenant's exec latency and the control plane's, idle and beside 10 noisy
/// sandboxes.
async fn under_load(execs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        pool: Default::default(),
        ..Default::default()
    };
    let app = Application::build(config).await.expect("berth starts");
    let base = format!("http://{}", app.local_addr().unwrap());
    let key = |name: &str| {
        let store = app.service().store().clone();
        let tenant = berth::domain::TenantId::parse(name).unwrap();
        async move {
            create_api_key(store.as_ref(), &tenant)
                .await
                .unwrap()
                .expose()
                .to_string()
        }
    };
    let noisy = Client::new(base.clone(), Some(key("noisy").await));
    let quiet = Client::new(base.clone(), Some(key("quiet").await));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let body = json!({"image": "base", "memory_mb": 256, "disk_mb": 512, "cpu": 1.0});
    let mine = quiet.create_sandbox(&body).await.unwrap();
    let measure = |phase: &'static str| {
        let (quiet, http, base, mine) =
            (quiet.clone(), http.clone(), base.clone(), mine.id.clone());
        async move {
            let mut exec = Vec::new();
            for _ in 0..execs {
                let started = Instant::now();
                quiet.sh(&mine, "true").await.unwrap();
                exec.push(started.elapsed());
            }
            report(&format!("quiet tenant's exec `true` ({phase})"), &mut exec);
            let (mut health, mut list, mut create) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..50 {
                let started = Instant::now();
                http.get(format!("{base}/healthz")).send().await.unwrap();
                health.push(started.elapsed());
                let started = Instant::now();
                quiet.list_sandboxes("").await.unwrap();
                list.push(started.elapsed());
            }
            for _ in 0..5 {
                let started = Instant::now();
                let sb = quiet
                    .create_sandbox(&json!({"image": "base", "memory_mb": 128}))
                    .await
                    .unwrap();
                create.push(started.elapsed());
                let _ = quiet.delete(&sb.id, false).await;
            }
            report(&format!("GET /healthz ({phase})"), &mut health);
            report(&format!("GET /v1/sandboxes ({phase})"), &mut list);
            report(&format!("create ({phase})"), &mut create);
        }
    };
    measure("idle host").await;
    let cpu = "while :; do :; done";
    let disk = "while :; do dd if=/dev/zero of=fill bs=1M count=600 2>/dev/null; rm -f fill; done";
    let noise = match std::env::var("BENCH_LOAD").as_deref() {
        Ok("cpu") => cpu.to_string(),
        Ok("disk") => disk.to_string(),
        _ => format!("{cpu} & {disk}"),
    };
    let noise = noise.as_str();
    let mut loud = Vec::new();
    for _ in 0..10 {
        let sb = noisy.create_sandbox(&body).await.unwrap();
        let spin = berth_runtime::wire::ExecRequest {
            command: Some(noise.into()),
            background: true,
            ..Default::default()
        };
        let answer = noisy
            .request(
                reqwest::Method::POST,
                &format!("/v1/sandboxes/{}/exec", sb.id),
            )
            .json(&spin)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
        loud.push(sb.id);
    }
    measure("10 sandboxes spinning and filling their disks").await;
    for id in loud.iter().chain([&mine.id]) {
        let _ = noisy.delete(id, false).await;
        let _ = quiet.delete(id, false).await;
    }
    let _ = stop.send(());
    let _ = task.await;
}

#[tokio::main]
async fn main() {
    let creates: usize = std::env::var("BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let execs: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let runtimes = String::from_utf8(
        std::process::Command::new("docker")
            .args(["info", "--format", "{{json .Runtimes}}"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let gvisor = runtimes.contains("\"runsc\"");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let only_load = only == "load";
    for runtime in [Runtime::Runc, Runtime::Gvisor] {
        let name = match runtime {
            Runtime::Runc => "runc",
            Runtime::Gvisor => "gvisor",
        };
        if !only.is_empty() && !only_load && only != name {
            continue;
        }
        if runtime == Runtime::Gvisor && !gvisor {
            println!(
                "gvisor: skipped, the engine has no runsc runtime (scripts/test.sh registers it)"
            );
            continue;
        }
        for quotas in [DiskQuotas::Auto, DiskQuotas::Off] {
            if only_load {
                break;
            }
            variant(runtime, quotas, creates, execs).await;
        }
    }
    if only.is_empty() || only_load {
        under_load(execs.max(1000)).await;
    }
}
