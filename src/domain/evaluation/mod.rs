//! Evaluation: a run-tests request checked, and each case judged here in the supervisor
//! from the actual value a harness reported (expected values never enter the sandbox).
//! Equality is deep JSON equality with floats within 1e-9 relative and integers exact.

mod exact;

pub use exact::json_equal;

use berth_runtime::harness::{raw_null, HarnessRecord};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Most cases one run may have.
pub const MAX_CASES: usize = 1000;
/// Per-case timeout: default and ceiling, seconds.
pub const DEFAULT_CASE_TIMEOUT_S: f64 = 5.0;
pub const MAX_CASE_TIMEOUT_S: f64 = 60.0;
/// Captured stdout kept per case (less when a run has many cases: see `stdout_per_case`).
pub const MAX_CASE_STDOUT: u64 = 64 * 1024;
/// Captured stdout one run keeps in all.
pub const MAX_RUN_STDOUT: u64 = 8 * 1024 * 1024;
/// Largest value one case may return (its JSON text, non-ASCII escaped), and what the
/// values of one run may take in all (each case gets its share).
pub const MAX_CASE_VALUE: u64 = 256 * 1024;
pub const MAX_RUN_VALUES: u64 = 8 * 1024 * 1024;
/// Longest `entrypoint`.
const MAX_ENTRYPOINT: usize = 200;

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

/// One case: input and expected value are kept as the client's exact JSON text, so a big
/// integer keeps every digit on its way to the harness and into the comparison.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub input: Option<Box<RawValue>>,
    #[serde(default)]
    pub expected: Option<Box<RawValue>>,
    #[serde(default)]
    pub hidden: bool,
}

impl TestCase {
    pub fn input(&self) -> &RawValue {
        self.input.as_deref().unwrap_or(&**NULL)
    }

    pub fn expected(&self) -> Box<RawValue> {
        self.expected.clone().unwrap_or_else(raw_null)
    }
}

static NULL: std::sync::LazyLock<Box<RawValue>> = std::sync::LazyLock::new(raw_null);

/// The languages run-tests knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    JavaScript,
    TypeScript,
}

impl Language {
    pub fn parse(text: &str) -> Option<Language> {
        match text {
            "python" => Some(Language::Python),
            "javascript" | "js" => Some(Language::JavaScript),
            "typescript" | "ts" => Some(Language::TypeScript),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
        }
    }

    /// The template whose interpreter runs this language.
    pub fn template(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript | Language::TypeScript => "node",
        }
    }

    /// The interpreter a sandbox needs for this language.
    pub fn interpreter(self) -> &'static str {
        match self {
            Language::Python => "python3",
            Language::JavaScript | Language::TypeScript => "node",
        }
    }
}

/// A run-tests request after checking.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub language: Language,
    /// Per case, seconds.
    pub timeout_s: f64,
    /// Stdout kept per case.
    pub max_stdout: u64,
    /// Bytes of a case's returned value.
    pub max_value: u64,
}

impl RunTestsRequest {
    /// Checks the request once, before any sandbox is touched.
    pub fn check(&self) -> Result<Checked, String> {
        let language = Language::parse(&self.language).ok_or_else(|| {
            format!(
                "`language` must be python, javascript or typescript, not {:?}",
                self.language
            )
        })?;
        match (&self.code, &self.path) {
            (Some(_), Some(_)) => return Err("give `code` or `path`, not both".into()),
            (None, None) => return Err("one of `code` or `path` is required".into()),
            (_, Some(p)) if p.is_empty() || p.contains('\0') => {
                return Err("`path` must be a non-empty path without NUL bytes".into())
            }
            _ => {}
        }
        if let Some(entry) = &self.entrypoint {
            if !valid_entrypoint(entry) {
                return Err(
                    "`entrypoint` must be a function name or `Class.method` (ASCII letters, digits, `_`, `$`)"
                        .into(),
                );
            }
        }
        if self.test_cases.is_empty() || self.test_cases.len() > MAX_CASES {
            return Err(format!("`test_cases` must have 1 to {MAX_CASES} cases"));
        }
        let timeout_s = self.timeout_s.unwrap_or(DEFAULT_CASE_TIMEOUT_S);
        if !(timeout_s.is_finite() && timeout_s > 0.0 && timeout_s <= MAX_CASE_TIMEOUT_S) {
            return Err(format!(
                "`timeout_s` (per case) must be greater than 0 and at most {MAX_CASE_TIMEOUT_S}"
            ));
        }
        let cases = self.test_cases.len() as u64;
        Ok(Checked {
            language,
            timeout_s,
            max_stdout: (MAX_RUN_STDOUT / cases).min(MAX_CASE_STDOUT),
            max_value: (MAX_RUN_VALUES / cases).clamp(1024, MAX_CASE_VALUE),
        })
    }
}

/// `name` or `Class.name`, each an ASCII identifier.
fn valid_entrypoint(entry: &str) -> bool {
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    entry.len() <= MAX_ENTRYPOINT && {
        let mut parts = entry.splitn(2, '.');
        let first = parts.next().unwrap_or_default();
        ident(first) && parts.next().is_none_or(ident)
    }
}

/// One case's verdict as a client sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CaseVerdict {
    pub name: String,
    pub passed: bool,
    /// `passed`, `failed` (wrong answer), `error`, `timeout` or `memory`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    pub duration_ms: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
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
    let expected = case.expected();
    let (status, actual) = match record.status.as_str() {
        "ok" => {
            let actual = record.value.unwrap_or_else(raw_null);
            let status = if json_equal(actual.get(), expected.get()) {
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
        expected: (!case.hidden).then_some(expected),
        error,
        stdout: (!case.hidden).then_some(record.stdout),
        duration_ms: record.duration_ms,
    }
}

/// `ValueError: bad input 42 (line 7)` → `ValueError (line 7)`. A kind that is not a
/// plain name (code can set it, e.g. JavaScript's `error.name`) becomes `error`.
fn redact(error: &str) -> String {
    let kind = error.split(':').next().unwrap_or_default().trim();
    let plain = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'));
    let kind = if plain { kind } else { "error" };
    let line = error
        .rfind("(line ")
        .map(|i| format!(" {}", &error[i..]))
        .unwrap_or_default();
    format!("{kind}{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(text.into()).unwrap())
    }

    #[test]
    fn hidden_cases_show_no_values_and_errors_lose_their_message() {
        let case = TestCase {
            name: None,
            input: raw(r#"{"secret": 42}"#),
            expected: raw("7"),
            hidden: true,
        };
        let record = HarnessRecord {
            i: 0,
            status: "error".into(),
            value: None,
            error: Some("ValueError: bad input 42 (line 3)".into()),
            stdout: "42".into(),
            duration_ms: 1,
        };
        let v = judge(0, &case, record);
        assert_eq!(v.status, "error");
        assert_eq!(v.error.as_deref(), Some("ValueError (line 3)"));
        assert!(v.actual.is_none() && v.expected.is_none() && v.stdout.is_none());
        assert_eq!(v.name, "case 1");
    }

    #[test]
    fn a_value_is_judged_by_its_exact_text() {
        let case = TestCase {
            name: Some("big".into()),
            input: None,
            expected: raw("1208925819614629174706176"),
            hidden: false,
        };
        let record = |value: &str| HarnessRecord {
            i: 0,
            status: "ok".into(),
            value: raw(value),
            error: None,
            stdout: String::new(),
            duration_ms: 1,
        };
        assert_eq!(
            judge(0, &case, record("1208925819614629174706176")).status,
            "passed"
        );
        let off_by_one = judge(0, &case, record("1208925819614629174706177"));
        assert_eq!(off_by_one.status, "failed");
        assert_eq!(
            off_by_one.actual.unwrap().get(),
            "1208925819614629174706177"
        );
    }

    #[test]
    fn entrypoints_are_names_or_class_methods() {
        for good in ["solution", "Solution.twoSum", "_f", "$x", "f2"] {
            assert!(valid_entrypoint(good), "{good}");
        }
        for bad in ["", "a.b.c", "1f", "f()", "process.exit()", "a b", ".f", "é"] {
            assert!(!valid_entrypoint(bad), "{bad}");
        }
    }
}
