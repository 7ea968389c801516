//! What the benchmark is doing, on stderr, only when stderr is a terminal:
//! the report itself goes to stdout and must stay clean.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner with the current step, and notes that stay on screen.
pub struct BenchProgress {
    bar: Option<ProgressBar>,
    json: bool,
}

impl BenchProgress {
    /// Draws on stderr if it is a terminal and JSON was not asked for.
    pub fn new(json: bool) -> BenchProgress {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        BenchProgress { bar, json }
    }

    /// Replaces the current step.
    pub fn step(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!("{message}");
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// A line that stays above the spinner (a finished phase, a figure).
    pub fn note(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.println(line);
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl pgfork_engine::Progress for BenchProgress {
    fn stage(&self, message: &str) {
        self.step(message);
    }

    fn warn(&self, message: &str) {
        if self.json {
            tracing::warn!("{message}");
        } else if let Some(bar) = &self.bar {
            bar.println(format!("warning: {message}"));
        } else {
            eprintln!("warning: {message}");
        }
    }
}
