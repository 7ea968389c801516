//! Summaries of timing samples: nearest-rank percentiles.

use std::time::Duration;

use serde::Serialize;

/// Percentiles and extremes of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (nearest rank).
    pub p50_ms: f64,
    /// 99th percentile (nearest rank: the maximum below 100 samples).
    pub p99_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl Summary {
    /// Summarises samples in milliseconds; `None` when there are none.
    pub fn of_ms(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            n: sorted.len(),
            p50_ms: nearest_rank(&sorted, 50.0),
            p99_ms: nearest_rank(&sorted, 99.0),
            min_ms: sorted[0],
            max_ms: sorted[sorted.len() - 1],
            mean_ms: round_us(sorted.iter().sum::<f64>() / sorted.len() as f64),
        })
    }

    /// Summarises durations.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let ms: Vec<f64> = samples.iter().map(|d| millis(*d)).collect();
        Self::of_ms(&ms)
    }
}

/// A duration in milliseconds, to the microsecond.
pub fn millis(d: Duration) -> f64 {
    round_us(d.as_secs_f64() * 1000.0)
}

/// Milliseconds rounded to the microsecond: finer digits are noise, and
/// they make the JSON report hard to read.
fn round_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// The nearest-rank percentile of sorted samples: the smallest sample such
/// that at least `p` percent of the samples are at or below it. No
/// interpolation, so every figure printed is one that was measured.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Summary::of_ms(&samples).unwrap();
        assert_eq!(s.p50_ms, 10.0);
        assert_eq!(s.p99_ms, 20.0, "with 20 samples p99 is the maximum");
        assert_eq!((s.min_ms, s.max_ms), (1.0, 20.0));
        assert_eq!(s.mean_ms, 10.5);

        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Summary::of_ms(&hundred).unwrap();
        assert_eq!((s.p50_ms, s.p99_ms), (50.0, 99.0));

        let one = Summary::of_ms(&[7.0]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert!(Summary::of_ms(&[]).is_none());
    }
}
