//! The `berth` binary as a user runs it: `keys create`, `exec`, `cp`, `--help`.

mod common;

use common::{spawn_with, test_config};
use serde_json::json;
use std::process::Command;

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

#[tokio::test]
async fn keys_create_prints_only_a_key_that_the_server_accepts() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let out = berth()
        .args(["keys", "create", "--tenant", "team-x", "--data-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].starts_with("bk_"));
    let client = berth::client::Client::new(app.base.clone(), Some(lines[0].to_string()));
    assert!(client.list_sandboxes("").await.unwrap().is_empty());
    let bad = berth()
        .args(["keys", "create", "--tenant", "Not Valid", "--data-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("tenant name"));
    app.cleanup().await;
}

#[tokio::test]
async fn exec_and_cp_work_from_the_command_line() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({})).await;
    let (base, key) = (app.base.clone(), app.key.clone());
    let run = move |args: &[&str]| {
        let mut cmd = berth();
        cmd.args(args)
            .env("BERTH_URL", &base)
            .env("BERTH_API_KEY", &key);
        cmd
    };
    let run2 = run.clone();
    let id = sb.id.clone();
    let out = tokio::task::spawn_blocking(move || {
        run2(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 3",
        ])
        .output()
        .unwrap()
    });
    let out = out.await.unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    let local = temp.path().join("upload.txt");
    std::fs::write(&local, "from the host").unwrap();
    let dir = temp.path().join("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/x.txt"), "tree file").unwrap();
    let (id, local2, dir2, back) = (
        sb.id.clone(),
        local.clone(),
        dir.clone(),
        temp.path().join("back"),
    );
    let statuses = tokio::task::spawn_blocking(move || {
        let up = run(&[
            "cp",
            local2.to_str().unwrap(),
            &format!("{id}:in/upload.txt"),
        ])
        .status()
        .unwrap();
        let up_dir = run(&["cp", dir2.to_str().unwrap(), &format!("{id}:tree")])
            .status()
            .unwrap();
        let down = run(&["cp", &format!("{id}:tree"), back.to_str().unwrap()])
            .status()
            .unwrap();
        (up, up_dir, down)
    })
    .await
    .unwrap();
    assert!(
        statuses.0.success() && statuses.1.success() && statuses.2.success(),
        "{statuses:?}"
    );
    assert_eq!(
        app.client.read_file(&sb.id, "in/upload.txt").await.unwrap(),
        "from the host"
    );
    assert_eq!(
        std::fs::read_to_string(temp.path().join("back/sub/x.txt")).unwrap(),
        "tree file"
    );
    app.cleanup().await;
}

#[test]
fn help_explains_the_commands_and_bad_usage_fails_clearly() {
    let out = berth().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for verb in ["serve", "images", "keys", "sandbox", "exec", "cp"] {
        assert!(text.contains(verb), "--help mentions {verb}: {text}");
    }
    let bad = berth()
        .args(["cp", "a", "b"])
        .env("BERTH_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sandbox path"));
}
