//! The Modal-compatible file endpoints with the payloads an application that used a Modal
//! executor app sends: one sandbox per session, created on first use, resumed when
//! stopped, never shared between tenants.

mod common;

use common::{eventually, metric, spawn_app, spawn_with, test_config};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn call(client: &berth::client::Client, route: &str, body: Value) -> (StatusCode, Value) {
    let response = client
        .request(reqwest::Method::POST, &format!("/compat/modal/{route}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_session_writes_reads_and_lists_files_in_one_sandbox_of_its_own() {
    let app = spawn_app().await;
    // Concurrent first uses of one session make one sandbox.
    let mut writes = Vec::new();
    for i in 0..3 {
        let client = app.client.clone();
        writes.push(tokio::spawn(async move {
            call(
                &client,
                "write_file",
                json!({"sessionId": "s-1", "path": format!("src/f{i}.py"), "content": format!("x = {i}\n")}),
            )
            .await
        }));
    }
    for w in writes {
        let (status, body) = w.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["success"], true);
    }
    let sessions = app
        .client
        .list_sandboxes("label=session=s-1")
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "one sandbox for one session");
    assert_eq!(
        sessions[0].image, "node",
        "the template that runs all three languages"
    );

    let (status, body) = call(
        &app.client,
        "read_file",
        json!({"sessionId": "s-1", "path": "src/f2.py"}),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"content": "x = 2\n"}))
    );
    let (status, body) = call(
        &app.client,
        "list_files",
        json!({"sessionId": "s-1", "path": "src"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f0.py", "f1.py", "f2.py"]);
    assert_eq!(
        body["files"][0],
        json!({"name": "f0.py", "path": "src/f0.py", "type": "file", "size": 6})
    );
    let (_, root) = call(&app.client, "list_files", json!({"sessionId": "s-1"})).await;
    assert_eq!(root["files"][0]["type"], "directory", "{root}");

    // A stopped session's sandbox is resumed with its files.
    app.client.stop(&sessions[0].id).await.unwrap();
    let (status, body) = call(
        &app.client,
        "read_file",
        json!({"sessionId": "s-1", "path": "src/f0.py"}),
    )
    .await;
    assert_eq!(
        (status, body["content"].as_str()),
        (StatusCode::OK, Some("x = 0\n"))
    );
    assert_eq!(
        app.client.get_sandbox(&sessions[0].id).await.unwrap().state,
        "running"
    );

    // Another tenant's session of the same name is another sandbox.
    let other = app.other_tenant("tenant-b").await;
    let (status, _) = call(
        &other,
        "read_file",
        json!({"sessionId": "s-1", "path": "src/f0.py"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "tenant-b's session s-1 has no such file"
    );

    // Bad input: a clear 4xx.
    let (status, body) = call(
        &app.client,
        "read_file",
        json!({"sessionId": "s-1", "path": "nope"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = call(
        &app.client,
        "write_file",
        json!({"sessionId": "a=b", "path": "x", "content": ""}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(
        &app.client,
        "read_file",
        json!({"session": "s-1", "path": "x"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn execute_answers_the_modal_payload_in_a_one_shot_or_a_session_sandbox() {
    let app = spawn_app().await;
    let payload = json!({"code":"def solution(x):\n    return x * 2","testCases":[{"name":"test","input":{"x":5},"expected":10,"hidden":false}],"language":"python"});
    let (status, body) = call(&app.client, "execute", payload.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(
        (body["passedTests"].as_u64(), body["totalTests"].as_u64()),
        (Some(1), Some(1))
    );
    let result = &body["testResults"][0];
    assert_eq!(
        (&result["name"], &result["passed"], &result["hidden"]),
        (&json!("test"), &json!(true), &json!(false))
    );
    assert!(
        result["duration"].is_u64() && body["executionTime"].is_u64(),
        "{body}"
    );
    assert_eq!(result["error"], Value::Null);
    // Deleted once the answer is out.
    let deleted = eventually(Duration::from_secs(30), || async {
        let live = app
            .client
            .list_sandboxes("label=berth.one-shot")
            .await
            .unwrap();
        (!live.is_empty() && live.iter().all(|s| s.state == "terminated")).then_some(())
    })
    .await;
    assert!(deleted.is_some(), "the one-shot sandbox is deleted");

    // With a sessionId the cases run in the session's sandbox, next to its files.
    let (status, _) = call(
        &app.client,
        "write_file",
        json!({"sessionId": "s-2", "path": "data.txt", "content": "7"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &app.client,
        "execute",
        json!({"sessionId": "s-2", "language": "python",
               "code": "def solution():\n    return int(open('data.txt').read())",
               "testCases": [{"name": "reads", "input": [], "expected": 7},
                             {"name": "secret", "input": [], "expected": 8, "hidden": true}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["success"].as_bool(), body["passedTests"].as_u64()),
        (Some(false), Some(1))
    );
    assert_eq!(body["testResults"][1]["hidden"], true);
    assert_eq!(
        app.client
            .list_sandboxes("label=session=s-2")
            .await
            .unwrap()
            .len(),
        1
    );
    // A language the server cannot run makes no sandbox.
    let (status, _) = call(
        &app.client,
        "execute",
        json!({"code": "x", "language": "cobol", "testCases": [{"input": 1, "expected": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.cleanup().await;
}

#[tokio::test]
async fn execute_runs_javascript_and_typescript_and_one_session_runs_all_three() {
    let app = spawn_app().await;
    for (language, code) in [
        ("javascript", "function solution(x) {\n  return x * 2;\n}"),
        (
            "typescript",
            "function solution(x: number): number {\n  return x * 2;\n}",
        ),
    ] {
        let (status, body) = call(
            &app.client,
            "execute",
            json!({"code": code, "language": language,
                   "testCases": [{"name": "test", "input": {"x": 5}, "expected": 10, "hidden": false},
                                 {"name": "wrong", "input": {"x": 1}, "expected": 3, "hidden": false}]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (body["success"].as_bool(), body["passedTests"].as_u64()),
            (Some(false), Some(1)),
            "{language}: {body}"
        );
    }
    for (language, code) in [
        ("python", "def solution(x):\n    return x + 1"),
        ("javascript", "const solution = (x) => x + 1;"),
        (
            "typescript",
            "export const solution = (x: number): number => x + 1;",
        ),
    ] {
        let (status, body) = call(
            &app.client,
            "execute",
            json!({"sessionId": "poly", "code": code, "language": language,
                   "testCases": [{"name": "inc", "input": [1], "expected": 2}]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["success"], true, "{language}: {body}");
    }
    assert_eq!(
        app.client
            .list_sandboxes("label=session=poly")
            .await
            .unwrap()
            .len(),
        1,
        "one session, one sandbox, three languages"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_one_shot_execute_takes_a_pooled_sandbox() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.pool = [("python".to_string(), 1)].into();
    let app = spawn_with(config).await;
    let ready = eventually(Duration::from_secs(120), || async {
        (metric(&app, "berth_pool_ready{template=\"python\"}").await == Some(1.0)).then_some(())
    })
    .await;
    assert!(ready.is_some());
    let payload = json!({"code":"def solution(x):\n    return x * 2","testCases":[{"name":"test","input":{"x":5},"expected":10,"hidden":false}],"language":"python"});
    let (status, body) = call(&app.client, "execute", payload).await;
    assert_eq!(
        (status, &body["success"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    assert_eq!(metric(&app, "berth_pool_adopted_total").await, Some(1.0));
    app.cleanup().await;
}
