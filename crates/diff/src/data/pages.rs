//! Which heap pages of a table differ between two sides.

use std::path::Path;

use pgfork_pool::extents::{Changes, changed_pages};

use crate::DiffError;

/// PostgreSQL's page size.
pub const PAGE: u64 = 8192;
/// Pages per 1 GiB segment file.
const SEGMENT_PAGES: u64 = (1 << 30) / PAGE;

/// The heap pages to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageSet {
    /// Every block is shared: nothing to read.
    None,
    /// These block numbers, sorted.
    Some(Vec<u64>),
    /// The whole table.
    All,
}

impl PageSet {
    /// Contiguous runs `[first, last]` of the pages.
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let PageSet::Some(pages) = self else {
            return Vec::new();
        };
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &p in pages {
            match runs.last_mut() {
                Some(r) if r.1 + 1 == p => r.1 = p,
                _ => runs.push((p, p)),
            }
        }
        runs
    }

    /// How many pages.
    pub fn len(&self) -> u64 {
        match self {
            PageSet::None => 0,
            PageSet::Some(p) => p.len() as u64,
            PageSet::All => u64::MAX,
        }
    }

    /// Whether there is nothing to read.
    pub fn is_empty(&self) -> bool {
        *self == PageSet::None
    }
}

fn segment(dir: &Path, file: &str, n: u64) -> std::path::PathBuf {
    if n == 0 {
        dir.join(file)
    } else {
        dir.join(format!("{file}.{n}"))
    }
}

/// Heap pages of a table that differ between the file `old_file` under
/// `old_dir` and `new_file` under `new_dir`. A table whose file was
/// rewritten (another relfilenode) differs everywhere.
pub fn changed_heap_pages(
    old_dir: &Path,
    old_file: &str,
    new_dir: &Path,
    new_file: &str,
) -> Result<PageSet, DiffError> {
    if old_file != new_file {
        return Ok(PageSet::All);
    }
    let mut pages = Vec::new();
    for n in 0.. {
        let (a, b) = (segment(new_dir, new_file, n), segment(old_dir, old_file, n));
        if !a.exists() && !b.exists() {
            break;
        }
        // A segment on one side only: all of it differs.
        let (clone, origin) = if a.exists() { (a, b) } else { (b, a) };
        let io = |e| DiffError::Io {
            context: format!("compare extents of {}", clone.display()),
            source: e,
        };
        match changed_pages(&clone, &origin, PAGE).map_err(io)? {
            Changes::None => {}
            Changes::Pages(p) => pages.extend(p.into_iter().map(|p| n * SEGMENT_PAGES + p)),
            Changes::All => {
                let len = std::fs::metadata(&clone).map(|m| m.len()).unwrap_or(0);
                pages.extend((0..len.div_ceil(PAGE)).map(|p| n * SEGMENT_PAGES + p));
            }
        }
    }
    Ok(if pages.is_empty() {
        PageSet::None
    } else {
        PageSet::Some(pages)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_group_into_runs() {
        let set = PageSet::Some(vec![1, 2, 3, 7, 9, 10]);
        assert_eq!(set.runs(), vec![(1, 3), (7, 7), (9, 10)]);
        assert_eq!(set.len(), 6);
        assert!(PageSet::None.runs().is_empty());
    }

    #[test]
    fn a_rewritten_table_differs_everywhere() {
        let dir = std::path::Path::new("/nonexistent");
        assert_eq!(
            changed_heap_pages(dir, "base/1/100", dir, "base/1/200").unwrap(),
            PageSet::All
        );
    }
}
