//! Pool images: `init --pool-image` makes and loop-mounts an XFS or btrfs
//! image in a fresh home, and any later command mounts it again if it was
//! unmounted (as after a reboot).

mod common;

use std::process::Command;

use common::*;

/// Makes a 1G image of `fs`, puts data in it, unmounts it, and checks that
/// the next commands mount it again with the data intact.
fn image_is_mounted_again_after_umount(fs: &str, driver: &str) {
    // The home lives on the plain pool: the image file sits in the home.
    let h = TestHome::bare(Pool::Plain, &format!("img-{fs}"));
    let report = h.init(&["--pool-image", "1G", "--fs", fs]);
    assert_eq!(report["driver"], driver);
    assert_eq!(report["filesystem"], fs);
    assert_eq!(report["copy_on_write"], true);
    let image = h.root.join("pool.img");
    assert_eq!(report["image"], image.to_str().unwrap());
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 1 << 30);
    assert!(is_mountpoint(&h.pool_dir()), "the image is not mounted");

    h.create_source("disk");
    load_items(&mut connect(&h.source_dsn("disk")), "base", 50);
    h.create_branch("onimage", "disk", &[]);
    h.ok(&["branch", "stop", "onimage"]);
    h.ok(&["source", "stop", "disk"]);
    let status = Command::new("umount").arg(h.pool_dir()).status().unwrap();
    assert!(status.success(), "umount failed");
    assert!(!is_mountpoint(&h.pool_dir()));

    // The next command, whatever it is, mounts the image again.
    let out = h.run(&["source", "list"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was not mounted"),
        "no warning that the pool was mounted again"
    );
    assert!(is_mountpoint(&h.pool_dir()));
    h.ok(&["source", "start", "disk"]);
    assert_eq!(tagged(&mut connect(&h.source_dsn("disk")), "base"), 50);
    assert_eq!(h.json(&["branch", "start", "onimage"])["status"], "running");
    assert_eq!(tagged(&mut connect(&h.branch_dsn("onimage")), "base"), 50);
    h.assert_settled();
}

#[test]
fn xfs_pool_image_is_mounted_again_after_umount() {
    image_is_mounted_again_after_umount("xfs", "reflink");
}

#[test]
fn btrfs_pool_image_is_mounted_again_after_umount() {
    image_is_mounted_again_after_umount("btrfs", "btrfs");
}
