//! Configuration, layered: built-in defaults → optional TOML file → `BERTH_*` env vars
//! (→ command-line flags, applied by the CLI). Every limit has a default.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("environment variable {name}={value:?} is not valid: {reason}")]
    Env {
        name: String,
        value: String,
        reason: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `host:port` to bind; loopback by default.
    pub listen: String,
    /// Where the database, agent binary, per-sandbox sockets and caches live.
    pub data_dir: PathBuf,
    /// `sqlite://...`; defaults to `<data_dir>/berth.db`.
    pub database_url: Option<String>,
    /// Deadline of every ordinary Docker call.
    pub docker_timeout_s: u64,
    /// How often lifetime and idle deadlines are checked.
    pub reaper_interval_ms: u64,
    /// Defaults applied to a sandbox request that leaves a field out.
    pub defaults: SandboxDefaults,
    /// Upper bounds a request may not exceed.
    pub limits: LimitCeilings,
    pub images: ImagesConfig,
    /// Started sandboxes kept ready per template (`pool = {python = 2, node = 1}`), with
    /// the default limits; a create that fits adopts one instead of starting a container.
    pub pool: BTreeMap<String, usize>,
    /// Browser origins (`https://app.example.com`) allowed to open terminals besides this
    /// server's own; `*` allows any.
    pub terminal_origins: Vec<String>,
    /// Where snapshots and archived volumes go.
    pub archive: crate::archive::ArchiveConfig,
    /// Other nodes on the same Redis (and PostgreSQL): the `[cluster]` section.
    pub cluster: crate::cluster::ClusterConfig,
    /// How long sandboxes, snapshots and kept volumes live on.
    pub retention: Retention,
    /// On shutdown, how long `/readyz` says 503 while requests are still taken.
    pub shutdown_notice_ms: u64,
    /// `disk_mb` enforced by a filesystem of that size per volume (a loop device):
    /// `auto` (when this host can: root, losetup, mkfs.ext4), `on` (refuse to start
    /// without), `off`.
    pub disk_quotas: DiskQuotas,
    /// How often the writable root layer of running sandboxes is measured (those past
    /// `disk_mb` are stopped with reason `disk`); 0 turns the check off.
    pub disk_check_ms: u64,
    /// Writes to each sandbox's volume go at most this fast (MB/s; 0: unbounded), so
    /// sandboxes filling their disks cannot take the host's I/O (and the kernel's CPU
    /// time spent on it) from the others. Needs the disk quota's loop device.
    pub disk_write_mbps: u64,
    /// And at most this many write operations a second (0: unbounded).
    pub disk_write_iops: u64,
    /// Who may run what: root in sandboxes, images beyond the templates.
    pub security: SecurityConfig,
}

/// Root and image policy.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// `allow_root` of a create that leaves it out (execs may then ask for `user: "root"`).
    pub allow_root: bool,
    /// Tenants that may not create sandboxes with `allow_root`.
    pub deny_root_tenants: Vec<String>,
    /// Images every tenant may run besides the templates: exact references or patterns
    /// with `*` (`myorg/*`, `busybox:*`). Empty: the templates only.
    pub allowed_images: Vec<String>,
    /// More patterns for one tenant (`tenant_images = { team-a = ["team-a/*"] }`).
    pub tenant_images: BTreeMap<String, Vec<String>>,
}

impl SecurityConfig {
    /// Whether `tenant` may run the (non-template) image `image`.
    pub fn image_allowed(&self, tenant: &str, image: &str) -> bool {
        self.allowed_images
            .iter()
            .chain(self.tenant_images.get(tenant).into_iter().flatten())
            .any(|pattern| glob_match(pattern, image))
    }

    pub fn root_allowed(&self, tenant: &str) -> bool {
        !self.deny_root_tenants.iter().any(|t| t == tenant)
    }
}

/// `*` matches any run of characters (slashes included); everything else itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Whether volumes get a filesystem of their own, `disk_mb` in size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiskQuotas {
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for DiskQuotas {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DiskQuotas::Auto),
            "on" => Ok(DiskQuotas::On),
            "off" => Ok(DiskQuotas::Off),
            other => Err(format!("{other:?}: use auto, on or off")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// A sandbox stopped this long has its volume archived (0: never).
    pub archive_after_s: u64,
    /// Snapshots are deleted this long after they were taken (0: never).
    pub snapshots_s: u64,
    /// A volume kept past its sandbox's deletion (`keep_volume=true`), and used by no
    /// sandbox, is removed this long after (0: never).
    pub kept_volumes_s: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            archive_after_s: 7 * 24 * 3600,
            snapshots_s: 30 * 24 * 3600,
            kept_volumes_s: 30 * 24 * 3600,
        }
    }
}

/// Most sandboxes the pool keeps ready for one template.
pub const MAX_POOL_PER_TEMPLATE: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxDefaults {
    pub cpu: f64,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub pids: i64,
    pub timeout_s: u64,
    pub idle_timeout_s: u64,
    pub exec_timeout_s: f64,
    pub output_cap_bytes: u64,
    pub workdir: String,
    /// `runc` or `gvisor` (runsc, where the engine has it registered).
    pub runtime: crate::domain::Runtime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitCeilings {
    pub max_cpu: f64,
    pub max_memory_mb: u64,
    /// Largest `disk_mb` a sandbox may ask for.
    pub max_disk_mb: u64,
    pub max_pids: i64,
    pub max_timeout_s: u64,
    pub max_exec_timeout_s: f64,
    pub max_output_cap_bytes: u64,
    /// Largest file or tar upload.
    pub max_upload_bytes: u64,
    /// Largest JSON request body (starter `files` included).
    pub max_json_bytes: usize,
    /// JSON request bytes being read and handled at once on the whole server.
    pub max_json_bytes_in_flight: usize,
    /// Sandboxes a tenant may have that are not terminated.
    pub max_sandboxes_per_tenant: usize,
    /// Snapshots a tenant may keep (archives of archived sandboxes do not count).
    pub max_snapshots_per_tenant: usize,
    /// Agent requests (execs, streams, file routes) in flight at once on one sandbox.
    pub max_requests_per_sandbox: usize,
    /// ... for one tenant.
    pub max_requests_per_tenant: usize,
    /// ... on the whole server.
    pub max_requests: usize,
    /// Read-only helpers (reads of stopped sandboxes) one tenant may have at once.
    pub max_readers_per_tenant: usize,
    /// `GET /v1/events` streams open at once for one tenant.
    pub max_event_streams_per_tenant: usize,
    /// ... on the whole server.
    pub max_event_streams: usize,
    /// Terminated and failed sandbox records are forgotten this long after they ended.
    pub ended_retention_s: u64,
    /// Largest terminal recording (asciicast file); past it recording stops.
    pub max_recording_bytes: u64,
    /// What one sandbox's terminal recordings may take in all.
    pub max_recordings_bytes_per_sandbox: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Debian suite the templates are bootstrapped from.
    pub suite: String,
    /// Debian archive mirror.
    pub mirror: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: default_data_dir(),
            database_url: None,
            docker_timeout_s: 60,
            reaper_interval_ms: 1000,
            defaults: SandboxDefaults::default(),
            limits: LimitCeilings::default(),
            images: ImagesConfig::default(),
            pool: BTreeMap::from([("python".to_string(), 2), ("node".to_string(), 1)]),
            terminal_origins: Vec::new(),
            archive: Default::default(),
            cluster: Default::default(),
            retention: Retention::default(),
            shutdown_notice_ms: 1000,
            disk_quotas: DiskQuotas::Auto,
            disk_check_ms: 2000,
            disk_write_mbps: 64,
            disk_write_iops: 2000,
            security: SecurityConfig::default(),
        }
    }
}

impl Default for SandboxDefaults {
    fn default() -> Self {
        SandboxDefaults {
            cpu: 1.0,
            memory_mb: 512,
            disk_mb: 2048,
            pids: 512,
            timeout_s: 3600,
            idle_timeout_s: 900,
            exec_timeout_s: 30.0,
            output_cap_bytes: 1024 * 1024,
            workdir: "/workspace".into(),
            runtime: crate::domain::Runtime::Runc,
        }
    }
}

impl Default for LimitCeilings {
    fn default() -> Self {
        LimitCeilings {
            max_cpu: 16.0,
            max_memory_mb: 64 * 1024,
            max_disk_mb: 1024 * 1024,
            max_pids: 32_768,
            max_timeout_s: 7 * 24 * 3600,
            max_exec_timeout_s: 24.0 * 3600.0,
            max_output_cap_bytes: 64 * 1024 * 1024,
            max_upload_bytes: 512 * 1024 * 1024,
            max_json_bytes: 16 * 1024 * 1024,
            max_json_bytes_in_flight: 256 * 1024 * 1024,
            max_sandboxes_per_tenant: 200,
            max_snapshots_per_tenant: 100,
            max_requests_per_sandbox: 16,
            max_requests_per_tenant: 64,
            max_requests: 256,
            max_readers_per_tenant: 8,
            max_event_streams_per_tenant: 16,
            max_event_streams: 1024,
            ended_retention_s: 7 * 24 * 3600,
            max_recording_bytes: 64 * 1024 * 1024,
            max_recordings_bytes_per_sandbox: 256 * 1024 * 1024,
        }
    }
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
        }
    }
}

/// `$XDG_DATA_HOME/berth`, `~/.local/share/berth`, or `./berth-data`.
fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("berth");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/berth"),
        None => PathBuf::from("berth-data"),
    }
}

impl Config {
    /// Defaults, then `file` (or `$BERTH_CONFIG`) if given, then `BERTH_*` env vars.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env_file = std::env::var_os("BERTH_CONFIG").map(PathBuf::from);
        let mut config = match file.map(Path::to_path_buf).or(env_file) {
            Some(path) => Self::from_file(&path)?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    /// Overlays the `BERTH_*` variables that `lookup` finds.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                name: name.into(),
                value: value.into(),
                reason: e.to_string(),
            })
        }
        macro_rules! overlay {
            ($name:literal, $field:expr) => {
                if let Some(v) = lookup($name) {
                    $field = parse($name, &v)?;
                }
            };
        }
        if let Some(v) = lookup("BERTH_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = lookup("BERTH_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = lookup("BERTH_DATABASE_URL") {
            self.database_url = Some(v);
        }
        overlay!("BERTH_DOCKER_TIMEOUT_S", self.docker_timeout_s);
        overlay!("BERTH_REAPER_INTERVAL_MS", self.reaper_interval_ms);
        overlay!("BERTH_DEFAULT_CPU", self.defaults.cpu);
        overlay!("BERTH_DEFAULT_MEMORY_MB", self.defaults.memory_mb);
        overlay!("BERTH_DEFAULT_DISK_MB", self.defaults.disk_mb);
        overlay!("BERTH_DEFAULT_PIDS", self.defaults.pids);
        overlay!("BERTH_DEFAULT_TIMEOUT_S", self.defaults.timeout_s);
        overlay!("BERTH_DEFAULT_IDLE_TIMEOUT_S", self.defaults.idle_timeout_s);
        overlay!("BERTH_DEFAULT_EXEC_TIMEOUT_S", self.defaults.exec_timeout_s);
        overlay!(
            "BERTH_DEFAULT_OUTPUT_CAP_BYTES",
            self.defaults.output_cap_bytes
        );
        overlay!("BERTH_MAX_UPLOAD_BYTES", self.limits.max_upload_bytes);
        overlay!("BERTH_MAX_JSON_BYTES", self.limits.max_json_bytes);
        overlay!(
            "BERTH_MAX_SANDBOXES_PER_TENANT",
            self.limits.max_sandboxes_per_tenant
        );
        overlay!(
            "BERTH_MAX_REQUESTS_PER_SANDBOX",
            self.limits.max_requests_per_sandbox
        );
        overlay!(
            "BERTH_MAX_REQUESTS_PER_TENANT",
            self.limits.max_requests_per_tenant
        );
        overlay!("BERTH_MAX_REQUESTS", self.limits.max_requests);
        overlay!(
            "BERTH_MAX_SNAPSHOTS_PER_TENANT",
            self.limits.max_snapshots_per_tenant
        );
        overlay!(
            "BERTH_MAX_EVENT_STREAMS_PER_TENANT",
            self.limits.max_event_streams_per_tenant
        );
        overlay!("BERTH_ENDED_RETENTION_S", self.limits.ended_retention_s);
        overlay!("BERTH_MAX_RECORDING_BYTES", self.limits.max_recording_bytes);
        if let Some(v) = lookup("BERTH_REDIS_URL") {
            self.cluster.redis_url = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = lookup("BERTH_NODE_NAME") {
            self.cluster.node_name = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = lookup("BERTH_ADVERTISE") {
            self.cluster.advertise = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = lookup("BERTH_CLUSTER_SECRET") {
            self.cluster.secret = Some(v)
                .filter(|v| !v.is_empty())
                .map(crate::cluster::hop::Secret);
        }
        if let Some(v) = lookup("BERTH_ARCHIVE_URL") {
            self.archive.url = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = lookup("BERTH_ARCHIVE_ENDPOINT") {
            self.archive.endpoint = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = lookup("BERTH_ARCHIVE_REGION") {
            self.archive.region = Some(v).filter(|v| !v.is_empty());
        }
        overlay!("BERTH_ARCHIVE_ALLOW_HTTP", self.archive.allow_http);
        overlay!("BERTH_ARCHIVE_AFTER_S", self.retention.archive_after_s);
        overlay!("BERTH_SHUTDOWN_NOTICE_MS", self.shutdown_notice_ms);
        overlay!("BERTH_DISK_QUOTAS", self.disk_quotas);
        overlay!("BERTH_DISK_CHECK_MS", self.disk_check_ms);
        overlay!("BERTH_DISK_WRITE_MBPS", self.disk_write_mbps);
        overlay!("BERTH_DISK_WRITE_IOPS", self.disk_write_iops);
        overlay!("BERTH_SNAPSHOT_RETENTION_S", self.retention.snapshots_s);
        overlay!(
            "BERTH_KEPT_VOLUME_RETENTION_S",
            self.retention.kept_volumes_s
        );
        overlay!("BERTH_ALLOW_ROOT", self.security.allow_root);
        if let Some(v) = lookup("BERTH_RUNTIME") {
            self.defaults.runtime =
                crate::domain::Runtime::parse(&v).ok_or_else(|| ConfigError::Env {
                    name: "BERTH_RUNTIME".into(),
                    value: v.clone(),
                    reason: "use runc or gvisor".into(),
                })?;
        }
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect()
        };
        if let Some(v) = lookup("BERTH_DENY_ROOT_TENANTS") {
            self.security.deny_root_tenants = list(&v);
        }
        if let Some(v) = lookup("BERTH_ALLOWED_IMAGES") {
            self.security.allowed_images = list(&v);
        }
        if let Some(v) = lookup("BERTH_TERMINAL_ORIGINS") {
            self.terminal_origins = v
                .split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect();
        }
        if let Some(v) = lookup("BERTH_IMAGES_MIRROR") {
            self.images.mirror = v;
        }
        if let Some(v) = lookup("BERTH_POOL") {
            self.pool = parse_pool(&v).map_err(|reason| ConfigError::Env {
                name: "BERTH_POOL".into(),
                value: v.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.defaults;
        let l = &self.limits;
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if !(d.cpu > 0.0 && d.cpu <= l.max_cpu) {
            return bad("defaults.cpu must be > 0 and <= limits.max_cpu");
        }
        if d.memory_mb < 16 || d.memory_mb > l.max_memory_mb {
            return bad("defaults.memory_mb must be >= 16 and <= limits.max_memory_mb");
        }
        if d.disk_mb == 0 || d.disk_mb > l.max_disk_mb {
            return bad("defaults.disk_mb must be > 0 and <= limits.max_disk_mb");
        }
        if d.pids < 8 || d.pids > l.max_pids {
            return bad("defaults.pids must be >= 8 and <= limits.max_pids");
        }
        if d.timeout_s == 0 || d.timeout_s > l.max_timeout_s {
            return bad("defaults.timeout_s must be > 0 and <= limits.max_timeout_s");
        }
        if l.max_requests_per_sandbox == 0 || l.max_requests_per_tenant == 0 || l.max_requests == 0
        {
            return bad("limits.max_requests* must be at least 1");
        }
        if !d.workdir.starts_with('/') {
            return bad("defaults.workdir must be an absolute path");
        }
        if let Some(name) = &self.cluster.node_name {
            let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if name.is_empty() || name.len() > 63 || !name.chars().all(fits) {
                return bad(
                    "cluster.node_name (--node-name) must be 1-63 letters, digits, '-', '_' or '.'",
                );
            }
        }
        if let Some(url) = &self.cluster.advertise {
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                return bad("cluster.advertise (--advertise) must be an http:// URL (nodes talk plain HTTP on their own network; put TLS in front of the cluster's one URL)");
            }
        }
        if self.cluster.redis_url.is_some() {
            match &self.cluster.secret {
                None => return bad("a cluster (BERTH_REDIS_URL) needs BERTH_CLUSTER_SECRET (or cluster.secret), the same on every node, 32+ characters: e.g. `openssl rand -hex 32`"),
                Some(secret) if secret.0.len() < 32 => return bad("BERTH_CLUSTER_SECRET (cluster.secret) must be at least 32 characters: e.g. `openssl rand -hex 32`"),
                Some(_) => {}
            }
        }
        for (template, n) in &self.pool {
            if crate::images::template(template).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "pool: {template:?} is not a template (base, python, node)"
                )));
            }
            if *n > MAX_POOL_PER_TEMPLATE {
                return Err(ConfigError::Invalid(format!(
                    "pool: at most {MAX_POOL_PER_TEMPLATE} ready sandboxes per template, not {n}"
                )));
            }
        }
        Ok(())
    }

    /// The database URL, defaulting to a SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("berth.db").display()
            )
        })
    }
}

/// `python:2,node:1` (or `off`, or empty) → template → count.
fn parse_pool(text: &str) -> Result<BTreeMap<String, usize>, String> {
    let text = text.trim();
    if text.is_empty() || text == "off" || text == "0" {
        return Ok(BTreeMap::new());
    }
    text.split(',')
        .map(|part| {
            let (name, n) = part
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("{part:?} is not TEMPLATE:COUNT (e.g. python:2,node:1)"))?;
            let n = n
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("{n:?} in {part:?} is not a count"))?;
            Ok((name.trim().to_string(), n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_patterns_match_whole_references() {
        let security = SecurityConfig {
            allowed_images: vec!["busybox:*".into(), "myorg/*".into(), "exact:1".into()],
            tenant_images: BTreeMap::from([("team".to_string(), vec!["team/*/x".to_string()])]),
            ..Default::default()
        };
        assert!(security.image_allowed("any", "busybox:latest"));
        assert!(security.image_allowed("any", "myorg/tools:1"));
        assert!(security.image_allowed("any", "exact:1"));
        assert!(!security.image_allowed("any", "exact:12"));
        assert!(!security.image_allowed("any", "busybox"));
        assert!(!security.image_allowed("any", "notmyorg/tools"));
        assert!(!security.image_allowed("any", "secrets:latest"));
        assert!(security.image_allowed("team", "team/a/x"));
        assert!(!security.image_allowed("other", "team/a/x"));
        assert!(!security.image_allowed("team", "team/a/y"));
        assert!(SecurityConfig::default().root_allowed("t"));
    }

    use super::*;

    #[test]
    fn the_pool_is_on_by_default_and_set_by_file_or_env() {
        let config = Config::default();
        assert_eq!(config.pool.get("python"), Some(&2));
        assert_eq!(config.pool.get("node"), Some(&1));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, "pool = {python = 3}\n").unwrap();
        let mut config = Config::from_file(&file).unwrap();
        assert_eq!(config.pool, BTreeMap::from([("python".to_string(), 3)]));
        config
            .apply_env(|n| (n == "BERTH_POOL").then(|| "python:1, node:4".into()))
            .unwrap();
        assert_eq!(config.pool.get("node"), Some(&4));
        config
            .apply_env(|n| (n == "BERTH_POOL").then(|| "off".into()))
            .unwrap();
        assert!(config.pool.is_empty());
        let err = config
            .apply_env(|n| (n == "BERTH_POOL").then(|| "python=2".into()))
            .unwrap_err();
        assert!(err.to_string().contains("TEMPLATE:COUNT"), "{err}");
        config.pool = BTreeMap::from([("ruby".to_string(), 1)]);
        assert!(config.validate().is_err());
        config.pool = BTreeMap::from([("python".to_string(), 1000)]);
        assert!(config.validate().is_err());
    }

    #[test]
    fn env_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[defaults]\nmemory_mb = 256\n",
        )
        .unwrap();
        let mut config = Config::from_file(&file).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000");
        assert_eq!(config.defaults.memory_mb, 256);
        assert_eq!(
            config.defaults.pids, 512,
            "untouched fields keep their defaults"
        );
        config
            .apply_env(|name| match name {
                "BERTH_LISTEN" => Some("127.0.0.1:9100".into()),
                "BERTH_DEFAULT_MEMORY_MB" => Some("1024".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9100");
        assert_eq!(config.defaults.memory_mb, 1024);
    }

    #[test]
    fn a_malformed_env_value_names_the_variable() {
        let mut config = Config::default();
        let err = config
            .apply_env(|n| (n == "BERTH_DEFAULT_PIDS").then(|| "lots".into()))
            .unwrap_err();
        assert!(err.to_string().contains("BERTH_DEFAULT_PIDS"), "{err}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        assert!(matches!(
            Config::from_file(&file),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn a_cluster_needs_a_long_shared_secret_and_a_plain_http_address() {
        let with = |vars: &[(&str, &str)]| {
            let mut config = Config::default();
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            config
                .apply_env(|n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
                .unwrap();
            config.validate().map_err(|e| e.to_string())
        };
        let redis = ("BERTH_REDIS_URL", "redis://127.0.0.1:6379");
        let long = ("BERTH_CLUSTER_SECRET", "0123456789abcdef0123456789abcdef");
        let err = with(&[redis]).unwrap_err();
        assert!(err.contains("BERTH_CLUSTER_SECRET"), "{err}");
        let err = with(&[redis, ("BERTH_CLUSTER_SECRET", "short")]).unwrap_err();
        assert!(err.contains("32"), "{err}");
        with(&[redis, long]).unwrap();
        let err = with(&[redis, long, ("BERTH_ADVERTISE", "https://n1:8080")]).unwrap_err();
        assert!(err.contains("http://"), "{err}");
        with(&[redis, long, ("BERTH_ADVERTISE", "http://10.0.0.5:8080")]).unwrap();
        // One node needs none of it.
        with(&[]).unwrap();
        // And the secret never prints with the config.
        let mut config = Config::default();
        config
            .apply_env(|n| (n == long.0).then(|| long.1.into()))
            .unwrap();
        assert!(!format!("{config:?}").contains(long.1));
    }

    #[test]
    fn defaults_bind_loopback_and_are_valid() {
        let config = Config::default();
        assert!(config.listen.starts_with("127.0.0.1:"));
        config.validate().unwrap();
    }
}
