//! `cargo bench --bench terminal` (or `scripts/bench.sh`): terminals through berth's
//! WebSocket against a raw Docker attach (`docker exec -it` through the Engine API) on
//! the same container, in the same run. Prints figures; asserts nothing.
//!
//! - keystroke echo latency (one byte to `cat` on a PTY, its echo back), p50/p99
//! - output throughput of `cat` of a 100 MB file, and the supervisor's memory meanwhile

use berth::client::Client;
use berth::config::Config;
use berth::startup::{create_api_key, Application};
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SIZE: usize = 100 * 1024 * 1024;
const KEYSTROKES: usize = 300;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_terminal(base: &str, key: &str, id: &str, query: &str) -> Socket {
    let url = format!(
        "{}/v1/sandboxes/{id}/terminal?{query}",
        base.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // The hello.
    ws.next().await.unwrap().unwrap();
    ws
}

/// Reads binary output until `needle` has been seen; returns the bytes read.
async fn ws_until(ws: &mut Socket, needle: &[u8]) -> usize {
    let mut seen = 0;
    let mut last: Vec<u8> = Vec::new();
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                seen += b.len();
                last.extend_from_slice(&b);
                if last.windows(needle.len()).any(|w| w == needle) {
                    return seen;
                }
                let keep = last.len().saturating_sub(needle.len());
                last.drain(..keep);
            }
            Some(Ok(Message::Close(frame))) => {
                panic!("the terminal closed: {frame:?} after {seen} bytes")
            }
            Some(Ok(_)) => {}
            other => panic!("the terminal ended: {other:?} after {seen} bytes"),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        pool: Default::default(),
        ..Default::default()
    };
    if let Ok(v) = std::env::var("BENCH_RECORDING_BYTES") {
        config.limits.max_recording_bytes = v.parse().unwrap();
    }
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
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = Client::new(base.clone(), Some(key.clone()));
    let docker = bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let sb = client
        .create_sandbox(&json!({"image": "base", "memory_mb": 512}))
        .await
        .unwrap();
    let container = format!("berth-{}", sb.id);
    client
        .sh(
            &sb.id,
            &format!("head -c {SIZE} /dev/zero | tr '\\0' x > /tmp/big; echo END >> /tmp/big"),
        )
        .await
        .unwrap();
    println!(
        "berth terminal benchmark (2 cores); echo n={KEYSTROKES}, cat of {} MB",
        SIZE / (1024 * 1024)
    );

    // Echo: `cat` with the terminal in raw mode echoes each byte it reads, once.
    let mut ws = open_terminal(
        &base,
        &key,
        &sb.id,
        "session=echo&cmd=stty%20raw%20-echo%3B%20cat",
    )
    .await;
    let mut ours = Vec::new();
    for i in 0..KEYSTROKES + 20 {
        let byte = [b'a' + (i % 26) as u8];
        let start = Instant::now();
        ws.send(Message::Binary(byte.to_vec().into()))
            .await
            .unwrap();
        ws_until(&mut ws, &byte).await;
        if i >= 20 {
            ours.push(start.elapsed());
        }
    }
    drop(ws);

    let exec = docker
        .create_exec(
            &container,
            CreateExecOptions {
                cmd: Some(vec!["sh", "-c", "stty raw -echo; cat"]),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                tty: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                tty: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap()
    else {
        panic!("attached")
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raw = Vec::new();
    for i in 0..KEYSTROKES + 20 {
        let byte = [b'a' + (i % 26) as u8];
        let start = Instant::now();
        input.write_all(&byte).await.unwrap();
        loop {
            let chunk = output.next().await.unwrap().unwrap().into_bytes();
            if chunk.contains(&byte[0]) {
                break;
            }
        }
        if i >= 20 {
            raw.push(start.elapsed());
        }
    }
    drop(input);
    let (o50, o99) = (percentile(&mut ours, 0.5), percentile(&mut ours, 0.99));
    let (r50, r99) = (percentile(&mut raw, 0.5), percentile(&mut raw, 0.99));
    println!(
        "{:<46} p50={:>7.3} ms  p99={:>7.3} ms",
        "keystroke echo via berth WebSocket",
        ms(o50),
        ms(o99)
    );
    println!(
        "{:<46} p50={:>7.3} ms  p99={:>7.3} ms",
        "keystroke echo via Docker attach (same ctr)",
        ms(r50),
        ms(r99)
    );
    println!(
        "{:<46} {:+.3} ms at p50 (target: within 1 ms)",
        "berth minus raw",
        ms(o50) - ms(r50)
    );

    // Throughput: cat of the file, until its last line arrives.
    let rss_before = rss_kib("VmRSS:");
    let mut ws = open_terminal(&base, &key, &sb.id, "session=cat&cmd=cat%20/tmp/big").await;
    let start = Instant::now();
    let bytes = ws_until(&mut ws, b"END").await;
    let ours = start.elapsed();
    let rss_after = rss_kib("VmRSS:");
    drop(ws);

    let exec = docker
        .create_exec(
            &container,
            CreateExecOptions {
                cmd: Some(vec!["cat", "/tmp/big"]),
                attach_stdout: Some(true),
                tty: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let start = Instant::now();
    let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                tty: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap()
    else {
        panic!("attached")
    };
    let mut raw_bytes = 0;
    while let Some(Ok(chunk)) = output.next().await {
        raw_bytes += chunk.into_bytes().len();
    }
    let theirs = start.elapsed();
    let mbps = |b: usize, d: Duration| b as f64 / 1e6 / d.as_secs_f64();
    println!(
        "{:<46} {:>8.1} MB/s ({} MB in {:.2} s)",
        "cat through berth WebSocket",
        mbps(bytes, ours),
        bytes / 1_000_000,
        ours.as_secs_f64()
    );
    println!(
        "{:<46} {:>8.1} MB/s ({} MB in {:.2} s)",
        "cat through Docker attach (same ctr)",
        mbps(raw_bytes, theirs),
        raw_bytes / 1_000_000,
        theirs.as_secs_f64()
    );
    println!(
        "{:<46} {} MiB before, {} MiB after (peak {} MiB)",
        "supervisor RSS around the berth cat",
        rss_before / 1024,
        rss_after / 1024,
        rss_kib("VmHWM:") / 1024
    );
    client.delete(&sb.id, false).await.unwrap();
    let _ = stop.send(());
    let _ = server.await;
}
