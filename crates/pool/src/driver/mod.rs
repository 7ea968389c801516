//! Clone drivers: how a data directory is copied.
//!
//! `btrfs` snapshots a subvolume (constant time, atomic), `reflink` clones
//! every file with FICLONE (shares blocks, not atomic), `copy` copies bytes
//! (always works, cost grows with size). The driver is probed once at
//! `init` and remembered in meta.db.

mod btrfs;
mod probe;
mod tree;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use probe::{Probe, probe};
pub use tree::{Filter, TreeEntry};

/// How a directory is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Subvolume snapshots on btrfs.
    Btrfs,
    /// FICLONE per file (XFS with reflink=1, btrfs, bcachefs).
    Reflink,
    /// Plain copy; the honest fallback.
    Copy,
}

/// Errors of clone drivers. The destination of a failed clone is removed.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// The pool ran out of space.
    #[error(
        "the pool filled up while cloning into {dst} ({available} bytes left): the partial clone \
         was removed; free space (pgfork gc, pgfork branch delete), or make a bigger pool image"
    )]
    NoSpace {
        /// Clone destination.
        dst: PathBuf,
        /// Bytes available after the failure.
        available: u64,
    },
    /// The filesystem refused a copy-on-write clone.
    #[error(
        "{path}: this filesystem cannot clone files (reflink): use XFS with reflink=1 or btrfs, \
         or choose the copy driver (pgfork init --driver copy)"
    )]
    ReflinkUnsupported {
        /// The file that could not be cloned.
        path: PathBuf,
    },
    /// Any other I/O failure, with what was being done.
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

impl CloneError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CloneError {
        let path = path.to_path_buf();
        move |source| CloneError::Io { op, path, source }
    }

    /// Whether this failure means the pool is full.
    pub fn is_no_space(&self) -> bool {
        match self {
            CloneError::NoSpace { .. } => true,
            CloneError::Io { source, .. } => crate::space::is_full(source),
            _ => false,
        }
    }
}

impl Driver {
    /// Every driver, in order of preference.
    pub const ALL: [Driver; 3] = [Driver::Btrfs, Driver::Reflink, Driver::Copy];

    /// The name used on the command line and in meta.db.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Btrfs => "btrfs",
            Driver::Reflink => "reflink",
            Driver::Copy => "copy",
        }
    }

    /// Parses a driver name.
    pub fn parse(name: &str) -> Option<Driver> {
        Driver::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether clones share blocks with their origin.
    pub fn is_copy_on_write(self) -> bool {
        self != Driver::Copy
    }

    /// Makes an empty directory that this driver can clone quickly later
    /// (a subvolume on btrfs). Mode 0700, owned by `owner` (uid, gid).
    pub fn create_root(self, path: &Path, owner: Option<(u32, u32)>) -> Result<(), CloneError> {
        match self {
            Driver::Btrfs => btrfs::create_subvolume(path)?,
            _ => std::fs::create_dir(path).map_err(CloneError::io("create directory", path))?,
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(CloneError::io("chmod", path))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(CloneError::io("chown", path))?;
        }
        Ok(())
    }

    /// Whether [`Driver::clone_dir`] of `src` is one atomic, point-in-time
    /// copy (a btrfs subvolume snapshot), so a running cluster can be cloned
    /// without an online backup.
    pub fn clones_atomically(self, src: &Path) -> bool {
        self == Driver::Btrfs && btrfs::is_subvolume(src)
    }

    /// Clones `src` into the new directory `dst`, keeping owners and modes.
    /// On failure nothing is left at `dst`.
    pub fn clone_dir(self, src: &Path, dst: &Path) -> Result<(), CloneError> {
        self.clone_filtered(src, dst, &|_| TreeEntry::Include)
    }

    /// Like [`Driver::clone_dir`], but everything in the clone belongs to
    /// `owner` (uid, gid) when run as root: a server's own copy. File
    /// clones set it as they go; a btrfs snapshot is given to it after.
    pub fn clone_dir_owned(
        self,
        src: &Path,
        dst: &Path,
        owner: (u32, u32),
    ) -> Result<(), CloneError> {
        self.clone_with(
            src,
            dst,
            &|_| TreeEntry::Include,
            tree::Owner::Set(owner.0, owner.1),
        )
    }

    /// Like [`Driver::clone_dir`], but `filter` may skip entries or keep a
    /// directory empty. A btrfs snapshot cannot skip, so it snapshots whole
    /// and then removes what the filter excludes.
    pub fn clone_filtered(self, src: &Path, dst: &Path, filter: Filter) -> Result<(), CloneError> {
        self.clone_with(src, dst, filter, tree::Owner::Keep)
    }

    /// [`Driver::clone_filtered`] whose clone belongs to `owner` (uid, gid)
    /// if one is given (as root), else keeps its origin's owners.
    pub fn clone_filtered_as(
        self,
        src: &Path,
        dst: &Path,
        filter: Filter,
        owner: Option<(u32, u32)>,
    ) -> Result<(), CloneError> {
        let owner = match owner {
            Some((uid, gid)) => tree::Owner::Set(uid, gid),
            None => tree::Owner::Keep,
        };
        self.clone_with(src, dst, filter, owner)
    }

    fn clone_with(
        self,
        src: &Path,
        dst: &Path,
        filter: Filter,
        owner: tree::Owner,
    ) -> Result<(), CloneError> {
        let result = match self {
            Driver::Btrfs if btrfs::is_subvolume(src) => {
                btrfs::snapshot(src, dst, false).and_then(|()| snapshot_owned(dst, filter, owner))
            }
            Driver::Btrfs | Driver::Reflink => {
                tree::clone_tree(src, dst, tree::FileCopy::Reflink, filter, owner)
            }
            Driver::Copy => tree::clone_tree(src, dst, tree::FileCopy::Bytes, filter, owner),
        };
        result.map_err(|e| {
            let _ = self.remove(dst);
            if e.is_no_space() {
                let available = crate::space::space(dst.parent().unwrap_or(dst))
                    .map(|s| s.available)
                    .unwrap_or(0);
                CloneError::NoSpace {
                    dst: dst.to_path_buf(),
                    available,
                }
            } else {
                e
            }
        })
    }

    /// Clones single files `names` from directory `src` into existing `dst`
    /// (used to add the WAL written during an online backup), owned by
    /// `owner` if one is given (as root), else by the originals' owners.
    pub fn clone_files(
        self,
        src: &Path,
        dst: &Path,
        names: &[String],
        owner: Option<(u32, u32)>,
    ) -> Result<(), CloneError> {
        let owner = match owner {
            Some((uid, gid)) => tree::Owner::Set(uid, gid),
            None => tree::Owner::Keep,
        };
        let how = if self == Driver::Copy {
            tree::FileCopy::Bytes
        } else {
            tree::FileCopy::Reflink
        };
        for name in names {
            let to = dst.join(name);
            let _ = std::fs::remove_file(&to);
            tree::clone_file(src, name, &to, how, owner)?;
        }
        Ok(())
    }

    /// Gives a finished clone, every entry of it, to `owner` (uid, gid).
    /// Only root can; for others this does nothing.
    pub fn give(self, path: &Path, owner: (u32, u32)) -> Result<(), CloneError> {
        if !pgfork_os::RunAs::we_are_root() {
            return Ok(());
        }
        tree::chown_tree(path, owner.0, owner.1)
    }

    /// Makes a finished clone immutable where the filesystem can (btrfs
    /// read-only subvolume); elsewhere immutability is by convention.
    pub fn make_readonly(self, path: &Path) -> Result<(), CloneError> {
        if self == Driver::Btrfs && btrfs::is_subvolume(path) {
            btrfs::set_readonly(path, true)?;
        }
        Ok(())
    }

    /// Removes a directory made by this driver; missing is fine.
    pub fn remove(self, path: &Path) -> Result<(), CloneError> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        if btrfs::is_subvolume(path) {
            return btrfs::delete_subvolume(path);
        }
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CloneError::Io {
                op: "remove",
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }
}

/// Finishes a btrfs snapshot that is to belong to `owner`. The snapshot
/// keeps its origin's owners, and the origin's server (a branch's, perhaps
/// run by an agent) could enter it and swap entries for links while root
/// prunes and re-owns it: so root takes its top directory first, and gives
/// it to the new owner last.
fn snapshot_owned(dst: &Path, filter: Filter, owner: tree::Owner) -> Result<(), CloneError> {
    let root = pgfork_os::RunAs::we_are_root();
    let new = match owner {
        tree::Owner::Set(uid, gid) if root => Some((uid, gid)),
        _ => None,
    };
    if new.is_some() {
        std::os::unix::fs::lchown(dst, Some(0), Some(0)).map_err(CloneError::io("chown", dst))?;
    }
    tree::prune(dst, filter)?;
    if let Some((uid, gid)) = new {
        tree::chown_tree(dst, uid, gid)?;
    }
    Ok(())
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
