//! Which OS user each server runs as, and what that fences off: `init`
//! chooses the sandbox uids, `doctor` checks the running servers use them.

use pgfork_os::{ProcessId, RunAs, UidRange};
use pgfork_pool::meta::BranchRow;

use crate::config::Config;
use crate::{EngineError, Result};

/// What is isolated from what, in one sentence for `init` and `doctor`.
pub fn describe(uids: Option<UidRange>, run_as: &RunAs) -> String {
    match uids {
        Some(range) => format!(
            "each branch's server runs as an OS uid of its own from {range} and owns only its \
             own directory, socket and log; views of snapshots run as uid {}; sources and \
             standbys run as '{}'; meta.db, logs and snapshots of branches are root's",
            range.scratch(),
            run_as.name
        ),
        None => not_root(run_as),
    }
}

/// The warning for a pgfork that does not run as root.
pub fn not_root(run_as: &RunAs) -> String {
    format!(
        "pgfork does not run as root, so every server runs as '{}': a superuser session in one \
         branch (a PostgreSQL bug, say) could read and change every other branch, snapshot and \
         source of this home, and meta.db. Run pgfork as root for an OS uid per branch",
        run_as.name
    )
}

/// Refuses a range that holds a user of this machine: that user would
/// own the files of branches given its uid.
pub fn check_range(range: UidRange) -> Result<()> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let taken: Vec<String> = passwd
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let uid: u32 = fields.nth(1)?.parse().ok()?;
            range.contains(uid).then(|| format!("{name} ({uid})"))
        })
        .collect();
    if !taken.is_empty() {
        return Err(EngineError::Config(format!(
            "the sandbox uid range {range} holds users of this machine: {}; choose another range \
             (pgfork init --branch-uids FIRST-LAST)",
            taken.join(", ")
        )));
    }
    Ok(())
}

/// The effective uid of a running process, from `/proc`.
fn uid_of(pid: ProcessId) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.pid)).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// What `doctor` says of the isolation: `(status, detail)` lines.
pub fn check(config: &Config, branches: &[BranchRow]) -> Vec<(&'static str, String)> {
    if config.uids.is_none() {
        return vec![("warn", not_root(&config.run_as))];
    }
    let mut out = vec![("ok", describe(config.uids, &config.run_as))];
    let shared: Vec<&str> = branches
        .iter()
        .filter(|b| b.uid.is_none())
        .map(|b| b.name.as_str())
        .collect();
    if !shared.is_empty() {
        out.push((
            "warn",
            format!(
                "made before sandboxes, these branches run as '{}' until their next start: {} \
                 (pgfork branch stop NAME && pgfork branch start NAME)",
                config.run_as.name,
                shared.join(", ")
            ),
        ));
    }
    for b in branches {
        let (Some(uid), Some(pm)) = (b.uid, b.postmaster.filter(ProcessId::is_alive)) else {
            continue;
        };
        match uid_of(pm) {
            Some(actual) if actual == uid => {}
            Some(actual) => out.push((
                "fail",
                format!(
                    "branch {} runs as uid {actual}, not its own uid {uid}: restart it \
                     (pgfork branch stop {0} && pgfork branch start {0})",
                    b.name
                ),
            )),
            None => {}
        }
    }
    out
}
