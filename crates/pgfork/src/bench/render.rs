//! The report for people: short sections, tables, every target with
//! "met" or "missed".

use pgfork_pool::space::human_bytes;

use super::report::{Baseline, LiveReport, Outcome, Report, ScaleReport, TpsReport, TpsRun};
use crate::output;

/// `83 ms`, `1.4 s`, `3 min 12 s`.
pub fn duration(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 10_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms < 120_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as u64;
        format!("{} min {} s", secs / 60, secs % 60)
    }
}

/// Decimal megabytes, as the storage target is stated; may be negative
/// (measurement noise).
pub fn mb(bytes: i64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.1}x")
    }
}

/// Prints the whole report on stdout.
pub fn print(report: &Report) {
    let h = &report.header;
    println!(
        "pgfork bench: {} driver on {}{}, PostgreSQL {}",
        h.driver,
        h.filesystem,
        h.pool_image
            .as_deref()
            .map(|fs| format!(" (loop-mounted {fs} pool image)"))
            .unwrap_or_default(),
        h.postgres
    );
    println!(
        "machine: {} CPUs, {} RAM, Linux {}; started {}",
        h.cpus,
        human_bytes(h.mem_total_bytes),
        h.kernel,
        h.started_at
    );
    println!("branch settings: {}", h.settings.branch);
    println!("source settings: {}", h.settings.source);
    if !h.copy_on_write {
        println!(
            "note: the {} driver copies every byte; the targets are set for btrfs and reflink pools",
            h.driver
        );
    }
    for s in &report.scales {
        scale(s);
    }
    if let Some(r) = &report.size_ratio {
        println!(
            "\n== size: p50 at scale {} ({}) / p50 at scale {} ({}) = {:.2} ==",
            r.large_scale,
            human_bytes(r.large_bytes),
            r.small_scale,
            human_bytes(r.small_bytes),
            r.ratio
        );
    }
    if let Some(l) = &report.live {
        live(l);
    }
    if let Some(t) = &report.tps {
        tps(t);
    }
    targets(report);
}

fn scale(s: &ScaleReport) {
    println!(
        "\n== scale {}: source {}, database {} ({}) ==",
        s.scale,
        s.source,
        human_bytes(s.database_bytes),
        match s.load_ms {
            Some(ms) => format!("loaded with pgbench -i in {}", duration(ms)),
            None => "reused, already loaded".into(),
        }
    );
    println!(
        "snapshot {}: {}, sealed in {}; snapshot create took {}",
        s.snapshot.id,
        s.snapshot.method.as_deref().unwrap_or("?"),
        s.snapshot
            .seal_ms
            .map(|m| duration(m as f64))
            .unwrap_or_else(|| "-".into()),
        duration(s.snapshot.took_ms)
    );
    println!(
        "\nbranch create, command start to first successful query ({} branches, one at a time):",
        s.create.n
    );
    let c = &s.create;
    output::table(
        &["", "p50", "p99", "min", "max", "mean"],
        [
            ("command to first query", c),
            ("engine: clone", &s.engine.clone),
            ("engine: start", &s.engine.start),
            ("engine: total", &s.engine.total),
            ("branch delete", &s.delete),
        ]
        .iter()
        .map(|(name, x)| {
            vec![
                name.to_string(),
                duration(x.p50_ms),
                duration(x.p99_ms),
                duration(x.min_ms),
                duration(x.max_ms),
                duration(x.mean_ms),
            ]
        })
        .collect(),
    );
    if s.connect_retries > 0 {
        println!(
            "warning: {} first-query attempts failed and were retried (a branch was handed out before it answered)",
            s.connect_retries
        );
    }
    println!(
        "storage per fresh branch: {} ({} used before, {} with the branches, after sync)",
        mb(s.storage_per_branch_bytes),
        human_bytes(s.pool_used_before),
        human_bytes(s.pool_used_after)
    );
    println!("\nbaselines on the same data, once each (ratio: baseline / pgfork p50):");
    output::table(
        &["baseline", "to first query", "copy alone", "ratio"],
        s.baselines.iter().map(baseline_row).collect(),
    );
    for b in &s.baselines {
        println!("  {}: {}", b.label, b.note);
        if let Outcome::Failed { error } = &b.outcome {
            println!("    failed: {error}");
        }
    }
}

fn baseline_row(b: &Baseline) -> Vec<String> {
    match &b.outcome {
        Outcome::Measured {
            to_query_ms,
            copy_ms,
            ratio_to_pgfork_p50,
        } => vec![
            b.label.to_string(),
            duration(*to_query_ms),
            copy_ms.map(duration).unwrap_or_else(|| "-".into()),
            ratio(*ratio_to_pgfork_p50),
        ],
        Outcome::Skipped { reason } => vec![
            b.label.to_string(),
            format!("skipped ({reason})"),
            "-".into(),
            "-".into(),
        ],
        Outcome::Failed { .. } => vec![
            b.label.to_string(),
            "FAILED (below)".into(),
            "-".into(),
            "-".into(),
        ],
    }
}

fn live(l: &LiveReport) {
    println!(
        "\n== branches alive at once (scale {}): {} created, {} answering, of {} asked ==",
        l.scale, l.created, l.answering, l.asked
    );
    if let Some(e) = &l.first_error {
        println!("stopped early: {e}");
    }
    if let (Some(c), Some(last)) = (&l.create, l.last_create_ms) {
        println!(
            "create to first query while others run: p50 {}, p99 {}, last one {}",
            duration(c.p50_ms),
            duration(c.p99_ms),
            duration(last)
        );
    }
    if let Some(pss) = l.pss_per_branch_bytes {
        println!(
            "memory per idle branch (PSS of its processes): {} mean, {} to {}, {:.1} processes",
            human_bytes(pss),
            human_bytes(l.pss_min_bytes.unwrap_or(0)),
            human_bytes(l.pss_max_bytes.unwrap_or(0)),
            l.processes_per_branch.unwrap_or(0.0)
        );
    }
    if let (Some(drop), Some(before), Some(after)) = (
        l.mem_available_drop_per_branch_bytes,
        l.mem_available_before,
        l.mem_available_after,
    ) {
        println!(
            "MemAvailable: {} before, {} with them alive: {} per branch",
            human_bytes(before),
            human_bytes(after),
            if drop >= 0 {
                human_bytes(drop as u64)
            } else {
                format!("-{}", human_bytes(drop.unsigned_abs()))
            }
        );
    }
}

fn tps(t: &TpsReport) {
    println!(
        "\n== pgbench tpcb-like, scale {}, -c {} -j {} -T {} ==",
        t.scale, t.clients, t.threads, t.seconds
    );
    let row = |name: &str, run: &TpsRun| match run {
        TpsRun::Measured { tps, latency_ms } => vec![
            name.to_string(),
            format!("{tps:.0}"),
            latency_ms.map(duration).unwrap_or_else(|| "-".into()),
        ],
        TpsRun::Failed { error } => vec![name.to_string(), format!("FAILED: {error}"), "-".into()],
    };
    output::table(
        &["server", "tps", "latency avg"],
        vec![row("branch", &t.branch), row("source", &t.source)],
    );
    if let Some(r) = t.ratio {
        println!("branch / source: {r:.2}");
    }
}

fn targets(report: &Report) {
    println!("\n== targets ==");
    output::table(
        &["figure", "target", "measured", "result"],
        report
            .targets
            .iter()
            .map(|t| {
                let result = match t.met {
                    Some(true) => "met",
                    Some(false) => "missed",
                    None => "not tested",
                };
                vec![
                    t.what.clone(),
                    t.target.clone(),
                    t.value.clone(),
                    if t.applies {
                        result.to_string()
                    } else {
                        format!("{result} (target is for btrfs/reflink)")
                    },
                ]
            })
            .collect(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(3.25), "3.2 ms");
        assert_eq!(duration(83.4), "83 ms");
        assert_eq!(duration(1069.0), "1.07 s");
        assert_eq!(duration(12_345.0), "12.3 s");
        assert_eq!(duration(192_000.0), "3 min 12 s");
        assert_eq!(mb(1_234_567), "1.23 MB");
        assert_eq!(mb(-20_000), "-0.02 MB");
    }
}
