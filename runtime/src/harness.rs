//! Test harnesses that ship with berth (not with the images): each is run by the
//! sandbox's own interpreter with a [`HarnessSpec`] on stdin, and answers one
//! [`HarnessLine`] per line. Expected values never reach them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The Python harness, run as `python3 -c <source>`.
pub const PYTHON: &str = include_str!("../harness/python.py");
/// The JavaScript and TypeScript harness, run as `node -e <source>`.
pub const NODE: &str = include_str!("../harness/node.js");

/// What a harness is given: the code (or a path to it), the entrypoint, and each case's
/// input only.
#[derive(Debug, Clone, Serialize)]
pub struct HarnessSpec<'a> {
    /// `python`, `javascript` or `typescript`.
    pub language: &'a str,
    pub code: Option<&'a str>,
    pub path: Option<&'a str>,
    pub entrypoint: Option<&'a str>,
    pub cases: Vec<HarnessCase<'a>>,
    pub timeout_s: f64,
    pub max_stdout: u64,
    /// Bytes of a case's value (JSON, ASCII) past which the case is an error.
    pub max_value: u64,
    /// Where the sandbox's runtime cannot stop one process at the memory limit by itself
    /// (gVisor: the agent's guard samples, and one allocation can outrun it), the bytes of
    /// address space a case's process may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// There too, the processes a case may start: a fork bomb's many small processes
    /// fill memory while they starve the guard of CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_processes: Option<u64>,
    /// What an earlier run of the harness loaded (its `ready` line), so a restart loads
    /// exactly the same code without compiling it again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<&'a RawValue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HarnessCase<'a> {
    /// The case's index in the request.
    pub i: usize,
    /// Its input, as the client's exact JSON text.
    pub input: &'a RawValue,
}

/// One case as a harness reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct HarnessRecord {
    pub i: usize,
    /// `ok`, `error`, `timeout` or `memory`.
    pub status: String,
    /// The returned value's exact JSON text (big integers keep every digit).
    #[serde(default)]
    pub value: Option<Box<RawValue>>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub duration_ms: u64,
}

/// A line of harness output.
#[derive(Debug)]
pub enum HarnessLine {
    /// The code loaded; `modules` is what to give a restart.
    Ready {
        modules: Option<Box<RawValue>>,
    },
    /// The code compiled; nothing follows: start again with `modules` to run the cases.
    Compiled {
        modules: Box<RawValue>,
    },
    /// The code did not compile; nothing follows.
    CompileError(String),
    Case(HarnessRecord),
}

impl HarnessLine {
    /// Parses one line; `None` for anything that is not a harness line.
    pub fn parse(line: &str) -> Option<HarnessLine> {
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            ready: bool,
            #[serde(default)]
            compiled: bool,
            #[serde(default)]
            compile_error: Option<String>,
            #[serde(default)]
            modules: Option<Box<RawValue>>,
        }
        if ["{\"ready\"", "{\"compiled\"", "{\"compile_error\""]
            .iter()
            .any(|start| line.starts_with(start))
        {
            let head: Head = serde_json::from_str(line).ok()?;
            if let Some(error) = head.compile_error {
                return Some(HarnessLine::CompileError(error));
            }
            if head.compiled {
                return Some(HarnessLine::Compiled {
                    modules: head.modules?,
                });
            }
            return head.ready.then_some(HarnessLine::Ready {
                modules: head.modules,
            });
        }
        serde_json::from_str(line).ok().map(HarnessLine::Case)
    }
}

/// `null` as a raw JSON value (a case with no input, or no value).
pub fn raw_null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("valid JSON")
}

/// A raw JSON value as a tree (for display; comparisons use the exact text).
pub fn to_value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_told_apart_and_values_keep_their_exact_text() {
        let ready = HarnessLine::parse(r#"{"ready": true, "modules": {"a.py": {"code": "x"}}}"#);
        assert!(matches!(
            ready,
            Some(HarnessLine::Ready { modules: Some(_) })
        ));
        let broken = HarnessLine::parse(r#"{"compile_error": "SyntaxError: x (line 2)"}"#);
        assert!(matches!(broken, Some(HarnessLine::CompileError(e)) if e.contains("line 2")));
        let Some(HarnessLine::Case(case)) = HarnessLine::parse(
            r#"{"i": 3, "status": "ok", "value": 1208925819614629174706177, "stdout": ""}"#,
        ) else {
            panic!("a case line");
        };
        assert_eq!(case.i, 3);
        assert_eq!(case.value.unwrap().get(), "1208925819614629174706177");
        assert!(HarnessLine::parse("VERDICT: all passed").is_none());
        assert!(HarnessLine::parse(r#"{"i": "x"}"#).is_none());
    }
}
