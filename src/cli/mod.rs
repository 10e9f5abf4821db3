//! The `berth` command line: `serve`, `images`, `keys` act locally; `sandbox`, `exec` and
//! `cp` are clients of a running server's HTTP API (`BERTH_URL`, `BERTH_API_KEY`).

mod cp;
mod local;
mod remote;
mod shell;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Self-hosted sandboxes: one Docker container per session, with exec, file and terminal APIs",
    long_about = "berth runs a sandbox server on your own machine (`berth serve`) and talks to it \
                  (`berth sandbox`, `berth exec`, `berth cp`).\n\n\
                  Quick start:\n  berth serve                      # prints where the API key was written\n  \
                  export BERTH_API_KEY=$(cat ~/.local/share/berth/default-api-key)\n  \
                  berth sandbox create --image base\n  berth exec sb-... -- echo hello"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct LocalOpts {
    /// TOML config file (also $BERTH_CONFIG); env vars BERTH_* override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (database, sockets, caches); overrides config and $BERTH_DATA_DIR.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct RemoteOpts {
    /// Server URL.
    #[arg(
        long,
        env = "BERTH_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// API key; defaults to the default tenant's key file in the data dir when readable.
    #[arg(long, env = "BERTH_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP API) until Ctrl-C.
    Serve {
        #[command(flatten)]
        local: LocalOpts,
        /// host:port to listen on (default 127.0.0.1:8080; also $BERTH_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// This node's name in a cluster (with $BERTH_REDIS_URL; default: the host's
        /// name; also $BERTH_NODE_NAME).
        #[arg(long)]
        node_name: Option<String>,
        /// The URL the cluster's other nodes reach this one at, e.g.
        /// http://10.0.0.5:8080 (also $BERTH_ADVERTISE; default: the address it listens
        /// on, unless that is 0.0.0.0). A cluster also needs $BERTH_CLUSTER_SECRET, the
        /// same on every node, and PostgreSQL ($BERTH_DATABASE_URL) for nodes to place
        /// and serve each other's sandboxes.
        #[arg(long)]
        advertise: Option<String>,
    },
    /// Build or inspect the sandbox image templates (base, python, node).
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
        #[command(flatten)]
        local: LocalOpts,
    },
    /// Manage API keys (works on the database directly; the server need not run).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        local: LocalOpts,
    },
    /// Create, list, inspect, stop, resume and remove sandboxes.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
        #[command(flatten)]
        remote: RemoteOpts,
    },
    /// Run a command in a sandbox, streaming its output; exits with its exit code. Stdin is
    /// forwarded when it is a pipe or a file (`-i` forwards a terminal's too).
    Exec {
        /// Sandbox id.
        id: String,
        /// Seconds before the command's whole process tree is killed (default: the
        /// server's, 30 s unless configured).
        #[arg(long)]
        timeout: Option<f64>,
        /// Bytes of stdout and of stderr kept (head and tail; default 1 MiB each).
        #[arg(long, value_name = "BYTES")]
        max_output: Option<u64>,
        /// Forward stdin even when it is a terminal (read until end of input).
        #[arg(short, long, conflicts_with = "no_stdin")]
        interactive: bool,
        /// Never read stdin (as `ssh -n`; for loops that read their own input).
        #[arg(short = 'n', long)]
        no_stdin: bool,
        /// Working directory inside the sandbox.
        #[arg(long)]
        cwd: Option<String>,
        /// Extra environment, KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
        #[command(flatten)]
        remote: RemoteOpts,
    },
    /// Open an interactive terminal in a sandbox (raw mode; window size changes follow).
    /// Exits with the shell's exit code. With --session the shell lives on when you leave:
    /// `berth shell ID --session NAME` again reattaches and replays what you missed.
    Shell {
        /// Sandbox id.
        id: String,
        /// A named session to create or reattach to (it outlives this client).
        #[arg(long)]
        session: Option<String>,
        /// The program to run instead of the shell (run by /bin/sh -c).
        #[arg(long)]
        cmd: Option<String>,
        #[command(flatten)]
        remote: RemoteOpts,
    },
    /// Run test cases against a function in a sandbox and print a verdict per case; exits 0
    /// only when every case passed. Cases are a JSON array of
    /// {"name","input","expected","hidden"}.
    Test {
        /// Sandbox id.
        id: String,
        /// python, javascript or typescript (default: from the file's extension: .py, .js,
        /// .mjs, .cjs, .ts).
        #[arg(long)]
        language: Option<String>,
        /// A local file with the code to test.
        #[arg(long, conflicts_with = "path", required_unless_present = "path")]
        code_file: Option<PathBuf>,
        /// A file in the sandbox to test instead (its sibling modules can be imported).
        #[arg(long)]
        path: Option<String>,
        /// The cases, a JSON file.
        #[arg(long)]
        cases: PathBuf,
        /// Function to call (default: `solution`, else the only function, else the only
        /// method of class Solution).
        #[arg(long)]
        entrypoint: Option<String>,
        /// Seconds per case.
        #[arg(long)]
        timeout: Option<f64>,
        #[command(flatten)]
        remote: RemoteOpts,
    },
    /// Copy files or directories: `berth cp ./src ID:src` or `berth cp ID:out.txt ./out.txt`.
    Cp {
        source: String,
        destination: String,
        #[command(flatten)]
        remote: RemoteOpts,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build templates (all when none named); skips ones already built unless --force.
    Build {
        names: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Show each template, its tag and whether it is built.
    List,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key for a tenant (created if new); prints the key alone on stdout.
    Create {
        #[arg(long)]
        tenant: String,
    },
    /// List keys: id, prefix, tenant, creation time (never the keys themselves).
    List,
    /// Revoke a key by its id (from `keys list`) or by the key itself; a running server
    /// refuses it within two seconds.
    Revoke {
        /// Key id (at least 8 characters of it) or the whole key.
        key: String,
    },
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Create a sandbox and print it as JSON.
    Create {
        /// Template (base, python, node) or local image.
        #[arg(long, default_value = "base")]
        image: String,
        #[arg(long)]
        cpu: Option<f64>,
        #[arg(long)]
        memory_mb: Option<u64>,
        #[arg(long)]
        timeout_s: Option<u64>,
        #[arg(long)]
        idle_timeout_s: Option<u64>,
        /// "none" (default) or "bridge".
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        workdir: Option<String>,
        /// KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
    },
    /// List sandboxes (terminated and failed ones only with --all or --state).
    List {
        /// Only this state: creating, running, stopped, terminated, failed, archived.
        #[arg(long)]
        state: Option<String>,
        /// KEY or KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Include terminated and failed sandboxes.
        #[arg(long, short)]
        all: bool,
        /// Print the sandboxes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one sandbox.
    Get { id: String },
    /// Stop (volume kept; resumable).
    Stop { id: String },
    /// Resume a stopped sandbox on its volume.
    Resume { id: String },
    /// Terminate; removes the volume unless --keep-volume.
    Rm {
        id: String,
        #[arg(long)]
        keep_volume: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error as a CLI user should read it: what went wrong and what to do, in the CLI's
/// words rather than HTTP's, once.
fn describe(err: &anyhow::Error) -> String {
    use crate::client::ClientError;
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Http(e)) if e.is_connect() || e.is_timeout() => {
            let url = e
                .url()
                .map(|u| format!("{}://{}", u.scheme(), u.authority()))
                .unwrap_or_else(|| "the server".into());
            format!(
                "cannot reach the berth server at {url}; is it running? Start it with `berth serve`, or point BERTH_URL (--url) at it"
            )
        }
        Some(ClientError::Api { status, .. }) if status.as_u16() == 401 => {
            "the server refused the API key; check BERTH_API_KEY (--api-key), or create a key with `berth keys create --tenant NAME`".into()
        }
        Some(ClientError::Api { message, .. }) => cli_words(message),
        Some(other) => other.to_string(),
        None => format!("{err:#}"),
    }
}

/// Replaces the routes a server message names with the CLI verbs that do the same.
fn cli_words(message: &str) -> String {
    let mut out = message.to_string();
    while let Some(start) = out.find("POST /v1/sandboxes/") {
        let rest = &out[start + "POST /v1/sandboxes/".len()..];
        let Some((id, tail)) = rest.split_once('/') else {
            break;
        };
        let verb: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        if !matches!(verb.as_str(), "resume" | "stop") {
            break;
        }
        let end = start + "POST /v1/sandboxes/".len() + id.len() + 1 + verb.len();
        out.replace_range(start..end, &format!("`berth sandbox {verb} {id}`"));
    }
    out
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            local,
            listen,
            node_name,
            advertise,
        } => local::serve(local, listen, node_name, advertise).await,
        Command::Images {
            command: ImagesCommand::Build { names, force },
            local,
        } => local::images_build(local, names, force).await,
        Command::Images {
            command: ImagesCommand::List,
            local,
        } => local::images_list(local).await,
        Command::Keys {
            command: KeysCommand::Create { tenant },
            local,
        } => local::keys_create(local, tenant).await,
        Command::Keys {
            command: KeysCommand::List,
            local,
        } => local::keys_list(local).await,
        Command::Keys {
            command: KeysCommand::Revoke { key },
            local,
        } => local::keys_revoke(local, key).await,
        Command::Sandbox { command, remote } => remote::sandbox(remote, command).await,
        Command::Shell {
            id,
            session,
            cmd,
            remote,
        } => shell::shell(remote, &id, session, cmd).await,
        Command::Exec {
            id,
            timeout,
            cwd,
            env,
            max_output,
            interactive,
            no_stdin,
            cmd,
            remote,
        } => {
            let opts = remote::ExecOpts {
                id,
                timeout,
                cwd,
                env,
                max_output,
                interactive,
                no_stdin,
                cmd,
            };
            remote::exec(remote, opts).await
        }
        Command::Cp {
            source,
            destination,
            remote,
        } => cp::copy(remote, source, destination).await,
        Command::Test {
            id,
            language,
            code_file,
            path,
            cases,
            entrypoint,
            timeout,
            remote,
        } => {
            let opts = remote::TestOpts {
                id,
                language,
                code_file,
                path,
                cases,
                entrypoint,
                timeout,
            };
            remote::test(remote, opts).await
        }
    }
}

/// Splits `KEY=VALUE` arguments.
fn key_values(
    items: &[String],
    what: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| {
            item.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("{what} {item:?} must look like KEY=VALUE"))
        })
        .collect()
}
