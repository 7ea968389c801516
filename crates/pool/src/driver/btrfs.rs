//! btrfs subvolume ioctls: create, snapshot, read-only flag, delete.
//!
//! Called directly rather than through `btrfs` (btrfs-progs) so that a
//! branch costs no extra process and pgfork needs no tool at run time.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::CloneError;

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
/// Inode number of every subvolume's root directory.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;
const PATH_NAME_MAX: usize = 4087;
const SUBVOL_NAME_MAX: usize = 4039;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2`.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);

nix::ioctl_write_ptr!(ioc_subvol_create, BTRFS_IOCTL_MAGIC, 14, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy, BTRFS_IOCTL_MAGIC, 15, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_create_v2, BTRFS_IOCTL_MAGIC, 23, VolArgsV2);
nix::ioctl_read!(ioc_subvol_getflags, BTRFS_IOCTL_MAGIC, 25, u64);
nix::ioctl_write_ptr!(ioc_subvol_setflags, BTRFS_IOCTL_MAGIC, 26, u64);

/// Whether `path` is the root of a btrfs subvolume.
pub(crate) fn is_subvolume(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && m.ino() == BTRFS_FIRST_FREE_OBJECTID => crate::space::fs_magic(path)
            .map(|t| t == crate::space::BTRFS_MAGIC)
            .unwrap_or(false),
        _ => false,
    }
}

/// Opens the parent of `path` and returns it with `path`'s final name.
fn parent_and_name(path: &Path) -> Result<(File, Vec<u8>), CloneError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| CloneError::Io {
            op: "name subvolume",
            path: path.to_path_buf(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?
        .as_bytes()
        .to_vec();
    let dir = File::open(parent).map_err(CloneError::io("open", parent))?;
    Ok((dir, name))
}

fn nix_err(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> CloneError {
    let path = path.to_path_buf();
    move |e| CloneError::Io {
        op,
        path,
        source: io::Error::from(e),
    }
}

/// Creates an empty subvolume at `path`.
pub(crate) fn create_subvolume(path: &Path) -> Result<(), CloneError> {
    let (dir, name) = parent_and_name(path)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    };
    args.name[..name.len()].copy_from_slice(&name);
    // SAFETY: `args` is a valid, NUL-terminated btrfs_ioctl_vol_args.
    unsafe { ioc_subvol_create(dir.as_raw_fd(), &args) }
        .map_err(nix_err("create subvolume", path))?;
    Ok(())
}

/// Snapshots subvolume `src` as the new subvolume `dst`.
pub(crate) fn snapshot(src: &Path, dst: &Path, readonly: bool) -> Result<(), CloneError> {
    let source = File::open(src).map_err(CloneError::io("open", src))?;
    let (dir, name) = parent_and_name(dst)?;
    let mut args = VolArgsV2 {
        fd: source.as_raw_fd() as i64,
        transid: 0,
        flags: if readonly { BTRFS_SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    };
    args.name[..name.len()].copy_from_slice(&name);
    // SAFETY: `args` is a valid btrfs_ioctl_vol_args_v2; `source` stays open.
    unsafe { ioc_snap_create_v2(dir.as_raw_fd(), &args) }
        .map_err(nix_err("snapshot subvolume", dst))?;
    Ok(())
}

/// Sets or clears the read-only flag of a subvolume.
pub(crate) fn set_readonly(path: &Path, readonly: bool) -> Result<(), CloneError> {
    let dir = File::open(path).map_err(CloneError::io("open", path))?;
    let mut flags: u64 = 0;
    // SAFETY: the ioctl writes one u64 into `flags`.
    unsafe { ioc_subvol_getflags(dir.as_raw_fd(), &mut flags) }
        .map_err(nix_err("read subvolume flags", path))?;
    let flags = if readonly {
        flags | BTRFS_SUBVOL_RDONLY
    } else {
        flags & !BTRFS_SUBVOL_RDONLY
    };
    // SAFETY: the ioctl reads one u64 from `flags`.
    unsafe { ioc_subvol_setflags(dir.as_raw_fd(), &flags) }
        .map_err(nix_err("set subvolume flags", path))?;
    Ok(())
}

/// Deletes a subvolume. Without CAP_SYS_ADMIN (and no `user_subvol_rm_allowed`)
/// the kernel refuses; then the contents are removed and the empty
/// subvolume is removed with rmdir, which unprivileged owners may do.
pub(crate) fn delete_subvolume(path: &Path) -> Result<(), CloneError> {
    let (dir, name) = parent_and_name(path)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    };
    args.name[..name.len()].copy_from_slice(&name);
    // SAFETY: `args` is a valid, NUL-terminated btrfs_ioctl_vol_args.
    match unsafe { ioc_snap_destroy(dir.as_raw_fd(), &args) } {
        Ok(_) => Ok(()),
        Err(nix::Error::ENOENT) => Ok(()),
        Err(nix::Error::EPERM) | Err(nix::Error::EACCES) => {
            let _ = set_readonly(path, false);
            for entry in std::fs::read_dir(path).map_err(CloneError::io("read directory", path))? {
                let p = entry
                    .map_err(CloneError::io("read directory", path))?
                    .path();
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                r.map_err(CloneError::io("remove", &p))?;
            }
            let c = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
            // SAFETY: `c` is a valid C string.
            if unsafe { libc::rmdir(c.as_ptr()) } != 0 {
                return Err(CloneError::io("remove subvolume", path)(
                    io::Error::last_os_error(),
                ));
            }
            Ok(())
        }
        Err(e) => Err(nix_err("delete subvolume", path)(e)),
    }
}
