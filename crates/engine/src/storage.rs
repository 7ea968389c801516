//! Storage limits: each branch held to its `--max-size` by the filesystem,
//! and all branches together to the branches' space, so that sources,
//! standbys and snapshots keep a reserve of the pool that no branch can
//! eat. Enforced by btrfs quota groups (see [`pgfork_pool::quota`]).

use std::path::Path;

use pgfork_pool::meta::{BranchRow, Connection, SourceLimits};
use pgfork_pool::quota::{self, QuotaMode};
use pgfork_pool::{Driver, Meta, space};
use serde::Serialize;

use crate::config::key;
use crate::{Engine, EngineError, Result};

/// Smallest `--max-size`: a branch must hold its WAL and a checkpoint.
pub const MIN_MAX_SIZE: u64 = 32 << 20;
/// Room a full branch is lent while it starts: PostgreSQL's crash
/// recovery must write WAL and a checkpoint before anything can be freed.
const RECOVERY_HEADROOM: u64 = 64 << 20;
/// Where pgfork's level-1 qgroups start, clear of ones people make by hand.
const FIRST_GROUP: u64 = 1000;

/// How much of the pool all branches together may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchSpace {
    /// This many bytes.
    Bytes(u64),
    /// This percentage of the pool's size.
    Percent(u8),
}

impl BranchSpace {
    /// Parses a size like `6G` or a percentage like `75%`.
    pub fn parse(text: &str) -> Result<BranchSpace> {
        let bad = || {
            EngineError::InvalidArgument(format!(
                "--branch-space '{text}' is neither a size like 6G nor a percentage like 75% (1-95)"
            ))
        };
        if let Some(p) = text.trim().strip_suffix('%') {
            let p: u8 = p.trim().parse().map_err(|_| bad())?;
            if !(1..=95).contains(&p) {
                return Err(bad());
            }
            return Ok(BranchSpace::Percent(p));
        }
        space::parse_size(text)
            .filter(|n| *n > 0)
            .map(BranchSpace::Bytes)
            .ok_or_else(bad)
    }

    /// Bytes on a pool of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            BranchSpace::Bytes(n) => n,
            BranchSpace::Percent(p) => total / 100 * u64::from(p),
        }
    }
}

/// The default branches' space of a pool of `total` bytes: it leaves
/// sources 20% of the pool, and at least 2 GiB unless that would be more
/// than half of it.
pub fn default_branch_space(total: u64) -> u64 {
    let reserve = (total / 5).max((2u64 << 30).min(total / 2));
    total.saturating_sub(reserve)
}

/// The storage limits in force in a home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quotas {
    /// How the filesystem counts.
    pub mode: QuotaMode,
    /// The level-1 qgroup of all branches (simple quotas only).
    #[serde(skip)]
    pub group: Option<u64>,
    /// The limit of that group: the branches' space.
    pub branch_space: Option<u64>,
}

/// Reads what `init` set up.
pub(crate) fn load(meta: &Meta) -> Result<Option<Quotas>> {
    let Some(mode) = meta.setting(key::QUOTA)?.and_then(|m| QuotaMode::parse(&m)) else {
        return Ok(None);
    };
    let number =
        |k: &str| -> Result<Option<u64>> { Ok(meta.setting(k)?.and_then(|v| v.parse().ok())) };
    Ok(Some(Quotas {
        mode,
        group: number(key::BRANCH_QGROUP)?,
        branch_space: number(key::BRANCH_SPACE)?,
    }))
}

/// Why a pool cannot limit storage, or `None` if it can.
pub fn unavailable_reason(pool: &Path, driver: Driver) -> Option<String> {
    if driver != Driver::Btrfs {
        let fs = space::fs_magic(pool)
            .map(space::fs_name)
            .unwrap_or("unknown");
        return Some(format!(
            "storage limits need a btrfs pool (quota groups); this pool is {fs}. XFS project quotas \
             are not used: this kernel {}. Make a btrfs pool: `pgfork init --pool-image 20G --fs btrfs` \
             in a new home, as root",
            if xfs_quota_in_kernel() {
                "has them, but pgfork does not drive them yet"
            } else {
                "was built without them (CONFIG_XFS_QUOTA)"
            }
        ));
    }
    if !pgfork_os::RunAs::we_are_root() {
        return Some(
            "storage limits need btrfs quotas, and turning them on needs root: run `pgfork init` as root once"
                .into(),
        );
    }
    None
}

/// Whether the running kernel's XFS has quota support.
fn xfs_quota_in_kernel() -> bool {
    // XFS registers its quota statistics only when built with quotas.
    Path::new("/proc/fs/xfs/xqmstat").exists()
}

/// Turns quotas on for a btrfs pool and makes or updates the branches'
/// group; stores the result. Returns `None` (with nothing changed) where
/// the pool cannot limit storage.
pub(crate) fn set_up(
    c: &Connection,
    pool: &Path,
    driver: Driver,
    asked: Option<BranchSpace>,
) -> Result<Option<Quotas>> {
    if let Some(why) = unavailable_reason(pool, driver) {
        if asked.is_some() {
            return Err(EngineError::InvalidArgument(format!(
                "--branch-space cannot be enforced: {why}"
            )));
        }
        return Ok(None);
    }
    let mode = quota::enable(pool).map_err(quota_error)?;
    let total = space::space(pool)
        .map_err(EngineError::io("statvfs", pool))?
        .total;
    let recorded = Meta::setting_in(c, key::BRANCH_SPACE)?.and_then(|v| v.parse().ok());
    let branch_space = match asked {
        Some(space) => space.bytes(total),
        None => recorded.unwrap_or_else(|| default_branch_space(total)),
    };
    let group = if mode.has_groups() {
        let recorded = Meta::setting_in(c, key::BRANCH_QGROUP)?
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|g| quota::group_exists(pool, *g));
        let group = match recorded {
            Some(g) => g,
            None => quota::create_group(pool, FIRST_GROUP).map_err(quota_error)?,
        };
        quota::set_limit(pool, group, Some(branch_space)).map_err(quota_error)?;
        Meta::set_setting(c, key::BRANCH_QGROUP, &group.to_string())?;
        Some(group)
    } else {
        None
    };
    Meta::set_setting(c, key::QUOTA, mode.name())?;
    Meta::set_setting(c, key::BRANCH_SPACE, &branch_space.to_string())?;
    Ok(Some(Quotas {
        mode,
        group,
        branch_space: group.map(|_| branch_space),
    }))
}

/// What `doctor` says about storage limits: in force (with the branches'
/// space and what it holds), or why not.
pub(crate) fn check(home: &pgfork_pool::Home, config: &crate::Config) -> (&'static str, String) {
    let pool = home.pool();
    match config.quotas {
        Some(q) => {
            let live = quota::mode(&pool);
            if live.is_none() {
                return (
                    "fail",
                    "meta.db says btrfs quotas are on, but they are off on the pool: branch limits are not \
                     enforced; run `pgfork init` as root to turn them on again"
                        .into(),
                );
            }
            let space = match (q.group, q.branch_space) {
                (Some(g), Some(limit)) => {
                    let used = quota::usage(&pool, g).map(|u| u.used).unwrap_or(0);
                    format!(
                        "; branches hold {} of the {} they may take together (init --branch-space)",
                        space::human_bytes(used),
                        space::human_bytes(limit)
                    )
                }
                _ => "; this kernel has no simple quotas (6.7+), so only per-branch limits hold, \
                      not the branches' space as a whole"
                    .into(),
            };
            ("ok", format!("{} quotas: --max-size is enforced{space}", q.mode.name()))
        }
        None => match unavailable_reason(&pool, config.driver) {
            Some(why) => ("warn", format!("{why}; branches run without a size limit")),
            None => (
                "warn",
                "the pool could hold branches to a size, but quotas are not on: run `pgfork init` as root"
                    .into(),
            ),
        },
    }
}

/// Puts `limit` back on `group` if it holds less than that now.
fn settle_group(pool: &Path, group: u64, limit: u64) {
    let Ok(usage) = quota::usage(pool, group) else {
        return;
    };
    if usage.limit == Some(limit) {
        return;
    }
    if usage.used + RECOVERY_HEADROOM / 4 < limit {
        if let Err(e) = quota::set_limit(pool, group, Some(limit)) {
            tracing::warn!(
                "setting back the limit of {}: {e}",
                quota::qgroup_name(group)
            );
        }
    } else {
        tracing::info!(group = %quota::qgroup_name(group), used = usage.used, limit, "headroom stays lent until the branch frees space");
    }
}

fn quota_error(e: quota::QuotaError) -> EngineError {
    EngineError::Config(format!("storage limits: {e}"))
}

/// Checks a requested `--max-size`.
pub(crate) fn check_max_size(size: u64) -> Result<()> {
    if size < MIN_MAX_SIZE {
        return Err(EngineError::InvalidArgument(format!(
            "--max-size {} is below the {} a branch needs for its WAL and checkpoints",
            space::human_bytes(size),
            space::human_bytes(MIN_MAX_SIZE)
        )));
    }
    Ok(())
}

impl Engine {
    /// Refuses a storage limit this pool cannot enforce (never ignored).
    pub fn check_storage_limit(&self, max_size: Option<u64>) -> Result<()> {
        let Some(size) = max_size else {
            return Ok(());
        };
        check_max_size(size)?;
        if self.config.quotas.is_none() {
            let pool = self.home.pool();
            let why = unavailable_reason(&pool, self.config.driver).unwrap_or_else(|| {
                "quotas are not on for this home: run `pgfork init` again (as root) to turn them on"
                    .into()
            });
            return Err(EngineError::InvalidArgument(format!(
                "--max-size cannot be enforced here: {why}"
            )));
        }
        Ok(())
    }

    /// Holds a freshly cloned branch directory to its limits: its own
    /// `max_size`, and the branches' space as a whole.
    pub(crate) fn limit_branch(&self, row: &BranchRow, dir: &Path) -> Result<()> {
        let Some(q) = self.config.quotas else {
            return match row.max_size {
                Some(_) => self.check_storage_limit(row.max_size),
                None => Ok(()),
            };
        };
        quota::place(dir, q.group, row.max_size)
            .map_err(|e| EngineError::Config(format!("limiting branch '{}': {e}", row.name)))?;
        Ok(())
    }

    /// Lends a branch at its limit (its own, or the branches' space) room
    /// to start: a server that hit a quota may have crashed on a WAL write,
    /// and its recovery needs to write before the agent can free anything.
    /// The limits are set back by [`Engine::end_headroom`] once it runs.
    pub(crate) fn lend_headroom(&self, row: &BranchRow, dir: &Path) -> Vec<(u64, Option<u64>)> {
        let Some(q) = self.config.quotas else {
            return Vec::new();
        };
        let pool = self.home.pool();
        let own = self.branch_group(dir);
        let mut lent = Vec::new();
        for (group, limit) in [(own, row.max_size), (q.group, q.branch_space)] {
            let (Some(group), Some(limit)) = (group, limit) else {
                continue;
            };
            let full = quota::usage(&pool, group)
                .map(|u| u.used + RECOVERY_HEADROOM / 2 >= limit)
                .unwrap_or(false);
            if full && quota::set_limit(&pool, group, Some(limit + RECOVERY_HEADROOM)).is_ok() {
                tracing::info!(branch = %row.name, group = %quota::qgroup_name(group), "lending recovery headroom");
                lent.push((group, Some(limit)));
            }
        }
        lent
    }

    /// Sets back the limits lent by [`Engine::lend_headroom`] where the
    /// branch is under them again. Where it is not (recovery wrote into
    /// the loan), the loan stays, so that the agent can still free space
    /// (a `DROP` writes WAL too); [`Engine::settle_headroom`] ends it later.
    pub(crate) fn end_headroom(&self, lent: Vec<(u64, Option<u64>)>) {
        let pool = self.home.pool();
        for (group, limit) in lent {
            let Some(limit) = limit else { continue };
            settle_group(&pool, group, limit);
        }
    }

    /// Ends loans of headroom whose branch is under its limit again: run
    /// by every scheduler tick (`pgfork serve` ticks every few seconds).
    pub fn settle_headroom(&self) {
        let Some(q) = self.config.quotas else { return };
        let pool = self.home.pool();
        let Ok(rows) = BranchRow::list(self.meta.conn()) else {
            return;
        };
        for row in rows {
            // Only limited branches can hold a loan: no ioctl for the rest.
            if let Some(limit) = row.max_size
                && let Some(group) = self.branch_group(&self.branch_dir(&row.name))
            {
                settle_group(&pool, group, limit);
            }
        }
        if let (Some(group), Some(limit)) = (q.group, q.branch_space) {
            settle_group(&pool, group, limit);
        }
    }

    /// The qgroup of a branch directory about to be removed, so that
    /// [`Engine::forget_branch_group`] can drop it afterwards.
    pub(crate) fn branch_group(&self, dir: &Path) -> Option<u64> {
        self.config.quotas?;
        quota::subvolume_id(dir)
            .ok()
            .map(|id| quota::qgroup_id(0, id))
    }

    /// Drops a removed branch's qgroup (best effort; see [`quota::forget`]).
    pub(crate) fn forget_branch_group(&self, group: Option<u64>) {
        if let Some(g) = group {
            quota::forget(&self.home.pool(), g);
        }
    }

    /// Bytes the branch alone holds, from its qgroup, where quotas are on.
    pub(crate) fn branch_quota_usage(&self, dir: &Path) -> Option<quota::Usage> {
        let group = self.branch_group(dir)?;
        quota::usage(&self.home.pool(), group).ok()
    }

    /// The limits `source` gives its new branches.
    pub fn source_storage_limits(&self, source: &str) -> Result<SourceLimits> {
        self.source_row(source)?;
        Ok(SourceLimits::get(self.meta.conn(), source)?)
    }

    /// Sets the limits `source` gives its new branches (existing ones keep
    /// theirs); a size this pool cannot enforce is refused.
    pub fn set_source_storage_limits(
        &mut self,
        source: &str,
        limits: SourceLimits,
    ) -> Result<SourceLimits> {
        self.admin_only("change source limits")?;
        self.source_row(source)?;
        self.check_storage_limit(limits.branch_max_size)?;
        self.meta.write(|c| limits.set(c, source))?;
        Ok(limits)
    }

    /// What the branches hold together, and may, where a group counts it.
    pub fn branch_space_usage(&self) -> Option<quota::Usage> {
        let group = self.config.quotas?.group?;
        quota::usage(&self.home.pool(), group).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_space_parses_and_defaults() {
        assert_eq!(
            BranchSpace::parse("6G").unwrap(),
            BranchSpace::Bytes(6 << 30)
        );
        assert_eq!(BranchSpace::parse("75%").unwrap(), BranchSpace::Percent(75));
        assert!(BranchSpace::parse("0%").is_err());
        assert!(BranchSpace::parse("100%").is_err());
        assert!(BranchSpace::parse("lots").is_err());
        assert_eq!(BranchSpace::Percent(50).bytes(1000), 500);
        // 8 GiB pool: 2 GiB kept for sources.
        assert_eq!(default_branch_space(8 << 30), 6 << 30);
        // 100 GiB: 20%.
        assert_eq!(default_branch_space(100 << 30), 80 << 30);
        // 600 MiB: half.
        assert_eq!(default_branch_space(600 << 20), 300 << 20);
    }
}
