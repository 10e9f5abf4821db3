//! Test harnesses that ship with berth (not with the images): each is run by the
//! sandbox's own interpreter with a [`HarnessSpec`] on stdin, and answers one
//! [`HarnessRecord`] line per case. Expected values never reach them.

use serde::{Deserialize, Serialize};

/// The Python harness, run as `python3 -c <source>`.
pub const PYTHON: &str = include_str!("../harness/python.py");

/// What a harness is given: the code (or a path to it), the entrypoint, and each case's
/// input only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HarnessSpec {
    pub code: Option<String>,
    pub path: Option<String>,
    pub entrypoint: Option<String>,
    pub cases: Vec<HarnessCase>,
    pub timeout_s: f64,
    pub max_stdout: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HarnessCase {
    pub input: serde_json::Value,
}

/// One case as a harness reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HarnessRecord {
    /// `ok`, `error`, `timeout` or `memory`.
    pub status: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub duration_ms: u64,
}
