//! The built-in browser terminal's assets: its page, script and style (embedded), and
//! xterm.js, bundled on first use from the host's own Debian packages (`node-xterm`, by
//! `esbuild`) and kept in memory: never a copy pasted into this repository.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PAGE: &str = include_str!("terminal.html");
pub const SCRIPT: &str = include_str!("terminal.js");
pub const STYLE: &str = include_str!("terminal.css");
const MISSING: &str = include_str!("missing.html");

/// node-xterm's browser entry point and stylesheet, as Debian installs them.
const XTERM_ENTRY: &str = "/usr/share/nodejs/xterm/lib/public/Terminal.js";
const XTERM_CSS: &str = "/usr/share/nodejs/xterm/lib/xterm.css";

/// How long a failed build is remembered before the next request tries again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// xterm.js, once bundled.
pub struct Assets {
    entry: String,
    css: String,
    /// The bundle, or the last failure and when it happened; one build at a time.
    built: tokio::sync::Mutex<Option<Built>>,
}

/// A build's outcome: the bundle, or why not and when that was found.
type Built = Result<Arc<Vec<u8>>, (String, Instant)>;

impl Default for Assets {
    fn default() -> Self {
        Assets::from(XTERM_ENTRY, XTERM_CSS)
    }
}

impl Assets {
    /// Assets built from node-xterm's files at `entry` and `css`.
    pub fn from(entry: &str, css: &str) -> Self {
        Assets {
            entry: entry.into(),
            css: css.into(),
            built: tokio::sync::Mutex::default(),
        }
    }

    /// The xterm.js bundle, built now if it was not yet: one build at a time, and a
    /// failure is answered from memory for a few seconds (after that, installing the
    /// packages makes the next request work).
    pub async fn xterm(&self) -> Result<Arc<Vec<u8>>, String> {
        let mut built = self.built.lock().await;
        match &*built {
            Some(Ok(bundle)) => return Ok(bundle.clone()),
            Some(Err((reason, at))) if at.elapsed() < RETRY_AFTER => return Err(reason.clone()),
            _ => {}
        }
        let result = self.build().await;
        *built = Some(match &result {
            Ok(bundle) => Ok(bundle.clone()),
            Err(reason) => Err((reason.clone(), Instant::now())),
        });
        result
    }

    async fn build(&self) -> Result<Arc<Vec<u8>>, String> {
        if !Path::new(&self.entry).exists() {
            return Err(format!("{} is missing (package node-xterm)", self.entry));
        }
        let output = tokio::process::Command::new("esbuild")
            .args([
                self.entry.as_str(),
                "--bundle",
                "--format=iife",
                "--global-name=XtermBundle",
                "--minify",
                "--log-level=error",
            ])
            .output()
            .await
            .map_err(|e| format!("cannot run esbuild ({e}; package esbuild)"))?;
        if !output.status.success() || output.stdout.is_empty() {
            return Err(format!(
                "esbuild failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Arc::new(output.stdout))
    }

    /// xterm.js's stylesheet.
    pub async fn xterm_css(&self) -> Result<Vec<u8>, String> {
        tokio::fs::read(&self.css)
            .await
            .map_err(|e| format!("{}: {e} (package node-xterm)", self.css))
    }

    /// The page: the terminal, or what to install when xterm.js cannot be built.
    pub async fn page(&self) -> (bool, String) {
        match self.xterm().await {
            Ok(_) => (true, PAGE.to_string()),
            Err(reason) => (false, MISSING.replace("REASON", &html_escape(&reason))),
        }
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_node_xterm_the_page_says_what_to_install() {
        let assets = Assets::from("/nonexistent/Terminal.js", "/nonexistent/xterm.css");
        let (ready, html) = assets.page().await;
        assert!(!ready);
        assert!(
            html.contains("apt-get install node-xterm esbuild"),
            "{html}"
        );
        assert!(
            html.contains("/nonexistent/Terminal.js is missing"),
            "{html}"
        );
        assert!(assets.xterm().await.is_err());
    }
}
