//! The `python` and `node` templates do what their users expect, with berth's capability
//! set: run code, run pytest, make a venv, compile TypeScript, npm-install a package.

mod common;

use berth_runtime::wire::ExecRequest;
use common::spawn_app;
use serde_json::json;

async fn run(app: &common::TestApp, id: &str, command: &str) -> String {
    let req = ExecRequest {
        command: Some(command.into()),
        timeout_s: Some(120.0),
        ..Default::default()
    };
    let out = app.client.exec(id, &req).await.unwrap();
    assert_eq!(out.exit_code, Some(0), "{command}: {out:?}");
    out.stdout
}

#[tokio::test]
async fn the_python_template_runs_python_pytest_and_venv_pip() {
    let app = spawn_app().await;
    let test_file =
        "from solution import double\n\ndef test_double():\n    assert double(21) == 42\n";
    let files =
        json!({"solution.py": "def double(x):\n    return x * 2\n", "test_solution.py": test_file});
    let sb = app
        .client
        .create_sandbox(&json!({"image": "python", "files": files}))
        .await
        .unwrap();
    assert_eq!(run(&app, &sb.id, "python3 -c 'print(6*7)'").await, "42\n");
    assert!(run(&app, &sb.id, "python3 -m pytest -q test_solution.py")
        .await
        .contains("1 passed"));
    assert!(run(
        &app,
        &sb.id,
        "python3 -m venv /tmp/venv && /tmp/venv/bin/pip --version"
    )
    .await
    .starts_with("pip "));
    app.cleanup().await;
}

#[tokio::test]
async fn the_node_template_runs_node_compiles_typescript_and_npm_installs() {
    let app = spawn_app().await;
    let files = json!({"a.ts": "const x: number = 41;\nconsole.log(x + 1);\n"});
    let sb = app
        .client
        .create_sandbox(&json!({"image": "node", "files": files}))
        .await
        .unwrap();
    assert_eq!(
        run(&app, &sb.id, "node -e 'console.log(6*7)'").await,
        "42\n"
    );
    assert_eq!(run(&app, &sb.id, "tsc a.ts && node a.js").await, "42\n");
    let npm = "mkdir -p lib app && (cd lib && npm init -y >/dev/null) && cd app && npm init -y >/dev/null \
               && npm install --no-audit --no-fund ../lib >/dev/null && ls node_modules";
    assert_eq!(run(&app, &sb.id, npm).await, "lib\n");
    app.cleanup().await;
}
