//! What `init` decided, as stored in meta.db's settings.

use std::path::{Path, PathBuf};

use pgfork_os::{RunAs, UidRange};
use pgfork_pg::{PgBinaries, PgVersion};
use pgfork_pool::{Driver, FsKind, Meta};
use serde::Serialize;

use crate::{EngineError, Result};

/// Default range of TCP ports for sources and branches.
pub const DEFAULT_PORTS: (u16, u16) = (15432, 16431);

/// The settings every command runs with.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Clone driver of the pool.
    pub driver: Driver,
    /// PostgreSQL binaries.
    pub bins: PgBinaries,
    /// OS user that owns data and runs servers.
    pub run_as: RunAs,
    /// TCP port range, inclusive.
    pub ports: (u16, u16),
    /// Filesystem of the pool image, if the pool is one.
    pub image: Option<FsKind>,
    /// Most branches one source may have (`init --max-branches-per-source`).
    pub max_branches_per_source: Option<u32>,
    /// Free bytes the pool must keep: below, new branches are refused
    /// (`init --min-free`).
    pub min_free: Option<u64>,
    /// OS uids for sandboxed servers, one per branch (run as root only;
    /// `None`: every server runs as `run_as`, with no isolation between
    /// them).
    pub uids: Option<UidRange>,
    /// Storage limits the filesystem enforces (btrfs quotas), if on.
    pub quotas: Option<crate::storage::Quotas>,
}

/// Setting keys.
pub(crate) mod key {
    pub const DRIVER: &str = "driver";
    pub const PG_BIN: &str = "pg_bin";
    pub const PG_VERSION: &str = "pg_version";
    pub const OS_USER: &str = "os_user";
    pub const PORTS: &str = "ports";
    pub const IMAGE_FS: &str = "image_fs";
    pub const MAX_BRANCHES_PER_SOURCE: &str = "max_branches_per_source";
    pub const MIN_FREE: &str = "min_free";
    pub const BRANCH_UIDS: &str = "branch_uids";
    pub const QUOTA: &str = "quota";
    pub const BRANCH_QGROUP: &str = "branch_qgroup";
    pub const BRANCH_SPACE: &str = "branch_space";
}

fn required(meta: &Meta, key: &str) -> Result<String> {
    meta.setting(key)?.ok_or_else(|| {
        EngineError::Config(format!(
            "meta.db lacks setting '{key}': run `pgfork init` again"
        ))
    })
}

/// Parses `MIN-MAX`.
pub fn parse_ports(text: &str) -> Result<(u16, u16)> {
    let bad = || {
        EngineError::InvalidArgument(format!(
            "port range '{text}' is not MIN-MAX (e.g. 15432-16431)"
        ))
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b || a < 1024 {
        return Err(EngineError::InvalidArgument(format!(
            "port range '{text}' must be ascending and above 1023"
        )));
    }
    Ok((a, b))
}

impl Config {
    /// Loads the settings of the home at `home` without running any
    /// program: commands must start fast.
    pub fn load(meta: &Meta, home: &Path) -> Result<Config> {
        let driver_name = required(meta, key::DRIVER)?;
        let driver = Driver::parse(&driver_name).ok_or_else(|| {
            EngineError::Config(format!("unknown driver '{driver_name}' in meta.db"))
        })?;
        let dir = PathBuf::from(required(meta, key::PG_BIN)?);
        let version = required(meta, key::PG_VERSION)?;
        let version = PgVersion::parse_banner(&version).ok_or_else(|| {
            EngineError::Config(format!("unreadable pg_version '{version}' in meta.db"))
        })?;
        if !dir.join("postgres").is_file() {
            return Err(EngineError::Pg(pgfork_pg::PgError::NoBinaries {
                searched: format!(
                    "{} (recorded at init; run `pgfork init --pg-bin DIR` to change it)",
                    dir.display()
                ),
            }));
        }
        let run_as = RunAs::resolve(&required(meta, key::OS_USER)?)?;
        let ports = parse_ports(&required(meta, key::PORTS)?)?;
        let image = meta.setting(key::IMAGE_FS)?.and_then(|f| FsKind::parse(&f));
        let number = |key: &str| -> Result<Option<u64>> {
            match meta.setting(key)? {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    EngineError::Config(format!(
                        "unreadable setting {key}='{v}' in meta.db: run `pgfork init` again"
                    ))
                }),
            }
        };
        Ok(Config {
            driver,
            bins: PgBinaries { dir, version },
            run_as,
            ports,
            image,
            max_branches_per_source: number(key::MAX_BRANCHES_PER_SOURCE)?
                .filter(|n| *n > 0)
                .map(|n| n.min(u32::MAX as u64) as u32),
            min_free: number(key::MIN_FREE)?.filter(|n| *n > 0),
            uids: uid_range(meta, home)?,
            quotas: crate::storage::load(meta)?,
        })
    }
}

/// The sandbox uids in force: those `init` recorded, else the home's
/// default range (a home made before sandboxes existed); none unless
/// pgfork runs as root, the only one who can switch to them.
fn uid_range(meta: &Meta, home: &Path) -> Result<Option<UidRange>> {
    if !RunAs::we_are_root() {
        return Ok(None);
    }
    match meta.setting(key::BRANCH_UIDS)? {
        Some(text) => UidRange::parse(&text).map(Some).map_err(|e| {
            EngineError::Config(format!(
                "{e} (setting {} in meta.db): run `pgfork init --branch-uids FIRST-LAST`",
                key::BRANCH_UIDS
            ))
        }),
        None => Ok(Some(UidRange::default_for(home))),
    }
}
