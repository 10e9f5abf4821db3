//! `cargo bench --bench bench` (or `scripts/bench.sh`): berth's hot paths measured on this
//! machine, against raw Docker in the same run. Prints figures; asserts nothing.
//!
//! - create → first exec latency of a `base` sandbox (p50/p95), cold and from the warm pool
//! - exec round trip of `true`: berth's API vs the Docker Engine exec API on the same container
//! - 1 MiB file write + read through berth
//! - run-tests: 100 Python and 100 TypeScript cases through berth vs one fresh `docker run`
//!   per case
//! - `/compat/modal/execute` without a session (a one-shot sandbox from the pool): p50/p99

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

/// A berth server on its own data dir, `pool` ready sandboxes per template.
struct Server {
    client: Client,
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(pool: &[(&str, usize)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            pool: pool.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
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
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Server {
            client: Client::new(base.clone(), Some(key.expose().to_string())),
            base,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits (polling) until the pool holds at least `n` ready sandboxes of `template`.
    async fn pool_ready(&self, template: &str, n: f64) {
        let series = format!("berth_pool_ready{{template=\"{template}\"}}");
        while self.metric(&series).await < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        let list = self.client.list_sandboxes("").await.unwrap_or_default();
        for sb in list.iter().filter(|s| s.state != "terminated") {
            let _ = self.client.delete(&sb.id, false).await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
        // What the pool still held.
        let _ = std::process::Command::new("sh")
            .args(["-c", &format!(
                "docker rm -f $(docker ps -aq --filter label=dev.berth.instance=$(cat {0}/instance-id)) >/dev/null 2>&1; \
                 docker volume rm -f $(docker volume ls -q --filter label=dev.berth.instance=$(cat {0}/instance-id)) >/dev/null 2>&1",
                self._dir.path().display())])
            .status();
    }
}

async fn create_then_exec(client: &Client, body: &serde_json::Value) -> (Duration, String) {
    let start = Instant::now();
    let sb = client.create_sandbox(body).await.unwrap();
    let out = client.sh(&sb.id, "true").await.unwrap();
    assert_eq!(out.exit_code, Some(0));
    (start.elapsed(), sb.id)
}

#[tokio::main]
async fn main() {
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let cold = Server::start(&[]).await;
    let client = &cold.client;
    let docker = bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();

    // Make sure the templates exist before timing anything.
    for image in ["base", "python", "node"] {
        let warm = client
            .create_sandbox(&json!({"image": image}))
            .await
            .unwrap();
        client.delete(&warm.id, false).await.unwrap();
    }

    println!(
        "berth benchmark ({} cores), {} iterations per exec series",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        iterations
    );
    let mut samples = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let (took, id) = create_then_exec(client, &json!({"image": "base"})).await;
        samples.push(took);
        ids.push(id);
    }
    report("create -> first exec, pool off", &mut samples);
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

    run_tests_vs_docker_run(client, Language::Python).await;
    run_tests_vs_docker_run(client, Language::TypeScript).await;
    cold.stop().await;

    let warm = Server::start(&[("base", 2), ("python", 2)]).await;
    let mut samples = Vec::new();
    for _ in 0..20 {
        warm.pool_ready("base", 1.0).await;
        let (took, id) = create_then_exec(&warm.client, &json!({"image": "base"})).await;
        samples.push(took);
        ids.push(id);
    }
    report("create -> first exec, from the pool", &mut samples);
    println!(
        "{:<44} {} of 20 creates served by the pool",
        "",
        warm.metric("berth_pool_adopted_total").await
    );
    for id in ids.drain(..) {
        warm.client.delete(&id, false).await.unwrap();
    }
    compat_execute(&warm).await;
    warm.stop().await;
}

/// `/compat/modal/execute` with the Modal payload and no `sessionId`, 50 calls: paced (each
/// waits until the pool has one ready, like a worker with submissions coming in), then
/// back to back (faster than the pool refills).
async fn compat_execute(server: &Server) {
    let payload = json!({"code":"def solution(x):\n    return x * 2","testCases":[{"name":"test","input":{"x":5},"expected":10,"hidden":false}],"language":"python"});
    for paced in [true, false] {
        let adopted_before = server.metric("berth_pool_adopted_total").await;
        let mut samples = Vec::new();
        for _ in 0..50 {
            if paced {
                server.pool_ready("python", 1.0).await;
            }
            let start = Instant::now();
            let body: serde_json::Value = server
                .client
                .request(reqwest::Method::POST, "/compat/modal/execute")
                .json(&payload)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            samples.push(start.elapsed());
            assert_eq!(body["success"], true, "{body}");
        }
        let p99 = percentile(&mut samples, 0.99);
        let name = if paced {
            "compat execute, one-shot, paced"
        } else {
            "compat execute, one-shot, back to back"
        };
        report(name, &mut samples);
        println!(
            "{:<44} p99={:.2} ms; {} of 50 from the pool (target p50 <= 100 ms)",
            "",
            p99.as_secs_f64() * 1e3,
            server.metric("berth_pool_adopted_total").await - adopted_before
        );
        // Let the pool fill again.
        server.pool_ready("python", 2.0).await;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Language {
    Python,
    TypeScript,
}

/// 100 cases against one function: one run-tests call vs one `docker run` per case on
/// the same image (what an evaluation service without a sandbox runtime does: for
/// TypeScript each run compiles with `tsc`, then runs the case with node).
async fn run_tests_vs_docker_run(client: &Client, language: Language) {
    const CASES: usize = 100;
    let (name, image, code) = match language {
        Language::Python => ("python", "python", "def solution(x):\n    return x * 2\n"),
        Language::TypeScript => (
            "typescript",
            "node",
            "function solution(x: number): number {\n  return x * 2;\n}\n",
        ),
    };
    let sb = client
        .create_sandbox(&json!({"image": image}))
        .await
        .unwrap();
    let cases: Vec<_> = (0..CASES)
        .map(|i| json!({"input": {"x": i}, "expected": i * 2}))
        .collect();
    let body = json!({"language": name, "code": code, "test_cases": cases});
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
        let argv: Vec<String> = match language {
            Language::Python => vec![
                "python3".into(),
                "-c".into(),
                format!("{code}\nassert solution({i}) == {}", i * 2),
            ],
            Language::TypeScript => vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "cat > /tmp/s.ts <<'EOF'\n{code}\nif (solution({i}) !== {}) throw new Error('wrong');\nEOF\n\
                     tsc --outDir /tmp/out /tmp/s.ts && node /tmp/out/s.js",
                    i * 2
                ),
            ],
        };
        let status = tokio::process::Command::new("docker")
            .args(["run", "--rm", "--network", "none"])
            .arg(format!("berth/{image}:latest"))
            .args(&argv)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
    let theirs = start.elapsed();
    println!(
        "{:<44} {:>8.1} ms for {CASES} cases",
        format!("run-tests ({name}) via berth"),
        ours.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} {:>8.1} ms for {CASES} cases",
        "one `docker run` per case (same image)",
        theirs.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} 1/{:.0} of the docker-run wall time (target: <= 1/50)",
        format!("berth run-tests ({name}) vs docker run"),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
