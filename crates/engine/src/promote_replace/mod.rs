//! `pgfork promote BRANCH --replace`: the branch's data becomes its local
//! source's, whole, for when a row patch is the wrong tool (issue 14).
//!
//! The branch stops cleanly for a moment while its data directory is
//! cloned into a snapshot directory of the source (the pool's driver: a
//! subvolume snapshot or per-file reflinks), then runs again. The clone is
//! made the source's while the source goes on serving: its files become
//! the source's OS user's with a data directory's modes (a link or special
//! file the branch's server made is refused), it takes the source's own
//! configuration files, and it is started privately once, as a seal is,
//! so that logins become the source's (below) and it ends at a clean
//! shutdown checkpoint. Only then does the source stop (fast shutdown,
//! checked clean), and `renameat2(RENAME_EXCHANGE)` swaps the two
//! directories, so that the source's path holds a complete cluster at
//! every instant. The source starts on the new data; its old data, left in
//! the snapshot directory, is recorded as a snapshot of the source
//! (method `replaced`) that stays until someone deletes it. A snapshot of
//! the new data is taken last, for `branch create --from SOURCE`.
//!
//! Logins stay the source's. The catalog (schema, rows, grants, settings)
//! is the branch's, but who may log in, and with what, is not: every role
//! the source has gets the source's LOGIN, password and VALID UNTIL; the
//! application role gets the source's password (the branch's, which its
//! agent knows, does not carry over); the roles of the branch's members
//! are dropped as `branch unshare` drops them; an agent's role the source
//! no longer has (the agent was revoked since) is dropped as `agent
//! revoke` drops it; any other role the source does not have is made
//! NOLOGIN.
//!
//! A failure before the exchange removes the clone and leaves both servers
//! as they were. A source that does not start on the new data gets its old
//! data back. A crash is repaired by the next command's reconcile: the
//! clone holds a marker file until the replace is recorded, so the marker
//! in the source's directory says the exchange happened (the old data is
//! then recorded as the snapshot), its absence that it did not (the clone
//! is removed).
//!
//! Its parts, by step: [`checks`] refuses what must not be replaced,
//! [`stage`] makes the clone (and [`logins`] its logins) the source's,
//! [`swap`] exchanges it in, and [`interrupted`] finishes or undoes a
//! replace a crash left. This file holds the request, the report and the
//! order of the steps.

mod checks;
mod interrupted;
mod logins;
mod stage;
mod swap;

use pgfork_pg::untrusted::session;
use pgfork_pool::meta::{BranchRow, Op, OpKind, SnapshotRow, SourceRow};
use serde::Serialize;

use crate::server::Target;
use crate::{Engine, EngineError, Result, ServerKind};
use logins::read_logins;

/// In the clone's directory from before the exchange until the replace is
/// recorded: where it is, the exchange has happened.
const MARKER: &str = "pgfork-replace";

/// What `promote --replace` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplaceRequest {
    /// The branch whose data becomes its source's.
    pub branch: String,
    /// Only report what would be done.
    pub dry_run: bool,
    /// The user confirmed (`--yes`, or on a terminal).
    pub confirmed: bool,
}

/// What `promote --replace` did or would do.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaceReport {
    /// The branch whose data the source now holds.
    pub branch: String,
    /// The source.
    pub source: String,
    /// Whether the source's data was replaced (false with `--dry-run`).
    pub replaced: bool,
    /// The snapshot that keeps the source's old data until deleted
    /// (`SOURCE@N`).
    pub old_data_snapshot: Option<String>,
    /// The snapshot of the new data taken afterwards, which `branch create
    /// --from SOURCE` uses.
    pub new_snapshot: Option<String>,
    /// What was done (or would be), in order.
    pub steps: Vec<String>,
    /// Roles of the branch's catalog that cannot log in to the source
    /// afterwards, each with what was done and why.
    pub logins_removed: Vec<String>,
    /// How long the source did not serve, in milliseconds.
    pub source_downtime_ms: Option<u64>,
    /// Things to know (roles only the old data has, a snapshot not taken).
    pub warnings: Vec<String>,
}

/// Ignores "not there" and, on a read-only snapshot (finished before), "read-only".
fn tolerate(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(()),
        other => other,
    }
}

/// How far a replace got, for what a failure must undo.
struct Staged {
    /// The snapshot row and directory the clone is made in.
    id: i64,
    /// The branch was running before, and is to run after.
    branch_was_running: bool,
}

impl Engine {
    /// Makes a branch's data its local source's, keeping the source's old
    /// data as a snapshot (see the module).
    pub fn promote_replace(&mut self, req: &ReplaceRequest) -> Result<ReplaceReport> {
        self.admin_only("replace a source's data with a branch's")?;
        let branch = self.branch_row(&req.branch)?;
        let source = self.source_row(&branch.source)?;
        self.check_replace(&source, &branch)?;
        let mut report = ReplaceReport {
            branch: branch.name.clone(),
            source: source.name.clone(),
            replaced: false,
            old_data_snapshot: None,
            new_snapshot: None,
            steps: plan(&source, &branch),
            logins_removed: Vec::new(),
            source_downtime_ms: None,
            warnings: Vec::new(),
        };
        if req.dry_run {
            return Ok(report);
        }
        if !req.confirmed {
            return Err(EngineError::WrongState(format!(
                "promote --replace replaces all data of source '{}' with branch '{}''s (its old data is kept as a \
                 snapshot): pass --yes, or confirm on a terminal (--dry-run shows the steps)",
                source.name, branch.name
            )));
        }
        self.check_free_space()?;
        self.claim(Target::Source(&source.name), OpKind::Replacing)?;
        if let Err(e) = self.claim(Target::Branch(&branch.name), OpKind::Stopping) {
            self.settle(Target::Source(&source.name), None)?;
            return Err(e);
        }
        // Read again under the claims.
        let claimed = self
            .source_row(&source.name)
            .and_then(|s| Ok((s, self.branch_row(&branch.name)?)))
            .and_then(|(s, b)| {
                self.check_replace(&s, &b)?;
                Ok((s, b))
            });
        let (source, branch) = match claimed {
            Ok(rows) => rows,
            Err(e) => {
                self.settle(Target::Branch(&branch.name), None)?;
                self.settle(Target::Source(&source.name), None)?;
                return Err(e);
            }
        };
        self.replace_claimed(&source, &branch, &mut report)?;
        Ok(report)
    }

    /// The replace, with the source and the branch claimed.
    fn replace_claimed(
        &mut self,
        source: &SourceRow,
        branch: &BranchRow,
        report: &mut ReplaceReport,
    ) -> Result<()> {
        let marker = self.source_dir(&source.name).join(MARKER);
        // A marker left by an earlier replace whose last step failed: it
        // must go, or a crash of this one would be taken for a swap.
        let on_source = tolerate(std::fs::remove_file(&marker))
            .map_err(EngineError::io("remove", &marker))
            .and_then(|()| {
                session::maintenance(&self.endpoint(ServerKind::Source, &source.name, source.port))
                    .map_err(EngineError::sql("connect to the source"))
            })
            .and_then(|mut c| read_logins(&mut c));
        let on_source = match on_source {
            Ok(l) => l,
            Err(e) => {
                self.settle(Target::Branch(&branch.name), None)?;
                self.settle(Target::Source(&source.name), None)?;
                return Err(e);
            }
        };
        let id = match self.meta.write(|c| {
            SnapshotRow::insert_creating(c, &source.name, None, Op::mine(OpKind::Replacing))
        }) {
            Ok(id) => id,
            Err(e) => {
                self.settle(Target::Branch(&branch.name), None)?;
                self.settle(Target::Source(&source.name), None)?;
                return Err(e.into());
            }
        };
        let staged = Staged {
            id,
            branch_was_running: branch.postmaster.is_some_and(|p| p.is_alive()),
        };
        let label = format!("{}@{id}", source.name);
        if let Err(e) = self.stage(source, branch, &on_source, &staged, report) {
            self.unstage(source, &branch.name, &staged);
            return Err(e);
        }
        self.swap(source, branch, &staged, report)?;
        report.replaced = true;
        report.old_data_snapshot = Some(label);
        // Branches made `--from` the source take its newest snapshot: one
        // of the new data (without it, the next such branch takes one).
        match self.take_snapshot_opts(&source.name, true) {
            Ok(s) => report.new_snapshot = Some(s.id),
            Err(e) => report.warnings.push(format!(
                "the source holds the new data, but no snapshot of it was taken ({e}); the next \
                 `pgfork branch create --from {}` takes one",
                source.name
            )),
        }
        Ok(())
    }
}

/// What a replace of `source` with `branch` does, for `--dry-run`.
fn plan(source: &SourceRow, branch: &BranchRow) -> Vec<String> {
    let (s, b) = (&source.name, &branch.name);
    let running = branch.postmaster.is_some_and(|p| p.is_alive());
    vec![
        if running {
            format!("stop branch {b} (fast shutdown), clone its data directory, start {b} again")
        } else {
            format!("clone branch {b}'s data directory (it is not running)")
        },
        format!(
            "make the clone source {s}'s while {s} serves: its OS user and modes, its configuration files, \
             its logins (roles keep the source's passwords; the branch's password and member roles do \
             not carry over)"
        ),
        format!(
            "stop source {s} (fast shutdown), swap the clone in atomically, start {s} on port {}",
            source.port
        ),
        format!("keep {s}'s old data as a snapshot ({s}@N) until you delete it"),
        format!(
            "take a snapshot of the new data, which `pgfork branch create --from {s}` then uses"
        ),
    ]
}
