//! Reading a directory tree that its owner may be changing meanwhile.
//!
//! pgfork (often root) copies and inspects data directories whose files
//! belong to a server it does not trust: a branch's, whose superuser may
//! be the agent's. That server can swap a file or a directory for a
//! symbolic link at any moment, between pgfork listing an entry and
//! opening it, so that a path-based open lands on `/etc/shadow` or on
//! meta.db. [`Beneath`] opens the tree's root once and resolves every path
//! below it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: a link
//! anywhere on the way is an error, never followed, and nothing outside
//! the root can be reached.

use std::ffi::CString;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A directory tree, opened once, whose entries are opened only beneath it.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
}

impl Beneath {
    /// Opens `dir` (which must not itself be a symbolic link).
    pub fn open(dir: &Path) -> io::Result<Beneath> {
        let path = cstring(dir)?;
        // SAFETY: a valid NUL-terminated path; the descriptor is owned below.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is ours alone.
        Ok(Beneath {
            root: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Opens `rel` (relative to the root; empty for the root itself) with
    /// `flags`, refusing any symbolic link on the way.
    fn open_at(&self, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let path = cstring(rel)?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH
                | libc::RESOLVE_NO_SYMLINKS
                | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: openat2 with a valid directory descriptor, a valid path
        // and an `open_how` of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new descriptor, ours alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Opens regular file `rel` for reading. Non-blocking, so that a FIFO
    /// planted in its place cannot hang the caller; anything but a regular
    /// file is refused.
    pub fn file(&self, rel: &Path) -> io::Result<File> {
        let file = File::from(self.open_at(rel, libc::O_RDONLY | libc::O_NONBLOCK)?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", rel.display()),
            ));
        }
        Ok(file)
    }

    /// The entries of directory `rel`.
    pub fn read_dir(&self, rel: &Path) -> io::Result<fs::ReadDir> {
        let dir = self.open_at(rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
        // /proc/self/fd/N is the very directory opened above, whatever its
        // path names now; read_dir opens its own descriptor of it.
        fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
    }

    /// The metadata of `rel` itself (a link is described, not followed;
    /// a link on the way to it is an error).
    pub fn metadata(&self, rel: &Path) -> io::Result<Metadata> {
        match self.open_at(rel, libc::O_PATH) {
            Ok(fd) => File::from(fd).metadata(),
            // O_PATH | O_NOFOLLOW opens a final symbolic link itself, but
            // RESOLVE_NO_SYMLINKS refuses it: look at it through its parent.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                let parent = rel.parent().unwrap_or(Path::new(""));
                let name = rel.file_name().ok_or(e)?;
                let dir = self.open_at(parent, libc::O_PATH | libc::O_DIRECTORY)?;
                fs::symlink_metadata(
                    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name),
                )
            }
            Err(e) => Err(e),
        }
    }

    /// The target of symbolic link `rel` (not followed).
    pub fn read_link(&self, rel: &Path) -> io::Result<std::path::PathBuf> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let dir = self.open_at(parent, libc::O_PATH | libc::O_DIRECTORY)?;
        fs::read_link(Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name))
    }
}

/// The kernel's `struct open_how` (libc's cannot be built outside libc).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"inside").unwrap();
        fs::write(tmp.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("d/link")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("up")).unwrap();
        let b = Beneath::open(&root).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut b.file(Path::new("d/f")).unwrap(), &mut text).unwrap();
        assert_eq!(text, "inside");
        assert!(b.file(Path::new("d/link")).is_err(), "a final link");
        assert!(b.file(Path::new("up/secret")).is_err(), "a link on the way");
        assert!(b.file(Path::new("../secret")).is_err(), "out of the root");
        assert!(b.read_dir(Path::new("up")).is_err());
        assert!(
            b.metadata(Path::new("d/link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            b.read_link(Path::new("d/link")).unwrap(),
            tmp.path().join("secret")
        );
        let names: Vec<_> = b
            .read_dir(Path::new(""))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2);
        assert!(b.metadata(Path::new("")).unwrap().is_dir());
    }
}
