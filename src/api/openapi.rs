//! The OpenAPI 3.1 document served at `/openapi.json`, built from one table of operations
//! (a test checks the table against the router, so neither drifts).

use crate::config::Config;
use serde_json::{json, Map, Value};

/// (method, path, summary, request schema, success status, response schema).
pub type Operation = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
    Option<&'static str>,
);

pub const OPERATIONS: &[Operation] = &[
    (
        "post",
        "/v1/sandboxes",
        "Create a sandbox (Idempotency-Key supported)",
        Some("CreateSandbox"),
        201,
        Some("Sandbox"),
    ),
    (
        "get",
        "/v1/sandboxes",
        "List sandboxes (?state=, ?label=k=v)",
        None,
        200,
        Some("SandboxList"),
    ),
    (
        "get",
        "/v1/sandboxes/{id}",
        "Get a sandbox, with usage where known",
        None,
        200,
        Some("Sandbox"),
    ),
    (
        "patch",
        "/v1/sandboxes/{id}",
        "Change timeout_s, idle_timeout_s or labels",
        Some("PatchSandbox"),
        200,
        Some("Sandbox"),
    ),
    (
        "delete",
        "/v1/sandboxes/{id}",
        "Terminate; removes the volume unless ?keep_volume=true",
        None,
        200,
        Some("Sandbox"),
    ),
    (
        "post",
        "/v1/sandboxes/{id}/stop",
        "Stop (container removed, volume kept); idempotent",
        None,
        200,
        Some("Sandbox"),
    ),
    (
        "post",
        "/v1/sandboxes/{id}/resume",
        "Resume on the same volume; idempotent",
        None,
        200,
        Some("Sandbox"),
    ),
    (
        "post",
        "/v1/sandboxes/{id}/exec",
        "Run a command and wait for it (or background: true)",
        Some("ExecRequest"),
        200,
        Some("ExecResult"),
    ),
    (
        "post",
        "/v1/sandboxes/{id}/exec/stream",
        "Run a command, streaming NDJSON events",
        Some("ExecStreamRequest"),
        200,
        None,
    ),
    (
        "post",
        "/v1/sandboxes/{id}/run-tests",
        "Run test cases against a function; verdicts decided outside the sandbox",
        Some("RunTestsRequest"),
        200,
        Some("RunTestsReport"),
    ),
    (
        "get",
        "/v1/sandboxes/{id}/processes",
        "List background processes",
        None,
        200,
        Some("ProcessList"),
    ),
    (
        "get",
        "/v1/sandboxes/{id}/processes/{pid}/output",
        "A background process's output as NDJSON (?follow=true)",
        None,
        200,
        None,
    ),
    (
        "post",
        "/v1/sandboxes/{id}/processes/{pid}/kill",
        "Signal a background process group",
        Some("KillRequest"),
        204,
        None,
    ),
    (
        "get",
        "/v1/sandboxes/{id}/files",
        "Read a file (?path=); honours Range",
        None,
        200,
        None,
    ),
    (
        "put",
        "/v1/sandboxes/{id}/files",
        "Write a file (?path=&mode=); parents created",
        None,
        204,
        None,
    ),
    (
        "delete",
        "/v1/sandboxes/{id}/files",
        "Delete a file or directory (?path=&recursive=)",
        None,
        204,
        None,
    ),
    (
        "get",
        "/v1/sandboxes/{id}/files/list",
        "List a directory (?path=&depth=)",
        None,
        200,
        Some("FileList"),
    ),
    (
        "get",
        "/v1/sandboxes/{id}/files/stat",
        "Describe one path (?path=); a symlink is described, not followed",
        None,
        200,
        Some("FileEntry"),
    ),
    (
        "post",
        "/v1/sandboxes/{id}/files/edit",
        "Replace text in a file",
        Some("EditRequest"),
        200,
        Some("EditResult"),
    ),
    (
        "post",
        "/v1/sandboxes/{id}/files/glob",
        "Find paths by glob",
        Some("GlobRequest"),
        200,
        Some("GlobResult"),
    ),
    (
        "post",
        "/v1/sandboxes/{id}/files/grep",
        "Search file contents by regex",
        Some("GrepRequest"),
        200,
        Some("GrepResult"),
    ),
    (
        "get",
        "/v1/sandboxes/{id}/archive",
        "Download a tree as tar (?path=)",
        None,
        200,
        None,
    ),
    (
        "put",
        "/v1/sandboxes/{id}/archive",
        "Upload and extract a tar (?path=)",
        None,
        204,
        None,
    ),
    (
        "get",
        "/v1/sandboxes/{id}/terminal",
        "Open a terminal: upgrades to a WebSocket (binary frames are terminal bytes both ways; \
         text frames JSON control: resize from the client; hello, exit, dropped, resize, error \
         from the server). ?session= names a terminal that lives on without clients; ?token= \
         carries the key for browsers",
        None,
        101,
        None,
    ),
    (
        "get",
        "/v1/sandboxes/{id}/terminals",
        "List live terminals",
        None,
        200,
        Some("TerminalList"),
    ),
    (
        "delete",
        "/v1/sandboxes/{id}/terminals/{name}",
        "End a terminal (its whole process tree)",
        None,
        204,
        None,
    ),
    (
        "get",
        "/v1/sandboxes/{id}/terminals/{name}/recording",
        "A terminal's recording (asciicast v2, application/x-asciicast)",
        None,
        200,
        None,
    ),
    (
        "post",
        "/v1/sandboxes/{id}/snapshots",
        "Snapshot the volume (running or stopped) into the archive store as a zstd tar",
        Some("CreateSnapshot"),
        201,
        Some("Snapshot"),
    ),
    (
        "get",
        "/v1/snapshots",
        "List snapshots",
        None,
        200,
        Some("SnapshotList"),
    ),
    (
        "get",
        "/v1/snapshots/{id}",
        "Get a snapshot",
        None,
        200,
        Some("Snapshot"),
    ),
    (
        "delete",
        "/v1/snapshots/{id}",
        "Delete a snapshot (its object too)",
        None,
        204,
        None,
    ),
    (
        "get",
        "/v1/snapshots/{id}/files",
        "Read a file (bytes) or list a directory (JSON) out of a snapshot, starting nothing",
        None,
        200,
        None,
    ),
    ("get", "/v1/volumes", "List volumes", None, 200, None),
    ("get", "/v1/volumes/{name}", "Get a volume", None, 200, None),
    (
        "delete",
        "/v1/volumes/{name}",
        "Delete a volume (409 while mounted)",
        None,
        204,
        None,
    ),
    (
        "get",
        "/v1/events",
        "Lifecycle events (server-sent events; in a cluster, every node's)",
        None,
        200,
        None,
    ),
    (
        "get",
        "/v1/nodes",
        "The nodes alive in the cluster with their load (this one alone on a single node)",
        None,
        200,
        Some("NodeList"),
    ),
    (
        "post",
        "/compat/modal/execute",
        "Modal-compatible: run test cases (in sessionId's sandbox, or a one-shot one)",
        Some("ModalExecute"),
        200,
        Some("ModalExecuteResult"),
    ),
    (
        "post",
        "/compat/modal/write_file",
        "Modal-compatible: write a file in a session's sandbox (created on first use)",
        Some("ModalWriteFile"),
        200,
        None,
    ),
    (
        "post",
        "/compat/modal/read_file",
        "Modal-compatible: read a file of a session's sandbox",
        Some("ModalReadFile"),
        200,
        Some("ModalFileContent"),
    ),
    (
        "post",
        "/compat/modal/list_files",
        "Modal-compatible: list a directory of a session's sandbox",
        Some("ModalListFiles"),
        200,
        Some("ModalFileList"),
    ),
    ("get", "/healthz", "Process alive", None, 200, None),
    (
        "get",
        "/readyz",
        "Docker and database reachable (503 otherwise)",
        None,
        200,
        None,
    ),
    ("get", "/metrics", "Prometheus metrics", None, 200, None),
    (
        "get",
        "/ui/terminal/{id}",
        "The browser terminal (xterm.js); give the key as #key=... in the URL",
        None,
        200,
        None,
    ),
    ("get", "/openapi.json", "This document", None, 200, None),
];

fn schemas(c: &Config) -> Value {
    let l = &c.limits;
    let string = json!({"type": "string"});
    let time = json!({"type": ["string", "null"], "format": "date-time"});
    let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let seconds = json!({"type": ["integer", "null"], "minimum": 1, "maximum": l.max_timeout_s});
    let no_nul = json!({"type": "string", "pattern": "^[^\\u0000]*$"});
    let env = json!({"type": "object", "maxProperties": 256,
        "propertyNames": {"pattern": "^(?!BERTH_)[^=\\u0000]{1,256}$"},
        "additionalProperties": {"type": "string", "maxLength": 65536, "pattern": "^[^\\u0000]*$"}});
    let labels = json!({"type": "object", "maxProperties": 64,
        "propertyNames": {"pattern": "^[^=,\\u0000]{1,128}$"},
        "additionalProperties": {"type": "string", "maxLength": 512, "pattern": "^[^\\u0000]*$"}});
    let mut nullable_labels = labels.clone();
    nullable_labels["type"] = json!(["object", "null"]);
    let files = json!({"type": "object", "propertyNames": {"pattern": "^[^\\u0000]+$"},
        "additionalProperties": {"type": "string"}});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["code", "message"],
            "properties": {"code": string, "message": string,
                "reason": {"type": "string", "description": "with sandbox_stopped: idle, timeout, deleted, requested, oom, exited"},
                "retryable": {"type": "boolean", "description": "true on 503 and 429 busy: retry after Retry-After"}}}}},
        "Limits": {"type": "object", "properties": {"cpu": {"type": "number"}, "memory_mb": {"type": "integer"},
            "disk_mb": {"type": "integer"}, "pids": {"type": "integer"}, "timeout_s": {"type": "integer"},
            "idle_timeout_s": {"type": "integer"}}},
        "CreateSandbox": {"type": "object", "required": ["image"], "additionalProperties": false, "properties": {
            "image": {"type": "string", "minLength": 1,
                "maxLength": crate::domain::image_ref::MAX_LEN,
                "pattern": crate::domain::image_ref::PATTERN, "examples": ["base"],
                "description": "a template (base, python, node) or a local image reference"},
            "cpu": {"type": ["number", "null"], "minimum": 0.01, "maximum": l.max_cpu},
            "memory_mb": {"type": ["integer", "null"], "minimum": 16, "maximum": l.max_memory_mb},
            "disk_mb": {"type": ["integer", "null"], "minimum": 1, "maximum": l.max_disk_mb},
            "pids": {"type": ["integer", "null"], "minimum": 8, "maximum": l.max_pids},
            "timeout_s": seconds, "idle_timeout_s": seconds,
            "env": env, "workdir": {"type": ["string", "null"], "maxLength": 256,
                "description": "absolute; not /, /proc, /sys, /dev, /tmp, /var/tmp, /run/lock or berth's own dirs; no . or .. components",
                "pattern": "^(?!/(proc|sys|dev|run/berth|\\.berth|tmp|var/tmp|run/lock)(/|$))(?!.*/\\.\\.?(/|$))/[^\\u0000]+$"},
            "files": files, "labels": labels,
            "network": {"enum": ["none", "bridge", null]},
            "volume": {"type": ["string", "null"], "pattern": "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"},
            "from_snapshot": {"type": ["string", "null"], "pattern": "^snap-[a-z0-9]+$",
                "description": "restore this snapshot into the new volume (not with volume)"},
            "auto_resume": {"type": ["boolean", "null"]},
            "runtime": {"enum": ["runc", "gvisor", null],
                "description": "gvisor runs the sandbox under runsc where the engine offers it"},
            "allow_root": {"type": ["boolean", "null"],
                "description": "execs may ask for user root; code runs as `user` (uid 1000) otherwise"},
            "node": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_.-]{1,63}$",
                "description": "in a cluster, the node to place the sandbox on (GET /v1/nodes); the least loaded with room otherwise"}}},
        "Sandbox": {"type": "object", "properties": {
            "id": string, "state": {"enum": ["creating", "running", "stopped", "terminated", "failed", "archived", "lost"]},
            "image": string, "volume": string, "workdir": string, "labels": map,
            "limits": {"$ref": "#/components/schemas/Limits"}, "network": string, "auto_resume": {"type": "boolean"},
            "allow_root": {"type": "boolean"}, "runtime": {"enum": ["runc", "gvisor"]},
            "created_at": time, "started_at": time, "expires_at": time, "stopped_at": time, "last_activity_at": time,
            "reason": string,
            "usage": {"type": "object", "properties": {"cpu_s": {"type": "number"}, "memory_bytes": {"type": "integer"},
                "memory_peak_bytes": {"type": "integer"}, "disk_bytes": {"type": "integer"},
                "archive_bytes": {"type": "integer"}}},
            "node": {"type": "string", "description": "the cluster node that holds it"}}},
        "SandboxList": {"type": "object", "properties": {"sandboxes": {"type": "array",
            "items": {"$ref": "#/components/schemas/Sandbox"}}}},
        "PatchSandbox": {"type": "object", "additionalProperties": false, "properties": {
            "timeout_s": seconds, "idle_timeout_s": seconds, "labels": nullable_labels}},
        "ExecRequest": {"type": "object", "additionalProperties": false,
            "description": "exactly one of cmd (argv) and command (run by /bin/sh -c); at most one of stdin and stdin_b64",
            "oneOf": [
                {"required": ["cmd"], "properties": {"cmd": {"type": "array"}}},
                {"required": ["command"], "properties": {"command": {"type": "string"}}}],
            "not": {"required": ["stdin", "stdin_b64"],
                "properties": {"stdin": {"type": "string"}, "stdin_b64": {"type": "string"}}},
            "properties": {
            "cmd": {"type": ["array", "null"], "minItems": 1, "items": no_nul},
            "command": {"type": ["string", "null"], "pattern": "^[^\\u0000]*$"},
            "env": {"type": "object", "propertyNames": {"pattern": "^[^=\\u0000]+$"},
                "additionalProperties": no_nul},
            "cwd": {"type": ["string", "null"], "minLength": 1, "pattern": "^[^\\u0000]*$"},
            "stdin": {"type": ["string", "null"]},
            "stdin_b64": {"type": ["string", "null"], "contentEncoding": "base64",
                "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"},
            "user": {"type": ["string", "null"]},
            "timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": l.max_exec_timeout_s},
            "max_output_bytes": {"type": ["integer", "null"], "minimum": 0, "maximum": l.max_output_cap_bytes},
            "encoding": {"enum": ["utf-8", "base64", null]}, "background": {"type": "boolean"},
            "kill_on_exit": {"type": "boolean",
                "description": "when the command exits, kill whatever it left running"}}},
        "ExecStreamRequest": {"description": "an ExecRequest without background",
            "allOf": [{"$ref": "#/components/schemas/ExecRequest"},
                {"properties": {"background": {"const": false}}}]},
        "ExecResult": {"type": "object", "properties": {
            "exit_code": {"type": ["integer", "null"]}, "stdout": string, "stderr": string,
            "stdout_b64": string, "stderr_b64": string, "timed_out": {"type": "boolean"},
            "oom_killed": {"type": "boolean"}, "truncated": {"type": "boolean"}, "duration_ms": {"type": "integer"},
            "signal": {"type": ["integer", "null"]},
            "stdout_cut_bytes": {"type": "integer", "description": "bytes cut between the kept head and tail"},
            "stderr_cut_bytes": {"type": "integer"}}},
        "ProcessList": {"type": "object", "properties": {"processes": {"type": "array", "items": {"type": "object",
            "properties": {"pid": {"type": "integer"}, "cmd": {"type": "array", "items": string},
            "running": {"type": "boolean"}, "exit_code": {"type": ["integer", "null"]}}}}}},
        "KillRequest": {"type": "object", "additionalProperties": false, "properties": {"signal": string}},
        "FileList": {"type": "object", "properties": {"truncated": {"type": "boolean"}, "entries": {"type": "array",
            "items": {"type": "object", "properties": {"path": string, "type": {"enum": ["file", "dir", "symlink", "other"]},
            "size": {"type": "integer"}, "mode": string, "mtime": string}}}}},
        "FileEntry": {"type": "object", "properties": {"path": string,
            "type": {"enum": ["file", "dir", "symlink", "other"]},
            "size": {"type": "integer"}, "mode": string, "mtime": string}},
        "EditRequest": {"type": "object", "required": ["path", "old", "new"], "additionalProperties": false,
            "properties": {"path": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"},
            "old": {"type": "string", "minLength": 1}, "new": string, "replace_all": {"type": "boolean"}}},
        "EditResult": {"type": "object", "properties": {"replacements": {"type": "integer"}}},
        "GlobRequest": {"type": "object", "required": ["pattern"], "additionalProperties": false,
            "properties": {"pattern": string, "path": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"},
            "max_results": {"type": ["integer", "null"], "minimum": 0, "maximum": crate::sandbox::MAX_SEARCH_RESULTS},
            "include_ignored": {"type": "boolean", "description": "also search hidden, .gitignored and vendored paths (node_modules, .venv, ...)"}}},
        "GlobResult": {"type": "object", "properties": {"paths": {"type": "array", "items": string},
            "truncated": {"type": "boolean"}}},
        "GrepRequest": {"type": "object", "required": ["pattern"], "additionalProperties": false,
            "properties": {"pattern": string, "path": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"},
            "glob": {"type": ["string", "null"]}, "max_results": {"type": ["integer", "null"], "minimum": 0, "maximum": crate::sandbox::MAX_SEARCH_RESULTS},
            "case_insensitive": {"type": "boolean"},
            "include_ignored": {"type": "boolean"}}},
        "GrepResult": {"type": "object", "properties": {"truncated": {"type": "boolean"}, "matches": {"type": "array",
            "items": {"type": "object", "properties": {"path": string, "line": {"type": "integer"}, "text": string}}}}},
    })
}

/// Schemas of the snapshot routes.
fn snapshot_schemas() -> Value {
    let snapshot = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "sandbox_id": {"type": "string"},
        "state": {"enum": ["creating", "ready", "failed"]},
        "label": {"type": ["string", "null"]}, "size_bytes": {"type": "integer"},
        "sha256": {"type": ["string", "null"], "description": "of the stored (compressed) object"},
        "created_at": {"type": "string", "format": "date-time"}}});
    json!({
        "CreateSnapshot": {"type": "object", "additionalProperties": false, "properties": {
            "label": {"type": ["string", "null"], "maxLength": 256}}},
        "Snapshot": snapshot,
        "SnapshotList": {"type": "object", "properties": {"snapshots": {"type": "array",
            "items": {"$ref": "#/components/schemas/Snapshot"}}}},
        "NodeList": {"type": "object", "properties": {"nodes": {"type": "array", "items": {
            "type": "object", "properties": {
                "name": {"type": "string"}, "advertise": {"type": "string"},
                "epoch": {"type": "integer", "description": "taken at each start"},
                "cpus": {"type": "number"}, "memory_mb": {"type": "integer"},
                "reserved_cpu": {"type": "number"}, "reserved_memory_mb": {"type": "integer"},
                "sandboxes": {"type": "integer"},
                "heartbeat_at": {"type": "string", "format": "date-time"}}}}}},
    })
}

/// Schemas of the terminal routes.
fn terminal_schemas() -> Value {
    json!({
        "TerminalList": {"type": "object", "properties": {"terminals": {"type": "array", "items": {
            "type": "object", "properties": {
                "name": {"type": "string"}, "pid": {"type": "integer"},
                "cols": {"type": "integer"}, "rows": {"type": "integer"},
                "clients": {"type": "integer", "description": "viewers attached now"},
                "offset": {"type": "integer", "description": "bytes of output so far"},
                "created_at": {"type": "string", "format": "date-time"}}}}}},
    })
}

fn all_schemas(config: &Config) -> Value {
    let mut all = schemas(config);
    for more in [evaluation_schemas(), terminal_schemas(), snapshot_schemas()] {
        if let (Some(all), Value::Object(more)) = (all.as_object_mut(), more) {
            all.extend(more);
        }
    }
    all
}

/// Schemas of run-tests and the Modal-compatible routes.
fn evaluation_schemas() -> Value {
    let string = json!({"type": "string"});
    let session_id = json!({"type": "string", "minLength": 1, "maxLength": 128,
        "pattern": "^[^=,\\u0000-\\u001f\\u007f-\\u009f]+$"});
    let entrypoint = json!({"type": ["string", "null"], "maxLength": 200,
        "description": "a function name or Class.method",
        "pattern": "^[A-Za-z_$][A-Za-z0-9_$]*(\\.[A-Za-z_$][A-Za-z0-9_$]*)?$"});
    json!({
        "RunTestsRequest": {"type": "object", "required": ["language", "test_cases"],
            "additionalProperties": false,
            "description": "exactly one of code and path",
            "oneOf": [
                {"required": ["code"], "properties": {"code": {"type": "string"}}},
                {"required": ["path"], "properties": {"path": {"type": "string"}}}],
            "properties": {
            "language": {"enum": ["python", "javascript", "typescript"]},
            "code": {"type": ["string", "null"]},
            "path": {"type": ["string", "null"], "minLength": 1, "pattern": "^[^\\u0000]*$"},
            "entrypoint": entrypoint.clone(),
            "timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0,
                "maximum": crate::domain::evaluation::MAX_CASE_TIMEOUT_S},
            "test_cases": {"type": "array", "minItems": 1, "maxItems": crate::domain::evaluation::MAX_CASES,
                "items": {"type": "object", "additionalProperties": false, "properties": {
                    "name": {"type": ["string", "null"]}, "input": {}, "expected": {},
                    "hidden": {"type": "boolean"}}}}}},
        "RunTestsReport": {"type": "object", "properties": {
            "passed": {"type": "integer"}, "failed": {"type": "integer"}, "total": {"type": "integer"},
            "duration_ms": {"type": "integer"}, "results": {"type": "array", "items": {"type": "object",
                "properties": {"name": string, "passed": {"type": "boolean"},
                "status": {"enum": ["passed", "failed", "error", "timeout", "memory"]},
                "actual": {}, "expected": {}, "error": string, "stdout": string,
                "duration_ms": {"type": "integer"}}}}}},
        "ModalExecute": {"type": "object", "required": ["code", "testCases"], "additionalProperties": false,
            "properties": {"code": string, "language": {"enum": ["python", "javascript", "typescript"]}, "sessionId": session_id,
                "entrypoint": entrypoint,
                "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0,
                    "maximum": crate::domain::evaluation::MAX_CASE_TIMEOUT_S},
                "testCases": {"type": "array", "minItems": 1, "maxItems": crate::domain::evaluation::MAX_CASES,
                    "items": {"type": "object", "additionalProperties": false, "properties": {
                        "name": {"type": ["string", "null"]}, "input": {}, "expected": {},
                        "hidden": {"type": "boolean"}}}}}},
        "ModalExecuteResult": {"type": "object", "properties": {"success": {"type": "boolean"},
            "testResults": {"type": "array", "items": {"type": "object", "properties": {
                "name": string, "passed": {"type": "boolean"}, "output": string,
                "error": {"type": ["string", "null"]}, "duration": {"type": "integer"},
                "hidden": {"type": "boolean"}}}},
            "passedTests": {"type": "integer"}, "totalTests": {"type": "integer"},
            "executionTime": {"type": "integer"}}},
        "ModalWriteFile": {"type": "object", "required": ["sessionId", "path", "content"],
            "additionalProperties": false, "properties": {"sessionId": session_id,
            "path": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"}, "content": string}},
        "ModalReadFile": {"type": "object", "required": ["sessionId", "path"],
            "additionalProperties": false, "properties": {"sessionId": session_id,
            "path": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"}}},
        "ModalListFiles": {"type": "object", "required": ["sessionId"],
            "additionalProperties": false, "properties": {"sessionId": session_id,
            "path": {"type": ["string", "null"], "pattern": "^[^\\u0000]*$"}}},
        "ModalFileContent": {"type": "object", "properties": {"content": string}},
        "ModalFileList": {"type": "object", "properties": {"files": {"type": "array", "items": {
            "type": "object", "properties": {"name": string, "path": string,
            "type": {"enum": ["file", "directory", "symlink", "other"]}, "size": {"type": "integer"}}}}}}
    })
}

/// The query parameters each operation takes, with what the server enforces.
fn query_params(method: &str, path: &str) -> Vec<Value> {
    let q = |name: &str, required: bool, schema: Value| json!({"name": name, "in": "query", "required": required, "schema": schema});
    // A required path must be non-empty; an optional one may be empty (meaning ".").
    let path_param = |required: bool| {
        let min = if required { 1 } else { 0 };
        q(
            "path",
            required,
            json!({"type": "string", "minLength": min}),
        )
    };
    let boolean = json!({"type": "boolean"});
    match (method, path) {
        ("get", "/v1/sandboxes") => vec![
            q(
                "state",
                false,
                json!({"enum": ["creating", "running", "stopped", "terminated", "failed", "archived"]}),
            ),
            q(
                "label",
                false,
                json!({"type": "string", "description": "key or key=value"}),
            ),
        ],
        ("delete", "/v1/sandboxes/{id}") => vec![q("keep_volume", false, boolean)],
        ("get", "/v1/sandboxes/{id}/processes/{pid}/output") => vec![q("follow", false, boolean)],
        ("get", "/v1/sandboxes/{id}/files" | "/v1/sandboxes/{id}/files/stat") => {
            vec![path_param(true)]
        }
        ("put", "/v1/sandboxes/{id}/files") => vec![
            path_param(true),
            q(
                "mode",
                false,
                json!({"type": "string", "pattern": "^0?[0-7]{3,4}$"}),
            ),
        ],
        ("delete", "/v1/sandboxes/{id}/files") => {
            vec![path_param(true), q("recursive", false, boolean)]
        }
        ("get", "/v1/sandboxes/{id}/files/list") => vec![
            path_param(false),
            q(
                "depth",
                false,
                json!({"type": "integer", "minimum": 1, "maximum": crate::sandbox::MAX_LIST_DEPTH}),
            ),
        ],
        (_, "/v1/sandboxes/{id}/archive") => vec![path_param(false)],
        ("get", "/v1/snapshots/{id}/files") => vec![path_param(false)],
        ("get", "/v1/sandboxes/{id}/terminal") => {
            let size = json!({"type": "integer", "minimum": 0, "maximum": 65535,
                "description": "clamped to 2..1000"});
            vec![
                q("cols", false, size.clone()),
                q("rows", false, size),
                q(
                    "cmd",
                    false,
                    json!({"type": "string", "maxLength": 4096, "pattern": "^[^\\u0000]*$"}),
                ),
                q(
                    "session",
                    false,
                    json!({"type": "string",
                    "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"}),
                ),
                q(
                    "offset",
                    false,
                    json!({"type": "integer", "minimum": 0,
                    "description": "output bytes the client already has"}),
                ),
                q(
                    "token",
                    false,
                    json!({"type": "string", "description": "the API key (browsers)"}),
                ),
            ]
        }
        _ => vec![],
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `get /v1/sandboxes/{id}/files` → `get_sandboxes_id_files`.
fn operation_id(method: &str, path: &str) -> String {
    let rest: Vec<&str> = path
        .trim_start_matches("/v1")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches(['{', '}']))
        .map(|s| s.trim_end_matches(".json"))
        .collect();
    format!("{method}_{}", rest.join("_"))
}

/// Links from a created sandbox to every operation on one sandbox, so clients and
/// fuzzers can follow them.
fn sandbox_links() -> Value {
    let mut links = Map::new();
    for (method, path, ..) in OPERATIONS {
        if path.starts_with("/v1/sandboxes/{id}") && !path.contains("{pid}") {
            links.insert(
                operation_id(method, path),
                json!({"operationId": operation_id(method, path),
                    "parameters": {"id": "$response.body#/id"}}),
            );
        }
    }
    Value::Object(links)
}

/// The document, with the ceilings of the server's configuration.
pub fn document(config: &Config) -> Value {
    let mut paths = Map::new();
    for (method, path, summary, request, status, response) in OPERATIONS {
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(query_params(method, path));
        let mut responses = Map::new();
        let ok = match response {
            Some(name) => {
                json!({"description": "success", "content": {"application/json": {"schema": schema_ref(name)}}})
            }
            None => json!({"description": "success"}),
        };
        responses.insert(status.to_string(), ok);
        let error = json!({"description": "error", "content": {"application/json": {"schema": schema_ref("Error")}}});
        let authed = path.starts_with("/v1") || path.starts_with("/compat");
        if authed {
            for code in ["400", "401", "404", "409", "413", "422", "503"] {
                responses.insert(code.into(), error.clone());
            }
            let mut busy = error.clone();
            busy["description"] = "quota_exceeded, or busy: a concurrency budget is full".into();
            busy["headers"] = json!({"Retry-After": {"schema": {"type": "integer"}}});
            responses.insert("429".into(), busy);
        }
        if *path == "/v1/sandboxes/{id}/files" && *method == "get" {
            responses.insert(
                "206".into(),
                json!({"description": "the part a Range names"}),
            );
            responses.insert(
                "416".into(),
                json!({"description": "Range not satisfiable; Content-Range: bytes */SIZE",
                "content": {"application/json": {"schema": schema_ref("Error")}}}),
            );
        }
        if *method == "post" && *path == "/v1/sandboxes" {
            responses[&status.to_string()]["links"] = sandbox_links();
        }
        let mut op = json!({"operationId": operation_id(method, path), "summary": summary,
            "parameters": params, "responses": responses});
        if let Some(name) = request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema_ref(name)}}});
        }
        if authed {
            op["security"] = json!([{"bearer": []}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "berth", "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted sandboxes: one container per session, with exec, files and more."},
        "paths": paths,
        "components": {
            "schemas": all_schemas(config),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CreateSandboxRequest, PatchSandbox, Sandbox, SandboxId, Usage};
    use berth_runtime::wire::{
        EditRequest, ExecRequest, ExecResult, FileEntry, FileKind, GlobRequest, GrepRequest,
        KillRequest,
    };
    use std::collections::{BTreeMap, BTreeSet};

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    /// The properties a schema lists (following one `allOf`/`$ref` level is not needed here).
    fn properties(schema: &str) -> BTreeSet<String> {
        keys(&schemas(&Config::default())[schema]["properties"])
    }

    #[test]
    fn every_field_of_the_rust_types_is_in_the_document_and_nothing_else() {
        let map = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let create = CreateSandboxRequest {
            image: Some("base".into()),
            cpu: Some(1.0),
            memory_mb: Some(1),
            disk_mb: Some(1),
            pids: Some(1),
            timeout_s: Some(1),
            idle_timeout_s: Some(1),
            env: map.clone(),
            workdir: Some("/w".into()),
            files: map.clone(),
            labels: map.clone(),
            network: Some("none".into()),
            volume: Some("v".into()),
            from_snapshot: Some("s".into()),
            auto_resume: Some(true),
            allow_root: Some(false),
            runtime: Some("runc".into()),
            node: Some("n".into()),
        };
        let exec = ExecRequest {
            cmd: Some(vec!["true".into()]),
            command: Some("true".into()),
            env: map.clone(),
            cwd: Some(".".into()),
            stdin: Some(String::new()),
            stdin_b64: Some(String::new()),
            user: Some("root".into()),
            timeout_s: Some(1.0),
            max_output_bytes: Some(1),
            encoding: Some("base64".into()),
            background: true,
            kill_on_exit: true,
        };
        let result = ExecResult {
            stdout_b64: Some(String::new()),
            stderr_b64: Some(String::new()),
            signal: Some(9),
            stdout_cut_bytes: Some(1),
            stderr_cut_bytes: Some(1),
            ..Default::default()
        };
        let glob = GlobRequest {
            pattern: "*".into(),
            path: ".".into(),
            max_results: Some(1),
            include_ignored: true,
        };
        let grep = GrepRequest {
            pattern: "x".into(),
            path: ".".into(),
            glob: Some("*".into()),
            max_results: Some(1),
            case_insensitive: true,
            include_ignored: true,
        };
        let edit = EditRequest {
            path: "a".into(),
            old: "o".into(),
            new: "n".into(),
            replace_all: true,
        };
        let patch = json!({"timeout_s": 1, "idle_timeout_s": 1, "labels": {}});
        let _: PatchSandbox = serde_json::from_value(patch.clone()).unwrap();
        let mut sandbox = Sandbox::example(&SandboxId::generate());
        sandbox.reason = Some("idle".into());
        sandbox.node = Some("node-a".into());
        let view = super::super::views::SandboxView::new(sandbox, Some(Usage::default()));
        let entry = FileEntry {
            path: "a".into(),
            kind: FileKind::File,
            size: 1,
            mode: "0644".into(),
            mtime: "t".into(),
        };
        for (schema, value) in [
            ("CreateSandbox", serde_json::to_value(&create).unwrap()),
            ("ExecRequest", serde_json::to_value(&exec).unwrap()),
            ("ExecResult", serde_json::to_value(&result).unwrap()),
            ("GlobRequest", serde_json::to_value(&glob).unwrap()),
            ("GrepRequest", serde_json::to_value(&grep).unwrap()),
            ("EditRequest", serde_json::to_value(&edit).unwrap()),
            (
                "KillRequest",
                serde_json::to_value(KillRequest {
                    signal: Some("TERM".into()),
                })
                .unwrap(),
            ),
            ("PatchSandbox", patch),
            ("Sandbox", serde_json::to_value(&view).unwrap()),
            ("FileEntry", serde_json::to_value(&entry).unwrap()),
        ] {
            assert_eq!(
                keys(&value),
                properties(schema),
                "{schema} drifted from its Rust type"
            );
        }
        let snapshot = crate::domain::Snapshot {
            id: crate::domain::SnapshotId::generate(),
            tenant: crate::domain::TenantId::parse("t").unwrap(),
            sandbox_id: SandboxId::generate(),
            kind: crate::domain::SnapshotKind::Snapshot,
            state: crate::domain::SnapshotState::Ready,
            label: Some("l".into()),
            size_bytes: 1,
            sha256: Some("0".into()),
            workdir: "/w".into(),
            created_at: chrono::Utc::now(),
            reason: None,
        };
        let view =
            serde_json::to_value(super::super::snapshots::SnapshotView::from(snapshot)).unwrap();
        assert_eq!(
            keys(&view),
            keys(&snapshot_schemas()["Snapshot"]["properties"]),
            "Snapshot drifted from its Rust type"
        );
    }
}
