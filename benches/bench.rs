//! `cargo bench --bench bench` (or `scripts/bench.sh`): berth's hot paths measured on this
//! machine, against raw Docker in the same run. Prints figures; asserts nothing.
//!
//! - create → first exec latency of a `base` sandbox (p50/p95)
//! - exec round trip of `true`: berth's API vs the Docker Engine exec API on the same container
//! - 1 MiB file write + read through berth
//! - run-tests: 100 Python cases through berth vs one fresh `docker run` per case

use berth::client::Client;
use berth::config::Config;
use berth::startup::{create_api_key, Application};
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn report(name: &str, samples: &mut [Duration]) -> Duration {
    let p50 = percentile(samples, 0.50);
    let p95 = percentile(samples, 0.95);
    println!(
        "{name:<44} n={:<4} p50={:>8.2} ms  p95={:>8.2} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3
    );
    p50
}

async fn docker_exec_true(docker: &bollard::Docker, container: &str) {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec!["true"]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await.unwrap()
    {
        while output.next().await.is_some() {}
    }
    let inspect = docker.inspect_exec(&exec.id).await.unwrap();
    assert_eq!(inspect.exit_code, Some(0));
}

#[tokio::main]
async fn main() {
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let temp = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: temp.path().to_path_buf(),
        ..Default::default()
    };
    let app = Application::build(config)
        .await
        .expect("berth starts (Docker running?)");
    let base = format!("http://{}", app.local_addr().unwrap());
    let service = app.service();
    let tenant = berth::domain::TenantId::parse("bench").unwrap();
    let key = create_api_key(service.store().as_ref(), &tenant)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = Client::new(base, Some(key.expose().to_string()));
    let docker = bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();

    // Make sure the template exists before timing anything.
    let warm = client
        .create_sandbox(&json!({"image": "base"}))
        .await
        .unwrap();
    client.delete(&warm.id, false).await.unwrap();

    println!(
        "berth benchmark ({} cores), {} iterations per exec series",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        iterations
    );
    let mut create_to_exec = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let sb = client
            .create_sandbox(&json!({"image": "base"}))
            .await
            .unwrap();
        let out = client.sh(&sb.id, "true").await.unwrap();
        assert_eq!(out.exit_code, Some(0));
        create_to_exec.push(start.elapsed());
        ids.push(sb.id);
    }
    report("create -> first exec (berth)", &mut create_to_exec);
    for id in ids.drain(..) {
        client.delete(&id, false).await.unwrap();
    }

    let sb = client
        .create_sandbox(&json!({"image": "base"}))
        .await
        .unwrap();
    let container = format!("berth-{}", sb.id);
    let exec_true = berth_runtime::wire::ExecRequest {
        cmd: Some(vec!["true".into()]),
        ..Default::default()
    };
    for _ in 0..10 {
        client.exec(&sb.id, &exec_true).await.unwrap();
        docker_exec_true(&docker, &container).await;
    }
    let mut ours = Vec::new();
    for _ in 0..iterations {
        let start = Instant::now();
        let out = client.exec(&sb.id, &exec_true).await.unwrap();
        assert_eq!(out.exit_code, Some(0));
        ours.push(start.elapsed());
    }
    let mut raw = Vec::new();
    for _ in 0..iterations {
        let start = Instant::now();
        docker_exec_true(&docker, &container).await;
        raw.push(start.elapsed());
    }
    let ours_p50 = report("exec `true` via berth API", &mut ours);
    let raw_p50 = report("exec `true` via Docker Engine API (same ctr)", &mut raw);
    println!(
        "{:<44} {:.1}x faster at p50 (target: >= 5x)",
        "berth vs raw docker exec",
        raw_p50.as_secs_f64() / ours_p50.as_secs_f64()
    );

    let mib: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut file_rw = Vec::new();
    for i in 0..50 {
        let path = format!("bench/{i}.bin");
        let start = Instant::now();
        client.write_file(&sb.id, &path, mib.clone()).await.unwrap();
        let back = client.read_file(&sb.id, &path).await.unwrap();
        file_rw.push(start.elapsed());
        assert_eq!(back.len(), mib.len());
    }
    report("1 MiB file write + read (berth)", &mut file_rw);

    client.delete(&sb.id, false).await.unwrap();

    run_tests_vs_docker_run(&client).await;
    let _ = stop.send(());
    let _ = server.await;
}

/// 100 cases against a Python function: one run-tests call vs one `docker run` per case on
/// the same image (what an evaluation service without a sandbox runtime does).
async fn run_tests_vs_docker_run(client: &Client) {
    const CASES: usize = 100;
    let code = "def solution(x):\n    return x * 2\n";
    let sb = client
        .create_sandbox(&json!({"image": "python"}))
        .await
        .unwrap();
    let cases: Vec<_> = (0..CASES)
        .map(|i| json!({"input": {"x": i}, "expected": i * 2}))
        .collect();
    let body = json!({"language": "python", "code": code, "test_cases": cases});
    let path = format!("/v1/sandboxes/{}/run-tests", sb.id);
    let start = Instant::now();
    let report: serde_json::Value = client
        .request(reqwest::Method::POST, &path)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ours = start.elapsed();
    assert_eq!(report["passed"], CASES, "{report}");
    client.delete(&sb.id, false).await.unwrap();

    let start = Instant::now();
    for i in 0..CASES {
        let script = format!("{code}\nassert solution({i}) == {}", i * 2);
        let status = tokio::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "berth/python:latest",
                "python3",
                "-c",
                &script,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
    let theirs = start.elapsed();
    println!(
        "{:<44} {:>8.1} ms for {CASES} cases",
        "run-tests (python) via berth",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} {:>8.1} ms for {CASES} cases",
        "one `docker run` per case (same image)",
        theirs.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} 1/{:.0} of the docker-run wall time (target: <= 1/50)",
        "berth run-tests vs docker run per case",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
