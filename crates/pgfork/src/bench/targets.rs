//! The targets the issue sets, checked against a run's figures.

use super::render::{duration, mb};
use super::report::{Report, TargetCheck};

/// p50 of command start to first query, milliseconds.
const P50_MS: f64 = 100.0;
/// p99 of command start to first query, milliseconds.
const P99_MS: f64 = 250.0;
/// p50 at 7 GB over p50 at 150 MB.
const SIZE_RATIO: f64 = 1.3;
/// Storage per fresh branch, bytes ("5 MB", read as decimal megabytes).
const STORAGE_BYTES: i64 = 5_000_000;
/// Branches alive at once.
const LIVE: usize = 50;

/// Every target with its figure. Targets are set for copy-on-write pools;
/// on the copy driver they are still shown, marked as not applying.
pub fn checks(report: &Report) -> Vec<TargetCheck> {
    let applies = report.header.copy_on_write;
    let mut out = Vec::new();
    let mut check = |what: String, target: &str, value: String, met: Option<bool>| {
        out.push(TargetCheck {
            what,
            target: target.into(),
            value,
            met,
            applies,
        })
    };
    for s in &report.scales {
        check(
            format!("scale {}: p50 command start to first query", s.scale),
            "<= 100 ms",
            duration(s.create.p50_ms),
            Some(s.create.p50_ms <= P50_MS),
        );
        check(
            format!("scale {}: p99 command start to first query", s.scale),
            "<= 250 ms",
            duration(s.create.p99_ms),
            Some(s.create.p99_ms <= P99_MS),
        );
        check(
            format!("scale {}: storage per fresh branch", s.scale),
            "<= 5 MB",
            mb(s.storage_per_branch_bytes),
            Some(s.storage_per_branch_bytes <= STORAGE_BYTES),
        );
    }
    if let Some(r) = &report.size_ratio {
        check(
            format!(
                "p50 at scale {} / p50 at scale {}",
                r.large_scale, r.small_scale
            ),
            "<= 1.3",
            format!("{:.2}", r.ratio),
            Some(r.ratio <= SIZE_RATIO),
        );
    }
    if let Some(l) = &report.live {
        check(
            "branches alive at once, each answering".into(),
            "50",
            format!("{} (of {} asked)", l.answering, l.asked),
            (l.asked >= LIVE).then_some(l.answering >= LIVE),
        );
    }
    out
}
