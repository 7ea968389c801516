//! Progress on a terminal: a spinner naming the current stage.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pgfork_engine::Progress;

/// Draws engine stages on stderr when it is a terminal, else stays quiet
/// (warnings still go to stderr, unless JSON was asked for).
pub struct Spinner {
    bar: Option<ProgressBar>,
    json: bool,
}

impl Spinner {
    /// A spinner if stderr is a terminal and output is not JSON.
    pub fn new(json: bool) -> Spinner {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("valid template"),
            );
            bar
        });
        Spinner { bar, json }
    }

    /// Removes the spinner from the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Spinner {
    fn stage(&self, message: &str) {
        tracing::debug!("{message}");
        if let Some(bar) = &self.bar {
            if bar.is_hidden() || bar.length().is_none() {
                bar.enable_steady_tick(Duration::from_millis(100));
            }
            bar.set_message(message.to_string());
        }
    }

    fn progress(&self, what: &str, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            let pct = (done * 100).checked_div(total).unwrap_or(0);
            bar.set_message(format!("{what}: {done} of {total} ({pct}%)"));
        }
    }

    fn warn(&self, message: &str) {
        if self.json {
            tracing::warn!("{message}");
        } else if let Some(bar) = &self.bar {
            bar.suspend(|| eprintln!("warning: {message}"));
        } else {
            eprintln!("warning: {message}");
        }
    }
}
