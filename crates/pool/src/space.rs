//! Filesystem facts: type and free space.

use std::path::Path;

/// `statfs` magic of btrfs.
pub const BTRFS_MAGIC: i64 = 0x9123_683E;
/// `statfs` magic of XFS.
pub const XFS_MAGIC: i64 = 0x5846_5342;
/// `statfs` magic of ZFS.
pub const ZFS_MAGIC: i64 = 0x2FC1_2FC1;

/// Size and free space of the filesystem holding a path.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Space {
    /// Total bytes.
    pub total: u64,
    /// Bytes available to unprivileged users.
    pub available: u64,
    /// Bytes in use.
    pub used: u64,
}

/// Whether an I/O error means the filesystem (or a quota on it) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Free and total space of the filesystem holding `path`.
pub fn space(path: &Path) -> std::io::Result<Space> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frag = s.fragment_size();
    let total = s.blocks() * frag;
    let free = s.blocks_free() * frag;
    Ok(Space {
        total,
        available: s.blocks_available() * frag,
        used: total.saturating_sub(free),
    })
}

/// The `statfs` type magic of the filesystem holding `path`.
pub fn fs_magic(path: &Path) -> std::io::Result<i64> {
    let s = nix::sys::statfs::statfs(path).map_err(std::io::Error::from)?;
    Ok(s.filesystem_type().0 as i64)
}

/// A human name for a filesystem magic.
pub fn fs_name(magic: i64) -> &'static str {
    match magic {
        BTRFS_MAGIC => "btrfs",
        XFS_MAGIC => "xfs",
        ZFS_MAGIC => "zfs",
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0xCAFE_CAFE => "bcachefs",
        _ => "unknown",
    }
}

/// Formats a byte count for people: `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses `20G`, `512M`, `1T`, `4096` into bytes (binary multiples).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("20G"), Some(20 << 30));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1x"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }
}
