//! Wire types shared by the supervisor, the CLI and `berth-agent`: exec requests and
//! results, stream events, file-route bodies. One definition, three users.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the agent listens inside the container (a bind-mounted per-sandbox host dir).
pub const AGENT_SOCKET_DIR: &str = "/run/berth";
/// File name of the agent's unix socket inside [`AGENT_SOCKET_DIR`].
pub const AGENT_SOCKET_NAME: &str = "agent.sock";
/// Where the agent binary is bind-mounted (read-only) inside every container.
pub const AGENT_BINARY_PATH: &str = "/.berth/berth-agent";
/// Where gVisor sandboxes get the statx shim that `/etc/ld.so.preload` names.
pub const STATX_COMPAT_PATH: &str = "/.berth/statx-compat.so";
/// The dynamic linker's list of objects every process loads first.
pub const PRELOAD_LIST_PATH: &str = "/etc/ld.so.preload";
/// Env var through which the supervisor tells the agent the sandbox's workdir.
pub const ENV_WORKDIR: &str = "BERTH_WORKDIR";
/// Env var: default exec timeout in seconds (the agent's own bound).
pub const ENV_DEFAULT_EXEC_TIMEOUT: &str = "BERTH_EXEC_TIMEOUT_S";
/// Env var: default output cap per stream in bytes.
pub const ENV_DEFAULT_OUTPUT_CAP: &str = "BERTH_OUTPUT_CAP";
/// Header of an exec reply: `true` when the exec was killed at its timeout.
pub const EXEC_TIMED_OUT_HEADER: &str = "x-berth-timed-out";
/// Header of an exec reply: how long the exec ran, in milliseconds.
pub const EXEC_DURATION_HEADER: &str = "x-berth-duration-ms";

/// Whole numbers as JSON may spell them: `3` or `3.0` (JSON Schema calls both an
/// integer), never `3.5`, a negative or an overflow.
pub mod whole {
    use serde::{Deserialize, Deserializer};

    fn from_number<E: serde::de::Error>(n: serde_json::Number) -> Result<u64, E> {
        if let Some(v) = n.as_u64() {
            return Ok(v);
        }
        match n.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 => {
                Ok(f as u64)
            }
            _ => Err(E::custom(format!(
                "expected a whole number of at least 0, not {n}"
            ))),
        }
    }

    /// For `Option<u64>` fields (with `#[serde(default)]`).
    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(from_number)
            .transpose()
    }

    /// For `Option<i64>` fields (with `#[serde(default)]`); negatives are left for the
    /// field's own range check.
    pub fn option_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
            return Ok(None);
        };
        if let Some(v) = n.as_i64() {
            return Ok(Some(v));
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(Some(f as i64)),
            _ => Err(serde::de::Error::custom(format!(
                "expected a whole number, not {n}"
            ))),
        }
    }

    /// For `Option<usize>` fields (with `#[serde(default)]`).
    pub fn option_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        option(d)?
            .map(|v| usize::try_from(v).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Body of `POST /exec` and `POST /exec/stream`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv form; exactly one of `cmd` and `command` must be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Shell form, run by `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Base64 stdin, for binary input (an addition to the contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_b64: Option<String>,
    /// User name or numeric uid inside the sandbox; root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::option"
    )]
    pub max_output_bytes: Option<u64>,
    /// `"base64"` adds exact `stdout_b64`/`stderr_b64` to the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Start and return `{"pid"}` at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
    /// When the command itself exits, kill whatever of its tree is still running (an
    /// addition; without it, processes it started in the background outlive it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kill_on_exit: bool,
}

impl ExecRequest {
    /// The argv to run: `cmd` as given, or `/bin/sh -c command`.
    pub fn argv(&self) -> Result<Vec<String>, String> {
        match (&self.cmd, &self.command) {
            (Some(_), Some(_)) => Err("give either `cmd` or `command`, not both".into()),
            (None, None) => {
                Err("one of `cmd` (argv array) or `command` (shell string) is required".into())
            }
            (Some(cmd), None) if cmd.is_empty() => Err("`cmd` must not be empty".into()),
            (Some(cmd), None) => {
                if cmd.iter().any(|a| a.contains('\0')) {
                    return Err("`cmd` arguments must not contain NUL bytes".into());
                }
                Ok(cmd.clone())
            }
            (None, Some(command)) => {
                if command.contains('\0') {
                    return Err("`command` must not contain NUL bytes".into());
                }
                Ok(vec!["/bin/sh".into(), "-c".into(), command.clone()])
            }
        }
    }

    pub fn wants_base64(&self) -> bool {
        self.encoding.as_deref() == Some("base64")
    }
}

/// Result of a finished exec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_b64: Option<String>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub truncated: bool,
    pub duration_ms: u64,
    /// Signal that ended the process, when it was killed by one (an addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Bytes cut from the middle of stdout (head and tail kept, a marker line between).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_cut_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_cut_bytes: Option<u64>,
}

/// Reply of a background exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackgroundStarted {
    pub pid: u32,
}

/// One line of an NDJSON exec stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    /// Output was dropped: the cap was reached (`cut_bytes` cut before the tail that
    /// follows), or a bounded buffer lost its oldest part.
    Truncated {
        stream: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cut_bytes: Option<u64>,
    },
    Exit {
        exit_code: Option<i32>,
        timed_out: bool,
        oom_killed: bool,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    Error {
        message: String,
    },
}

/// An entry of a background-process listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub cmd: Vec<String>,
    pub running: bool,
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessList {
    pub processes: Vec<ProcessInfo>,
}

/// The agent's `GET /usage`: bytes the workdir takes on disk (blocks, not lengths), and
/// whether every file was counted (a huge tree is counted for a bounded time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiskUsage {
    pub bytes: u64,
    pub files: u64,
    pub complete: bool,
}

/// Body of the agent's `PUT /env`: the sandbox's own variables, given to every exec
/// (a request's `env` still wins). Replaces what was set before.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SandboxEnv {
    pub env: BTreeMap<String, String>,
    /// Whether an exec may run as root (uid or gid 0); a sandbox made with
    /// `"allow_root": true`.
    #[serde(default)]
    pub allow_root: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    #[serde(default)]
    pub signal: Option<String>,
}

/// `GET /files/list` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: FileKind,
    pub size: u64,
    pub mode: String,
    pub mtime: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileList {
    pub entries: Vec<FileEntry>,
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    pub path: String,
    pub old: String,
    pub new: String,
    #[serde(default)]
    pub replace_all: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EditResult {
    pub replacements: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GlobRequest {
    pub pattern: String,
    #[serde(default = "dot")]
    pub path: String,
    #[serde(default, deserialize_with = "whole::option_usize")]
    pub max_results: Option<usize>,
    /// Also search hidden entries, vendored directories (`node_modules`, `.venv`, ...)
    /// and what `.gitignore`/`.ignore` exclude; `.git` is never searched.
    #[serde(default, skip_serializing_if = "is_false")]
    pub include_ignored: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GlobResult {
    pub paths: Vec<String>,
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrepRequest {
    pub pattern: String,
    #[serde(default = "dot")]
    pub path: String,
    #[serde(default)]
    pub glob: Option<String>,
    #[serde(default, deserialize_with = "whole::option_usize")]
    pub max_results: Option<usize>,
    #[serde(default)]
    pub case_insensitive: bool,
    /// As [`GlobRequest::include_ignored`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub include_ignored: bool,
}

/// Keeps a default `false` off the wire, so requests stay readable by older agents.
fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrepMatch {
    pub path: String,
    pub line: u64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrepResult {
    pub matches: Vec<GrepMatch>,
    pub truncated: bool,
}

/// Error body, the same shape the supervisor's API uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// With `sandbox_stopped`: why the sandbox stopped (`idle`, `timeout`, `deleted`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True when the same request may succeed later (Docker or the database were
    /// unavailable, a budget was full): retry after `Retry-After`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
                reason: None,
                retryable: false,
            },
        }
    }
}

/// uid and gid of the unprivileged user that sandbox code runs as (`user`).
pub const SANDBOX_USER_IDS: (u32, u32) = (1000, 1000);
/// Name of that user, added to the sandbox's /etc/passwd by the agent when missing.
pub const SANDBOX_USER_NAME: &str = "user";
/// Set to `1` in a sandbox's container env when execs may run as root.
pub const ENV_ALLOW_ROOT: &str = "BERTH_ALLOW_ROOT";
/// Set under gVisor to the sandbox's `pids`: the agent holds user processes to it with
/// RLIMIT_NPROC, which gVisor's own kernel counts per sandbox. (The host's pids limit
/// counts gVisor's threads, not the sandbox's processes, and cannot be the bound.)
pub const ENV_PROCESS_LIMIT: &str = "BERTH_PROCESS_LIMIT";
/// Set to `1` under gVisor: the agent's socket then also tries its connections and
/// listener directly while it waits on readiness, which gVisor's kernel can lose
/// (runc's never does, and there the tries would only cost time).
pub const ENV_SOCKET_NUDGE: &str = "BERTH_SOCKET_NUDGE";
/// Request header of an upload to the agent: the most bytes it may take. The supervisor
/// passes one byte more than that at most and then ends the body, so the agent, which
/// discards what it staged before it answers 413, is the one that answers.
pub const HEADER_UPLOAD_LIMIT: &str = "x-berth-upload-limit";
/// Where the agent's memory guard keeps its kill count (`oom_kill N`, root's, readable
/// by all) for code that cannot ask the agent: the run-tests harness.
pub const GUARD_KILLS_PATH: &str = "/run/berth-guard/oom_kills";
/// Env var: bytes of memory user code may hold, where the agent enforces it itself
/// (gVisor: the host's OOM killer would kill gVisor's kernel, not the process).
pub const ENV_MEMORY_LIMIT: &str = "BERTH_MEMORY_LIMIT";

/// `GET /health` of the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentHealth {
    pub version: String,
    pub workdir: String,
}

fn dot() -> String {
    ".".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_from_command_runs_through_sh() {
        let r = ExecRequest {
            command: Some("echo hi".into()),
            ..Default::default()
        };
        assert_eq!(r.argv().unwrap(), vec!["/bin/sh", "-c", "echo hi"]);
    }

    #[test]
    fn argv_refuses_both_forms_and_neither() {
        let both = ExecRequest {
            cmd: Some(vec!["true".into()]),
            command: Some("true".into()),
            ..Default::default()
        };
        assert!(both.argv().is_err());
        assert!(ExecRequest::default().argv().is_err());
        let empty = ExecRequest {
            cmd: Some(vec![]),
            ..Default::default()
        };
        assert!(empty.argv().is_err());
    }

    #[test]
    fn whole_numbers_may_be_spelled_as_floats_but_fractions_are_refused() {
        let r: ExecRequest =
            serde_json::from_str(r#"{"command":"true","max_output_bytes":164.0}"#).unwrap();
        assert_eq!(r.max_output_bytes, Some(164));
        assert!(serde_json::from_str::<ExecRequest>(
            r#"{"command":"true","max_output_bytes":1.5}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<ExecRequest>(r#"{"command":"true","max_output_bytes":-1}"#)
                .is_err()
        );
        let r: ExecRequest = serde_json::from_str(r#"{"command":"true"}"#).unwrap();
        assert_eq!(r.max_output_bytes, None);
    }

    #[test]
    fn unknown_exec_fields_are_refused() {
        let err = serde_json::from_str::<ExecRequest>(r#"{"cmd":["true"],"bogus":1}"#);
        assert!(err.is_err());
    }

    #[test]
    fn exec_events_serialize_with_a_type_tag() {
        let line = serde_json::to_string(&ExecEvent::Stdout { data: "x".into() }).unwrap();
        assert_eq!(line, r#"{"type":"stdout","data":"x"}"#);
    }
}
