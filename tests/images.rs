//! Images: templates resolve to content-addressed tags; any local image works because the
//! agent is bind-mounted, including one with no libc and no shell at all.

mod common;

use berth::docker::{load_rootfs_layer, DockerEngine, ImageMeta};
use berth_runtime::wire::{ExecRequest, FileKind};
use common::spawn_app;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// Builds `berth-test/nolibc:1`: a root filesystem holding only a static busybox.
async fn nolibc_image() -> String {
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "this test needs a static busybox: apt-get install busybox-static"
    );
    let temp = tempfile::tempdir().unwrap();
    let rootfs = temp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    let layer = temp.path().join("layer.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&layer).unwrap());
    builder.append_dir_all(".", &rootfs).unwrap();
    builder.finish().unwrap();
    drop(builder);
    let engine = DockerEngine::connect(Duration::from_secs(60))
        .await
        .unwrap();
    let tag = "berth-test/nolibc:1".to_string();
    let meta = ImageMeta {
        tag: tag.clone(),
        env: vec!["PATH=/bin".into()],
        cmd: vec![],
        workdir: "/".into(),
        labels: Default::default(),
    };
    load_rootfs_layer(&engine, &layer, &meta).await.unwrap();
    tag
}

#[tokio::test]
async fn an_image_without_libc_or_shell_runs_exec_and_every_file_route() {
    let image = nolibc_image().await;
    let app = spawn_app().await;
    let sb = app
        .client
        .create_sandbox(&json!({"image": image, "files": {"hello.txt": "hi"}}))
        .await
        .unwrap();
    assert_eq!(sb.state, "running");
    let ls = ExecRequest {
        cmd: Some(vec!["/bin/busybox".into(), "ls".into(), "/".into()]),
        ..Default::default()
    };
    let out = app.client.exec(&sb.id, &ls).await.unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert!(
        !out.stdout.contains("lib"),
        "no libc directory: {}",
        out.stdout
    );
    let sh = app.client.sh(&sb.id, "echo no shell").await.unwrap();
    assert_eq!(sh.exit_code, Some(127), "there is no /bin/sh in this image");
    assert_eq!(
        app.client.read_file(&sb.id, "hello.txt").await.unwrap(),
        "hi"
    );
    let list = app.client.list_files(&sb.id, "/", 1).await.unwrap();
    assert!(list
        .entries
        .iter()
        .any(|e| e.path == "/bin" && e.kind == FileKind::Dir));
    app.cleanup().await;
}

#[tokio::test]
async fn templates_have_content_addressed_tags_and_unknown_images_are_refused() {
    let config = berth::config::ImagesConfig::default();
    let base = berth::images::template("base").unwrap();
    let tag = base.tag(&config);
    assert!(tag.starts_with("berth/base:"));
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let info = common::docker()
        .await
        .inspect_container(&format!("berth-{}", sb.id), None)
        .await
        .unwrap();
    assert_eq!(
        info.config.unwrap().image.unwrap(),
        tag,
        "a template runs its content-addressed tag"
    );
    let err = app
        .client
        .create_sandbox(&json!({"image": "registry.example/never-pulled:1"}))
        .await
        .unwrap_err();
    assert_eq!(
        err.status(),
        Some(StatusCode::NOT_FOUND),
        "an absent image, like an absent volume"
    );
    assert!(err.to_string().contains("never pulls"), "{err}");
    app.cleanup().await;
}
