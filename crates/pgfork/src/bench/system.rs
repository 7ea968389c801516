//! Facts read from the kernel: pool usage after writeback, memory, and the
//! proportional memory (PSS) of a postmaster's processes.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use pgfork_pool::{Driver, space};

/// Bytes in use on the pool once pending writes have reached the
/// filesystem's accounting.
///
/// Delayed allocation (XFS) and transaction commits (btrfs) update what
/// statvfs reports only when data is written back, so the filesystem is
/// synced first. On btrfs, deleted subvolumes are freed by a background
/// cleaner: wait for it too, or a "before" figure would still include
/// branches deleted earlier.
pub fn settled_used(pool: &Path, driver: Driver) -> Result<u64> {
    if driver == Driver::Btrfs {
        let _ = Command::new("btrfs")
            .args(["subvolume", "sync"])
            .arg(pool)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    syncfs(pool)?;
    // A second sync: on btrfs the first commit can leave freed extents
    // pinned until the next one.
    syncfs(pool)?;
    Ok(space::space(pool)
        .with_context(|| format!("statvfs {}", pool.display()))?
        .used)
}

/// Flushes the filesystem holding `path`.
pub fn syncfs(path: &Path) -> Result<()> {
    let dir = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: syncfs only reads the descriptor, which lives until after the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncfs {}", path.display()));
    }
    Ok(())
}

/// A field of /proc/meminfo, in bytes.
pub fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// The kernel release.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Sum of PSS over a postmaster and its children, in bytes, and the number
/// of processes: the whole server, shared memory counted in proportion to
/// the processes that map it.
///
/// Children are found by parent pid, not by process group: every child of
/// a postmaster calls `setsid()` (InitPostmasterChild), so none shares the
/// postmaster's group.
pub fn server_pss(postmaster: i32) -> (u64, usize) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    let mut total = 0;
    let mut count = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != postmaster && parent(pid) != Some(postmaster) {
            continue;
        }
        if let Some(pss) = pss(pid) {
            total += pss;
            count += 1;
        }
    }
    (total, count)
}

/// The parent pid: field 4 of /proc/PID/stat, read after the command
/// name, which may hold spaces or parentheses.
fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn pss(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_pss(&text)
}

fn parse_pss(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup.lines().find_map(|line| {
        let kib: u64 = line
            .strip_prefix("Pss:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pss_and_parents() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  9000 kB\nPss:  1234 kB\nPss_Anon: 12 kB\n";
        assert_eq!(parse_pss(rollup), Some(1234 * 1024));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        assert_eq!(parent(child.id() as i32), Some(me));
        let (pss, n) = server_pss(me);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(n, 2, "this process and its child");
        assert!(pss > 0);
        assert!(meminfo("MemTotal").is_some_and(|m| m > 0));
    }
}
