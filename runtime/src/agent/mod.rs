//! `berth-agent`: PID 1 of every sandbox container. Reaps zombies, runs execs in tagged
//! process trees, serves exec and file routes over HTTP on a unix socket that the
//! supervisor reaches through a bind-mounted per-sandbox host directory.

mod archive;
mod chunks;
mod error;
mod exec;
mod files;
mod http;
mod identity;
mod json_body;
mod memory_guard;
mod nudge;
mod output;
mod process;
mod reaper;
mod search;
mod seccomp;
mod spawn;
mod terminal;

use crate::wire::{
    AGENT_SOCKET_DIR, AGENT_SOCKET_NAME, ENV_ALLOW_ROOT, ENV_DEFAULT_EXEC_TIMEOUT,
    ENV_DEFAULT_OUTPUT_CAP, ENV_SOCKET_NUDGE, ENV_WORKDIR,
};
use error::AgentError;
use process::BackgroundProcess;
use reaper::Reaper;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What every handler shares.
pub struct AgentState {
    pub workdir: PathBuf,
    pub reaper: Arc<Reaper>,
    pub base_env: Vec<(String, String)>,
    /// The sandbox's own variables, set by the supervisor after start (a pooled sandbox
    /// learns them when it is adopted); they override `base_env`.
    pub sandbox_env: std::sync::RwLock<Vec<(String, String)>>,
    pub default_timeout_s: f64,
    pub default_output_cap: u64,
    pub processes: Mutex<HashMap<u32, Arc<BackgroundProcess>>>,
    pub terminals: terminal::Terminals,
    /// Whether execs may run as root (the sandbox was made with `allow_root`).
    pub allow_root: std::sync::atomic::AtomicBool,
}

impl AgentState {
    /// The environment every process starts with: the container's, then the sandbox's
    /// own variables over it.
    pub fn exec_env(&self, creds: spawn::Credentials) -> Vec<(String, String)> {
        let mut env = self.base_env.clone();
        for (k, v) in identity::identity_env(creds, &self.workdir) {
            env.retain(|(name, _)| *name != k);
            env.push((k, v));
        }
        let sandbox_env = self.sandbox_env.read().unwrap_or_else(|p| p.into_inner());
        for (k, v) in sandbox_env.iter() {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    /// Credentials for an exec's `user`: the default user, or root when allowed.
    pub fn credentials_for(&self, user: Option<&str>) -> Result<spawn::Credentials, AgentError> {
        let allow_root = self.allow_root.load(std::sync::atomic::Ordering::Relaxed);
        identity::credentials_for(user, allow_root)
    }

    /// A client path inside the sandbox: absolute as given, relative to the workdir
    /// otherwise. `..` and symlinks resolve in the container's own filesystem.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, AgentError> {
        if path.is_empty() {
            return Err(AgentError::BadRequest("`path` must not be empty".into()));
        }
        if path.contains('\0') {
            return Err(AgentError::BadRequest(
                "`path` must not contain NUL bytes".into(),
            ));
        }
        let p = PathBuf::from(path);
        let p = if p.is_absolute() {
            p
        } else {
            self.workdir.join(p)
        };
        Ok(files::resolve_parent_links(p))
    }
}

/// Entry point of the binary; returns the process exit code.
pub fn run() -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-agent: cannot start runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-agent: {e}");
            1
        }
    }
}

async fn serve() -> std::io::Result<()> {
    // User code runs as `user` (or, with allow_root, as root with fewer capabilities):
    // it cannot trace us (ptrace needs a superset of our capabilities); non-dumpable is a second lock on
    // /proc/1/{mem,environ}. execve resets the flag, so the processes we start keep it.
    // SAFETY: prctl(2) with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let reaper = Reaper::start()?;
    spawn::load_process_limit();
    memory_guard::start();
    let env_number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
    let workdir = PathBuf::from(std::env::var(ENV_WORKDIR).unwrap_or_else(|_| "/workspace".into()));
    let _ = std::fs::create_dir_all(&workdir);
    identity::prepare_default_user(&workdir);
    let base_env = std::env::vars()
        .filter(|(k, _)| !k.starts_with("BERTH_"))
        .collect();
    let state = Arc::new(AgentState {
        workdir,
        reaper,
        base_env,
        sandbox_env: Default::default(),
        default_timeout_s: env_number(ENV_DEFAULT_EXEC_TIMEOUT).unwrap_or(30.0),
        default_output_cap: env_number(ENV_DEFAULT_OUTPUT_CAP)
            .map(|v| v as u64)
            .unwrap_or(1024 * 1024),
        processes: Mutex::new(HashMap::new()),
        terminals: terminal::Terminals::default(),
        allow_root: std::sync::atomic::AtomicBool::new(
            std::env::var(ENV_ALLOW_ROOT).is_ok_and(|v| v == "1"),
        ),
    });
    let dir = std::env::var("BERTH_AGENT_SOCKET_DIR").unwrap_or_else(|_| AGENT_SOCKET_DIR.into());
    std::fs::create_dir_all(&dir)?;
    let socket = PathBuf::from(dir).join(AGENT_SOCKET_NAME);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let nudge = std::env::var(ENV_SOCKET_NUDGE).is_ok_and(|v| v == "1");
    axum::serve(
        nudge::NudgedListener::new(listener, nudge),
        http::router(state),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    if std::process::id() == 1 {
        // As PID 1, take every remaining process down with us.
        // SAFETY: kill(2).
        unsafe {
            libc::kill(-1, libc::SIGKILL);
        }
    }
    Ok(())
}
