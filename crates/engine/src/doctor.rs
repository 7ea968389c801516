//! `pgfork doctor`: what pgfork found, and what is wrong, without changing
//! anything. Works on a home that cannot be opened, to say why.

use std::path::PathBuf;

use pgfork_pg::PgBinaries;
use pgfork_pool::hygiene::{self, Finding, Severity};
use pgfork_pool::meta::{BranchRow, RunState, SnapshotRow, SourceRow};
use pgfork_pool::{Driver, Home, Meta, PoolImage, driver, image, space};
use serde::Serialize;

use crate::config::Config;

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// `ok`, `warn` or `fail`.
    pub status: &'static str,
    /// What was found, and what to do if it is not ok.
    pub detail: String,
}

/// Everything doctor found.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The home.
    pub home: PathBuf,
    /// Findings in order.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == "fail")
    }
    fn push(&mut self, name: &'static str, status: &'static str, detail: String) {
        self.checks.push(Check {
            name,
            status,
            detail,
        });
    }
}

/// Owners, links and modes of the home, the directories above it and what
/// pgfork keeps in it: `home safety` fails where another user could have
/// changed the home (every command refuses it), `home modes` where a mode
/// is wider than needed (`pgfork init` narrows it).
fn hygiene_checks(home: &Home, r: &mut DoctorReport) {
    if std::fs::symlink_metadata(home.root()).is_err() {
        return; // The "home" check says it is missing.
    }
    let (unsafe_, loose): (Vec<Finding>, Vec<Finding>) = hygiene::audit(home)
        .into_iter()
        .partition(|f| f.severity == Severity::Unsafe);
    if unsafe_.is_empty() {
        r.push(
            "home safety",
            "ok",
            "the home and the directories above it are writable only by you and root; no links in it"
                .into(),
        );
    }
    for f in unsafe_ {
        r.push("home safety", "fail", f.message);
    }
    if loose.is_empty() {
        r.push(
            "home modes",
            "ok",
            "nothing wider than needed (home 0711, logs 0700, files 0600)".into(),
        );
    }
    for f in loose {
        r.push("home modes", "fail", f.message);
    }
}

/// Examines a home.
pub fn doctor(home: &Home) -> DoctorReport {
    let mut r = DoctorReport {
        home: home.root().to_path_buf(),
        checks: Vec::new(),
    };
    // Before meta.db is opened: the report shows the home as found.
    hygiene_checks(home, &mut r);
    let meta = match Meta::open(&home.meta_db(), false) {
        Ok(m) => {
            r.push(
                "home",
                "ok",
                format!("{} (meta.db present)", home.root().display()),
            );
            Some(m)
        }
        Err(e) => {
            r.push("home", "fail", e.to_string());
            None
        }
    };
    let config = meta.as_ref().map(|m| Config::load(m, home.root()));

    // PostgreSQL: what is configured, else what would be found.
    match &config {
        Some(Ok(c)) => match PgBinaries::at(&c.bins.dir) {
            Some(b) => {
                let extra: Vec<&str> = ["pg_amcheck", "pgbench", "pg_dump", "psql"]
                    .into_iter()
                    .filter(|t| !b.has(t))
                    .collect();
                let detail = format!("PostgreSQL {} in {}", b.version, b.dir.display());
                if extra.is_empty() {
                    r.push("postgres", "ok", detail);
                } else {
                    r.push(
                        "postgres",
                        "warn",
                        format!("{detail}; missing optional tools: {}", extra.join(", ")),
                    );
                }
            }
            None => r.push(
                "postgres",
                "fail",
                format!(
                    "binaries recorded at init are gone from {}",
                    c.bins.dir.display()
                ),
            ),
        },
        _ => match PgBinaries::find(None) {
            Ok(b) => r.push(
                "postgres",
                "ok",
                format!(
                    "PostgreSQL {} in {} (would be used)",
                    b.version,
                    b.dir.display()
                ),
            ),
            Err(e) => r.push("postgres", "fail", e.to_string()),
        },
    }
    if let Some(Err(e)) = &config {
        r.push("settings", "fail", e.to_string());
    }
    if let Some(Ok(c)) = &config {
        r.push(
            "os user",
            "ok",
            format!("servers run as '{}' (uid {})", c.run_as.name, c.run_as.uid),
        );
        r.push("ports", "ok", format!("{}-{}", c.ports.0, c.ports.1));
    }

    // The pool.
    let image_fs = config
        .as_ref()
        .and_then(|c| c.as_ref().ok())
        .and_then(|c| c.image);
    if let Some(fs) = image_fs {
        let img = PoolImage {
            file: home.image(),
            mountpoint: home.pool(),
        };
        if img.is_mounted() {
            r.push(
                "pool image",
                "ok",
                format!(
                    "{} ({}) mounted on {}",
                    home.image().display(),
                    fs.name(),
                    home.pool().display()
                ),
            );
        } else {
            r.push(
                "pool image",
                "fail",
                format!(
                    "{} is not mounted on {}: any pgfork command run as root mounts it again",
                    home.image().display(),
                    home.pool().display()
                ),
            );
        }
    } else if home.pool().is_dir() {
        let mounted = if image::is_mountpoint(&home.pool()) {
            " (a mount point)"
        } else {
            ""
        };
        r.push("pool", "ok", format!("{}{mounted}", home.pool().display()));
    }
    if home.pool().is_dir() {
        match driver::probe(&home.pool()) {
            Ok(p) => {
                let chosen = config
                    .as_ref()
                    .and_then(|c| c.as_ref().ok())
                    .map(|c| c.driver)
                    .unwrap_or(p.driver);
                let status = if !p.supports(chosen) {
                    "fail"
                } else if chosen == Driver::Copy {
                    "warn"
                } else {
                    "ok"
                };
                let mut detail = format!(
                    "{} driver on {} (reflink: {}, btrfs subvolumes: {})",
                    chosen, p.filesystem, p.reflink, p.subvolumes
                );
                if chosen == Driver::Copy {
                    detail = format!(
                        "{detail}; {}",
                        crate::init::copy_driver_warning(&home.pool(), p.filesystem)
                    );
                }
                r.push("clone driver", status, detail);
            }
            Err(e) => r.push(
                "clone driver",
                "fail",
                format!("cannot probe {}: {e}", home.pool().display()),
            ),
        }
        if let Ok(s) = space::space(&home.pool()) {
            let status = if s.available < 512 << 20 {
                "warn"
            } else {
                "ok"
            };
            r.push(
                "free space",
                status,
                format!(
                    "{} free of {} ({} used)",
                    space::human_bytes(s.available),
                    space::human_bytes(s.total),
                    space::human_bytes(s.used)
                ),
            );
        }
    }
    for (tool, package) in [("mkfs.xfs", "xfsprogs"), ("mkfs.btrfs", "btrfs-progs")] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file());
        if !found {
            r.push(
                "pool image tools",
                "warn",
                format!("{tool} missing: `--pool-image --fs` needs it (apt-get install {package})"),
            );
        }
    }

    // Objects.
    if let Some(meta) = &meta {
        let conn = meta.conn();
        let sources = SourceRow::list(conn).unwrap_or_default();
        let snapshots = SnapshotRow::list(conn).unwrap_or_default();
        let branches = BranchRow::list(conn).unwrap_or_default();
        if let Some(Ok(c)) = &config {
            for (status, detail) in crate::isolation::check(c, &branches) {
                r.push("isolation", status, detail);
            }
            let (status, detail) = crate::storage::check(home, c);
            r.push("storage limits", status, detail);
        }
        let running = branches
            .iter()
            .filter(|b| b.postmaster.is_some_and(|p| p.is_alive()))
            .count();
        r.push(
            "objects",
            "ok",
            format!(
                "{} sources, {} snapshots, {} branches ({running} running)",
                sources.len(),
                snapshots.len(),
                branches.len()
            ),
        );
        let crashed: Vec<&str> = branches
            .iter()
            .filter(|b| {
                b.op.is_none()
                    && b.state == RunState::Running
                    && !b.postmaster.is_some_and(|p| p.is_alive())
            })
            .map(|b| b.name.as_str())
            .chain(
                sources
                    .iter()
                    .filter(|s| {
                        s.op.is_none()
                            && s.state == RunState::Running
                            && !s.postmaster.is_some_and(|p| p.is_alive())
                    })
                    .map(|s| s.name.as_str()),
            )
            .collect();
        if !crashed.is_empty() {
            r.push("servers", "warn", format!(
                "not running though they should: {} (pgfork branch start / source start brings them back)",
                crashed.join(", ")
            ));
        }
        // Compute limits (issue 12): what cgroups pgfork can use, and
        // groups left without a server.
        let cg = pgfork_os::cgroup::Cgroups::detect();
        for (name, detail) in crate::compute::compute_checks(&cg, conn) {
            let limited = pgfork_os::cgroup::Controller::LIMITS
                .iter()
                .all(|c| cg.usable(*c));
            let status = if name == "compute limits" && limited {
                "ok"
            } else {
                "warn"
            };
            r.push(name, status, detail);
        }
        let missing: Vec<&str> = branches
            .iter()
            .filter(|b| b.op.is_none() && !home.branches().join(&b.name).is_dir())
            .map(|b| b.name.as_str())
            .collect();
        if !missing.is_empty() {
            r.push("data", "fail", format!(
                "branches whose data directory is gone: {} (pgfork branch reset NAME rebuilds one from its snapshot)",
                missing.join(", ")
            ));
        }
    }
    r
}
