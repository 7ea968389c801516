//! Pool images: a sparse file formatted as XFS (reflink) or btrfs and
//! loop-mounted on the pool directory, so any Linux box gets real
//! copy-on-write. Needs root.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Filesystem to format a pool image with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// XFS with reflink=1: the `reflink` driver.
    Xfs,
    /// btrfs: the `btrfs` driver.
    Btrfs,
}

impl FsKind {
    /// Parses `xfs` or `btrfs`.
    pub fn parse(name: &str) -> Option<FsKind> {
        match name {
            "xfs" => Some(FsKind::Xfs),
            "btrfs" => Some(FsKind::Btrfs),
            _ => None,
        }
    }
    /// The filesystem's name.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
        }
    }
    fn mkfs(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            FsKind::Xfs => ("mkfs.xfs", &["-q", "-f", "-m", "reflink=1"], "xfsprogs"),
            FsKind::Btrfs => ("mkfs.btrfs", &["-q", "-f"], "btrfs-progs"),
        }
    }
    /// Smallest image mkfs accepts, with some room for data.
    pub fn min_size(self) -> u64 {
        match self {
            FsKind::Xfs => 512 << 20,
            FsKind::Btrfs => 256 << 20,
        }
    }
}

/// Errors making or mounting a pool image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not root.
    #[error(
        "a pool image needs root to loop-mount it: run as root, or drop --pool-image and put {home} on XFS (reflink=1) or btrfs"
    )]
    NotRoot {
        /// The home that would hold the image.
        home: PathBuf,
    },
    /// mkfs is missing.
    #[error(
        "{tool} not found: install it (apt-get install {package}, dnf install {package}) and retry"
    )]
    MissingTool {
        /// The missing program.
        tool: &'static str,
        /// The package that provides it.
        package: &'static str,
    },
    /// Too small.
    #[error("a {fs} pool image must be at least {min} MiB")]
    TooSmall {
        /// Filesystem.
        fs: &'static str,
        /// Minimum in MiB.
        min: u64,
    },
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// What was run.
        what: String,
        /// Its stderr.
        detail: String,
    },
    /// I/O failure.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A pool image file and where it is mounted.
#[derive(Debug, Clone)]
pub struct PoolImage {
    /// The image file.
    pub file: PathBuf,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
}

fn run(cmd: &mut Command, what: String) -> Result<(), ImageError> {
    let out = cmd.output().map_err(|e| ImageError::Command {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImageError::Command {
            what,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

impl PoolImage {
    /// Creates a sparse image of `size` bytes and formats it as `fs`.
    /// An existing file is refused so that no data is ever overwritten.
    pub fn create(
        file: &Path,
        mountpoint: &Path,
        size: u64,
        fs: FsKind,
    ) -> Result<PoolImage, ImageError> {
        if !pgfork_os::RunAs::we_are_root() {
            return Err(ImageError::NotRoot {
                home: file.parent().unwrap_or(file).to_path_buf(),
            });
        }
        if size < fs.min_size() {
            return Err(ImageError::TooSmall {
                fs: fs.name(),
                min: fs.min_size() >> 20,
            });
        }
        let (tool, args, package) = fs.mkfs();
        let mkfs = find_tool(tool).ok_or(ImageError::MissingTool { tool, package })?;
        // Every source's rows and every verifier are in it: owner only.
        let image = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::home::PRIVATE_FILE)
            .open(file)
            .map_err(|source| ImageError::Io {
                op: "create pool image",
                path: file.into(),
                source,
            })?;
        let made = image
            .set_len(size)
            .map_err(|source| ImageError::Io {
                op: "size pool image",
                path: file.into(),
                source,
            })
            .and_then(|()| {
                run(
                    Command::new(mkfs).args(args).arg(file),
                    format!("{tool} {}", file.display()),
                )
            });
        if let Err(e) = made {
            let _ = std::fs::remove_file(file);
            return Err(e);
        }
        Ok(PoolImage {
            file: file.into(),
            mountpoint: mountpoint.into(),
        })
    }

    /// Whether something is mounted at the mountpoint.
    pub fn is_mounted(&self) -> bool {
        is_mountpoint(&self.mountpoint)
    }

    /// Loop-mounts the image unless it already is (after a reboot it is not).
    /// Returns whether it had to mount.
    pub fn ensure_mounted(&self) -> Result<bool, ImageError> {
        if self.is_mounted() {
            return Ok(false);
        }
        if !pgfork_os::RunAs::we_are_root() {
            return Err(ImageError::Command {
                what: format!("mount {}", self.file.display()),
                detail: format!(
                    "the pool image is not mounted on {} and only root can mount it: run this command as root once",
                    self.mountpoint.display()
                ),
            });
        }
        std::fs::create_dir_all(&self.mountpoint).map_err(|source| ImageError::Io {
            op: "create mountpoint",
            path: self.mountpoint.clone(),
            source,
        })?;
        run(
            Command::new("mount")
                .args(["-o", "loop,noatime"])
                .arg(&self.file)
                .arg(&self.mountpoint),
            format!(
                "mount -o loop {} {}",
                self.file.display(),
                self.mountpoint.display()
            ),
        )?;
        Ok(true)
    }

    /// Unmounts the image (its loop device is freed by the kernel).
    pub fn unmount(&self) -> Result<(), ImageError> {
        if !self.is_mounted() {
            return Ok(());
        }
        run(
            Command::new("umount").arg(&self.mountpoint),
            format!("umount {}", self.mountpoint.display()),
        )
    }
}

/// Whether `path` is a mount point, from `/proc/self/mountinfo`.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mp| Path::new(&pgfork_os::mountinfo::unescape(mp)) == real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_a_mountpoint() {
        assert!(is_mountpoint(Path::new("/")));
    }
}
