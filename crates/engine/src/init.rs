//! `pgfork init`: make a home, probe its pool, remember the decisions.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pgfork_os::RunAs;
use pgfork_pg::{PgBinaries, PgVersion};
use pgfork_pool::{Driver, FsKind, Home, Meta, PoolImage, driver, space};
use serde::Serialize;

use crate::config::{self, DEFAULT_PORTS, key};
use crate::{EngineError, Result};

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
    /// OS user running servers.
    pub os_user: String,
    /// TCP port range.
    pub ports: (u16, u16),
    /// Whether this run created the home (false: updated an existing one).
    pub created: bool,
    /// Things to fix or know.
    pub warnings: Vec<String>,
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).map_err(EngineError::io("create directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(EngineError::io("chmod", path))
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
pub fn init(home: &Home, opts: InitOptions) -> Result<InitReport> {
    let existed = home.meta_db().exists();
    mkdir(home.root(), 0o711)?;
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
            std::fs::create_dir_all(home.pool())
                .map_err(EngineError::io("create directory", &home.pool()))?;
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
        home.run(),
    ] {
        mkdir(&dir, 0o711)?;
    }
    mkdir(&home.logs(), 0o700)?;

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

    meta.write(|c| {
        Meta::set_setting(c, key::DRIVER, driver.name())?;
        Meta::set_setting(c, key::PG_BIN, &bins.dir.display().to_string())?;
        Meta::set_setting(c, key::PG_VERSION, &bins.version.to_string())?;
        Meta::set_setting(c, key::OS_USER, &run_as.name)?;
        Meta::set_setting(c, key::PORTS, &format!("{}-{}", ports.0, ports.1))?;
        Ok::<_, EngineError>(())
    })?;

    let mut warnings = Vec::new();
    if !driver.is_copy_on_write() {
        warnings.push(copy_driver_warning(&home.pool(), probe.filesystem));
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
        os_user: run_as.name,
        ports,
        created: !existed,
        warnings,
    })
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
