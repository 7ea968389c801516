//! Finding out, once at `init`, which clone driver a pool supports.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::Serialize;

use super::{Driver, btrfs};
use crate::space;

/// What probing a pool directory found.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Filesystem name (`xfs`, `btrfs`, `ext4`...).
    pub filesystem: &'static str,
    /// Whether FICLONE works here.
    pub reflink: bool,
    /// Whether btrfs subvolumes can be created and deleted here.
    pub subvolumes: bool,
    /// The best driver available.
    pub driver: Driver,
}

impl Probe {
    /// Whether `driver` can work on this pool.
    pub fn supports(&self, driver: Driver) -> bool {
        match driver {
            Driver::Btrfs => self.subvolumes,
            Driver::Reflink => self.reflink,
            Driver::Copy => true,
        }
    }
}

/// Probes `dir` (which must exist and be writable) by trying each
/// mechanism on scratch files that are removed afterwards.
pub fn probe(dir: &Path) -> std::io::Result<Probe> {
    let magic = space::fs_magic(dir)?;
    let filesystem = space::fs_name(magic);
    let reflink = try_reflink(dir)?;
    let subvolumes = magic == space::BTRFS_MAGIC && try_subvolume(dir);
    let driver = if subvolumes {
        Driver::Btrfs
    } else if reflink {
        Driver::Reflink
    } else {
        Driver::Copy
    };
    Ok(Probe {
        filesystem,
        reflink,
        subvolumes,
        driver,
    })
}

fn try_reflink(dir: &Path) -> std::io::Result<bool> {
    let a = dir.join(".pgfork-probe-a");
    let b = dir.join(".pgfork-probe-b");
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    fs::write(&a, [7u8; 8192])?;
    let result = (|| {
        let src = fs::File::open(&a)?;
        let dst = fs::File::create(&b)?;
        // SAFETY: both descriptors are valid for the call.
        Ok::<bool, std::io::Error>(
            unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0,
        )
    })();
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    result
}

fn try_subvolume(dir: &Path) -> bool {
    let a = dir.join(".pgfork-probe-subvol");
    let b = dir.join(".pgfork-probe-snap");
    let _ = btrfs::delete_subvolume(&b);
    let _ = btrfs::delete_subvolume(&a);
    let ok = btrfs::create_subvolume(&a).is_ok() && btrfs::snapshot(&a, &b, true).is_ok();
    let cleaned = btrfs::delete_subvolume(&b).is_ok() & btrfs::delete_subvolume(&a).is_ok();
    ok && cleaned
}
