//! run-tests against real sandboxes, driven by the corpus in `tests/corpus/run_tests`:
//! every submission in Python, JavaScript and TypeScript gets the exact verdict its
//! manifest names for each case (decided by the supervisor; expected values never enter
//! the sandbox), hostile and broken ones included, while the other cases run.

mod common;

use common::spawn_app;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A manifest's case. Input and expected stay JSON text, so big integers keep every digit
/// on the way to the server.
#[derive(Deserialize, Serialize)]
struct Case {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected: Option<Box<RawValue>>,
    #[serde(default)]
    hidden: bool,
    /// The verdict it must get (never sent).
    #[serde(skip_serializing)]
    want: Value,
}

/// A run-tests request, serialized straight from the manifest's raw values.
#[derive(Serialize)]
struct Body<'a> {
    language: &'a str,
    code: &'a str,
    test_cases: &'a [Case],
    timeout_s: Option<f64>,
    entrypoint: Option<&'a str>,
}

#[derive(Deserialize)]
struct Manifest {
    cases: Vec<Case>,
    #[serde(default)]
    timeout_s: Option<f64>,
    #[serde(default)]
    entrypoint: Option<String>,
}

fn corpus(language: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/run_tests")
        .join(language)
}

async fn run(app: &common::TestApp, id: &str, body: &impl Serialize) -> Value {
    let response = app
        .client
        .request(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{id}/run-tests"),
        )
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let value: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {value}");
    value
}

fn whole(pattern: &str) -> Regex {
    Regex::new(&format!("(?s)^(?:{pattern})$")).unwrap()
}

/// Checks one case's verdict against its `want`.
fn check_case(submission: &str, want: &Value, got: &Value) {
    let name = got["name"].as_str().unwrap_or("?");
    let context = format!("{submission} / {name}: {got}");
    assert_eq!(got["status"], want["status"], "{context}");
    assert_eq!(
        got["passed"].as_bool(),
        Some(want["status"] == "passed"),
        "{context}"
    );
    for field in ["error", "stdout"] {
        if let Some(pattern) = want[field].as_str() {
            let text = got[field].as_str().unwrap_or_default();
            assert!(
                whole(pattern).is_match(text),
                "{context}: {field} {text:?} does not match {pattern:?}"
            );
        }
    }
    if let Some(actual) = want.get("actual") {
        assert_eq!(&got["actual"], actual, "{context}");
    }
    for field in want["absent"].as_array().into_iter().flatten() {
        let field = field.as_str().unwrap();
        assert!(
            got.get(field).is_none(),
            "{context}: {field} must be absent"
        );
    }
}

/// Runs every submission of `language` in one sandbox of `image`; the language
/// directory's files without a manifest (helpers) are in the workdir beside them.
async fn run_corpus(language: &str, extension: &str, image: &str) {
    let app = spawn_app().await;
    let dir = corpus(language);
    let mut files = serde_json::Map::new();
    let mut submissions = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some(extension) {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let code = std::fs::read_to_string(&path).unwrap();
        if dir.join(format!("{name}.json")).exists() {
            submissions.push((name, code));
        } else {
            files.insert(format!("{name}.{extension}"), code.into());
        }
    }
    submissions.sort();
    assert!(submissions.len() >= 5, "the {language} corpus is there");
    let sb = app
        .sandbox(json!({"image": image, "memory_mb": 256, "files": files}))
        .await;
    for (name, code) in &submissions {
        let manifest: Manifest = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let body = Body {
            language,
            code,
            test_cases: &manifest.cases,
            timeout_s: manifest.timeout_s,
            entrypoint: manifest.entrypoint.as_deref(),
        };
        eprintln!("submission {name}");
        let report = run(&app, &sb.id, &body).await;
        let results = report["results"].as_array().unwrap();
        assert_eq!(results.len(), manifest.cases.len(), "{name}: {report}");
        for (case, got) in manifest.cases.iter().zip(results) {
            check_case(&format!("{language}/{name}"), &case.want, got);
        }
        let passed = results.iter().filter(|r| r["passed"] == true).count();
        assert_eq!(report["passed"], passed, "{report}");
        assert_eq!(report["total"], manifest.cases.len(), "{report}");
    }
    // Nothing a case started outlives its case; the harness itself is gone too (a zombie
    // the agent has not reaped yet is not running).
    let ps = app
        .client
        .sh(&sb.id, "ps -eo stat=,args= | grep -v '^Z'")
        .await
        .unwrap();
    let left: Vec<&str> = ps
        .stdout
        .lines()
        .filter(|l| !l.contains("berth-agent") && !l.contains("ps -eo") && !l.contains("grep -v"))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn every_python_submission_of_the_corpus_gets_its_verdicts() {
    run_corpus("python", "py", "python").await;
}

#[tokio::test]
async fn every_javascript_submission_of_the_corpus_gets_its_verdicts() {
    run_corpus("javascript", "js", "node").await;
}

#[tokio::test]
async fn every_typescript_submission_of_the_corpus_gets_its_verdicts() {
    run_corpus("typescript", "ts", "node").await;
}

#[tokio::test]
async fn code_at_a_path_in_the_sandbox_loads_once_with_its_siblings() {
    let app = spawn_app().await;
    let sb = app
        .sandbox(json!({"image": "node", "files": {
            "py/helper.py": "def twice(x):\n    return 2 * x\n",
            "py/solution.py": "from helper import twice\n\nclass Solution:\n    def run(self, x):\n        return twice(x)\n",
            "js/lib.js": "exports.twice = (x) => 2 * x;\n",
            "js/main.js": "const { twice } = require('./lib');\nmodule.exports = function run(x) { return twice(x); };\n",
            "ts/util.ts": "export const twice = (x: number): number => 2 * x;\n",
            "ts/main.ts": "import { twice } from './util';\nexport function run(x: number): number {\n  return twice(x);\n}\n"
        }}))
        .await;
    for (language, path) in [
        ("python", "py/solution.py"),
        ("javascript", "js/main.js"),
        ("typescript", "ts/main.ts"),
    ] {
        let report = run(
            &app,
            &sb.id,
            &json!({"language": language, "path": path,
                   "test_cases": [{"input": [21], "expected": 42}, {"input": [2], "expected": 4}]}),
        )
        .await;
        assert_eq!(report["passed"], 2, "{language}: {report}");
    }
    // A missing path fails every case and says which file.
    let report = run(
        &app,
        &sb.id,
        &json!({"language": "typescript", "path": "nope.ts",
               "test_cases": [{"input": 1, "expected": 1}]}),
    )
    .await;
    let error = report["results"][0]["error"].as_str().unwrap();
    assert!(error.contains("nope.ts"), "{report}");
    app.cleanup().await;
}

/// Run-tests reaching a stopped sandbox brings it back itself (auto_resume, the default),
/// with the files it had; with auto_resume off it answers 409 naming the state.
#[tokio::test]
async fn run_tests_on_a_stopped_sandbox_resumes_it_unless_auto_resume_is_off() {
    let app = spawn_app().await;
    let body = json!({"language": "python", "path": "solution.py",
                      "test_cases": [{"input": [21], "expected": 42}]});
    let solution = "class Solution:\n    def run(self, x):\n        return 2 * x\n";
    let sb = app
        .sandbox(json!({"image": "python", "files": {"solution.py": solution}}))
        .await;
    app.client.stop(&sb.id).await.unwrap();
    let report = run(&app, &sb.id, &body).await;
    assert_eq!(report["passed"], 1, "{report}");
    assert_eq!(
        app.client.get_sandbox(&sb.id).await.unwrap().state,
        "running"
    );

    let manual = app
        .sandbox(json!({"image": "python", "auto_resume": false,
                        "files": {"solution.py": solution}}))
        .await;
    app.client.stop(&manual.id).await.unwrap();
    let refused = app
        .client
        .request(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{}/run-tests", manual.id),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::CONFLICT);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stopped")),
        "{error}"
    );
    assert_eq!(
        app.client.get_sandbox(&manual.id).await.unwrap().state,
        "stopped"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn requests_that_cannot_run_are_refused_or_explained() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let post = |body: Value| {
        let request = app.client.request(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{}/run-tests", sb.id),
        );
        async move { request.json(&body).send().await.unwrap() }
    };
    for bad in [
        json!({"language": "cobol", "code": "x", "test_cases": [{"input": 1, "expected": 1}]}),
        json!({"language": "python", "test_cases": [{"input": 1, "expected": 1}]}),
        json!({"language": "python", "code": "x", "test_cases": []}),
        json!({"language": "python", "code": "x", "entrypoint": "os.system('x')",
               "test_cases": [{"input": 1}]}),
        json!({"language": "python", "code": "x", "timeout_s": 0, "test_cases": [{"input": 1}]}),
    ] {
        let response = post(bad.clone()).await;
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }
    // The `base` template has neither python3 nor node: every case says so.
    for (language, missing) in [("python", "python3"), ("javascript", "node")] {
        let response = post(
            json!({"language": language, "code": "def solution(x): return x",
            "test_cases": [{"input": 1, "expected": 1}, {"input": 2, "expected": 2}]}),
        )
        .await;
        assert_eq!(response.status(), 200);
        let report: Value = response.json().await.unwrap();
        for r in report["results"].as_array().unwrap() {
            assert_eq!(r["status"], "error");
            let error = r["error"].as_str().unwrap();
            assert!(error.contains(&format!("has no {missing}")), "{error}");
        }
    }
    app.cleanup().await;
}
