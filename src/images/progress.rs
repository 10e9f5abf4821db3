//! Progress of a long image build: a terminal progress bar when stderr is a terminal,
//! log lines otherwise (a server under a supervisor, CI).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

pub struct BuildProgress {
    name: String,
    bar: Option<ProgressBar>,
    last_phase: Mutex<String>,
}

impl BuildProgress {
    /// A bar on a terminal, log lines elsewhere.
    pub fn for_server(name: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(1);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {prefix}: {bar:30} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(format!("building image {name}"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        BuildProgress {
            name: name.to_string(),
            bar,
            last_phase: Mutex::new(String::new()),
        }
    }

    /// Nothing shown (tests).
    pub fn hidden(name: &str) -> Self {
        BuildProgress {
            name: name.to_string(),
            bar: None,
            last_phase: Mutex::new(String::new()),
        }
    }

    /// Reports a step: `phase` (e.g. "retrieving"), steps done and the expected total.
    pub fn step(&self, phase: &str, done: u64, total: u64, detail: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total.max(done).max(1));
                bar.set_position(done);
                bar.set_message(format!("{phase} {detail}"));
            }
            None => {
                let mut last = self.last_phase.lock().unwrap_or_else(|p| p.into_inner());
                if *last != phase {
                    tracing::info!(image = %self.name, "{phase}");
                    *last = phase.to_string();
                }
            }
        }
    }

    pub fn finish(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(message.to_string()),
            None => tracing::info!(image = %self.name, "{message}"),
        }
    }
}
