//! Storage limits enforced by the filesystem: btrfs quota groups.
//!
//! Each branch is a subvolume, so its level-0 qgroup counts what it alone
//! holds; every branch is also a member of one level-1 qgroup per home,
//! "the branches' space", whose limit keeps a reserve of the pool for
//! sources, standbys and snapshots. Simple quotas (kernel 6.7+) are
//! preferred: they charge an extent to the subvolume that wrote it, so a
//! clone costs its branch nothing and no backref walk or rescan is ever
//! needed. Full qgroups are the fallback on older kernels; there a new
//! snapshot cannot join a level-1 group without a rescan, so only the
//! per-branch limits hold.
//!
//! Counters are read from sysfs (`/sys/fs/btrfs/FSID/qgroups`), limits are
//! set with ioctls: no btrfs-progs at run time.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const QUOTA_CTL_ENABLE: u64 = 1;
const QUOTA_CTL_ENABLE_SIMPLE: u64 = 4;
const QGROUP_LIMIT_MAX_EXCL: u64 = 1 << 1;
const INO_LOOKUP_PATH_MAX: usize = 4080;

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct QgroupCreateArgs {
    create: u64,
    qgroupid: u64,
}

#[repr(C)]
struct QgroupAssignArgs {
    assign: u64,
    src: u64,
    dst: u64,
}

#[repr(C)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; INO_LOOKUP_PATH_MAX],
}

/// `struct btrfs_ioctl_fs_info_args`: only the fsid is read.
#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 1024 - 32],
}

const _: () = assert!(std::mem::size_of::<InoLookupArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<FsInfoArgs>() == 1024);

nix::ioctl_readwrite!(ioc_ino_lookup, BTRFS_IOCTL_MAGIC, 18, InoLookupArgs);
nix::ioctl_read!(ioc_fs_info, BTRFS_IOCTL_MAGIC, 31, FsInfoArgs);
nix::ioctl_readwrite!(ioc_quota_ctl, BTRFS_IOCTL_MAGIC, 40, QuotaCtlArgs);
nix::ioctl_write_ptr!(ioc_qgroup_assign, BTRFS_IOCTL_MAGIC, 41, QgroupAssignArgs);
nix::ioctl_write_ptr!(ioc_qgroup_create, BTRFS_IOCTL_MAGIC, 42, QgroupCreateArgs);
// The kernel declares this one _IOR although it only reads the argument.
nix::ioctl_read!(ioc_qgroup_limit, BTRFS_IOCTL_MAGIC, 43, QgroupLimitArgs);

/// How the pool's filesystem counts bytes per subvolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaMode {
    /// btrfs simple quotas: an extent is charged to the subvolume that
    /// wrote it; level-1 groups work without rescans.
    Simple,
    /// btrfs qgroups with full backref accounting: per-subvolume limits
    /// only (see the module doc).
    Full,
}

impl QuotaMode {
    /// The name shown by `doctor` and stored in meta.db.
    pub fn name(self) -> &'static str {
        match self {
            QuotaMode::Simple => "btrfs-simple",
            QuotaMode::Full => "btrfs-qgroups",
        }
    }

    /// Parses [`QuotaMode::name`].
    pub fn parse(name: &str) -> Option<QuotaMode> {
        [QuotaMode::Simple, QuotaMode::Full]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// Whether subvolumes can join a level-1 group as they are made.
    pub fn has_groups(self) -> bool {
        self == QuotaMode::Simple
    }
}

/// Errors of quota operations.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The filesystem or kernel cannot do it.
    #[error("{0}")]
    Unsupported(String),
    /// An ioctl or sysfs read failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> QuotaError {
    let path = path.to_path_buf();
    move |source| QuotaError::Io { op, path, source }
}

fn nix_err(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> QuotaError {
    let path = path.to_path_buf();
    move |e| QuotaError::Io {
        op,
        path,
        source: io::Error::from(e),
    }
}

/// A qgroup id: level in the top 16 bits, id below.
pub fn qgroup_id(level: u16, id: u64) -> u64 {
    (u64::from(level) << 48) | (id & ((1 << 48) - 1))
}

/// `level/id`, as btrfs-progs prints it.
pub fn qgroup_name(qgroupid: u64) -> String {
    format!("{}/{}", qgroupid >> 48, qgroupid & ((1 << 48) - 1))
}

/// Bytes a qgroup holds and may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Exclusive bytes: what deleting its members would free.
    pub used: u64,
    /// Its exclusive limit, if any.
    pub limit: Option<u64>,
}

fn open_dir(path: &Path) -> Result<File, QuotaError> {
    File::open(path).map_err(io_err("open", path))
}

/// The sysfs directory of the btrfs filesystem holding `path`.
fn sysfs_dir(path: &Path) -> Result<PathBuf, QuotaError> {
    let dir = open_dir(path)?;
    let mut args = FsInfoArgs {
        max_id: 0,
        num_devices: 0,
        fsid: [0; 16],
        rest: [0; 1024 - 32],
    };
    // SAFETY: the ioctl fills a btrfs_ioctl_fs_info_args of 1024 bytes.
    unsafe { ioc_fs_info(dir.as_raw_fd(), &mut args) }.map_err(nix_err("read fs info", path))?;
    let f = args.fsid;
    let uuid = format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        f[0],
        f[1],
        f[2],
        f[3],
        f[4],
        f[5],
        f[6],
        f[7],
        f[8],
        f[9],
        f[10],
        f[11],
        f[12],
        f[13],
        f[14],
        f[15]
    );
    Ok(Path::new("/sys/fs/btrfs").join(uuid))
}

/// The quota mode in force on the btrfs filesystem of `path`, if any.
pub fn mode(path: &Path) -> Option<QuotaMode> {
    let dir = sysfs_dir(path).ok()?.join("qgroups");
    // Older kernels have no `enabled` file: there the directory exists
    // only while quotas are on.
    let on = match std::fs::read_to_string(dir.join("enabled")) {
        Ok(text) => text.trim() == "1",
        Err(_) => dir.is_dir(),
    };
    if !on {
        return None;
    }
    match std::fs::read_to_string(dir.join("mode")) {
        Ok(m) if m.trim() == "squota" => Some(QuotaMode::Simple),
        Ok(_) => Some(QuotaMode::Full),
        // Kernels before simple quotas have no `mode` file: full
        // accounting. On newer ones it is missing only while quotas are
        // being turned on.
        Err(_) if kernel_has_simple_quotas() => None,
        Err(_) => Some(QuotaMode::Full),
    }
}

/// Whether the running kernel's btrfs knows simple quotas (6.7+).
fn kernel_has_simple_quotas() -> bool {
    Path::new("/sys/fs/btrfs/features/simple_quota").exists()
}

/// Turns quotas on for the btrfs filesystem of `path` (simple quotas where
/// the kernel has them) and returns the mode in force. Quotas already on
/// stay as they are. Needs CAP_SYS_ADMIN.
pub fn enable(path: &Path) -> Result<QuotaMode, QuotaError> {
    if mode(path).is_none() {
        turn_on(path)?;
    }
    Ok(settled_mode(path))
}

fn turn_on(path: &Path) -> Result<(), QuotaError> {
    let dir = open_dir(path)?;
    for cmd in [QUOTA_CTL_ENABLE_SIMPLE, QUOTA_CTL_ENABLE] {
        let mut args = QuotaCtlArgs { cmd, status: 0 };
        // SAFETY: the ioctl reads and writes one btrfs_ioctl_quota_ctl_args.
        match unsafe { ioc_quota_ctl(dir.as_raw_fd(), &mut args) } {
            Ok(_) => return Ok(()),
            // Kernels before 6.7 do not know simple quotas.
            Err(nix::Error::EINVAL)
                if cmd == QUOTA_CTL_ENABLE_SIMPLE && !kernel_has_simple_quotas() =>
            {
                continue;
            }
            Err(nix::Error::EPERM) => {
                return Err(QuotaError::Unsupported(
                    "turning btrfs quotas on needs root (CAP_SYS_ADMIN)".into(),
                ));
            }
            // Another process (a pgfork of another home on the same
            // filesystem) may be turning them on at this very moment.
            Err(_) if mode(path).is_some() || wait_for_mode(path) => return Ok(()),
            Err(e) => return Err(nix_err("enable quotas on", path)(e)),
        }
    }
    Ok(())
}

fn wait_for_mode(path: &Path) -> bool {
    (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        mode(path).is_some()
    })
}

/// The mode in force once it has settled. While quotas are being turned
/// on, sysfs can show them on in full mode for a moment before simple
/// mode is set; the change only ever goes that way, so a kernel that
/// knows simple quotas is watched for it briefly.
fn settled_mode(path: &Path) -> QuotaMode {
    let mut seen = mode(path);
    if !kernel_has_simple_quotas() {
        return seen.unwrap_or(QuotaMode::Full);
    }
    for _ in 0..50 {
        if seen == Some(QuotaMode::Simple) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        seen = mode(path).or(seen);
    }
    seen.unwrap_or(QuotaMode::Full)
}

/// Makes a new level-1 qgroup on the filesystem of `path`, the first free
/// one from `1/first`, and returns its id.
pub fn create_group(path: &Path, first: u64) -> Result<u64, QuotaError> {
    let dir = open_dir(path)?;
    for id in first..first + 10_000 {
        let qgroupid = qgroup_id(1, id);
        let args = QgroupCreateArgs {
            create: 1,
            qgroupid,
        };
        // SAFETY: the ioctl reads one btrfs_ioctl_qgroup_create_args.
        match unsafe { ioc_qgroup_create(dir.as_raw_fd(), &args) } {
            Ok(_) => return Ok(qgroupid),
            Err(nix::Error::EEXIST) => continue,
            Err(e) => return Err(nix_err("create a qgroup on", path)(e)),
        }
    }
    Err(QuotaError::Unsupported(format!(
        "no free level-1 qgroup from 1/{first} on {}",
        path.display()
    )))
}

/// Whether qgroup `qgroupid` exists on the filesystem of `path`.
pub fn group_exists(path: &Path, qgroupid: u64) -> bool {
    sysfs_dir(path)
        .map(|d| d.join("qgroups").join(sysfs_name(qgroupid)).is_dir())
        .unwrap_or(false)
}

/// Sets (or with `None` clears) the exclusive limit of `qgroupid`; `0` as
/// the id means the subvolume `path` is the root of.
pub fn set_limit(path: &Path, qgroupid: u64, limit: Option<u64>) -> Result<(), QuotaError> {
    let dir = open_dir(path)?;
    let mut args = QgroupLimitArgs {
        qgroupid,
        lim: QgroupLimit {
            flags: QGROUP_LIMIT_MAX_EXCL,
            max_rfer: 0,
            // The kernel reads u64::MAX as "no limit".
            max_excl: limit.unwrap_or(u64::MAX),
            rsv_rfer: 0,
            rsv_excl: 0,
        },
    };
    // SAFETY: the ioctl reads one btrfs_ioctl_qgroup_limit_args.
    unsafe { ioc_qgroup_limit(dir.as_raw_fd(), &mut args) }
        .map_err(nix_err("set the qgroup limit of", path))?;
    Ok(())
}

/// The id of the subvolume whose root is `subvol`.
pub fn subvolume_id(subvol: &Path) -> Result<u64, QuotaError> {
    let dir = open_dir(subvol)?;
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: BTRFS_FIRST_FREE_OBJECTID,
        name: [0; INO_LOOKUP_PATH_MAX],
    };
    // SAFETY: the ioctl reads and writes one btrfs_ioctl_ino_lookup_args.
    unsafe { ioc_ino_lookup(dir.as_raw_fd(), &mut args) }
        .map_err(nix_err("look up the subvolume of", subvol))?;
    Ok(args.treeid)
}

/// Puts the new subvolume `subvol` under the level-1 group `parent` (if
/// given) and sets its own exclusive limit. Returns its level-0 qgroup id.
pub fn place(subvol: &Path, parent: Option<u64>, limit: Option<u64>) -> Result<u64, QuotaError> {
    let own = qgroup_id(0, subvolume_id(subvol)?);
    if let Some(parent) = parent {
        let dir = open_dir(subvol)?;
        let args = QgroupAssignArgs {
            assign: 1,
            src: own,
            dst: parent,
        };
        // SAFETY: the ioctl reads one btrfs_ioctl_qgroup_assign_args. A
        // positive return asks for a rescan: never with simple quotas.
        unsafe { ioc_qgroup_assign(dir.as_raw_fd(), &args) }
            .map_err(nix_err("add to the branches' qgroup", subvol))?;
    }
    if limit.is_some() {
        set_limit(subvol, own, limit)?;
    }
    Ok(own)
}

/// Drops the qgroup of a deleted subvolume, best effort: the kernel keeps
/// it while the subvolume is still being cleaned up, or (simple quotas)
/// while extents it wrote live on in a snapshot.
pub fn forget(path: &Path, qgroupid: u64) {
    let Ok(dir) = open_dir(path) else { return };
    let args = QgroupCreateArgs {
        create: 0,
        qgroupid,
    };
    // SAFETY: the ioctl reads one btrfs_ioctl_qgroup_create_args.
    let _ = unsafe { ioc_qgroup_create(dir.as_raw_fd(), &args) };
}

fn sysfs_name(qgroupid: u64) -> String {
    format!("{}_{}", qgroupid >> 48, qgroupid & ((1 << 48) - 1))
}

/// What qgroup `qgroupid` holds and may hold, from sysfs.
pub fn usage(path: &Path, qgroupid: u64) -> Result<Usage, QuotaError> {
    let dir = sysfs_dir(path)?.join("qgroups").join(sysfs_name(qgroupid));
    let read = |name: &str| -> Result<u64, QuotaError> {
        let file = dir.join(name);
        let text = std::fs::read_to_string(&file).map_err(io_err("read", &file))?;
        text.trim().parse().map_err(|_| QuotaError::Io {
            op: "parse",
            path: file.clone(),
            source: io::Error::from(io::ErrorKind::InvalidData),
        })
    };
    let used = read("exclusive")?;
    let limit = read("max_exclusive")?;
    Ok(Usage {
        used,
        // sysfs shows "no limit" as u64::MAX (and some kernels as 0).
        limit: (limit != u64::MAX && limit != 0).then_some(limit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qgroup_ids_encode_level_and_id() {
        assert_eq!(qgroup_name(qgroup_id(1, 7)), "1/7");
        assert_eq!(qgroup_name(qgroup_id(0, 258)), "0/258");
        assert_eq!(sysfs_name(qgroup_id(1, 100)), "1_100");
        assert_eq!(QuotaMode::parse("btrfs-simple"), Some(QuotaMode::Simple));
        assert_eq!(QuotaMode::parse("xfs"), None);
    }
}
