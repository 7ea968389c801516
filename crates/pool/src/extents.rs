//! Which parts of a clone no longer share blocks with its origin, from the
//! file systems' own extent maps (FIEMAP). A clone made by reflink or a
//! btrfs snapshot maps every block to the same physical address as its
//! origin until one side writes it; comparing the two maps finds exactly
//! what changed, at the cost of reading metadata, not data.

use crate::beneath::Beneath;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Location unknown (delayed allocation, inline, encoded, ...): never "shared".
const UNCERTAIN: u32 = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400;
const BATCH: usize = 256;

const _: () = assert!(std::mem::size_of::<FiemapExtent>() == 56);
const _: () = assert!(std::mem::offset_of!(Fiemap, extents) == FIEMAP_HEADER);

/// `struct fiemap_extent`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

/// `struct fiemap` with room for a batch of extents.
#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; BATCH],
}

/// `FS_IOC_FIEMAP`, whose number encodes the size of the header only.
const FIEMAP_HEADER: usize = 32;
nix::ioctl_readwrite_bad!(
    fs_ioc_fiemap,
    nix::request_code_readwrite!(b'f', 11, FIEMAP_HEADER),
    Fiemap
);

/// One mapped range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    logical: u64,
    physical: u64,
    length: u64,
    /// Its location is not known for sure, so it cannot count as shared.
    uncertain: bool,
}

/// The extents of `file`, after writing back its dirty pages (so that
/// copy-on-write has happened for everything written so far).
fn extents(file: &File) -> io::Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut map = Box::new(Fiemap {
            start,
            length: u64::MAX - start,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: BATCH as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); BATCH],
        });
        // SAFETY: `map` is a valid fiemap with room for `extent_count` extents.
        unsafe { fs_ioc_fiemap(file.as_raw_fd(), &mut *map) }.map_err(io::Error::from)?;
        let n = map.mapped_extents as usize;
        if n == 0 {
            return Ok(out);
        }
        let mut last = false;
        for e in &map.extents[..n] {
            out.push(Extent {
                logical: e.logical,
                physical: e.physical,
                length: e.length,
                uncertain: e.flags & UNCERTAIN != 0,
            });
            last |= e.flags & FIEMAP_EXTENT_LAST != 0;
        }
        let tail = map.extents[n - 1];
        if last {
            return Ok(out);
        }
        start = tail.logical + tail.length;
    }
}

/// Where byte `offset` of a file lives: `None` for a hole, `Some(None)` for
/// an uncertain location, `Some(Some(physical))` otherwise.
fn locate(map: &[Extent], offset: u64) -> Option<Option<u64>> {
    let i = map.partition_point(|e| e.logical + e.length <= offset);
    let e = map.get(i).filter(|e| e.logical <= offset)?;
    Some((!e.uncertain).then(|| e.physical + (offset - e.logical)))
}

/// Byte ranges `[start, end)` within `0..size` where `a` and `b` do not
/// map to the same physical blocks.
fn differing_ranges(a: &[Extent], b: &[Extent], size: u64) -> Vec<(u64, u64)> {
    let mut cuts: Vec<u64> = vec![0, size];
    for e in a.iter().chain(b) {
        cuts.push(e.logical.min(size));
        cuts.push((e.logical + e.length).min(size));
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0], w[1]);
        if lo >= hi {
            continue;
        }
        let same = match (locate(a, lo), locate(b, lo)) {
            (None, None) => true,
            (Some(Some(x)), Some(Some(y))) => x == y,
            _ => false,
        };
        if !same {
            match out.last_mut() {
                Some(last) if last.1 == lo => last.1 = hi,
                _ => out.push((lo, hi)),
            }
        }
    }
    out
}

/// How a file of a clone differs from the same file of its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Every block is shared: nothing changed.
    None,
    /// These pages (sorted, of the given page size) changed.
    Pages(Vec<u64>),
    /// The origin has no such file: all of it is new.
    All,
}

/// Which `page_size` pages of `clone` no longer share blocks with `origin`
/// (pages past the end of `origin` count as changed).
pub fn changed_pages(clone: &Path, origin: &Path, page_size: u64) -> io::Result<Changes> {
    let a = open_plain(clone)?;
    let b = match open_plain(origin) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Changes::All),
        Err(e) => return Err(e),
    };
    let size = a.metadata()?.len().max(b.metadata()?.len());
    let ranges = differing_ranges(&extents(&a)?, &extents(&b)?, size);
    if ranges.is_empty() {
        return Ok(Changes::None);
    }
    let mut pages: Vec<u64> = Vec::new();
    for (lo, hi) in ranges {
        for p in lo / page_size..hi.div_ceil(page_size) {
            if pages.last() != Some(&p) {
                pages.push(p);
            }
        }
    }
    Ok(Changes::Pages(pages))
}

/// Opens a regular file to read its extent map: a symbolic link or a FIFO
/// that a server planted in its data directory is refused, never followed
/// or waited on.
fn open_plain(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// Bytes of `clone` that no longer share blocks with `origin`.
pub fn unshared_bytes(clone: &Path, origin: &Path) -> io::Result<u64> {
    unshared(open_plain(clone)?, origin)
}

fn unshared(a: File, origin: &Path) -> io::Result<u64> {
    let size = a.metadata()?.len();
    let b = match open_plain(origin) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(size),
        Err(e) => return Err(e),
    };
    let ranges = differing_ranges(&extents(&a)?, &extents(&b)?, size);
    Ok(ranges.iter().map(|(lo, hi)| hi - lo).sum())
}

/// Bytes of every file under `clone` that no longer share blocks with the
/// same file under `origin`: what a branch costs its pool. The branch's
/// tree is read through [`Beneath`]: its server may be changing it.
pub fn unshared_tree_bytes(clone: &Path, origin: &Path) -> io::Result<u64> {
    let tree = Beneath::open(clone)?;
    let mut total = 0;
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in tree.read_dir(&rel)? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(rel);
            } else if kind.is_file() {
                match tree
                    .file(&rel)
                    .and_then(|a| unshared(a, &origin.join(&rel)))
                {
                    Ok(n) => total += n,
                    // A file the server removed meanwhile costs nothing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(logical: u64, physical: u64, length: u64) -> Extent {
        Extent {
            logical,
            physical,
            length,
            uncertain: false,
        }
    }

    #[test]
    fn shared_maps_have_no_differences() {
        let a = vec![ext(0, 1000, 8192), ext(8192, 50_000, 8192)];
        assert!(differing_ranges(&a, &a, 16384).is_empty());
    }

    #[test]
    fn a_rewritten_block_is_found() {
        // The clone rewrote bytes 4096..8192 (copy-on-write moved them).
        let origin = vec![ext(0, 1000, 16384)];
        let clone = vec![
            ext(0, 1000, 4096),
            ext(4096, 90_000, 4096),
            ext(8192, 1000 + 8192, 8192),
        ];
        assert_eq!(differing_ranges(&clone, &origin, 16384), vec![(4096, 8192)]);
        let uncertain = vec![Extent {
            uncertain: true,
            ..ext(0, 1000, 16384)
        }];
        assert_eq!(
            differing_ranges(&uncertain, &origin, 16384),
            vec![(0, 16384)]
        );
        // Growth past the origin's end, and holes on one side only.
        assert_eq!(
            differing_ranges(&[ext(0, 1000, 24576)], &origin, 24576),
            vec![(16384, 24576)]
        );
        assert_eq!(differing_ranges(&[], &origin, 16384), vec![(0, 16384)]);
    }

    #[test]
    fn a_file_against_itself_and_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![1u8; 64 * 1024]).unwrap();
        assert_eq!(changed_pages(&a, &a, 8192).unwrap(), Changes::None);
        assert_eq!(unshared_bytes(&a, &a).unwrap(), 0);
        assert_eq!(
            changed_pages(&a, &dir.path().join("missing"), 8192).unwrap(),
            Changes::All
        );
        // A byte copy on a file system without sharing differs everywhere
        // (on a copy-on-write pool a reflink would share all of it).
        let b = dir.path().join("b");
        std::fs::write(&b, std::fs::read(&a).unwrap()).unwrap();
        match changed_pages(&b, &a, 8192).unwrap() {
            Changes::Pages(p) => assert_eq!(p, (0..8).collect::<Vec<_>>()),
            Changes::None => {} // tmpfs and the like report no extents at all
            Changes::All => panic!("the origin exists"),
        }
    }
}
