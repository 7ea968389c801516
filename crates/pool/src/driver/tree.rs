//! File-by-file directory clone shared by the reflink and copy drivers.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::CloneError;
use crate::beneath::Beneath;

/// What to do with one entry, by its path relative to the clone's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeEntry {
    /// Clone it (a directory with all it holds).
    Include,
    /// Leave it out.
    Skip,
    /// A directory: create it, empty.
    EmptyDir,
}

/// Decides, per relative path, what a clone takes.
pub type Filter<'a> = &'a dyn Fn(&Path) -> TreeEntry;

/// How file contents are carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileCopy {
    /// FICLONE: share every block.
    Reflink,
    /// Copy bytes.
    Bytes,
}

/// Who owns what a clone creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Whoever owns the original (as root; else the caller).
    Keep,
    /// This uid and gid (as root; else the caller).
    Set(u32, u32),
}

impl Owner {
    /// The uid and gid to give an entry like `like`, if any is to be given
    /// (only root can).
    fn of(self, like: &fs::Metadata) -> Option<(u32, u32)> {
        if !pgfork_os::RunAs::we_are_root() {
            return None;
        }
        Some(match self {
            Owner::Keep => (like.uid(), like.gid()),
            Owner::Set(uid, gid) => (uid, gid),
        })
    }
}

/// Clones the tree at `src` into `dst`. The source is read through
/// [`Beneath`]: its owner (a branch's server, perhaps run by an agent) may
/// swap entries for symbolic links while pgfork copies it, and no link is
/// ever followed.
pub(crate) fn clone_tree(
    src: &Path,
    dst: &Path,
    how: FileCopy,
    filter: Filter,
    owner: Owner,
) -> Result<(), CloneError> {
    let tree = Beneath::open(src).map_err(CloneError::io("open", src))?;
    let meta = tree
        .metadata(Path::new(""))
        .map_err(CloneError::io("stat", src))?;
    make_dir(dst, &meta, owner)?;
    // Directories and links first, in one pass; then the files, which are
    // most of the work (one FICLONE or copy each), on a few threads.
    let mut files = Vec::new();
    let source = Source { root: src, tree };
    walk(&source, dst, Path::new(""), filter, owner, &mut files)?;
    clone_files_parallel(&source, &files, how, owner)
}

/// The tree a clone reads, opened once.
pub(crate) struct Source<'a> {
    /// Its path, for messages.
    pub root: &'a Path,
    /// Its entries, reached only beneath it.
    pub tree: Beneath,
}

/// Gives every entry under `root` (itself included) to `uid`:`gid`,
/// without following symbolic links. Directories are given after what
/// they hold, so the new owner can enter none before it is all done.
pub(crate) fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(), CloneError> {
    for entry in fs::read_dir(root).map_err(CloneError::io("read directory", root))? {
        let entry = entry.map_err(CloneError::io("read directory", root))?;
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            chown_tree(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .map_err(CloneError::io("chown", &path))?;
        }
    }
    std::os::unix::fs::lchown(root, Some(uid), Some(gid)).map_err(CloneError::io("chown", root))
}

/// Clones `files` (source, destination) on up to four threads; the first
/// failure stops the rest and is returned.
fn clone_files_parallel(
    src: &Source,
    files: &[(PathBuf, PathBuf)],
    how: FileCopy,
    owner: Owner,
) -> Result<(), CloneError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    if threads == 1 || files.len() < 64 {
        return files
            .iter()
            .try_for_each(|(from, to)| clone_one(src, from, to, how, owner));
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<CloneError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((from, to)) = files.get(i) else {
                        return;
                    };
                    if let Err(e) = clone_one(src, from, to, how, owner) {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Clones one file, tolerating one that a live cluster removed meanwhile
/// (an online backup restores it from WAL).
fn clone_one(
    src: &Source,
    rel: &Path,
    to: &Path,
    how: FileCopy,
    owner: Owner,
) -> Result<(), CloneError> {
    let file = match src.tree.file(rel) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CloneError::io("open", &src.root.join(rel))(e)),
    };
    clone_opened(file, &src.root.join(rel), to, how, owner)
}

fn walk(
    src: &Source,
    dst: &Path,
    rel: &Path,
    filter: Filter,
    owner: Owner,
    files: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<(), CloneError> {
    let dir = src.root.join(rel);
    let entries = src
        .tree
        .read_dir(rel)
        .map_err(CloneError::io("read directory", &dir))?;
    for entry in entries {
        let entry = entry.map_err(CloneError::io("read directory", &dir))?;
        let rel = rel.join(entry.file_name());
        let decision = filter(&rel);
        if decision == TreeEntry::Skip {
            continue;
        }
        let from = src.root.join(&rel);
        let to = dst.join(&rel);
        // The directory entry knows the type: no stat for plain files.
        let kind = match entry.file_type() {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(CloneError::Io {
                    op: "stat",
                    path: from,
                    source: e,
                });
            }
        };
        if kind.is_file() {
            files.push((rel, to));
            continue;
        }
        let meta = match src.tree.metadata(&rel) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(CloneError::Io {
                    op: "stat",
                    path: from,
                    source: e,
                });
            }
        };
        if kind.is_dir() {
            make_dir(&to, &meta, owner)?;
            if decision == TreeEntry::Include {
                walk(src, dst, &rel, filter, owner, files)?;
            }
        } else if kind.is_symlink() {
            let target = src
                .tree
                .read_link(&rel)
                .map_err(CloneError::io("read link", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(CloneError::io("symlink", &to))?;
            lchown_like(&to, &meta, owner)?;
        }
    }
    Ok(())
}

fn make_dir(path: &Path, like: &fs::Metadata, owner: Owner) -> Result<(), CloneError> {
    fs::create_dir(path).map_err(CloneError::io("create directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(like.mode() & 0o7777))
        .map_err(CloneError::io("chmod", path))?;
    lchown_like(path, like, owner)
}

fn lchown_like(path: &Path, like: &fs::Metadata, owner: Owner) -> Result<(), CloneError> {
    if let Some((uid, gid)) = owner.of(like) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(CloneError::io("chown", path))?;
    }
    Ok(())
}

/// Clones regular file `name` of directory `dir` (read without following
/// links, see [`Beneath`]), keeping its mode, owned as `owner` says.
pub(crate) fn clone_file(
    dir: &Path,
    name: &str,
    to: &Path,
    how: FileCopy,
    owner: Owner,
) -> Result<(), CloneError> {
    let from = dir.join(name);
    let file = Beneath::open(dir)
        .and_then(|b| b.file(Path::new(name)))
        .map_err(CloneError::io("open", &from))?;
    clone_opened(file, &from, to, how, owner)
}

/// Clones the open file `src` (found at `from`) into the new file `to`.
fn clone_opened(
    mut src: File,
    from: &Path,
    to: &Path,
    how: FileCopy,
    owner: Owner,
) -> Result<(), CloneError> {
    let meta = src.metadata().map_err(CloneError::io("stat", from))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.mode() & 0o7777)
        .open(to)
        .map_err(CloneError::io("create", to))?;
    if let Some((uid, gid)) = owner.of(&meta) {
        std::os::unix::fs::fchown(&dst, Some(uid), Some(gid))
            .map_err(CloneError::io("chown", to))?;
    }
    if meta.len() == 0 {
        // Nothing to share or copy (PostgreSQL keeps many empty files).
        return Ok(());
    }
    match how {
        FileCopy::Reflink => {
            // SAFETY: FICLONE takes the source descriptor as its argument;
            // both descriptors are open for the duration of the call.
            let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
            if rc != 0 {
                let err = io::Error::last_os_error();
                return Err(match err.raw_os_error() {
                    Some(libc::EOPNOTSUPP)
                    | Some(libc::EXDEV)
                    | Some(libc::EINVAL)
                    | Some(libc::ENOTTY) => CloneError::ReflinkUnsupported {
                        path: to.to_path_buf(),
                    },
                    _ => CloneError::Io {
                        op: "reflink",
                        path: to.to_path_buf(),
                        source: err,
                    },
                });
            }
        }
        FileCopy::Bytes => copy_bytes(&mut src, &mut dst).map_err(CloneError::io("copy", to))?,
    }
    Ok(())
}

/// Copies every byte through user space. `io::copy` would use
/// `copy_file_range`, which XFS and btrfs answer with a reflink: the copy
/// driver must really copy, whatever the file system.
fn copy_bytes(src: &mut File, dst: &mut File) -> io::Result<()> {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
    }
}

/// Removes from a finished clone what `filter` would not have taken.
pub(crate) fn prune(root: &Path, filter: Filter) -> Result<(), CloneError> {
    prune_dir(root, Path::new(""), filter)
}

fn prune_dir(root: &Path, rel: &Path, filter: Filter) -> Result<(), CloneError> {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).map_err(CloneError::io("read directory", &dir))? {
        let entry = entry.map_err(CloneError::io("read directory", &dir))?;
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        match filter(&rel) {
            TreeEntry::Skip if is_dir => {
                fs::remove_dir_all(&path).map_err(CloneError::io("remove", &path))?
            }
            TreeEntry::Skip => fs::remove_file(&path).map_err(CloneError::io("remove", &path))?,
            TreeEntry::EmptyDir if is_dir => {
                for inner in fs::read_dir(&path).map_err(CloneError::io("read directory", &path))? {
                    let inner = inner
                        .map_err(CloneError::io("read directory", &path))?
                        .path();
                    let r = if inner.is_dir() {
                        fs::remove_dir_all(&inner)
                    } else {
                        fs::remove_file(&inner)
                    };
                    r.map_err(CloneError::io("remove", &inner))?;
                }
            }
            _ if is_dir => prune_dir(root, &rel, filter)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_tree_modes_and_honours_filter() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("base/1")).unwrap();
        fs::create_dir_all(src.join("pg_wal")).unwrap();
        fs::write(src.join("base/1/1259"), b"heap").unwrap();
        fs::write(src.join("pg_wal/000000010000000000000001"), b"wal").unwrap();
        fs::write(src.join("postmaster.pid"), b"123").unwrap();
        fs::set_permissions(src.join("base/1/1259"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("base", src.join("link")).unwrap();

        let dst = tmp.path().join("dst");
        let filter = |rel: &Path| match rel.to_str() {
            Some("postmaster.pid") => TreeEntry::Skip,
            Some("pg_wal") => TreeEntry::EmptyDir,
            _ => TreeEntry::Include,
        };
        clone_tree(&src, &dst, FileCopy::Bytes, &filter, Owner::Keep).unwrap();
        assert_eq!(fs::read(dst.join("base/1/1259")).unwrap(), b"heap");
        assert_eq!(
            fs::metadata(dst.join("base/1/1259")).unwrap().mode() & 0o777,
            0o600
        );
        assert!(!dst.join("postmaster.pid").exists());
        assert!(dst.join("pg_wal").is_dir());
        assert!(!dst.join("pg_wal/000000010000000000000001").exists());
        assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("base"));

        // Pruning a full copy with the same filter gives the same tree.
        let full = tmp.path().join("full");
        clone_tree(
            &src,
            &full,
            FileCopy::Bytes,
            &|_| TreeEntry::Include,
            Owner::Keep,
        )
        .unwrap();
        prune(&full, &filter).unwrap();
        assert!(!full.join("postmaster.pid").exists());
        assert!(
            full.join("pg_wal").is_dir()
                && fs::read_dir(full.join("pg_wal")).unwrap().next().is_none()
        );
    }

    #[test]
    fn existing_destination_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("a")).unwrap();
        fs::create_dir(tmp.path().join("b")).unwrap();
        let err = clone_tree(
            &tmp.path().join("a"),
            &tmp.path().join("b"),
            FileCopy::Bytes,
            &|_| TreeEntry::Include,
            Owner::Keep,
        );
        assert!(err.is_err());
    }
}
