//! Verbs that act on this machine: `serve`, `images build|list`, `keys create`.

use super::LocalOpts;
use crate::config::Config;
use crate::docker::DockerEngine;
use crate::domain::TenantId;
use crate::images::{self, BuildProgress, ImageService};
use crate::startup::{create_api_key, Application};
use anyhow::Context;
use std::process::ExitCode;
use std::time::Duration;

fn load_config(local: &LocalOpts) -> anyhow::Result<Config> {
    let mut config = Config::load(local.config.as_deref())?;
    if let Some(dir) = &local.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn serve(
    local: LocalOpts,
    listen: Option<String>,
    node_name: Option<String>,
    advertise: Option<String>,
) -> anyhow::Result<ExitCode> {
    init_logging();
    let mut config = load_config(&local)?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if node_name.is_some() {
        config.cluster.node_name = node_name;
    }
    if advertise.is_some() {
        config.cluster.advertise = advertise;
    }
    config.validate()?;
    let data_dir = config.data_dir.clone();
    let app = Application::build(config).await?;
    let addr = app.local_addr()?;
    eprintln!(
        "berth is listening on http://{addr} (data in {})",
        data_dir.display()
    );
    match &app.new_key_file {
        Some(path) => eprintln!(
            "created tenant \"default\"; its API key is in {}\n  export BERTH_API_KEY=$(cat {})",
            path.display(),
            path.display()
        ),
        None => eprintln!("create more API keys with: berth keys create --tenant NAME"),
    }
    eprintln!("images are built on first use; `berth images build` builds them ahead of time. Ctrl-C stops.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    app.run_until(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!(
            "berth: shutting down (sandboxes keep running and are adopted on the next start)"
        );
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn image_service(local: &LocalOpts) -> anyhow::Result<std::sync::Arc<ImageService>> {
    let config = load_config(local)?;
    let docker = DockerEngine::connect(Duration::from_secs(config.docker_timeout_s))
        .await
        .context("cannot reach Docker; is the daemon running?")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    Ok(ImageService::new(
        docker,
        config.data_dir.clone(),
        config.images.clone(),
    ))
}

pub async fn images_build(
    local: LocalOpts,
    names: Vec<String>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    init_logging();
    let templates = if names.is_empty() {
        images::TEMPLATES.to_vec()
    } else {
        names
            .iter()
            .map(|n| {
                images::template(n).ok_or_else(|| {
                    anyhow::anyhow!("no template {n:?}; templates: base, python, node")
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let service = image_service(&local).await?;
    for t in templates {
        let progress = BuildProgress::for_server(t.name);
        let started = std::time::Instant::now();
        let tag = service.build(t, &progress, force).await?;
        eprintln!(
            "{}: {tag} ready ({:.0}s)",
            t.name,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn images_list(local: LocalOpts) -> anyhow::Result<ExitCode> {
    let service = image_service(&local).await?;
    for (t, tag, present) in service.status().await? {
        println!(
            "{:<8} {:<28} {}",
            t.name,
            tag,
            if present { "built" } else { "not built" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn open_store(local: &LocalOpts) -> anyhow::Result<std::sync::Arc<dyn crate::store::Store>> {
    let config = load_config(local)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    Ok(crate::store::open(&config.database_url()).await?)
}

pub async fn keys_create(local: LocalOpts, tenant: String) -> anyhow::Result<ExitCode> {
    let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!(e))?;
    let store = open_store(&local).await?;
    let key = create_api_key(store.as_ref(), &tenant).await?;
    println!("{}", key.expose());
    Ok(ExitCode::SUCCESS)
}

pub async fn keys_list(local: LocalOpts) -> anyhow::Result<ExitCode> {
    let keys = open_store(&local).await?.list_api_keys().await?;
    if keys.is_empty() {
        eprintln!("no keys; create one with: berth keys create --tenant NAME");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<14} {:<9} {:<24} CREATED", "ID", "PREFIX", "TENANT");
    for k in keys {
        println!(
            "{:<14} {:<9} {:<24} {}",
            k.id,
            format!("{}…", k.prefix),
            k.tenant,
            k.created_at
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn keys_revoke(local: LocalOpts, key: String) -> anyhow::Result<ExitCode> {
    let store = open_store(&local).await?;
    let hash_prefix = if key.starts_with("bk_") {
        crate::domain::ApiKey::from_presented(&key).hash()
    } else if key.len() >= 8 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        key.to_ascii_lowercase()
    } else {
        anyhow::bail!(
            "{key:?} is neither a key id (8 or more hex characters, see `berth keys list`) nor a key (bk_...)"
        );
    };
    let matching = store
        .list_api_keys()
        .await?
        .into_iter()
        .filter(|k| hash_prefix.starts_with(&k.id) || k.id.starts_with(&hash_prefix))
        .count();
    if matching > 1 {
        anyhow::bail!("{key:?} matches {matching} keys; give more of the id");
    }
    match store.revoke_api_keys(&hash_prefix).await? {
        0 => anyhow::bail!("no key matches {key:?}; see `berth keys list`"),
        _ => eprintln!("revoked; a running server refuses it within two seconds"),
    }
    Ok(ExitCode::SUCCESS)
}
