//! Printing results for people (tables) or programs (JSON).

use pgfork_engine::view::{BranchInfo, SnapshotInfo, SourceInfo};
use pgfork_pool::space::human_bytes;
use serde::Serialize;

/// A failure whose details the command already printed (as JSON, when
/// asked for): only the exit code is left to set.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serialisable")
    );
}

/// Prints rows as an aligned table with a header.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

/// "in 1h 59m" / "3m ago" for an RFC 3339 time.
pub fn relative(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339(rfc3339) else {
        return rfc3339.to_string();
    };
    let now = std::time::SystemTime::now();
    let round = |d: std::time::Duration| {
        let secs = d.as_secs();
        let d = std::time::Duration::from_secs(if secs >= 3600 { secs - secs % 60 } else { secs });
        humantime::format_duration(d).to_string()
    };
    match t.duration_since(now) {
        Ok(ahead) => format!("in {}", round(ahead)),
        Err(e) => format!("{} ago", round(e.duration())),
    }
}

/// Key-value lines.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{k:<width$}  {v}");
    }
}

/// Details of one branch.
pub fn branch(b: &BranchInfo) {
    let labels = b
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    fields(&[
        ("name", b.name.clone()),
        ("status", b.status.to_string()),
        ("dsn", b.dsn.clone()),
        ("source", b.source.clone()),
        ("snapshot", b.snapshot.clone()),
        (
            "parent",
            b.parent_branch.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "pid",
            b.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        ),
        (
            "created",
            format!("{} ({})", b.created_at, relative(&b.created_at)),
        ),
        (
            "expires",
            b.expires_at
                .as_deref()
                .map(|e| format!("{e} ({})", relative(e)))
                .unwrap_or_else(|| "never".into()),
        ),
        (
            "last active",
            format!("{} ({})", b.last_active_at, relative(&b.last_active_at)),
        ),
        ("protected", b.protected.to_string()),
        (
            "labels",
            if labels.is_empty() {
                "-".into()
            } else {
                labels
            },
        ),
        (
            "created in",
            b.timings
                .map(|t| {
                    format!(
                        "{} ms (clone {} ms, start {} ms{})",
                        t.total_ms,
                        t.clone_ms,
                        t.start_ms,
                        t.snapshot_ms
                            .map(|s| format!(", snapshot first {s} ms"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "unshared",
            b.unshared_bytes
                .map(|n| format!("{} no longer shared with its snapshot", human_bytes(n)))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "max size",
            b.max_size
                .map(|n| format!("{} (the filesystem refuses more)", human_bytes(n)))
                .unwrap_or_else(|| "none".into()),
        ),
        ("data", b.data_dir.display().to_string()),
        ("log", b.log.display().to_string()),
    ]);
    branch_compute(b);
    if let Some(error) = &b.error {
        fields(&[("error", error.clone())]);
    }
}

/// Compute limits as one line: `cpu 0.25, memory 256.0 MiB, pids -`.
fn limits_line(l: &pgfork_engine::LimitsView) -> String {
    if l.cpu.is_none() && l.memory.is_none() && l.pids.is_none() {
        return "none".into();
    }
    format!(
        "cpu {}, memory {}, pids {}",
        l.cpu.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
        l.memory.map(human_bytes).unwrap_or_else(|| "-".into()),
        l.pids.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
    )
}

/// A branch's compute limits, groups and use (issue 12).
fn branch_compute(b: &BranchInfo) {
    let c = &b.compute;
    let mut lines = vec![("limits", limits_line(&c.limits))];
    if !c.cgroups.is_empty() {
        let paths: Vec<String> = c.cgroups.iter().map(|p| p.display().to_string()).collect();
        lines.push(("cgroups", paths.join(", ")));
    }
    if let Some(u) = &c.usage {
        let mut used = Vec::new();
        if let Some(m) = u.memory_bytes {
            used.push(format!("memory {}", human_bytes(m)));
        }
        if let Some(us) = u.cpu_usec {
            used.push(format!("cpu {:.1} s", us as f64 / 1e6));
        }
        if let Some(t) = u.nr_throttled {
            used.push(format!("throttled {t} times"));
        }
        if let Some(p) = u.pids {
            used.push(format!("{p} processes"));
        }
        if !used.is_empty() {
            lines.push(("uses", used.join(", ")));
        }
    }
    if c.oom_kills > 0 {
        let mut text = format!(
            "{} (the kernel killed its processes for going over its memory limit)",
            c.oom_kills
        );
        if b.status == "crashed" {
            text.push_str(&format!(
                "; it is down: `pgfork branch start {}` brings it back",
                b.name
            ));
        }
        lines.push(("out of memory", text));
    }
    fields(&lines);
}

/// `source limits`: what each new branch of a source gets.
pub fn source_limits(l: &pgfork_engine::SourceLimits) {
    fields(&[
        ("source", l.source.clone()),
        ("branch limits", limits_line(&l.branch)),
    ]);
}

/// `source gates`: the promotion gates in force for a source.
pub fn source_gates(g: &pgfork_engine::SourceGates) {
    let bound = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "none".into());
    fields(&[
        ("source", g.source.clone()),
        ("max rows", bound(g.max_rows)),
        ("max tables", bound(g.max_tables)),
        (
            "assertion files",
            if g.files.is_empty() {
                "none".into()
            } else {
                g.files
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
    ]);
    for a in &g.assertions {
        println!(
            "  {} (line {}): {}",
            a.name,
            a.line,
            a.sql.replace('\n', "\n    ")
        );
    }
    if let Some(e) = &g.error {
        eprintln!("warning: {e}");
    }
}

/// After a table of branches, what is wrong with the rows that could not
/// be shown whole (on stderr: the table stays one row per branch).
pub fn branch_errors(list: &[BranchInfo]) {
    for b in list {
        if let Some(error) = &b.error {
            eprintln!("warning: branch {}: {error}", b.name);
        }
    }
}

/// Branches as a table.
pub fn branches(list: &[BranchInfo]) {
    table(
        &[
            "name", "status", "source", "snapshot", "port", "expires", "labels",
        ],
        list.iter()
            .map(|b| {
                vec![
                    b.name.clone(),
                    match (b.protected, b.error.is_some()) {
                        (_, true) => format!("{} (error)", b.status),
                        (true, false) => format!("{} (protected)", b.status),
                        (false, false) => b.status.to_string(),
                    },
                    b.source.clone(),
                    b.snapshot.clone(),
                    b.port.to_string(),
                    b.expires_at
                        .as_deref()
                        .map(relative)
                        .unwrap_or_else(|| "-".into()),
                    b.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ]
            })
            .collect(),
    );
}

/// Details of one source.
pub fn source(s: &SourceInfo) {
    if let Some(r) = &s.remote {
        let mut lines = vec![("from", r.url.clone())];
        if let Some(every) = r.refresh_every {
            lines.push((
                "refresh every",
                humantime::format_duration(std::time::Duration::from_secs(every as u64))
                    .to_string(),
            ));
        }
        if let Some(at) = &r.refreshed_at {
            lines.push(("last refresh", format!("{at} ({})", relative(at))));
        }
        if let Some(err) = &r.refresh_error {
            lines.push(("refresh error", err.clone()));
        }
        if let Some(lag) = &s.lag {
            lines.push((
                "replication",
                lag.receiver
                    .clone()
                    .unwrap_or_else(|| "not streaming".into()),
            ));
            lines.push((
                "lag",
                format!(
                    "{} bytes, last message {:.1} s ago, replayed {}",
                    lag.bytes
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| "?".into()),
                    lag.seconds_since_message.unwrap_or(f64::NAN),
                    lag.replay_lsn.clone().unwrap_or_else(|| "?".into())
                ),
            ));
        }
        fields(&lines);
    }
    fields(&[
        ("name", s.name.clone()),
        ("mode", s.mode.clone()),
        ("status", s.status.to_string()),
        ("dsn", s.dsn.clone()),
        ("postgres", s.pg_major.to_string()),
        (
            "pid",
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        ),
        ("snapshots", s.snapshots.to_string()),
        ("branches", s.branches.to_string()),
        (
            "created",
            format!("{} ({})", s.created_at, relative(&s.created_at)),
        ),
        ("data", s.data_dir.display().to_string()),
        ("log", s.log.display().to_string()),
        ("branch limits", limits_line(&s.branch_limits)),
    ]);
}

/// Sources as a table.
pub fn sources(list: &[SourceInfo]) {
    table(
        &["name", "mode", "status", "port", "snapshots", "branches"],
        list.iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.mode.clone(),
                    s.status.to_string(),
                    s.port.to_string(),
                    s.snapshots.to_string(),
                    s.branches.to_string(),
                ]
            })
            .collect(),
    );
}

/// Details of one snapshot.
pub fn snapshot(s: &SnapshotInfo) {
    fields(&[
        ("id", s.id.clone()),
        ("status", s.status.to_string()),
        ("source", s.source.clone()),
        (
            "of branch",
            s.parent_branch.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "created",
            format!("{} ({})", s.created_at, relative(&s.created_at)),
        ),
        ("method", s.method.clone().unwrap_or_else(|| "-".into())),
        ("lsn", s.lsn.clone().unwrap_or_else(|| "-".into())),
        (
            "sealed in",
            s.seal_ms
                .map(|m| format!("{m} ms"))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "branches",
            if s.branches.is_empty() {
                "-".into()
            } else {
                s.branches.join(", ")
            },
        ),
        ("data", s.data_dir.display().to_string()),
    ]);
}

/// Snapshots as a table.
pub fn snapshots(list: &[SnapshotInfo]) {
    table(
        &["id", "status", "source", "created", "method", "branches"],
        list.iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.status.to_string(),
                    s.source.clone(),
                    relative(&s.created_at),
                    s.method.clone().unwrap_or_else(|| "-".into()),
                    s.branches.len().to_string(),
                ]
            })
            .collect(),
    );
}
