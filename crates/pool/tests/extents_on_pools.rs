//! Extent comparison on real copy-on-write pools: a clone shares every
//! block with its origin until it writes one, and exactly the written
//! pages show up as changed. Needs the pools `scripts/test.sh` mounts
//! (PGFORK_TEST_XFS, PGFORK_TEST_BTRFS); a missing pool is a failure.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use pgfork_pool::Driver;
use pgfork_pool::extents::{Changes, changed_pages, unshared_bytes, unshared_tree_bytes};

fn pool(var: &str, name: &str) -> PathBuf {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: run scripts/test.sh (as root), which mounts the test pools")
    });
    let dir = dir.join(format!("extents-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_page(path: &std::path::Path, page: u64) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(page * 8192)).unwrap();
    f.write_all(&[0xAB; 8192]).unwrap();
}

fn exactly_the_written_pages_differ(var: &str, driver: Driver) {
    let base = pool(var, driver.name());
    let origin = base.join("origin");
    driver.create_root(&origin, None).unwrap();
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(origin.join("16384"), &data).unwrap();
    std::fs::write(origin.join("16385"), &data[..8192]).unwrap();
    let clone = base.join("clone");
    driver.clone_dir(&origin, &clone).unwrap();

    let file = clone.join("16384");
    assert_eq!(
        changed_pages(&file, &origin.join("16384"), 8192).unwrap(),
        Changes::None
    );
    write_page(&file, 100);
    write_page(&file, 7);
    assert_eq!(
        changed_pages(&file, &origin.join("16384"), 8192).unwrap(),
        Changes::Pages(vec![7, 100])
    );
    assert_eq!(
        unshared_bytes(&file, &origin.join("16384")).unwrap(),
        2 * 8192
    );
    std::fs::write(clone.join("new"), b"x").unwrap();
    assert_eq!(
        changed_pages(&clone.join("new"), &origin.join("new"), 8192).unwrap(),
        Changes::All
    );
    let tree = unshared_tree_bytes(&clone, &origin).unwrap();
    assert!((2 * 8192..2 * 8192 + 8192).contains(&tree), "{tree}");

    driver.remove(&clone).unwrap();
    driver.remove(&origin).unwrap();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn reflink_clones_on_xfs() {
    exactly_the_written_pages_differ("PGFORK_TEST_XFS", Driver::Reflink);
}

#[test]
fn subvolume_snapshots_on_btrfs() {
    exactly_the_written_pages_differ("PGFORK_TEST_BTRFS", Driver::Btrfs);
}

#[test]
fn reflink_clones_on_btrfs() {
    exactly_the_written_pages_differ("PGFORK_TEST_BTRFS", Driver::Reflink);
}
