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

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use pgfork_mask::MaskRules;
use pgfork_os::ProcessId;
use pgfork_pg::conf::{PGFORK_CONF, Profile, ServerConf, write_owned};
use pgfork_pg::server::running_postmaster;
use pgfork_pg::sql::{quote_ident, quote_literal};
use pgfork_pg::untrusted::session::{self, Endpoint};
use pgfork_pg::{StopMode, control};
use pgfork_pool::meta::{BranchRow, Op, OpKind, PolicyRow, RunState, SnapshotRow, SourceRow};
use serde::Serialize;

use crate::import::exchange;
use crate::reconcile::ReconcileReport;
use crate::seal::{Seal, atomic_filter};
use crate::server::{Target, after_start, stop_server};
use crate::{Engine, EngineError, Result, ServerKind, agent_roles, sharing};

/// In the clone's directory from before the exchange until the replace is
/// recorded: where it is, the exchange has happened.
const MARKER: &str = "pgfork-replace";

/// The files of a data directory that configure its server rather than
/// hold data: the source's own are kept.
const CONFIG_FILES: [&str; 5] = [
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
    PGFORK_CONF,
];

/// Files of a stopped cluster that describe its last server, not its data.
const RUNTIME_FILES: [&str; 2] = ["postmaster.opts", "current_logfiles"];

/// How deep a chain of branches of branches is followed to its source.
const MAX_LINEAGE: usize = 64;

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

/// A role's login as the source has it.
#[derive(Debug, Clone)]
struct Login {
    name: String,
    can_login: bool,
    /// The stored verifier (SCRAM or md5), if any.
    password: Option<String>,
    /// `rolvaliduntil` as text (UTC, ISO), if set.
    valid_until: Option<String>,
}

/// Every role but the predefined ones, with its login, as the superuser
/// reads them (pg_authid holds the verifiers).
const LOGINS: &str = "
SELECT rolname::pg_catalog.text, rolcanlogin, rolpassword, rolvaliduntil::pg_catalog.text
  FROM pg_catalog.pg_authid WHERE rolname OPERATOR(pg_catalog.!~) '^pg_' ORDER BY 1";

fn read_logins(client: &mut postgres::Client) -> Result<Vec<Login>> {
    Ok(client
        .query(LOGINS, &[])
        .map_err(EngineError::sql("read the roles and their logins"))?
        .iter()
        .map(|r| Login {
            name: r.get(0),
            can_login: r.get(1),
            password: r.get(2),
            valid_until: r.get(3),
        })
        .collect())
}

/// `ALTER ROLE` giving `name` the login `like` has.
fn login_sql(name: &str, like: &Login) -> String {
    format!(
        "ALTER ROLE {} {} PASSWORD {} VALID UNTIL {}",
        quote_ident(name),
        if like.can_login { "LOGIN" } else { "NOLOGIN" },
        like.password
            .as_deref()
            .map(quote_literal)
            .unwrap_or_else(|| "NULL".into()),
        quote_literal(like.valid_until.as_deref().unwrap_or("infinity")),
    )
}

/// What [`fence_logins`] did.
#[derive(Debug, Default)]
struct Fenced {
    removed: Vec<String>,
    warnings: Vec<String>,
}

/// Makes the logins of the cluster served at `ep` (the clone of branch
/// `branch`, started privately) the source's, as the module says.
fn fence_logins(
    ep: &Endpoint,
    source: &SourceRow,
    branch: &str,
    on_source: &[Login],
) -> Result<Fenced> {
    let mut fenced = Fenced::default();
    let mut su = session::maintenance(ep).map_err(EngineError::sql("connect to the clone"))?;
    let here = read_logins(&mut su)?;
    let member_prefix = sharing::member_role("");
    for role in &here {
        let name = role.name.as_str();
        if name == source.role {
            continue; // armed below, with the source's password
        }
        if let Some(agent) = name.strip_prefix(&member_prefix) {
            // A member's role on the branch, as `branch unshare` drops it
            // (what it owns goes to the application role).
            let dropped = session::superuser_in(ep, &source.database)
                .map_err(EngineError::sql("connect to the clone's database"))
                .and_then(|mut db| sharing::disarm_member(&mut db, &source.role, agent));
            fenced.removed.push(match dropped {
                Ok(()) => format!("{name}: dropped (the role of a member of branch '{branch}')"),
                Err(e) => {
                    lock(&mut su, name)?;
                    format!(
                        "{name}: NOLOGIN (a member of branch '{branch}'; could not drop it: {e})"
                    )
                }
            });
            continue;
        }
        if let Some(like) = on_source.iter().find(|l| l.name == name) {
            su.batch_execute(&login_sql(name, like))
                .map_err(EngineError::sql(&format!(
                    "give {name} its login on the source"
                )))?;
            if role.can_login && !like.can_login {
                fenced
                    .removed
                    .push(format!("{name}: NOLOGIN, as on the source"));
            }
            continue;
        }
        if let Some(agent) = name.strip_prefix(agent_roles::ROLE_PREFIX) {
            // An agent revoked since the branch's snapshot: its role goes
            // as `agent revoke` drops it.
            let dropped = agent_roles::drop_role(ep, source, agent);
            fenced.removed.push(match dropped {
                Ok(_) => format!(
                    "{name}: dropped (the role of agent '{agent}', which the source no longer has)"
                ),
                Err(e) => {
                    lock(&mut su, name)?;
                    format!("{name}: NOLOGIN (the source no longer has it; could not drop it: {e})")
                }
            });
            continue;
        }
        if role.can_login {
            lock(&mut su, name)?;
            fenced
                .removed
                .push(format!("{name}: NOLOGIN (the source has no such role)"));
        }
    }
    // The branch's password of the application role is its agent's: the
    // source's comes back, with the checks every hand-over of it makes.
    crate::branch::arm_app_role(&mut su, &source.role, &source.password)?;
    for gone in on_source.iter().filter(|l| {
        l.can_login
            && !here.iter().any(|h| h.name == l.name)
            // An agent's role is made again at its next proxy session.
            && !l.name.starts_with(agent_roles::ROLE_PREFIX)
    }) {
        fenced.warnings.push(format!(
            "role {} logs in to source '{}' but is not in branch '{branch}''s data: only the old data has it; \
             create it again if the application needs it",
            gone.name, source.name
        ));
    }
    Ok(fenced)
}

fn lock(su: &mut postgres::Client, role: &str) -> Result<()> {
    su.batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote_ident(role)))
        .map_err(EngineError::sql(&format!("make {role} NOLOGIN")))
}

/// Makes the clone at `root` hold only directories and regular files (a
/// link or special file, which the branch's server could have made, is
/// refused), with the modes of a data directory whose top has `dir_mode`
/// (0700, or 0750 with group access).
fn harden(root: &Path, dir_mode: u32, branch: &str) -> Result<()> {
    let file_mode = dir_mode & 0o640;
    fn walk(root: &Path, rel: &Path, modes: (u32, u32), branch: &str) -> Result<()> {
        let dir = root.join(rel);
        for entry in std::fs::read_dir(&dir).map_err(EngineError::io("read directory", &dir))? {
            let entry = entry.map_err(EngineError::io("read directory", &dir))?;
            let rel = rel.join(entry.file_name());
            let path = root.join(&rel);
            let kind = entry.file_type().map_err(EngineError::io("stat", &path))?;
            let mode = if kind.is_dir() {
                walk(root, &rel, modes, branch)?;
                modes.0
            } else if kind.is_file() {
                modes.1
            } else {
                return Err(EngineError::UnsafeContent(format!(
                    "the data directory of branch '{branch}' holds {} {}, which pgfork does not make a \
                     source's (a PostgreSQL data directory of its own has only directories and files): \
                     nothing was changed; remove it from the branch, or promote the branch's rows instead \
                     (pgfork promote {branch})",
                    if kind.is_symlink() {
                        "a symbolic link"
                    } else {
                        "a special file"
                    },
                    rel.display()
                )));
            };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(EngineError::io("chmod", &path))?;
        }
        Ok(())
    }
    walk(root, Path::new(""), (dir_mode, file_mode), branch)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(dir_mode))
        .map_err(EngineError::io("chmod", root))
}

/// Flushes every file and directory under `root` to disk, as `initdb
/// --sync-only` does: the branch ran with `fsync = off`, and its writes
/// must be durable before they are the source's. Links are not followed
/// (a clone holds none, see [`harden`]).
fn sync_tree(root: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(root)?.sync_all()
}

/// Whether `path` exists (a link counts; it is not followed).
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
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

    /// Refuses what `--replace` must not do: a remote source's data, a
    /// stopped source (its logins are read from it), a masked branch, a
    /// source with masking rules, and anything another process is at.
    fn check_replace(&self, source: &SourceRow, branch: &BranchRow) -> Result<()> {
        self.refuse_replace_with_gates(&source.name, &branch.name)?;
        if source.mode != "local" {
            return Err(EngineError::WrongState(format!(
                "source '{}' is a {} copy of a remote database, whose data pgfork cannot replace: \
                 promote the branch's rows instead (pgfork promote {})",
                source.name, source.mode, branch.name
            )));
        }
        if let Some(masked) = self.masked_base(branch)? {
            return Err(EngineError::WrongState(format!(
                "branch '{}' comes from the masked snapshot {masked}: its data holds masked values, which must not \
                 become the source's; apply its changes by hand",
                branch.name
            )));
        }
        let policy = PolicyRow::get(self.meta.conn(), &source.name)?;
        let rules = policy
            .mask_rules
            .as_deref()
            .map(|text| MaskRules::parse("stored rules", text).map_or(true, |r| !r.is_empty()));
        if rules == Some(true) {
            return Err(EngineError::WrongState(format!(
                "source '{}' has masking rules, and --replace would keep its old data as an unmasked snapshot that \
                 branches could be made from: promote the branch's rows instead (pgfork promote {})",
                source.name, branch.name
            )));
        }
        if !source.postmaster.is_some_and(|p| p.is_alive()) {
            return Err(EngineError::WrongState(format!(
                "source '{}' is not running, and --replace reads who may log in to it: pgfork source start {}",
                source.name, source.name
            )));
        }
        let me = ProcessId::current_thread();
        let live = |op: Option<Op>| op.filter(|o| o.owner.is_alive() && o.owner != me);
        if let Some(op) = live(source.op) {
            return Err(busy(format!("source '{}'", source.name), op));
        }
        if let Some(op) = live(branch.op) {
            return Err(busy(format!("branch '{}'", branch.name), op));
        }
        // A snapshot being taken of either would copy a server being stopped.
        for s in SnapshotRow::list(self.meta.conn())? {
            let of_either = match &s.parent_branch {
                Some(b) => *b == branch.name,
                None => s.source == source.name,
            };
            if let Some(op) = live(s.op).filter(|_| of_either) {
                return Err(busy(format!("snapshot {}", s.label()), op));
            }
        }
        Ok(())
    }

    /// The masked snapshot the branch's data descends from, if any: its
    /// base, or the base of the branch that base was taken of, and so on.
    fn masked_base(&self, branch: &BranchRow) -> Result<Option<String>> {
        let mut id = branch.snapshot_id;
        for _ in 0..MAX_LINEAGE {
            let snap = SnapshotRow::get(self.meta.conn(), id)?.ok_or_else(|| {
                EngineError::UnknownSnapshot(format!("the base of {} (deleted)", branch.name))
            })?;
            if snap.masked {
                return Ok(Some(snap.label()));
            }
            let Some(parent) = &snap.parent_branch else {
                return Ok(None);
            };
            match BranchRow::get(self.meta.conn(), parent)? {
                Some(p) => id = p.snapshot_id,
                None => break,
            }
        }
        Err(EngineError::WrongState(format!(
            "pgfork cannot follow branch '{}' back to its source to tell whether its data was masked: \
             promote its rows instead (pgfork promote {})",
            branch.name, branch.name
        )))
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

    /// Before the source stops: clones the branch (stopped for it) into
    /// the snapshot directory and makes the clone the source's.
    fn stage(
        &mut self,
        source: &SourceRow,
        branch: &BranchRow,
        on_source: &[Login],
        staged: &Staged,
        report: &mut ReplaceReport,
    ) -> Result<()> {
        let clone = self.snapshot_dir(staged.id);
        let branch_dir = self.branch_dir(&branch.name);
        let src_dir = self.source_dir(&source.name);
        let owner = self.config.run_as.clone();
        self.progress
            .stage(&format!("stopping branch {} to clone it", branch.name));
        stop_server(branch.postmaster, &branch_dir, StopMode::Fast)?;
        self.tidy_groups(Some(Target::Branch(&branch.name)));
        self.meta
            .write(|c| BranchRow::set_state(c, &branch.name, RunState::Stopped, None))?;
        self.progress.stage(&format!(
            "cloning branch {} into {}",
            branch.name,
            clone.display()
        ));
        let cloned = self.config.driver.clone_filtered_as(
            &branch_dir,
            &clone,
            &atomic_filter,
            Some((owner.uid, owner.gid)),
        );
        crate::failpoint::hit("promote-replace:after-clone");
        // The branch runs again at once, as it was: the rest is the clone's.
        let restarted = if staged.branch_was_running {
            self.branch_start(&branch.name).map(|_| ())
        } else {
            self.settle(Target::Branch(&branch.name), None)
        };
        cloned?;
        restarted?;
        report.steps = vec![format!(
            "cloned branch {}'s data directory (stopped cleanly for it, then started again)",
            branch.name
        )];

        let top = std::fs::symlink_metadata(&src_dir).map_err(EngineError::io("stat", &src_dir))?;
        let dir_mode = if top.mode() & 0o050 == 0o050 {
            0o750
        } else {
            0o700
        };
        harden(&clone, dir_mode, &branch.name)?;
        for file in CONFIG_FILES {
            let to = clone.join(file);
            match std::fs::read(src_dir.join(file)) {
                Ok(bytes) => write_owned(&to, &bytes, &owner)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tolerate(std::fs::remove_file(&to)).map_err(EngineError::io("remove", &to))?
                }
                Err(e) => return Err(EngineError::io("read", &src_dir.join(file))(e)),
            }
        }
        self.progress
            .stage(&format!("making the clone source {}'s", source.name));
        let seal = Seal {
            mask: None,
            owner: &owner,
            forget_password_of: None,
        };
        let mut fenced = Fenced::default();
        self.seal_with(&clone, staged.id, &seal, |ep| {
            fenced = fence_logins(ep, source, &branch.name, on_source)?;
            Ok(())
        })?;
        report.logins_removed = fenced.removed;
        report.warnings.extend(fenced.warnings);
        sync_tree(&clone).map_err(EngineError::io("flush to disk", &clone))?;
        report.steps.push(format!(
            "made the clone source {}'s: its OS user and modes, its configuration files, its logins \
             (the branch's password and member roles do not carry over), shut down cleanly",
            source.name
        ));
        write_owned(
            &clone.join(MARKER),
            format!(
                "pgfork: branch {}'s data for source {}\n",
                branch.name, source.name
            )
            .as_bytes(),
            &owner,
        )?;
        Ok(())
    }

    /// Undoes [`Engine::stage`]: the clone goes, the branch runs again if
    /// it ran (and the failure came before it was started again), and the
    /// source, which never stopped, is left serving.
    fn unstage(&mut self, source: &SourceRow, branch: &str, staged: &Staged) {
        self.destroy_snapshot(staged.id);
        let me = ProcessId::current_thread();
        let still_ours = BranchRow::get(self.meta.conn(), branch)
            .ok()
            .flatten()
            .filter(|b| b.op.is_some_and(|o| o.owner == me));
        if let Some(row) = still_ours {
            let alive = row.postmaster.is_some_and(|p| p.is_alive())
                || running_postmaster(&self.branch_dir(branch)).is_some();
            let restarted = if staged.branch_was_running && !alive {
                self.branch_start(branch).map(|_| ())
            } else {
                self.settle(Target::Branch(branch), None)
            };
            if let Err(e) = restarted {
                self.progress.warn(&format!(
                    "branch '{branch}' could not be started again: {e}"
                ));
            }
        }
        if let Err(e) = self.settle(Target::Source(&source.name), None) {
            tracing::warn!("settling source {}: {e}", source.name);
        }
    }

    /// Stops the source, swaps the clone in, starts the source on it, and
    /// records the old data as the snapshot.
    fn swap(
        &mut self,
        source: &SourceRow,
        branch: &BranchRow,
        staged: &Staged,
        report: &mut ReplaceReport,
    ) -> Result<()> {
        let name = source.name.as_str();
        let dir = self.source_dir(name);
        let clone = self.snapshot_dir(staged.id);
        self.progress
            .stage(&format!("stopping source {name} (fast shutdown)"));
        let down = Instant::now();
        let stopped = stop_server(source.postmaster, &dir, StopMode::Fast)
            .and_then(|()| {
                self.tidy_groups(Some(Target::Source(name)));
                self.meta
                    .write(|c| SourceRow::set_state(c, name, RunState::Stopped, None))?;
                Ok(control::read(&self.config.bins, &dir)?)
            })
            .and_then(|state| match state.is_clean() {
                true => Ok(()),
                false => Err(EngineError::WrongState(format!(
                    "source '{name}' did not shut down cleanly (state '{}'), so its data was not replaced; \
                     it was started again: see its log (pgfork source info {name})",
                    state.state
                ))),
            });
        let exchanged = stopped.and_then(|()| {
            self.progress
                .stage(&format!("swapping branch {}'s data in", branch.name));
            exchange(&clone, &dir).map_err(EngineError::io("swap in the branch's data at", &dir))
        });
        if let Err(e) = exchanged {
            // The source's own data is where it was: it serves it again.
            let pm = match running_postmaster(&dir) {
                Some(pm) => Some(pm),
                None => match self.start_source(source) {
                    Ok((pm, _)) => Some(pm.pid),
                    Err(s) => {
                        self.progress
                            .warn(&format!("source '{name}' could not be started again: {s}"));
                        None
                    }
                },
            };
            self.destroy_snapshot(staged.id);
            self.settle(Target::Source(name), after_start(pm))?;
            return Err(e);
        }
        crate::failpoint::hit("promote-replace:after-exchange");
        // The swap itself must outlive a crash of the host.
        for parent in [self.home.sources(), self.home.snapshots()] {
            if let Err(e) = std::fs::File::open(&parent).and_then(|d| d.sync_all()) {
                tracing::warn!("flushing {}: {e}", parent.display());
            }
        }
        self.progress
            .stage(&format!("starting source {name} on the new data"));
        let pm = match self.start_source(source) {
            Ok((pm, _)) => pm.pid,
            Err(e) => return self.swap_back(source, staged, e),
        };
        report.source_downtime_ms = Some(down.elapsed().as_millis() as u64);
        report.steps.push(format!(
            "stopped source {name} cleanly, swapped the clone in atomically, started {name} on it"
        ));
        let recorded = self.finish_old_data(staged.id).and_then(|lsn| {
            self.meta.write(|c| {
                SnapshotRow::finish(c, staged.id, Some(&lsn), SnapshotRow::REPLACED, 0, false)?;
                SourceRow::set_state(c, name, RunState::Running, Some(pm))?;
                SourceRow::set_op(c, name, None)
            })?;
            Ok(())
        });
        if let Err(e) = recorded {
            // The source serves the new data; the next command's reconcile
            // records the old (the marker says the exchange happened).
            return Err(EngineError::WrongState(format!(
                "source '{name}' serves branch '{}''s data, but its old data could not be recorded as \
                 snapshot {name}@{} yet ({e}): the next pgfork command finishes that",
                branch.name, staged.id
            )));
        }
        let _ = std::fs::remove_file(dir.join(MARKER));
        report.steps.push(format!(
            "kept the old data as snapshot {name}@{} until you delete it",
            staged.id
        ));
        Ok(())
    }

    /// The source did not start on the new data: the old data goes back
    /// and serves again, the new data goes.
    fn swap_back<T>(&mut self, source: &SourceRow, staged: &Staged, e: EngineError) -> Result<T> {
        let name = source.name.as_str();
        let dir = self.source_dir(name);
        let clone = self.snapshot_dir(staged.id);
        if let Err(x) = exchange(&clone, &dir) {
            // Left to the reconcile, which finds the marker in the
            // source's directory and keeps the old data as the snapshot.
            return Err(EngineError::WrongState(format!(
                "source '{name}' did not start on the branch's data ({e}), and its old data could not be put \
                 back ({x}): it is kept at {}; run `pgfork doctor`",
                clone.display()
            )));
        }
        let started = self.start_source(source);
        let pm = started.as_ref().ok().map(|(pm, _)| pm.pid);
        self.destroy_snapshot(staged.id);
        self.settle(Target::Source(name), after_start(pm))?;
        let again = match started {
            Ok(_) => "it serves its old data again".to_string(),
            Err(s) => format!("its old data is back, but did not start either ({s})"),
        };
        Err(EngineError::WrongState(format!(
            "source '{name}' did not start on the branch's data, so nothing was replaced: {again}. \
             The cause: {e}"
        )))
    }

    /// Makes the old data in snapshot directory `id` a snapshot as
    /// snapshot creation leaves one: no runtime files or replication
    /// slots, branch settings, read-only. Returns its checkpoint's LSN.
    /// Runs again after a crash (what is done already is skipped).
    fn finish_old_data(&self, id: i64) -> Result<String> {
        let dir = self.snapshot_dir(id);
        let state = control::read(&self.config.bins, &dir)?;
        if !state.is_clean() {
            return Err(EngineError::WrongState(format!(
                "the old data in {} is in state '{}', not shut down",
                dir.display(),
                state.state
            )));
        }
        for file in RUNTIME_FILES {
            let path = dir.join(file);
            tolerate(std::fs::remove_file(&path)).map_err(EngineError::io("remove", &path))?;
        }
        let slots = dir.join("pg_replslot");
        if let Ok(entries) = std::fs::read_dir(&slots) {
            for entry in entries.flatten() {
                let path = entry.path();
                tolerate(std::fs::remove_dir_all(&path))
                    .map_err(EngineError::io("remove", &path))?;
            }
        }
        match ServerConf::new(5432, &self.home.run(), Profile::Branch)
            .write(&dir, &self.config.run_as)
        {
            Err(pgfork_pg::PgError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EROFS) => {}
            other => other?,
        }
        self.config.driver.make_readonly(&dir)?;
        Ok(state.checkpoint_lsn)
    }

    /// Finishes or undoes a replace a killed pgfork left (the source's op
    /// taken over by this thread): the marker in the source's directory
    /// says whether the exchange happened.
    pub(crate) fn finish_interrupted_replace(
        &mut self,
        s: &SourceRow,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let dir = self.source_dir(&s.name);
        let exchanged = present(&dir.join(MARKER));
        let staged: Vec<i64> = SnapshotRow::list(self.meta.conn())?
            .into_iter()
            .filter(|r| r.source == s.name && r.op.is_some_and(|o| o.kind == OpKind::Replacing))
            .map(|r| r.id)
            .collect();
        let pm = running_postmaster(&dir);
        let state = if pm.is_some() {
            RunState::Running
        } else {
            RunState::Stopped
        };
        if exchanged {
            for id in &staged {
                let lsn = self.finish_old_data(*id)?;
                self.meta.write(|c| {
                    SnapshotRow::finish(c, *id, Some(&lsn), SnapshotRow::REPLACED, 0, false)
                })?;
            }
            self.meta.write(|c| {
                SourceRow::set_state(c, &s.name, state, pm)?;
                SourceRow::set_op(c, &s.name, None)
            })?;
            let _ = std::fs::remove_file(dir.join(MARKER));
            let kept = staged
                .iter()
                .map(|id| format!("{}@{id}", s.name))
                .collect::<Vec<_>>()
                .join(", ");
            report.repaired.push(format!(
                "finished a replace of source {} that a killed pgfork left: it holds the branch's data{}, \
                 and its old data is snapshot {kept}",
                s.name,
                if pm.is_some() {
                    String::new()
                } else {
                    format!(" (stopped: pgfork source start {})", s.name)
                }
            ));
        } else {
            for id in &staged {
                self.destroy_snapshot(*id);
            }
            self.meta.write(|c| {
                SourceRow::set_state(c, &s.name, state, pm)?;
                SourceRow::set_op(c, &s.name, None)
            })?;
            report.repaired.push(format!(
                "undid a replace of source {} that a killed pgfork left before swapping: it keeps its data{}",
                s.name,
                if pm.is_some() {
                    String::new()
                } else {
                    format!(" (stopped: pgfork source start {})", s.name)
                }
            ));
        }
        Ok(())
    }
}

fn busy(what: String, op: Op) -> EngineError {
    EngineError::Busy {
        what,
        op: op.kind.as_str(),
        pid: op.owner.pid,
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
