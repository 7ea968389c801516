//! Prometheus metrics in the text exposition format, kept by hand: a few
//! counters and histograms need no registry crate.
//!
//! Counters and histograms count what this daemon did (its API and MCP
//! requests, its reaper); gauges describe the home as it is at scrape
//! time, whoever changed it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use pgfork_engine::CreateTimings;
use pgfork_engine::view::{BranchInfo, SnapshotInfo};

/// Upper bounds of the duration histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A histogram of seconds.
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// What the reaper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReaperAction {
    /// Deleted a branch whose TTL had passed.
    TtlDelete,
    /// Stopped a running branch without sessions.
    IdleStop,
    /// Deleted a branch without sessions for `--idle-delete`.
    IdleDelete,
}

impl ReaperAction {
    fn label(self) -> &'static str {
        match self {
            ReaperAction::TtlDelete => "ttl_delete",
            ReaperAction::IdleStop => "idle_stop",
            ReaperAction::IdleDelete => "idle_delete",
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    created: u64,
    failed: BTreeMap<&'static str, u64>,
    clone: Histogram,
    start: Histogram,
    total: Histogram,
    wake: Histogram,
    reaper: BTreeMap<ReaperAction, u64>,
    /// Unshared bytes per branch, sampled in the background.
    unshared: BTreeMap<String, u64>,
    /// Past samples per branch, oldest first: (Unix seconds, bytes).
    history: BTreeMap<String, VecDeque<(i64, u64)>>,
}

/// Samples of a branch's unshared bytes kept for its storage chart.
const HISTORY: usize = 720;

/// The daemon's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A branch was created, with its engine timings.
    pub fn branch_created(&self, timings: Option<&CreateTimings>) {
        let mut m = self.lock();
        m.created += 1;
        if let Some(t) = timings {
            m.clone.observe(secs(t.clone_ms));
            m.start.observe(secs(t.start_ms));
            m.total.observe(secs(t.total_ms));
        }
    }

    /// A branch creation failed with `code`.
    pub fn branch_create_failed(&self, code: &'static str) {
        *self.lock().failed.entry(code).or_default() += 1;
    }

    /// A stopped branch was started, taking `took`.
    pub fn branch_woken(&self, took: Duration) {
        self.lock().wake.observe(took.as_secs_f64());
    }

    /// The reaper did something.
    pub fn reaped(&self, action: ReaperAction, n: u64) {
        if n > 0 {
            *self.lock().reaper.entry(action).or_default() += n;
        }
    }

    /// Replaces the sampled unshared bytes of every branch.
    pub fn set_unshared(&self, sample: BTreeMap<String, u64>) {
        let now = pgfork_pool::meta::now();
        let mut m = self.lock();
        m.history.retain(|name, _| sample.contains_key(name));
        for (name, bytes) in &sample {
            let h = m.history.entry(name.clone()).or_default();
            if h.len() >= HISTORY {
                h.pop_front();
            }
            h.push_back((now, *bytes));
        }
        m.unshared = sample;
    }

    /// The samples of a branch's unshared bytes since the daemon started
    /// (or the branch was made), oldest first: (Unix seconds, bytes).
    pub fn unshared_history(&self, branch: &str) -> Vec<(i64, u64)> {
        self.lock()
            .history
            .get(branch)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The sampled unshared bytes of a branch, if any.
    pub fn unshared_of(&self, branch: &str) -> Option<u64> {
        self.lock().unshared.get(branch).copied()
    }

    /// The exposition text, with gauges from the branches and snapshots
    /// as they are now.
    pub fn render(&self, branches: &[BranchInfo], snapshots: &[SnapshotInfo], now: i64) -> String {
        let m = self.lock();
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };

        head(
            &mut out,
            "pgfork_branch_creations_total",
            "counter",
            "Branches this daemon created.",
        );
        let _ = writeln!(out, "pgfork_branch_creations_total {}", m.created);
        head(
            &mut out,
            "pgfork_branch_creation_failures_total",
            "counter",
            "Branch creations this daemon refused or failed, by error code.",
        );
        for (code, n) in &m.failed {
            let _ = writeln!(
                out,
                "pgfork_branch_creation_failures_total{{code=\"{code}\"}} {n}"
            );
        }
        head(
            &mut out,
            "pgfork_branch_create_duration_seconds",
            "histogram",
            "Time to create a branch: clone, start (until it accepts connections) and total.",
        );
        for (phase, h) in [
            ("clone", &m.clone),
            ("start", &m.start),
            ("total", &m.total),
        ] {
            h.render(
                &mut out,
                "pgfork_branch_create_duration_seconds",
                &format!("phase=\"{phase}\""),
            );
        }
        head(
            &mut out,
            "pgfork_branch_wake_duration_seconds",
            "histogram",
            "Time to start a stopped branch again.",
        );
        m.wake
            .render(&mut out, "pgfork_branch_wake_duration_seconds", "");

        head(
            &mut out,
            "pgfork_branches",
            "gauge",
            "Branches by state (running, stopped, crashed, or an operation in progress).",
        );
        let mut states: BTreeMap<&str, u64> = ["running", "stopped", "crashed"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        for b in branches {
            *states.entry(b.status).or_default() += 1;
        }
        for (state, n) in states {
            let _ = writeln!(out, "pgfork_branches{{state=\"{state}\"}} {n}");
        }
        head(
            &mut out,
            "pgfork_branch_row_error",
            "gauge",
            "1 for each branch whose stored row cannot be shown whole (`pgfork branch list` says why and what to do).",
        );
        for b in branches.iter().filter(|b| b.error.is_some()) {
            let _ = writeln!(
                out,
                "pgfork_branch_row_error{{branch=\"{}\",source=\"{}\"}} 1",
                esc(&b.name),
                esc(&b.source)
            );
        }

        head(
            &mut out,
            "pgfork_branch_unshared_bytes",
            "gauge",
            "Bytes of a branch that no longer share blocks with its base snapshot (sampled every minute).",
        );
        for b in branches {
            if let Some(n) = m.unshared.get(&b.name) {
                let _ = writeln!(
                    out,
                    "pgfork_branch_unshared_bytes{{branch=\"{}\",source=\"{}\"}} {n}",
                    esc(&b.name),
                    esc(&b.source)
                );
            }
        }

        head(
            &mut out,
            "pgfork_branch_max_size_bytes",
            "gauge",
            "The most bytes a branch may hold of its own (--max-size), enforced by the filesystem.",
        );
        for b in branches {
            if let Some(n) = b.max_size {
                let _ = writeln!(
                    out,
                    "pgfork_branch_max_size_bytes{{branch=\"{}\",source=\"{}\"}} {n}",
                    esc(&b.name),
                    esc(&b.source)
                );
            }
        }

        head(
            &mut out,
            "pgfork_branch_idle_seconds",
            "gauge",
            "Time since a branch was last in use (made, started, a session, a request about it), as the reaper counts it.",
        );
        for b in branches {
            if let Some(active) = parse_rfc3339(&b.last_active_at) {
                let _ = writeln!(
                    out,
                    "pgfork_branch_idle_seconds{{branch=\"{}\",source=\"{}\"}} {}",
                    esc(&b.name),
                    esc(&b.source),
                    (now - active).max(0)
                );
            }
        }

        head(
            &mut out,
            "pgfork_snapshot_age_seconds",
            "gauge",
            "Age of each snapshot.",
        );
        for s in snapshots {
            if let Some(created) = parse_rfc3339(&s.created_at) {
                let _ = writeln!(
                    out,
                    "pgfork_snapshot_age_seconds{{snapshot=\"{}\",source=\"{}\"}} {}",
                    esc(&s.id),
                    esc(&s.source),
                    (now - created).max(0)
                );
            }
        }

        head(
            &mut out,
            "pgfork_reaper_actions_total",
            "counter",
            "What the reaper did: ttl_delete, idle_stop, idle_delete.",
        );
        for action in [
            ReaperAction::TtlDelete,
            ReaperAction::IdleStop,
            ReaperAction::IdleDelete,
        ] {
            let n = m.reaper.get(&action).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "pgfork_reaper_actions_total{{action=\"{}\"}} {n}",
                action.label()
            );
        }
        out
    }
}

/// Unix seconds of an RFC 3339 time as the engine prints it.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_has_buckets_and_counters() {
        let m = Metrics::default();
        m.branch_created(Some(&CreateTimings {
            snapshot_ms: None,
            clone_ms: 20,
            start_ms: 300,
            total_ms: 400,
        }));
        m.branch_create_failed("quota_exceeded");
        m.reaped(ReaperAction::IdleStop, 2);
        let text = m.render(&[], &[], 0);
        assert!(text.contains("pgfork_branch_creations_total 1\n"), "{text}");
        assert!(text.contains("pgfork_branch_creation_failures_total{code=\"quota_exceeded\"} 1"));
        assert!(text.contains(
            "pgfork_branch_create_duration_seconds_bucket{phase=\"clone\",le=\"0.025\"} 1"
        ));
        assert!(text.contains(
            "pgfork_branch_create_duration_seconds_bucket{phase=\"start\",le=\"0.25\"} 0"
        ));
        assert!(text.contains("pgfork_branch_create_duration_seconds_count{phase=\"total\"} 1"));
        assert!(text.contains("pgfork_reaper_actions_total{action=\"idle_stop\"} 2"));
        assert!(text.contains("pgfork_branches{state=\"running\"} 0"));
        assert!(text.contains("pgfork_branch_wake_duration_seconds_count 0"));
    }
}
