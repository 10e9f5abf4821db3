//! run-tests for Python against real sandboxes: verdicts per case, decided by the
//! supervisor (expected values never enter the sandbox), with hostile and broken
//! submissions each getting a clean verdict while the other cases run.

mod common;

use common::spawn_app;
use serde_json::{json, Value};

async fn run(app: &common::TestApp, id: &str, body: Value) -> Value {
    let response = app
        .client
        .request(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{id}/run-tests"),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let value: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {value}");
    value
}

fn statuses(report: &Value) -> Vec<&str> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn python_cases_get_verdicts_and_one_bad_case_never_stops_the_others() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"image": "python", "memory_mb": 256}))
        .await;
    // The contract's own payload.
    let report = run(
        &app,
        &sb.id,
        json!({"language": "python", "code": "def solution(x):\n    return x * 2",
               "test_cases": [{"name": "doubles", "input": {"x": 5}, "expected": 10, "hidden": false}]}),
    )
    .await;
    assert_eq!(
        (report["passed"].as_u64(), report["total"].as_u64()),
        (Some(1), Some(1))
    );
    let case = &report["results"][0];
    assert_eq!(
        (&case["name"], &case["actual"], &case["expected"]),
        (&json!("doubles"), &json!(10), &json!(10))
    );

    let code = r#"
import os, sys
calls = []
def solution(x):
    calls.append(x)
    print("VERDICT: all passed")
    if x == "raise": raise ValueError("bad " + x)
    if x == "loop":
        while True: pass
    if x == "exit": sys.exit(3)
    if x == "_exit": os._exit(4)
    if x == "memory": return len(b"x" * (2 * 1024 ** 3))
    if x == "recurse":
        def f(n): return f(n + 1)
        return f(0)
    if x == "leftover":
        os.system("sleep 300 &")
        return "left"
    if x == "state": return len(calls)
    if x == "float": return 0.1 + 0.2
    if x == "big": return 2 ** 80
    if x == "unicode": return "héllo ✓"
    if x == "nested": return {"a": [1, (2, 3)], "b": {4}}
    return x
"#;
    let cases = json!([
        {"name": "right", "input": ["same"], "expected": "same"},
        {"name": "wrong", "input": ["same"], "expected": "other"},
        {"input": ["raise"], "expected": 0},
        {"input": ["loop"], "expected": 0},
        {"input": ["exit"], "expected": 0},
        {"input": ["_exit"], "expected": 0},
        {"input": ["memory"], "expected": 0},
        {"input": ["recurse"], "expected": 0},
        {"input": ["leftover"], "expected": "left"},
        {"input": ["state"], "expected": 1},
        {"input": ["float"], "expected": 0.3},
        {"input": ["big"], "expected": 1.2089258196146292e24},
        {"input": ["unicode"], "expected": "héllo ✓"},
        {"input": ["nested"], "expected": {"a": [1, [2, 3]], "b": [4]}},
        {"name": "hidden", "input": ["raise"], "expected": 0, "hidden": true}
    ]);
    let report = run(
        &app,
        &sb.id,
        json!({"language": "python", "code": code, "test_cases": cases, "timeout_s": 2}),
    )
    .await;
    assert_eq!(
        statuses(&report),
        [
            "passed", "failed", "error", "timeout", "error", "error", "memory", "error", "passed",
            "passed", "passed", "passed", "passed", "passed", "error"
        ],
        "{report}"
    );
    let r = &report["results"];
    assert_eq!(r[1]["actual"], "same");
    assert_eq!(
        r[1]["stdout"], "VERDICT: all passed\n",
        "a fake verdict is just output"
    );
    assert_eq!(r[2]["error"], "ValueError: bad raise (line 7)");
    assert!(
        r[4]["error"].as_str().unwrap().starts_with("SystemExit"),
        "{}",
        r[4]
    );
    assert!(
        r[5]["error"].as_str().unwrap().contains("code 4"),
        "{}",
        r[5]
    );
    assert!(
        r[7]["error"]
            .as_str()
            .unwrap()
            .starts_with("RecursionError"),
        "{}",
        r[7]
    );
    assert_eq!(r[9]["actual"], 1, "every case sees fresh module state");
    let ps = app
        .client
        .sh(&sb.id, "ps -eo args | grep -c '^sleep 300' || true")
        .await
        .unwrap();
    assert_eq!(ps.stdout.trim(), "0", "what a case left running is gone");
    let hidden = &r[14];
    assert_eq!(
        hidden["error"], "ValueError (line 7)",
        "the message could echo the input"
    );
    for field in ["actual", "expected", "stdout"] {
        assert!(
            hidden.get(field).is_none(),
            "hidden cases omit {field}: {hidden}"
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn expected_values_never_enter_the_sandbox_and_broken_code_fails_every_case() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"image": "python", "files": {
            "helper.py": "def twice(x):\n    return 2 * x\n",
            "solution.py": "from helper import twice\n\nclass Solution:\n    def run(self, x):\n        return twice(x)\n"
        }}))
        .await;
    // Code hunting the environment, /proc and the filesystem for expected values.
    let hunter = r#"
import os
def solution(_):
    seen = []
    for pid in os.listdir("/proc"):
        for name in ("cmdline", "environ"):
            try: seen.append(open(f"/proc/{pid}/{name}", "rb").read().decode("latin1"))
            except OSError: pass
    seen.extend(os.environ.values())
    for root in ("/workspace", "/tmp", "/root", "/run"):
        for d, _, files in os.walk(root):
            for f in files:
                try: seen.append(open(os.path.join(d, f), "rb").read(1 << 20).decode("latin1"))
                except OSError: pass
    return "found" if any("EXPECTED-7f3a" in s for s in seen) else "nothing"
"#;
    let report = run(
        &app,
        &sb.id,
        json!({"language": "python", "code": hunter, "test_cases": [
            {"input": 1, "expected": "EXPECTED-7f3a-visible"},
            {"input": 2, "expected": "EXPECTED-7f3a-hidden", "hidden": true}]}),
    )
    .await;
    assert_eq!(report["results"][0]["actual"], "nothing", "{report}");
    assert_eq!(report["failed"], 2);

    // A path in the sandbox, importing a sibling module; a LeetCode-style class.
    let report = run(
        &app,
        &sb.id,
        json!({"language": "python", "path": "solution.py",
               "test_cases": [{"input": [21], "expected": 42}]}),
    )
    .await;
    assert_eq!(statuses(&report), ["passed"], "{report}");

    // A syntax error fails every case with the compiler's message and line.
    let report = run(
        &app,
        &sb.id,
        json!({"language": "python", "code": "def solution(x):\n    return (x\n",
               "test_cases": [{"input": 1, "expected": 1}, {"input": 2, "expected": 2}]}),
    )
    .await;
    assert_eq!(statuses(&report), ["error", "error"]);
    assert!(
        report["results"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("SyntaxError"),
        "{report}"
    );
    // Requests the server cannot run are a 400 that says why.
    let response = app
        .client
        .request(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{}/run-tests", sb.id),
        )
        .json(
            &json!({"language": "cobol", "code": "x", "test_cases": [{"input": 1, "expected": 1}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    app.cleanup().await;
}
