//! A gigabyte of output through exec (buffered and streamed) is capped inside the sandbox:
//! the supervisor's memory stays flat. Alone in its binary so the measurement is clean.

mod common;

use berth_runtime::wire::{ExecEvent, ExecRequest};
use common::spawn_app;
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test]
async fn a_gigabyte_of_output_is_capped_without_the_supervisor_growing() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    // Warm up every code path once so their one-time allocations are not counted.
    app.client.sh(&sb.id, "echo warm").await.unwrap();
    let before = common::peak_rss_bytes();

    let gigabyte = ExecRequest {
        command: Some("head -c 1000000000 /dev/zero".into()),
        timeout_s: Some(120.0),
        ..Default::default()
    };
    let out = app.client.exec(&sb.id, &gigabyte).await.unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert!(out.truncated);
    assert_eq!(out.stdout_cut_bytes, Some(1_000_000_000 - 1024 * 1024));
    let marker = out.stdout.len() - 1024 * 1024;
    assert!(
        (60..120).contains(&marker),
        "the default cap is 1 MiB per stream (head and tail), plus a marker line"
    );

    let mut streamed = 0usize;
    let mut truncated = false;
    let mut events = Box::pin(app.client.exec_stream(&sb.id, &gigabyte).await.unwrap());
    while let Some(event) = events.next().await {
        match event.unwrap() {
            ExecEvent::Stdout { data } => streamed += data.len(),
            ExecEvent::Truncated { .. } => truncated = true,
            _ => {}
        }
    }
    assert!(truncated);
    assert_eq!(streamed, 1024 * 1024);

    let grown = common::peak_rss_bytes().saturating_sub(before);
    assert!(
        grown < 48 * 1024 * 1024,
        "supervisor peak memory grew by {} MiB",
        grown / (1024 * 1024)
    );
    app.cleanup().await;
}
