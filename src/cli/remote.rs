//! Verbs that talk to a running server: `sandbox ...` and `exec`.

use super::{key_values, RemoteOpts, SandboxCommand};
use crate::client::Client;
use berth_runtime::wire::{ExecEvent, ExecRequest};
use futures_util::StreamExt;
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;

/// A client for `remote`, falling back to the default tenant's key file.
pub fn client(remote: &RemoteOpts) -> Client {
    let key = remote.api_key.clone().or_else(|| {
        let config = crate::config::Config::load(None).ok()?;
        let text =
            std::fs::read_to_string(config.data_dir.join(crate::startup::DEFAULT_KEY_FILE)).ok()?;
        Some(text.trim().to_string())
    });
    Client::new(remote.url.clone(), key)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn sandbox(remote: RemoteOpts, command: SandboxCommand) -> anyhow::Result<ExitCode> {
    let client = client(&remote);
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
        SandboxCommand::List { state, labels } => {
            let mut pairs: Vec<(String, String)> = state
                .into_iter()
                .map(|s| ("state".to_string(), s))
                .collect();
            pairs.extend(labels.into_iter().map(|l| ("label".to_string(), l)));
            let query = serde_urlencoded::to_string(&pairs)?;
            let list = client.list_sandboxes(&query).await?;
            for s in &list {
                println!(
                    "{}  {:<10} {:<8} {}",
                    s.id,
                    s.state,
                    s.image,
                    s.created_at.as_deref().unwrap_or("")
                );
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
        let message = value["error"]["message"]
            .as_str()
            .unwrap_or("request failed");
        anyhow::bail!("{status}: {message}");
    }
    Ok(value)
}

pub async fn exec(
    remote: RemoteOpts,
    id: String,
    timeout: Option<f64>,
    cwd: Option<String>,
    env: Vec<String>,
    cmd: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let client = client(&remote);
    let request = ExecRequest {
        cmd: Some(cmd),
        timeout_s: timeout,
        cwd,
        env: key_values(&env, "env")?,
        ..Default::default()
    };
    let mut events = Box::pin(client.exec_stream(&id, &request).await?);
    let mut code = 1u8;
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
                    "\nberth: {n} bytes of {stream} were cut here (the head and the tail are kept; raise --max-output to keep more)"
                ),
                None => eprintln!("berth: {stream} output was truncated"),
            },
            ExecEvent::Exit {
                exit_code,
                timed_out,
                oom_killed,
                ..
            } => {
                if timed_out {
                    eprintln!("berth: timed out; the command's process tree was killed");
                }
                if oom_killed {
                    eprintln!("berth: killed for exceeding the sandbox's memory limit");
                }
                code = exit_code.map(|c| c.clamp(0, 255) as u8).unwrap_or(137);
            }
            ExecEvent::Error { message } => anyhow::bail!("{message}"),
        }
    }
    Ok(ExitCode::from(code))
}
