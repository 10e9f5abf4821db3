//! Client requests parsed into checked values ("parse, don't validate"): defaults filled
//! from config, ceilings enforced, names checked.

use super::{Limits, Network, VolumeName};
use crate::config::Config;
use berth_runtime::wire::whole;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, RequestError> {
    Err(RequestError(msg.into()))
}

/// `POST /v1/sandboxes` as sent.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    pub image: Option<String>,
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "whole::option")]
    pub memory_mb: Option<u64>,
    #[serde(default, deserialize_with = "whole::option")]
    pub disk_mb: Option<u64>,
    #[serde(default, deserialize_with = "whole::option_i64")]
    pub pids: Option<i64>,
    #[serde(default, deserialize_with = "whole::option")]
    pub timeout_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::option")]
    pub idle_timeout_s: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    pub volume: Option<String>,
    pub from_snapshot: Option<String>,
    pub auto_resume: Option<bool>,
    pub allow_root: Option<bool>,
    pub runtime: Option<String>,
    /// In a cluster, the node to place the sandbox on (any node with room otherwise).
    pub node: Option<String>,
}

/// A create request after checking.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSandbox {
    pub image: String,
    pub limits: Limits,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub files: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub network: Network,
    pub volume: Option<VolumeName>,
    /// A snapshot to restore into the new volume.
    pub from_snapshot: Option<super::SnapshotId>,
    pub auto_resume: bool,
    /// Execs may ask for `user: "root"`: as asked (`None`: the server's default for the
    /// tenant, settled by the sandbox service).
    pub allow_root: Option<bool>,
    pub runtime: super::Runtime,
}

const MAX_LABELS: usize = 64;
const MAX_ENV: usize = 256;

impl CreateSandboxRequest {
    pub fn parse(self, config: &Config) -> Result<CreateSandbox, RequestError> {
        let d = &config.defaults;
        let c = &config.limits;
        let image = match self.image {
            Some(i) if super::image_ref::is_valid(&i) => i,
            Some(i) => return fail(format!("`image` {i:?} is not a valid image reference: use a template name (base, python, node) or a local image such as myorg/tools:1")),
            None => return fail("`image` is required: a template name (base, python, node) or a local image reference"),
        };
        let cpu = self.cpu.unwrap_or(d.cpu);
        if !(cpu.is_finite() && cpu >= 0.01 && cpu <= c.max_cpu) {
            return fail(format!("`cpu` must be between 0.01 and {}", c.max_cpu));
        }
        let memory_mb = self.memory_mb.unwrap_or(d.memory_mb);
        if !(16..=c.max_memory_mb).contains(&memory_mb) {
            return fail(format!(
                "`memory_mb` must be between 16 and {}",
                c.max_memory_mb
            ));
        }
        let pids = self.pids.unwrap_or(d.pids);
        if !(8..=c.max_pids).contains(&pids) {
            return fail(format!("`pids` must be between 8 and {}", c.max_pids));
        }
        let timeout_s = self.timeout_s.unwrap_or(d.timeout_s);
        if !(1..=c.max_timeout_s).contains(&timeout_s) {
            return fail(format!(
                "`timeout_s` must be between 1 and {}",
                c.max_timeout_s
            ));
        }
        let idle_timeout_s = self.idle_timeout_s.unwrap_or(d.idle_timeout_s);
        if !(1..=c.max_timeout_s).contains(&idle_timeout_s) {
            return fail(format!(
                "`idle_timeout_s` must be between 1 and {}",
                c.max_timeout_s
            ));
        }
        let disk_mb = self.disk_mb.unwrap_or(d.disk_mb);
        if !(1..=c.max_disk_mb).contains(&disk_mb) {
            return fail(format!("`disk_mb` must be between 1 and {}", c.max_disk_mb));
        }
        let workdir = self.workdir.unwrap_or_else(|| d.workdir.clone());
        check_workdir(&workdir)?;
        check_env(&self.env)?;
        check_labels(&self.labels)?;
        for path in self.files.keys() {
            if path.is_empty() || path.contains('\0') {
                return fail("`files` keys must be non-empty paths without NUL bytes");
            }
        }
        let network = match self.network.as_deref() {
            None | Some("none") => Network::None,
            Some("bridge") => Network::Bridge,
            Some(other) => {
                return fail(format!(
                    "`network` must be \"none\" or \"bridge\", not {other:?}"
                ))
            }
        };
        let runtime = match self.runtime.as_deref() {
            None => d.runtime,
            Some(raw) => super::Runtime::parse(raw).ok_or_else(|| {
                RequestError(format!(
                    "`runtime` must be \"runc\" or \"gvisor\", not {raw:?}"
                ))
            })?,
        };
        if runtime == super::Runtime::Gvisor && network == Network::Bridge {
            return fail("`runtime: \"gvisor\"` sandboxes have no network here (runsc runs with --network=none); use \"network\": \"none\" or runc");
        }
        let volume = self
            .volume
            .as_deref()
            .map(VolumeName::parse)
            .transpose()
            .map_err(RequestError)?;
        let from_snapshot = match self.from_snapshot.as_deref() {
            None => None,
            Some(raw) => Some(super::SnapshotId::parse(raw).ok_or_else(|| {
                RequestError(format!(
                    "`from_snapshot` {raw:?} is not a snapshot id (snap-...)"
                ))
            })?),
        };
        if from_snapshot.is_some() && volume.is_some() {
            return fail("give `volume` or `from_snapshot`, not both: a snapshot is restored into a new volume");
        }
        Ok(CreateSandbox {
            image,
            limits: Limits {
                cpu,
                memory_mb,
                disk_mb,
                pids,
                timeout_s,
                idle_timeout_s,
            },
            env: self.env,
            workdir,
            files: self.files,
            labels: self.labels,
            network,
            volume,
            from_snapshot,
            auto_resume: self.auto_resume.unwrap_or(true),
            allow_root: self.allow_root,
            runtime,
        })
    }
}

fn check_workdir(workdir: &str) -> Result<(), RequestError> {
    let ok = workdir.starts_with('/')
        && workdir.len() <= 256
        && !workdir.contains('\0')
        && !workdir.split('/').any(|c| c == ".." || c == ".")
        && workdir != "/"
        && ![
            "/proc",
            "/sys",
            "/dev",
            "/run/berth",
            "/.berth",
            // Sized tmpfs of their own.
            "/tmp",
            "/var/tmp",
            "/run/lock",
        ]
        .iter()
        .any(|p| workdir == *p || workdir.starts_with(&format!("{p}/")));
    if ok {
        Ok(())
    } else {
        fail("`workdir` must be an absolute path such as /workspace (not /, /proc, /sys, /dev or berth's own dirs)")
    }
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), RequestError> {
    if env.len() > MAX_ENV {
        return fail(format!("at most {MAX_ENV} env vars"));
    }
    for (k, v) in env {
        let name_ok = !k.is_empty() && !k.contains(['=', '\0']) && k.len() <= 256;
        if !name_ok || v.contains('\0') || v.len() > 64 * 1024 {
            return fail(format!("env var {k:?} has an invalid name or value"));
        }
        if k.starts_with("BERTH_") {
            return fail(format!(
                "env var {k:?}: names starting with BERTH_ are reserved"
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), RequestError> {
    if labels.len() > MAX_LABELS {
        return fail(format!("at most {MAX_LABELS} labels"));
    }
    for (k, v) in labels {
        if k.is_empty()
            || k.len() > 128
            || k.contains(['=', ',', '\0'])
            || v.len() > 512
            || v.contains('\0')
        {
            return fail(format!("label {k:?} has an invalid key or value"));
        }
    }
    Ok(())
}

/// `PATCH /v1/sandboxes/{id}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PatchSandbox {
    #[serde(default, deserialize_with = "whole::option")]
    pub timeout_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::option")]
    pub idle_timeout_s: Option<u64>,
    pub labels: Option<BTreeMap<String, String>>,
}

impl PatchSandbox {
    pub fn check(&self, config: &Config) -> Result<(), RequestError> {
        let max = config.limits.max_timeout_s;
        for (name, value) in [
            ("timeout_s", self.timeout_s),
            ("idle_timeout_s", self.idle_timeout_s),
        ] {
            if let Some(v) = value {
                if !(1..=max).contains(&v) {
                    return fail(format!("`{name}` must be between 1 and {max}"));
                }
            }
        }
        if let Some(labels) = &self.labels {
            check_labels(labels)?;
        }
        Ok(())
    }
}

/// `label=key=value` query filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    pub value: Option<String>,
}

impl LabelFilter {
    pub fn parse(raw: &str) -> Self {
        match raw.split_once('=') {
            Some((k, v)) => LabelFilter {
                key: k.into(),
                value: Some(v.into()),
            },
            None => LabelFilter {
                key: raw.into(),
                value: None,
            },
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match (&self.value, labels.get(&self.key)) {
            (None, found) => found.is_some(),
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<CreateSandbox, RequestError> {
        serde_json::from_str::<CreateSandboxRequest>(json)
            .unwrap()
            .parse(&Config::default())
    }

    #[test]
    fn omitted_fields_take_config_defaults() {
        let c = parse(r#"{"image":"base"}"#).unwrap();
        assert_eq!(c.limits.cpu, 1.0);
        assert_eq!(c.limits.memory_mb, 512);
        assert_eq!(c.limits.pids, 512);
        assert_eq!(c.limits.timeout_s, 3600);
        assert_eq!(c.limits.idle_timeout_s, 900);
        assert_eq!(c.workdir, "/workspace");
        assert_eq!(c.network, Network::None);
        assert!(c.auto_resume);
    }

    #[test]
    fn out_of_range_limits_are_refused_with_the_field_named() {
        for (json, field) in [
            (r#"{"image":"base","cpu":0}"#, "cpu"),
            (r#"{"image":"base","memory_mb":1}"#, "memory_mb"),
            (r#"{"image":"base","pids":1}"#, "pids"),
            (r#"{"image":"base","timeout_s":0}"#, "timeout_s"),
            (r#"{"image":"base","network":"host"}"#, "network"),
            (r#"{"image":"base","workdir":"/proc/x"}"#, "workdir"),
            (r#"{"image":"base","workdir":"relative"}"#, "workdir"),
            (r#"{"image":"base","env":{"BERTH_WORKDIR":"/"}}"#, "BERTH_"),
            (r#"{"image":"base","volume":"../etc"}"#, "volume"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.0.contains(field), "{json}: {err}");
        }
    }

    #[test]
    fn image_is_required() {
        assert!(parse("{}").unwrap_err().0.contains("image"));
    }

    #[test]
    fn label_filters_match_key_and_value() {
        let labels = BTreeMap::from([("session".to_string(), "abc".to_string())]);
        assert!(LabelFilter::parse("session=abc").matches(&labels));
        assert!(!LabelFilter::parse("session=abd").matches(&labels));
        assert!(LabelFilter::parse("session").matches(&labels));
        assert!(!LabelFilter::parse("other").matches(&labels));
    }
}
