//! Supervisor memory stays bounded under concurrency: eight execs at once, each printing
//! the largest output a request may keep (64 MiB of control bytes, six bytes each once
//! escaped as JSON), pass through the supervisor as streams. Alone in its binary so the
//! measurement is clean.

mod common;

use common::spawn_app;
use futures_util::StreamExt;
use serde_json::json;

/// The supervisor's growth allowed for eight maximal requests in flight.
const BOUND: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn eight_concurrent_maximal_execs_keep_the_supervisor_under_64_mib_of_growth() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({"memory_mb": 3072, "cpu": 2.0})).await;
    app.client.sh(&sb.id, "echo warm").await.unwrap();
    let before = common::peak_rss_bytes();
    let cap: u64 = 64 * 1024 * 1024;
    let mut runs = Vec::new();
    for _ in 0..8 {
        let client = app.client.clone();
        let id = sb.id.clone();
        runs.push(tokio::spawn(async move {
            let response = client
                .request(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({
                    "command": "head -c 70000000 /dev/zero | tr '\\0' '\\1'",
                    "max_output_bytes": cap,
                    "timeout_s": 300
                }))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            // Read as a stream and drop it: the client must not be what grows.
            let mut body = response.bytes_stream();
            let mut total = 0u64;
            let mut tail = Vec::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.unwrap();
                total += chunk.len() as u64;
                tail = chunk[chunk.len().saturating_sub(200)..].to_vec();
            }
            (total, String::from_utf8_lossy(&tail).into_owned())
        }));
    }
    for run in runs {
        let (total, tail) = run.await.unwrap();
        assert!(
            total > 6 * cap,
            "the whole escaped answer arrived ({total} bytes)"
        );
        assert!(
            tail.contains("\"truncated\":true") || tail.contains("cut_bytes"),
            "{tail}"
        );
    }
    let grown = common::peak_rss_bytes().saturating_sub(before);
    eprintln!(
        "supervisor peak RSS grew by {} MiB for 8 maximal execs",
        grown >> 20
    );
    assert!(
        grown < BOUND,
        "supervisor peak memory grew by {} MiB",
        grown >> 20
    );
    app.cleanup().await;
}
