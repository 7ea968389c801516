//! Creating a new cluster with `initdb`.

use std::path::Path;
use std::process::Command;

use pgfork_os::RunAs;

use crate::{PgBinaries, PgError, SUPERUSER};

/// Runs initdb into the existing, empty `datadir` as `run_as`: superuser
/// `postgres`, UTF8, C collation, data checksums on.
pub fn initdb(bins: &PgBinaries, datadir: &Path, run_as: &RunAs) -> Result<(), PgError> {
    let mut cmd = Command::new(bins.tool("initdb"));
    cmd.arg("-D")
        .arg(datadir)
        .args([
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .args([
            "--encoding=UTF8",
            "--locale=C",
            "--data-checksums",
            "--no-instructions",
        ])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .current_dir("/");
    if run_as.needs_switch() {
        use std::os::unix::process::CommandExt;
        cmd.uid(run_as.uid).gid(run_as.gid);
    }
    let out = cmd.output().map_err(|e| PgError::Command {
        program: "initdb".into(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(PgError::Command {
            program: "initdb".into(),
            detail,
        });
    }
    Ok(())
}
