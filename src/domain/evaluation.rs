//! Evaluation: a run-tests request checked, and each case judged here in the supervisor
//! from the actual value a harness reported (expected values never enter the sandbox).
//! Equality is deep JSON equality with floats within 1e-9 relative.

use berth_runtime::harness::HarnessRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most cases one run may have.
pub const MAX_CASES: usize = 1000;
/// Per-case timeout: default and ceiling, seconds.
pub const DEFAULT_CASE_TIMEOUT_S: f64 = 5.0;
pub const MAX_CASE_TIMEOUT_S: f64 = 60.0;
/// Captured stdout kept per case.
pub const MAX_CASE_STDOUT: u64 = 64 * 1024;

/// `POST /v1/sandboxes/{id}/run-tests` as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTestsRequest {
    pub language: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub entrypoint: Option<String>,
    pub test_cases: Vec<TestCase>,
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub expected: Value,
    #[serde(default)]
    pub hidden: bool,
}

/// The languages run-tests knows, and the one this server can run today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
}

impl RunTestsRequest {
    /// Checks the request; returns its language and per-case timeout.
    pub fn check(&self) -> Result<(Language, f64), String> {
        let language = match self.language.as_str() {
            "python" => Language::Python,
            "javascript" | "typescript" => {
                return Err(format!(
                    "`language` {:?} is not supported by this server yet (python is)",
                    self.language
                ))
            }
            other => {
                return Err(format!(
                    "`language` must be python, javascript or typescript, not {other:?}"
                ))
            }
        };
        match (&self.code, &self.path) {
            (Some(_), Some(_)) => return Err("give `code` or `path`, not both".into()),
            (None, None) => return Err("one of `code` or `path` is required".into()),
            (_, Some(p)) if p.is_empty() || p.contains('\0') => {
                return Err("`path` must be a non-empty path without NUL bytes".into())
            }
            _ => {}
        }
        if self.test_cases.is_empty() || self.test_cases.len() > MAX_CASES {
            return Err(format!("`test_cases` must have 1 to {MAX_CASES} cases"));
        }
        let timeout = self.timeout_s.unwrap_or(DEFAULT_CASE_TIMEOUT_S);
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= MAX_CASE_TIMEOUT_S) {
            return Err(format!(
                "`timeout_s` (per case) must be greater than 0 and at most {MAX_CASE_TIMEOUT_S}"
            ));
        }
        Ok((language, timeout))
    }
}

/// One case's verdict as a client sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaseVerdict {
    pub name: String,
    pub passed: bool,
    /// `passed`, `failed` (wrong answer), `error`, `timeout` or `memory`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    pub duration_ms: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunTestsReport {
    pub passed: usize,
    pub failed: usize,
    pub total: usize,
    pub duration_ms: u64,
    pub results: Vec<CaseVerdict>,
}

/// Judges case `index` from what the harness reported.
pub fn judge(index: usize, case: &TestCase, record: HarnessRecord) -> CaseVerdict {
    let name = case
        .name
        .clone()
        .unwrap_or_else(|| format!("case {}", index + 1));
    let (status, actual) = match record.status.as_str() {
        "ok" => {
            let actual = record.value.unwrap_or(Value::Null);
            let status = if json_equal(&actual, &case.expected) {
                "passed"
            } else {
                "failed"
            };
            (status, Some(actual))
        }
        "timeout" => ("timeout", None),
        "memory" => ("memory", None),
        _ => ("error", None),
    };
    let error = match status {
        "passed" | "failed" => None,
        // A hidden case's error keeps its kind and line but never its message, which
        // could echo the input.
        _ if case.hidden => record.error.map(|e| redact(&e)),
        _ => record.error,
    };
    CaseVerdict {
        name,
        passed: status == "passed",
        status,
        actual: if case.hidden { None } else { actual },
        expected: (!case.hidden).then(|| case.expected.clone()),
        error,
        stdout: (!case.hidden).then_some(record.stdout),
        duration_ms: record.duration_ms,
    }
}

/// `ValueError: bad input 42 (line 7)` → `ValueError (line 7)`.
fn redact(error: &str) -> String {
    let kind = error.split(':').next().unwrap_or("error").trim();
    let line = error
        .rfind("(line ")
        .map(|i| format!(" {}", &error[i..]))
        .unwrap_or_default();
    format!("{kind}{line}")
}

/// Deep JSON equality; numbers compare as numbers, floats within 1e-9 relative.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return x == y;
            }
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                return x == y;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equality_is_deep_and_floats_are_close_enough() {
        assert!(json_equal(&json!(0.1 + 0.2), &json!(0.3)));
        assert!(json_equal(&json!(10), &json!(10.0)));
        assert!(!json_equal(&json!(1.0), &json!(1.001)));
        assert!(json_equal(
            &json!({"a": [1, {"b": "é"}]}),
            &json!({"a": [1, {"b": "é"}]})
        ));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_equal(&json!([1, 2]), &json!([2, 1])));
        assert!(!json_equal(&json!("1"), &json!(1)));
        assert!(json_equal(
            &json!(12345678901234567890u64),
            &json!(12345678901234567890u64)
        ));
    }

    #[test]
    fn hidden_cases_show_no_values_and_errors_lose_their_message() {
        let case = TestCase {
            name: None,
            input: json!({"secret": 42}),
            expected: json!(7),
            hidden: true,
        };
        let record = HarnessRecord {
            status: "error".into(),
            value: None,
            error: Some("ValueError: bad input 42 (line 3)".into()),
            stdout: "42".into(),
            duration_ms: 1,
        };
        let v = judge(0, &case, record);
        assert_eq!(v.status, "error");
        assert_eq!(v.error.as_deref(), Some("ValueError (line 3)"));
        assert_eq!((v.actual, v.expected, v.stdout), (None, None, None));
        assert_eq!(v.name, "case 1");
    }
}
