//! The OpenAPI 3.1 document served at `/openapi.json`, built from one table of operations
//! (a test checks the table against the router, so neither drifts).

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
        Some("ExecRequest"),
        200,
        None,
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
        "Lifecycle events (server-sent events)",
        None,
        200,
        None,
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
    ("get", "/openapi.json", "This document", None, 200, None),
];

fn schemas() -> Value {
    let string = json!({"type": "string"});
    let time = json!({"type": ["string", "null"], "format": "date-time"});
    let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "properties": {"code": string, "message": string}}}},
        "Limits": {"type": "object", "properties": {"cpu": {"type": "number"}, "memory_mb": {"type": "integer"},
            "disk_mb": {"type": "integer"}, "pids": {"type": "integer"}, "timeout_s": {"type": "integer"},
            "idle_timeout_s": {"type": "integer"}}},
        "CreateSandbox": {"type": "object", "required": ["image"], "additionalProperties": false, "properties": {
            "image": string, "cpu": {"type": "number"}, "memory_mb": {"type": "integer"}, "disk_mb": {"type": "integer"},
            "pids": {"type": "integer"}, "timeout_s": {"type": "integer"}, "idle_timeout_s": {"type": "integer"},
            "env": map, "workdir": string, "files": map, "labels": map,
            "network": {"enum": ["none", "bridge"]}, "volume": {"type": ["string", "null"]},
            "from_snapshot": {"type": ["string", "null"]}, "auto_resume": {"type": "boolean"}}},
        "Sandbox": {"type": "object", "properties": {
            "id": string, "state": {"enum": ["creating", "running", "stopped", "terminated", "failed", "archived"]},
            "image": string, "volume": string, "workdir": string, "labels": map,
            "limits": {"$ref": "#/components/schemas/Limits"}, "network": string, "auto_resume": {"type": "boolean"},
            "created_at": time, "started_at": time, "expires_at": time, "stopped_at": time, "last_activity_at": time,
            "reason": string,
            "usage": {"type": "object", "properties": {"cpu_s": {"type": "number"}, "memory_bytes": {"type": "integer"},
                "memory_peak_bytes": {"type": "integer"}, "disk_bytes": {"type": "integer"}}}}},
        "SandboxList": {"type": "object", "properties": {"sandboxes": {"type": "array",
            "items": {"$ref": "#/components/schemas/Sandbox"}}}},
        "PatchSandbox": {"type": "object", "additionalProperties": false, "properties": {
            "timeout_s": {"type": "integer"}, "idle_timeout_s": {"type": "integer"}, "labels": map}},
        "ExecRequest": {"type": "object", "additionalProperties": false, "properties": {
            "cmd": {"type": "array", "items": string}, "command": string, "env": map, "cwd": string,
            "stdin": string, "stdin_b64": string, "user": {"type": ["string", "null"]},
            "timeout_s": {"type": "number"}, "max_output_bytes": {"type": "integer"},
            "encoding": {"enum": ["utf-8", "base64"]}, "background": {"type": "boolean"}}},
        "ExecResult": {"type": "object", "properties": {
            "exit_code": {"type": ["integer", "null"]}, "stdout": string, "stderr": string,
            "stdout_b64": string, "stderr_b64": string, "timed_out": {"type": "boolean"},
            "oom_killed": {"type": "boolean"}, "truncated": {"type": "boolean"}, "duration_ms": {"type": "integer"},
            "signal": {"type": ["integer", "null"]}}},
        "ProcessList": {"type": "object", "properties": {"processes": {"type": "array", "items": {"type": "object",
            "properties": {"pid": {"type": "integer"}, "cmd": {"type": "array", "items": string},
            "running": {"type": "boolean"}, "exit_code": {"type": ["integer", "null"]}}}}}},
        "KillRequest": {"type": "object", "properties": {"signal": string}},
        "FileList": {"type": "object", "properties": {"truncated": {"type": "boolean"}, "entries": {"type": "array",
            "items": {"type": "object", "properties": {"path": string, "type": {"enum": ["file", "dir", "symlink", "other"]},
            "size": {"type": "integer"}, "mode": string, "mtime": string}}}}},
        "EditRequest": {"type": "object", "required": ["path", "old", "new"], "properties": {"path": string,
            "old": string, "new": string, "replace_all": {"type": "boolean"}}},
        "EditResult": {"type": "object", "properties": {"replacements": {"type": "integer"}}},
        "GlobRequest": {"type": "object", "required": ["pattern"], "properties": {"pattern": string, "path": string,
            "max_results": {"type": "integer"}}},
        "GlobResult": {"type": "object", "properties": {"paths": {"type": "array", "items": string},
            "truncated": {"type": "boolean"}}},
        "GrepRequest": {"type": "object", "required": ["pattern"], "properties": {"pattern": string, "path": string,
            "glob": string, "max_results": {"type": "integer"}, "case_insensitive": {"type": "boolean"}}},
        "GrepResult": {"type": "object", "properties": {"truncated": {"type": "boolean"}, "matches": {"type": "array",
            "items": {"type": "object", "properties": {"path": string, "line": {"type": "integer"}, "text": string}}}}},
    })
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, request, status, response) in OPERATIONS {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = Map::new();
        let ok = match response {
            Some(name) => {
                json!({"description": "success", "content": {"application/json": {"schema": schema_ref(name)}}})
            }
            None => json!({"description": "success"}),
        };
        responses.insert(status.to_string(), ok);
        let error = json!({"description": "error", "content": {"application/json": {"schema": schema_ref("Error")}}});
        if path.starts_with("/v1") {
            for code in ["400", "401", "404", "409", "413", "422", "429", "503"] {
                responses.insert(code.into(), error.clone());
            }
        }
        let mut op = json!({"summary": summary, "parameters": params, "responses": responses});
        if let Some(name) = request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema_ref(name)}}});
        }
        if path.starts_with("/v1") {
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
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}
