//! Verbs that talk to a running server: `sandbox ...` and `exec`.

use super::{key_values, RemoteOpts, SandboxCommand};
use crate::client::Client;
use berth_runtime::wire::{ExecEvent, ExecRequest};
use futures_util::StreamExt;
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;

/// A client for `remote`, falling back to the default tenant's key file; a URL without a
/// scheme is taken as http.
pub fn client(remote: &RemoteOpts) -> anyhow::Result<Client> {
    let key = remote
        .api_key
        .clone()
        .filter(|k| !k.is_empty())
        .or_else(|| {
            let config = crate::config::Config::load(None).ok()?;
            let text =
                std::fs::read_to_string(config.data_dir.join(crate::startup::DEFAULT_KEY_FILE))
                    .ok()?;
            Some(text.trim().to_string())
        });
    let Some(key) = key else {
        anyhow::bail!(
            "no API key: set BERTH_API_KEY (or pass --api-key); on the server's machine, \
             `berth serve` wrote the default key to ~/.local/share/berth/default-api-key"
        );
    };
    let url = if remote.url.contains("://") {
        remote.url.clone()
    } else {
        format!("http://{}", remote.url)
    };
    Ok(Client::new(url, Some(key)))
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn sandbox(remote: RemoteOpts, command: SandboxCommand) -> anyhow::Result<ExitCode> {
    let client = client(&remote)?;
    let get = |id: &str| format!("/v1/sandboxes/{id}");
    let value: serde_json::Value = match command {
        SandboxCommand::Create {
            image,
            cpu,
            memory_mb,
            timeout_s,
            idle_timeout_s,
            network,
            workdir,
            labels,
            env,
        } => {
            let mut body = json!({
                "image": image,
                "labels": key_values(&labels, "label")?,
                "env": key_values(&env, "env")?,
            });
            for (k, v) in [
                ("cpu", cpu.map(|c| json!(c))),
                ("memory_mb", memory_mb.map(|c| json!(c))),
                ("timeout_s", timeout_s.map(|c| json!(c))),
                ("idle_timeout_s", idle_timeout_s.map(|c| json!(c))),
                ("network", network.map(|c| json!(c))),
                ("workdir", workdir.map(|c| json!(c))),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            send(&client, reqwest::Method::POST, "/v1/sandboxes", Some(body)).await?
        }
        SandboxCommand::List {
            state,
            labels,
            all,
            json,
        } => {
            let show_ended = all || state.is_some();
            let mut pairs: Vec<(String, String)> = state
                .into_iter()
                .map(|s| ("state".to_string(), s))
                .collect();
            pairs.extend(labels.into_iter().map(|l| ("label".to_string(), l)));
            let query = serde_urlencoded::to_string(&pairs)?;
            let raw = send(
                &client,
                reqwest::Method::GET,
                &format!("/v1/sandboxes?{query}"),
                None,
            )
            .await?;
            let all_entries = raw["sandboxes"].as_array().cloned().unwrap_or_default();
            let total = all_entries.len();
            let kept: Vec<serde_json::Value> = all_entries
                .into_iter()
                .filter(|s| {
                    show_ended || !matches!(s["state"].as_str(), Some("terminated" | "failed"))
                })
                .collect();
            let hidden = total - kept.len();
            if json {
                print_json(&kept)?;
                return Ok(ExitCode::SUCCESS);
            }
            let list: Vec<crate::client::SandboxInfo> = kept
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()?;
            if list.is_empty() {
                eprintln!(
                    "no sandboxes{}; create one with `berth sandbox create --image python`",
                    if hidden > 0 {
                        format!(" ({hidden} terminated or failed; see --all)")
                    } else {
                        String::new()
                    }
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<11} {:<16} {:<20} LABELS",
                "ID", "STATE", "IMAGE", "CREATED (UTC)"
            );
            for s in &list {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<20} {:<11} {:<16} {:<20} {}",
                    s.id,
                    s.state,
                    s.image,
                    s.created_at
                        .as_deref()
                        .map_or("", |t| t.get(..19).unwrap_or(t)),
                    labels.join(",")
                );
            }
            if hidden > 0 {
                eprintln!("({hidden} terminated or failed not shown; see --all)");
            }
            return Ok(ExitCode::SUCCESS);
        }
        SandboxCommand::Get { id } => send(&client, reqwest::Method::GET, &get(&id), None).await?,
        SandboxCommand::Stop { id } => {
            send(
                &client,
                reqwest::Method::POST,
                &format!("{}/stop", get(&id)),
                None,
            )
            .await?
        }
        SandboxCommand::Resume { id } => {
            send(
                &client,
                reqwest::Method::POST,
                &format!("{}/resume", get(&id)),
                None,
            )
            .await?
        }
        SandboxCommand::Rm { id, keep_volume } => {
            let path = format!("{}?keep_volume={keep_volume}", get(&id));
            send(&client, reqwest::Method::DELETE, &path, None).await?
        }
    };
    print_json(&value)?;
    Ok(ExitCode::SUCCESS)
}

async fn send(
    client: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut builder = client.request(method, path);
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let response = builder
        .send()
        .await
        .map_err(crate::client::ClientError::from)?;
    let status = response.status();
    let value: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let text = |field: &str| {
            value["error"][field]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        return Err(crate::client::ClientError::Api {
            status,
            code: text("code"),
            message: text("message"),
        }
        .into());
    }
    Ok(value)
}

/// How `berth exec` runs its command.
pub struct ExecOpts {
    pub id: String,
    pub timeout: Option<f64>,
    pub cwd: Option<String>,
    pub env: Vec<String>,
    pub max_output: Option<u64>,
    /// Forward stdin even when it is a terminal.
    pub interactive: bool,
    /// Never read stdin.
    pub no_stdin: bool,
    pub cmd: Vec<String>,
}

/// Largest stdin forwarded (it travels base64-encoded inside the JSON request).
const MAX_STDIN_BYTES: usize = 11 * 1024 * 1024;

/// Stdin to forward: all of it when it is not a terminal (a pipe or a file), or with -i.
fn read_stdin(interactive: bool) -> anyhow::Result<Option<Vec<u8>>> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() && !interactive {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(MAX_STDIN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_STDIN_BYTES {
        anyhow::bail!(
            "stdin is larger than {} MiB; upload it with `berth cp FILE ID:FILE` and run the command on the file",
            MAX_STDIN_BYTES >> 20
        );
    }
    Ok(Some(bytes))
}

pub async fn exec(remote: RemoteOpts, opts: ExecOpts) -> anyhow::Result<ExitCode> {
    use base64::Engine;
    let client = client(&remote)?;
    let stdin = if opts.no_stdin {
        None
    } else {
        read_stdin(opts.interactive)?
    };
    let request = ExecRequest {
        cmd: Some(opts.cmd),
        timeout_s: opts.timeout,
        cwd: opts.cwd,
        env: key_values(&opts.env, "env")?,
        max_output_bytes: opts.max_output,
        stdin_b64: stdin.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        ..Default::default()
    };
    let mut events = Box::pin(client.exec_stream(&opts.id, &request).await?);
    let mut code = None;
    while let Some(event) = events.next().await {
        match event? {
            ExecEvent::Stdout { data } => {
                let mut out = std::io::stdout();
                out.write_all(data.as_bytes())?;
                out.flush()?;
            }
            ExecEvent::Stderr { data } => {
                let mut err = std::io::stderr();
                err.write_all(data.as_bytes())?;
                err.flush()?;
            }
            ExecEvent::Truncated { stream, cut_bytes } => match cut_bytes {
                Some(n) => eprintln!(
                    "\nberth: {n} bytes of {stream} were cut here (the head and the tail are kept; keep more with --max-output BYTES)"
                ),
                None => eprintln!("berth: {stream} output was truncated"),
            },
            ExecEvent::Exit {
                exit_code,
                timed_out,
                oom_killed,
                duration_ms,
                ..
            } => {
                if timed_out {
                    let limit = match opts.timeout {
                        Some(t) => format!("its --timeout of {t}s"),
                        None => "the server's default exec timeout".to_string(),
                    };
                    eprintln!(
                        "berth: the command ran past {limit} ({:.1}s) and its process tree was killed; give it longer with --timeout SECONDS",
                        duration_ms as f64 / 1000.0
                    );
                }
                if oom_killed {
                    eprintln!("berth: killed for exceeding the sandbox's memory limit (create the sandbox with a larger --memory-mb)");
                }
                code = Some(exit_code.map(|c| c.clamp(0, 255) as u8).unwrap_or(137));
            }
            ExecEvent::Error { message } => anyhow::bail!("{message}"),
        }
    }
    match code {
        Some(code) => Ok(ExitCode::from(code)),
        None => anyhow::bail!(
            "the output ended before the command did (was the sandbox stopped? see `berth sandbox get {}`)",
            opts.id
        ),
    }
}

/// How `berth test` runs.
pub struct TestOpts {
    pub id: String,
    pub language: Option<String>,
    pub code_file: Option<std::path::PathBuf>,
    pub path: Option<String>,
    pub cases: std::path::PathBuf,
    pub entrypoint: Option<String>,
    pub timeout: Option<f64>,
}

/// The run-tests language of a file, by its extension.
fn language_of(file: &str) -> Option<String> {
    let extension = file.rsplit_once('.')?.1;
    let language = match extension {
        "py" => "python",
        "js" | "mjs" | "cjs" => "javascript",
        "ts" | "mts" | "cts" => "typescript",
        _ => return None,
    };
    Some(language.to_string())
}

pub async fn test(remote: RemoteOpts, opts: TestOpts) -> anyhow::Result<ExitCode> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    let cases: serde_json::Value = serde_json::from_str(&read(&opts.cases)?).map_err(|e| {
        anyhow::anyhow!(
            "{} is not JSON ({e}); it must be an array of {{\"name\",\"input\",\"expected\",\"hidden\"}}",
            opts.cases.display()
        )
    })?;
    let code = opts.code_file.as_deref().map(read).transpose()?;
    let named = opts
        .code_file
        .as_ref()
        .map(|p| p.display().to_string())
        .or(opts.path.clone())
        .unwrap_or_default();
    let language = match opts.language {
        Some(language) => language,
        None => language_of(&named).ok_or_else(|| {
            anyhow::anyhow!(
                "cannot tell the language of {named:?} from its extension; say --language python|javascript|typescript"
            )
        })?,
    };
    let mut body = json!({"language": language, "test_cases": cases});
    for (k, v) in [
        ("code", code.map(serde_json::Value::from)),
        ("path", opts.path.map(serde_json::Value::from)),
        ("entrypoint", opts.entrypoint.map(serde_json::Value::from)),
        ("timeout_s", opts.timeout.map(serde_json::Value::from)),
    ] {
        if let Some(v) = v {
            body[k] = v;
        }
    }
    let client = client(&remote)?;
    let path = format!("/v1/sandboxes/{}/run-tests", opts.id);
    let report = send(&client, reqwest::Method::POST, &path, Some(body)).await?;
    println!("{:<24} {:<8} {:>8}  DETAIL", "CASE", "STATUS", "MS");
    for r in report["results"].as_array().into_iter().flatten() {
        let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        let detail = match text("status").as_str() {
            "passed" => String::new(),
            "failed" if r.get("actual").is_some() => {
                format!("expected {} got {}", r["expected"], r["actual"])
            }
            "failed" => "wrong answer (hidden)".into(),
            _ => text("error"),
        };
        println!(
            "{:<24} {:<8} {:>8}  {}",
            text("name"),
            text("status"),
            r["duration_ms"].as_u64().unwrap_or(0),
            detail
        );
    }
    let (passed, total) = (
        report["passed"].as_u64().unwrap_or(0),
        report["total"].as_u64().unwrap_or(0),
    );
    println!("{passed} passed, {} failed", total - passed);
    Ok(if passed == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
