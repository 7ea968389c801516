//! `pgfork init`: make a home, probe its pool, remember the decisions.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use pgfork_os::{RunAs, UidRange};
use pgfork_pg::{PgBinaries, PgVersion};
use pgfork_pool::home::{PRIVATE_DIR, TRAVERSE_DIR};
use pgfork_pool::hygiene::{self, Finding, Severity};
use pgfork_pool::meta::{self, TokenKind, TokenRow};
use pgfork_pool::{Driver, FsKind, Home, Meta, PoolImage, driver, space};
use serde::Serialize;

use crate::config::{self, DEFAULT_PORTS, key};
use crate::{EngineError, Result, identity};

/// What `init` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Force a clone driver instead of the probed one.
    pub driver: Option<Driver>,
    /// Create and loop-mount a pool image of this size and filesystem.
    pub pool_image: Option<(u64, FsKind)>,
    /// Directory of the PostgreSQL binaries.
    pub pg_bin: Option<PathBuf>,
    /// OS user that runs servers when pgfork runs as root.
    pub os_user: Option<String>,
    /// TCP port range.
    pub ports: Option<(u16, u16)>,
    /// Most branches per source (0 removes the quota).
    pub max_branches_per_source: Option<u32>,
    /// Free bytes the pool must keep; below, new branches are refused (0
    /// removes the floor).
    pub min_free: Option<u64>,
    /// OS uids for sandboxed servers (root only; default: a range picked
    /// from the home's path).
    pub branch_uids: Option<UidRange>,
    /// How much of the pool all branches together may take (btrfs pools,
    /// as root; default: see [`crate::storage::default_branch_space`]).
    pub branch_space: Option<crate::storage::BranchSpace>,
}

/// What `init` found and decided.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The home.
    pub home: PathBuf,
    /// The pool directory.
    pub pool: PathBuf,
    /// The pool's filesystem.
    pub filesystem: &'static str,
    /// The clone driver.
    pub driver: Driver,
    /// Whether clones share blocks.
    pub copy_on_write: bool,
    /// The pool image, if any.
    pub image: Option<PathBuf>,
    /// PostgreSQL version.
    pub postgres: PgVersion,
    /// PostgreSQL bin directory.
    pub pg_bin: PathBuf,
    /// OS user running sources (and, without root, every server).
    pub os_user: String,
    /// OS uids of sandboxed servers, when pgfork runs as root.
    pub branch_uids: Option<UidRange>,
    /// What is isolated from what.
    pub isolation: String,
    /// TCP port range.
    pub ports: (u16, u16),
    /// Most branches per source, if limited.
    pub max_branches_per_source: Option<u32>,
    /// Free-space floor of the pool in bytes, if any.
    pub min_free: Option<u64>,
    /// Storage limits the filesystem enforces, if it can.
    pub quotas: Option<crate::storage::Quotas>,
    /// The API bearer token, when this run made it: shown once, stored
    /// only as a hash (`pgfork token rotate` makes a new one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// Whether this run created the home (false: updated an existing one).
    pub created: bool,
    /// Things to fix or know.
    pub warnings: Vec<String>,
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    hygiene::make_dir(path, mode).map_err(EngineError::io("create directory", path))
}

/// Refuses the home if any finding says another user could have changed it.
pub(crate) fn refuse_unsafe(findings: Vec<Finding>) -> Result<()> {
    let unsafe_: Vec<Finding> = findings
        .into_iter()
        .filter(|f| f.severity == Severity::Unsafe)
        .collect();
    if unsafe_.is_empty() {
        Ok(())
    } else {
        Err(EngineError::UnsafeHome(unsafe_))
    }
}

/// Checks a home before anything is written to it, then narrows modes that
/// are wider than needed (homes of older versions have 0644 files).
/// Returns a warning naming what was narrowed, if anything was.
fn adopt(home: &Home) -> Result<Option<String>> {
    // The directories above the home count too: whoever can write there
    // can swap the home for their own after these checks (see hygiene).
    refuse_unsafe(hygiene::audit(home))?;
    let narrowed =
        hygiene::tighten(home).map_err(EngineError::io("narrow the modes in", home.root()))?;
    Ok((!narrowed.is_empty()).then(|| {
        let list: Vec<String> = narrowed
            .iter()
            .map(|(path, old, new)| format!("{} {old:04o} -> {new:04o}", path.display()))
            .collect();
        format!(
            "narrowed modes wider than pgfork needs: {}",
            list.join(", ")
        )
    }))
}

/// The server user must be able to walk down to the pool; a home under
/// /root, say, would make every start fail with a permission error.
fn check_reachable(path: &Path, run_as: &RunAs) -> Result<()> {
    if !RunAs::we_are_root() {
        return Ok(());
    }
    for dir in path.ancestors() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode();
        let searchable = mode & 0o001 != 0
            || (meta.uid() == run_as.uid && mode & 0o100 != 0)
            || (meta.gid() == run_as.gid && mode & 0o010 != 0);
        if !searchable {
            return Err(EngineError::Config(format!(
                "OS user '{}' cannot reach {} because {} (mode {:o}) is not searchable by it: \
                 choose a home elsewhere (--home or PGFORK_HOME) or `chmod o+x {}`",
                run_as.name,
                path.display(),
                dir.display(),
                mode & 0o777,
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Creates or updates a home.
/// Refuses, before writing anything, a home that another user could have
/// prepared or can change (see [`pgfork_pool::hygiene`]).
pub fn init(home: &Home, opts: InitOptions) -> Result<InitReport> {
    let narrowed = adopt(home)?;
    let existed = home.meta_db().exists();
    mkdir(home.root(), TRAVERSE_DIR)?;
    let mut meta = Meta::open(&home.meta_db(), true)?;
    let had_objects = existed && !pgfork_pool::meta::SourceRow::list(meta.conn())?.is_empty();

    // The pool: an image if asked (or already made), else the directory.
    let previous_image = meta.setting(key::IMAGE_FS)?.and_then(|f| FsKind::parse(&f));
    let image = PoolImage {
        file: home.image(),
        mountpoint: home.pool(),
    };
    match (opts.pool_image, previous_image) {
        (Some((_, fs)), Some(prev)) if fs != prev => {
            return Err(EngineError::Config(format!(
                "{} already has a {} pool image; use another --home for a {} pool",
                home.root().display(),
                prev.name(),
                fs.name()
            )));
        }
        (Some(_), Some(_)) | (None, Some(_)) => {
            image.ensure_mounted()?;
        }
        (Some((size, fs)), None) => {
            if had_objects {
                return Err(EngineError::Config(format!(
                    "{} already holds sources on its current pool; use a new --home for a pool image",
                    home.root().display()
                )));
            }
            if home.image().exists() {
                return Err(EngineError::Config(format!(
                    "{} exists but meta.db does not know it: remove it or use another --home",
                    home.image().display()
                )));
            }
            mkdir(&home.pool(), TRAVERSE_DIR)?;
            if std::fs::read_dir(home.pool())
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
            {
                return Err(EngineError::Config(format!(
                    "{} is not empty; a pool image is mounted there: use a new --home",
                    home.pool().display()
                )));
            }
            PoolImage::create(&home.image(), &home.pool(), size, fs)?;
            if let Err(e) = image.ensure_mounted() {
                let _ = std::fs::remove_file(home.image());
                return Err(e.into());
            }
            Meta::set_setting(meta.conn(), key::IMAGE_FS, fs.name())?;
        }
        (None, None) => {}
    }
    for dir in [
        home.pool(),
        home.sources(),
        home.snapshots(),
        home.branches(),
        home.staging(),
        home.views(),
        home.run(),
    ] {
        mkdir(&dir, TRAVERSE_DIR)?;
    }
    mkdir(&home.dumps(), PRIVATE_DIR)?;
    mkdir(&home.logs(), PRIVATE_DIR)?;

    let probe = driver::probe(&home.pool()).map_err(EngineError::io("probe", &home.pool()))?;
    let previous_driver = meta.setting(key::DRIVER)?.and_then(|d| Driver::parse(&d));
    let driver = opts.driver.or(previous_driver).unwrap_or(probe.driver);
    if !probe.supports(driver) {
        return Err(EngineError::DriverUnavailable {
            driver: driver.name(),
            filesystem: probe.filesystem,
            pool: home.pool(),
            hint: match driver {
                Driver::Btrfs => {
                    "it needs a btrfs pool (pgfork init --pool-image SIZE --fs btrfs, as root)"
                }
                _ => {
                    "it needs XFS with reflink=1 or btrfs (pgfork init --pool-image SIZE --fs xfs, as root)"
                }
            },
        });
    }
    if had_objects && previous_driver.is_some_and(|d| d != driver) {
        return Err(EngineError::Config(format!(
            "this home already holds sources made with the {} driver; use a new --home to change drivers",
            previous_driver.map(Driver::name).unwrap_or("?")
        )));
    }

    let previous_bin = meta.setting(key::PG_BIN)?.map(PathBuf::from);
    let bins = PgBinaries::find(opts.pg_bin.as_deref().or(previous_bin.as_deref()))?;
    let os_user = opts
        .os_user
        .or(meta.setting(key::OS_USER)?)
        .unwrap_or_else(|| "postgres".into());
    let run_as = RunAs::resolve(&os_user)?;
    check_reachable(&home.pool(), &run_as)?;
    let previous_ports = meta
        .setting(key::PORTS)?
        .map(|p| config::parse_ports(&p))
        .transpose()?;
    let ports = opts.ports.or(previous_ports).unwrap_or(DEFAULT_PORTS);
    let uids = sandbox_uids(&meta, home, opts.branch_uids)?;
    // A home without an admin token (new, or every one revoked) gets one.
    let had_token = !TokenRow::list(meta.conn(), TokenKind::Admin)?.is_empty();
    let api_token = (!had_token).then(identity::new_api_token);

    let quotas = meta.write(|c| {
        if let Some(token) = &api_token {
            TokenRow {
                kind: TokenKind::Admin,
                name: identity::FIRST_ADMIN.into(),
                sha256: identity::hash_api_token(token),
                created_at: meta::now(),
            }
            .put(c)?;
        }
        store_limits(c, opts.max_branches_per_source, opts.min_free)?;
        Meta::set_setting(c, key::DRIVER, driver.name())?;
        Meta::set_setting(c, key::PG_BIN, &bins.dir.display().to_string())?;
        Meta::set_setting(c, key::PG_VERSION, &bins.version.to_string())?;
        Meta::set_setting(c, key::OS_USER, &run_as.name)?;
        Meta::set_setting(c, key::PORTS, &format!("{}-{}", ports.0, ports.1))?;
        if let Some(range) = uids {
            Meta::set_setting(c, key::BRANCH_UIDS, &range.to_string())?;
        }
        crate::storage::set_up(c, &home.pool(), driver, opts.branch_space)
    })?;

    let mut warnings: Vec<String> = narrowed.into_iter().collect();
    if !driver.is_copy_on_write() {
        warnings.push(copy_driver_warning(&home.pool(), probe.filesystem));
    }
    if uids.is_none() {
        warnings.push(crate::isolation::not_root(&run_as));
    }
    if quotas.is_none()
        && let Some(why) = crate::storage::unavailable_reason(&home.pool(), driver)
    {
        warnings.push(format!(
            "branches cannot be held to a size ({why}); the free-space floor (--min-free) is the only guard"
        ));
    }
    if bins.version.major < 13 {
        warnings.push(format!(
            "PostgreSQL {} is older than pgfork is tested with (13+)",
            bins.version
        ));
    }
    let free = space::space(&home.pool()).map(|s| s.available).unwrap_or(0);
    if free < 1 << 30 {
        warnings.push(format!(
            "the pool has only {} free",
            space::human_bytes(free)
        ));
    }
    Ok(InitReport {
        home: home.root().to_path_buf(),
        pool: home.pool(),
        filesystem: probe.filesystem,
        driver,
        copy_on_write: driver.is_copy_on_write(),
        image: previous_image
            .or(opts.pool_image.map(|p| p.1))
            .map(|_| home.image()),
        postgres: bins.version,
        pg_bin: bins.dir,
        isolation: crate::isolation::describe(uids, &run_as),
        branch_uids: uids,
        os_user: run_as.name,
        ports,
        max_branches_per_source: meta
            .setting(key::MAX_BRANCHES_PER_SOURCE)?
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0),
        min_free: meta
            .setting(key::MIN_FREE)?
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0),
        quotas,
        api_token,
        created: !existed,
        warnings,
    })
}

/// The sandbox uid range to record: the one asked for, else the one
/// recorded, else the home's default; none without root, which alone can
/// run servers as other users.
fn sandbox_uids(meta: &Meta, home: &Home, asked: Option<UidRange>) -> Result<Option<UidRange>> {
    if !RunAs::we_are_root() {
        if asked.is_some() {
            return Err(EngineError::InvalidArgument(
                "--branch-uids needs root: only root can run servers as other users".into(),
            ));
        }
        return Ok(None);
    }
    let recorded = meta
        .setting(key::BRANCH_UIDS)?
        .and_then(|t| UidRange::parse(&t).ok());
    let range = asked
        .or(recorded)
        .unwrap_or_else(|| UidRange::default_for(home.root()));
    crate::isolation::check_range(range)?;
    Ok(Some(range))
}

fn store_limits(
    c: &pgfork_pool::meta::Connection,
    max_branches_per_source: Option<u32>,
    min_free: Option<u64>,
) -> Result<()> {
    if let Some(max) = max_branches_per_source {
        Meta::set_setting(c, key::MAX_BRANCHES_PER_SOURCE, &max.to_string())?;
    }
    if let Some(floor) = min_free {
        Meta::set_setting(c, key::MIN_FREE, &floor.to_string())?;
    }
    Ok(())
}

/// Sets the branch quota per source and the pool's free-space floor (0
/// removes either; `None` leaves it), as `init` does: for `pgfork serve`
/// flags, so that the CLI enforces the same limits as the daemon.
pub fn set_branch_limits(
    home: &Home,
    max_branches_per_source: Option<u32>,
    min_free: Option<u64>,
) -> Result<()> {
    let mut meta = Meta::open(&home.meta_db(), false)?;
    meta.write(|c| store_limits(c, max_branches_per_source, min_free))
}

/// The warning shown wherever the copy driver is in use.
pub fn copy_driver_warning(pool: &Path, filesystem: &str) -> String {
    format!(
        "the pool at {} ({filesystem}) has no copy-on-write: the copy driver copies every byte, so \
         branch time and space grow with database size. Fix: as root, `pgfork init --pool-image 20G --fs xfs` \
         (or --fs btrfs) in a new home, or put PGFORK_HOME on XFS (reflink=1) or btrfs",
        pool.display()
    )
}
