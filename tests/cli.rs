//! The `berth` binary as a user runs it: `keys create|list|revoke`, `exec` (stdin, timeouts,
//! output cuts), `cp` by `docker cp`'s rules, `sandbox list`, messages, `--help`.

mod common;

use common::{eventually, spawn_with, test_config};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

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

/// Runs `berth` with `args` against `app`, feeding `stdin`; returns (code, stdout, stderr).
async fn berth_at(
    app: &common::TestApp,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (Option<i32>, String, String) {
    let (base, key) = (app.base.clone(), app.key.clone());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(|s| s.to_vec());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = berth()
            .args(&args)
            .env("BERTH_URL", &base)
            .env("BERTH_API_KEY", &key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            pipe.write_all(&bytes).unwrap();
        }
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn exec_forwards_stdin_and_says_how_to_give_a_command_longer() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({})).await;
    let (code, out, _) = berth_at(
        &app,
        &["exec", &sb.id, "--", "sh", "-c", "wc -c; cat /dev/null"],
        Some(b"print(6*7)"),
    )
    .await;
    assert_eq!(
        (code, out.trim()),
        (Some(0), "10"),
        "stdin reaches the command"
    );
    let (code, out, _) = berth_at(
        &app,
        &["exec", "-n", &sb.id, "--", "sh", "-c", "wc -c"],
        Some(b"left for the caller's loop"),
    )
    .await;
    assert_eq!((code, out.trim()), (Some(0), "0"), "-n reads no stdin");
    let (code, _, err) = berth_at(
        &app,
        &["exec", &sb.id, "--timeout", "1", "--", "sleep", "5"],
        None,
    )
    .await;
    assert_eq!(code, Some(137));
    assert!(
        err.contains("--timeout 1") || err.contains("--timeout of 1"),
        "{err}"
    );
    assert!(err.contains("--timeout SECONDS"), "{err}");
    let (_, out, err) = berth_at(
        &app,
        &[
            "exec",
            &sb.id,
            "--max-output",
            "100",
            "--",
            "sh",
            "-c",
            "seq 1 10000",
        ],
        None,
    )
    .await;
    assert!(
        out.starts_with("1\n2\n") && out.ends_with("9999\n10000\n"),
        "head and tail kept"
    );
    assert!(err.contains("were cut here"), "{err}");
    app.cleanup().await;
}

#[tokio::test]
async fn cp_follows_docker_cp_rules() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({"files": {"in/.keep": ""}})).await;
    let file = temp.path().join("upload.txt");
    std::fs::write(&file, "from the host").unwrap();
    let tree = temp.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/x.txt"), "tree file").unwrap();
    std::os::unix::fs::symlink("sub/x.txt", tree.join("link")).unwrap();
    let at = |p: &str| format!("{}:{p}", sb.id);
    let cp = |a: String, b: String| {
        let app = &app;
        async move { berth_at(app, &["cp", &a, &b], None).await }
    };
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();

    // A file into an existing directory keeps its name.
    assert_eq!(cp(path(&file), at("in")).await.0, Some(0));
    assert_eq!(
        app.client.read_file(&sb.id, "in/upload.txt").await.unwrap(),
        "from the host"
    );
    // A directory into an existing directory nests; a link stays a link.
    assert_eq!(cp(path(&tree), at("in")).await.0, Some(0));
    let link = app
        .client
        .sh(&sb.id, "readlink in/tree/link; cat in/tree/sub/x.txt")
        .await
        .unwrap();
    assert_eq!(link.stdout, "sub/x.txt\ntree file");
    // `SRC/.` copies the contents.
    assert_eq!(
        cp(format!("{}/.", path(&tree)), at("flat")).await.0,
        Some(0)
    );
    assert_eq!(
        app.client
            .read_file(&sb.id, "flat/sub/x.txt")
            .await
            .unwrap(),
        "tree file"
    );
    // Out of the sandbox: into an existing local directory it nests too.
    let back = temp.path().join("back");
    std::fs::create_dir_all(&back).unwrap();
    assert_eq!(cp(at("in/tree"), path(&back)).await.0, Some(0));
    assert_eq!(
        std::fs::read_to_string(back.join("tree/sub/x.txt")).unwrap(),
        "tree file"
    );
    assert_eq!(
        std::fs::read_link(back.join("tree/link")).unwrap(),
        std::path::Path::new("sub/x.txt")
    );
    // A file out into a directory keeps its name.
    assert_eq!(cp(at("in/upload.txt"), path(&back)).await.0, Some(0));
    assert_eq!(
        std::fs::read_to_string(back.join("upload.txt")).unwrap(),
        "from the host"
    );
    // `-` is a tar on stdout.
    let (code, tar, _) = berth_at(&app, &["cp", &at("in/tree"), "-"], None).await;
    assert_eq!(code, Some(0));
    assert!(tar.contains("sub/x.txt"));
    // Missing sources and a file onto a missing directory say so.
    let (code, _, err) = cp(at("nope"), path(&back)).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("no such file"), "{err}");
    let (code, _, err) = cp(path(&file), at("missing-dir/")).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("does not exist"), "{err}");
    app.cleanup().await;
}

#[tokio::test]
async fn the_cli_speaks_its_own_words_and_manages_keys() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({"auto_resume": false})).await;
    app.client.stop(&sb.id).await.unwrap();
    let (code, _, err) = berth_at(&app, &["exec", &sb.id, "--", "true"], None).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("`berth sandbox resume {}`", sb.id)),
        "{err}"
    );
    assert_eq!(err.matches("berth:").count(), 1, "said once: {err}");

    // Listing: a header; terminated ones only with --all.
    let gone = app.sandbox(json!({})).await;
    app.client.delete(&gone.id, false).await.unwrap();
    let (_, out, err) = berth_at(&app, &["sandbox", "list"], None).await;
    assert!(
        out.starts_with("ID ") && out.contains(&sb.id) && !out.contains(&gone.id),
        "{out}"
    );
    assert!(err.contains("--all"), "{err}");
    let (_, out, _) = berth_at(&app, &["sandbox", "list", "--all", "--json"], None).await;
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // No key, no server: what to do.
    let no_key = tokio::task::spawn_blocking(|| {
        berth()
            .args(["sandbox", "list"])
            .env_remove("BERTH_API_KEY")
            .env("HOME", "/nonexistent")
            .env("BERTH_URL", "127.0.0.1:9")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("BERTH_API_KEY"));
    let down = tokio::task::spawn_blocking(|| {
        berth()
            .args(["sandbox", "list"])
            .env("BERTH_API_KEY", "bk_x")
            .env("BERTH_URL", "127.0.0.1:9")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&down.stderr);
    assert!(
        text.contains("http://127.0.0.1:9") && text.contains("berth serve"),
        "{text}"
    );

    // keys list shows ids, never keys; revoke takes effect within seconds.
    let data_dir = temp.path().to_str().unwrap().to_string();
    let (_, out, _) = berth_at(&app, &["keys", "list", "--data-dir", &data_dir], None).await;
    assert!(out.contains("tenant-a") && !out.contains(&app.key), "{out}");
    let (code, _, err) = berth_at(
        &app,
        &["keys", "revoke", &app.key, "--data-dir", &data_dir],
        None,
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let refused = eventually(Duration::from_secs(10), || async {
        let e = app.client.get_sandbox(&sb.id).await.err()?;
        (e.status() == Some(reqwest::StatusCode::UNAUTHORIZED)).then_some(())
    })
    .await;
    assert!(refused.is_some(), "a revoked key stops working");
    app.cleanup().await;
}

#[tokio::test]
async fn berth_test_prints_a_verdict_per_case_and_exits_0_only_when_all_passed() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({"image": "python"})).await;
    let code = temp.path().join("f.py");
    std::fs::write(&code, "def solution(a, b):\n    return a + b\n").unwrap();
    let cases = temp.path().join("cases.json");
    std::fs::write(
        &cases,
        r#"[{"name": "adds", "input": {"a": 1, "b": 2}, "expected": 3},
            {"name": "hidden", "input": [2, 2], "expected": 4, "hidden": true}]"#,
    )
    .unwrap();
    let args = |cases: &std::path::Path| {
        vec![
            "test".to_string(),
            sb.id.clone(),
            "--code-file".into(),
            code.to_str().unwrap().into(),
            "--cases".into(),
            cases.to_str().unwrap().into(),
        ]
    };
    let ok_args = args(&cases);
    let refs: Vec<&str> = ok_args.iter().map(String::as_str).collect();
    let (code_ok, out, err) = berth_at(&app, &refs, None).await;
    assert_eq!(code_ok, Some(0), "{out}{err}");
    assert!(
        out.contains("adds") && out.contains("passed") && out.ends_with("2 passed, 0 failed\n"),
        "{out}"
    );
    let wrong = temp.path().join("wrong.json");
    std::fs::write(
        &wrong,
        r#"[{"name": "adds", "input": [1, 2], "expected": 4}]"#,
    )
    .unwrap();
    let bad_args = args(&wrong);
    let refs: Vec<&str> = bad_args.iter().map(String::as_str).collect();
    let (code_bad, out, _) = berth_at(&app, &refs, None).await;
    assert_eq!(code_bad, Some(1));
    assert!(out.contains("expected 4 got 3"), "{out}");

    // The language follows the file's extension.
    let node = app.sandbox(json!({"image": "node"})).await;
    let ts = temp.path().join("f.ts");
    std::fs::write(
        &ts,
        "export function add(a: number, b: number): number {\n  return a + b;\n}\n",
    )
    .unwrap();
    let ts_args = [
        "test",
        node.id.as_str(),
        "--code-file",
        ts.to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
    ];
    let (code_ts, out, err) = berth_at(&app, &ts_args, None).await;
    assert_eq!(code_ts, Some(0), "{out}{err}");
    let odd = temp.path().join("f.rb");
    std::fs::write(&odd, "x").unwrap();
    let odd_args = [
        "test",
        node.id.as_str(),
        "--code-file",
        odd.to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
    ];
    let (code_odd, _, err) = berth_at(&app, &odd_args, None).await;
    assert_ne!(code_odd, Some(0));
    assert!(err.contains("--language"), "{err}");
    app.cleanup().await;
}

/// A tmux server of this test's own (its own socket), removed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        Tmux {
            socket: format!("berth-test-{name}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed (scripts/test.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    async fn wait_for(&self, needle: &str) -> String {
        let found = eventually(Duration::from_secs(20), || async {
            let screen = self.screen();
            screen.contains(needle).then_some(screen)
        })
        .await;
        found.unwrap_or_else(|| panic!("no {needle:?} on the screen:\n{}", self.screen()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[tokio::test]
async fn berth_shell_is_a_real_terminal_that_follows_the_window_and_exits_with_the_shell() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({})).await;
    let tmux = Tmux::new("shell");
    let command = format!(
        "BERTH_URL={} BERTH_API_KEY={} {} shell {} --session tmux; echo EXITED=$?; \
         stty -a | grep -o -- '-icanon\\|icanon' | head -1; sleep 60",
        app.base,
        app.key,
        env!("CARGO_BIN_EXE_berth"),
        sb.id
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "100",
        "-y",
        "30",
        &command,
    ]);
    tmux.wait_for("user@sandbox").await;
    tmux.run(&[
        "send-keys",
        "-t",
        "t",
        "stty size; echo ok-$((40+2))",
        "Enter",
    ]);
    let screen = tmux.wait_for("ok-42").await;
    assert!(screen.contains("30 100"), "{screen}");
    // A window change reaches the remote terminal.
    tmux.run(&["resize-window", "-t", "t", "-x", "120", "-y", "40"]);
    tmux.run(&["send-keys", "-t", "t", "clear; stty size", "Enter"]);
    tmux.wait_for("40 120").await;
    // Ctrl-C reaches the remote program, not this client. Not under gVisor 20221219,
    // whose terminals turn no key into a signal (google/gvisor#4823, fixed after it).
    if common::test_runtime().pty_signals_keys() {
        ctrl_c_reaches_the_remote_program(&app, &sb.id, &tmux).await;
    }
    tmux.run(&["send-keys", "-t", "t", "exit 7", "Enter"]);
    let screen = tmux.wait_for("EXITED=7").await;
    // The local terminal is back in canonical (cooked) mode.
    let after = screen.split("EXITED=7").nth(1).unwrap_or_default();
    let mode = eventually(Duration::from_secs(10), || async {
        let screen = tmux.screen();
        let after = screen.split("EXITED=7").nth(1)?.to_string();
        after.contains("icanon").then_some(after)
    })
    .await
    .unwrap_or_else(|| after.to_string());
    assert!(
        mode.lines().any(|l| l.trim() == "icanon"),
        "the terminal mode was restored: {mode}"
    );
    app.cleanup().await;
}

async fn ctrl_c_reaches_the_remote_program(app: &common::TestApp, id: &str, tmux: &Tmux) {
    tmux.run(&["send-keys", "-t", "t", "sleep 100", "Enter"]);
    // Only once `sleep` runs does the terminal's foreground belong to it: a Ctrl-C
    // before that would reach the shell, which ignores it.
    let sleeping = eventually(Duration::from_secs(20), || async {
        let out = app.client.sh(id, "cat /proc/[0-9]*/comm").await.ok()?;
        out.stdout.lines().any(|l| l == "sleep").then_some(())
    })
    .await;
    assert!(sleeping.is_some(), "sleep 100 never started");
    tmux.run(&["send-keys", "-t", "t", "C-c"]);
    tmux.run(&["send-keys", "-t", "t", "echo still-$((1+1))", "Enter"]);
    tmux.wait_for("still-2").await;
}

#[tokio::test]
async fn berth_shell_passes_piped_input_to_its_end() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(temp.path())).await;
    let sb = app.sandbox(json!({})).await;
    // The end of piped input reaches the program as a terminal's Ctrl-D would. gVisor
    // 20221219's terminals ignore that key (google/gvisor#9333, fixed after it): there
    // `head` stops at the third line instead, and the input still has to get through.
    let cmd = if common::test_runtime().pty_signals_keys() {
        "stty -echo; wc -l; exit 5"
    } else {
        "stty -echo; head -n 3 | wc -l; exit 5"
    };
    let (code, out, err) = berth_at(
        &app,
        &["shell", &sb.id, "--cmd", cmd],
        Some(b"one\ntwo\nthree\n"),
    )
    .await;
    assert_eq!(code, Some(5), "{out}{err}");
    assert!(
        out.trim_end().ends_with('3'),
        "wc saw the end of its input: {out:?}"
    );
    app.cleanup().await;
}
