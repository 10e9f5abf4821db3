//! Sandbox image templates (`images/`): which exist, what their definition hashes to, and
//! building them with no registry (debootstrap on the host → one-layer `docker load`).

mod build;
mod progress;

pub use progress::BuildProgress;

use crate::config::ImagesConfig;
use crate::docker::{DockerEngine, DockerError};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Bumped whenever the build procedure changes what it produces.
const BUILDER_VERSION: &str = "2";

/// A template from `images/NAME/`.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub name: &'static str,
    pub packages: &'static str,
    pub dockerfile: &'static str,
}

pub const TEMPLATES: [Template; 3] = [
    Template {
        name: "base",
        packages: include_str!("../../images/base/packages"),
        dockerfile: include_str!("../../images/base/Dockerfile"),
    },
    Template {
        name: "python",
        packages: include_str!("../../images/python/packages"),
        dockerfile: include_str!("../../images/python/Dockerfile"),
    },
    Template {
        name: "node",
        packages: include_str!("../../images/node/packages"),
        dockerfile: include_str!("../../images/node/Dockerfile"),
    },
];

pub fn template(name: &str) -> Option<Template> {
    TEMPLATES.iter().copied().find(|t| t.name == name)
}

impl Template {
    pub fn package_list(&self) -> Vec<&'static str> {
        self.packages
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    /// Hash of everything that decides the image's content.
    pub fn definition_hash(&self, config: &ImagesConfig) -> String {
        let mut h = Sha256::new();
        for part in [BUILDER_VERSION, self.name, &config.suite, self.packages] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())[..12].to_string()
    }

    pub fn tag(&self, config: &ImagesConfig) -> String {
        format!("berth/{}:{}", self.name, self.definition_hash(config))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image {0:?} is not a berth template (base, python, node) and is not present in the local Docker engine; \
         build or load it first (berth never pulls)"
    )]
    UnknownImage(String),
    #[error("cannot build template {template:?}: {reason}")]
    BuilderUnavailable { template: String, reason: String },
    #[error("building template {template:?} failed: {reason}")]
    BuildFailed { template: String, reason: String },
    #[error(transparent)]
    Docker(#[from] DockerError),
}

/// Resolves image names and builds missing templates, one build at a time.
pub struct ImageService {
    engine: DockerEngine,
    data_dir: PathBuf,
    config: ImagesConfig,
    build_lock: Mutex<()>,
}

impl ImageService {
    pub fn new(engine: DockerEngine, data_dir: PathBuf, config: ImagesConfig) -> Arc<Self> {
        Arc::new(ImageService {
            engine,
            data_dir,
            config,
            build_lock: Mutex::new(()),
        })
    }

    /// The Docker reference to run for `image`: a template (built first if missing) or an
    /// image already in the local engine.
    pub async fn resolve(&self, image: &str) -> Result<String, ImageError> {
        match template(image) {
            Some(t) => {
                self.build(t, &BuildProgress::for_server(t.name), false)
                    .await
            }
            None if self.engine.image_exists(image).await? => Ok(image.to_string()),
            None => Err(ImageError::UnknownImage(image.to_string())),
        }
    }

    /// Builds `t` unless an image of its current definition already exists (or always,
    /// with `force`); one build at a time. Returns the tag.
    pub async fn build(
        &self,
        t: Template,
        progress: &BuildProgress,
        force: bool,
    ) -> Result<String, ImageError> {
        let tag = t.tag(&self.config);
        if !force && self.engine.image_exists(&tag).await? {
            return Ok(tag);
        }
        let _one_build_at_a_time = self.build_lock.lock().await;
        // Another request may have built it while this one waited for the lock.
        if !force && self.engine.image_exists(&tag).await? {
            return Ok(tag);
        }
        build::build_template(
            &self.engine,
            &self.data_dir,
            &self.config,
            t,
            &tag,
            progress,
        )
        .await?;
        Ok(tag)
    }

    /// Each template with its tag and whether that image is present.
    pub async fn status(&self) -> Result<Vec<(Template, String, bool)>, ImageError> {
        let mut out = Vec::new();
        for t in TEMPLATES {
            let tag = t.tag(&self.config);
            let present = self.engine.image_exists(&tag).await?;
            out.push((t, tag, present));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_lists_packages_and_has_a_stable_tag() {
        let config = ImagesConfig::default();
        for t in TEMPLATES {
            assert!(t.package_list().contains(&"bash"), "{} has bash", t.name);
            assert_eq!(t.tag(&config), t.tag(&config));
            assert!(t.tag(&config).starts_with(&format!("berth/{}:", t.name)));
        }
        assert!(template("python")
            .unwrap()
            .package_list()
            .contains(&"python3-pytest"));
        assert!(template("node")
            .unwrap()
            .package_list()
            .contains(&"node-typescript"));
    }

    #[test]
    fn the_definition_hash_changes_with_the_suite() {
        let t = template("base").unwrap();
        let other = ImagesConfig {
            suite: "trixie".into(),
            ..Default::default()
        };
        assert_ne!(
            t.definition_hash(&ImagesConfig::default()),
            t.definition_hash(&other)
        );
    }
}
