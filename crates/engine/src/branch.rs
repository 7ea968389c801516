//! Branches: writable clones of a snapshot, each with its own postmaster,
//! port, socket, credentials, TTL and labels.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgfork_os::RunAs;
use pgfork_pg::conf::{self, Profile, TcpLogins};
use pgfork_pg::sql::{quote_ident, quote_literal, random_password, scram_verifier};
use pgfork_pg::{Postmaster, StopMode};
use pgfork_pool::meta::{
    self, BranchRow, BranchTimings, Op, OpKind, RunState, SnapshotRow, SourceRow,
};
use serde::Serialize;

use crate::disk_full::{Full, tree_bytes};
use crate::server::{Target, after_start, stop_server};
use crate::view::BranchInfo;
use crate::{Engine, EngineError, Result, ServerKind, names, ports};

/// What `branch create` was asked for.
#[derive(Debug, Clone, Default)]
pub struct BranchCreate {
    /// New branch name.
    pub name: String,
    /// A source (its latest snapshot), a snapshot id, or a branch.
    pub from: String,
    /// Time to live; `gc` deletes the branch after it.
    pub ttl: Option<Duration>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Never deleted by `gc`.
    pub protect: bool,
    /// fsync on (slower; survives a host crash).
    pub durable: bool,
    /// Take a new snapshot of the source first (a physical source waits
    /// until it has replayed what its primary had committed).
    pub fresh: bool,
    /// Empty every table: the schema without rows, for query validation.
    pub schema_only: bool,
    /// Allow an unmasked snapshot of a remote source without rules.
    pub unmasked: bool,
    /// Listen only on the unix socket: a branch for the proxy's agents,
    /// which no password the agent sets can open from elsewhere.
    pub proxy_only: bool,
    /// The most bytes the branch may hold of its own (the filesystem
    /// refuses more); `None`: the source's default, if it has one.
    pub max_size: Option<u64>,
    /// CPU, memory and process limits (over the source's defaults).
    pub compute: crate::ComputeRequest,
    /// Made by the proxy for agent NAME: recorded as the agent's branch.
    pub for_agent: Option<String>,
}

/// Where the time of a `branch create` went, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CreateTimings {
    /// Taking a snapshot first (when `--from` named a branch, or a source
    /// without snapshots).
    pub snapshot_ms: Option<u64>,
    /// Cloning the snapshot.
    pub clone_ms: u64,
    /// Starting the postmaster until it accepted a connection.
    pub start_ms: u64,
    /// The whole operation.
    pub total_ms: u64,
}

/// What `gc` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Deleted objects.
    pub deleted: Vec<String>,
    /// Expired branches kept, with the reason.
    pub kept: Vec<(String, String)>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Lets the armed branch take SCRAM logins over TCP. Before PostgreSQL 16
/// the postmaster reloads `pg_hba.conf` in its SIGHUP handler, which runs
/// before it accepts another connection; from 16 on it reloads between two
/// rounds of accepting, so a client in the same round is refused once (and
/// never let in early).
fn open_tcp_logins(
    client: &mut postgres::Client,
    dir: &std::path::Path,
    owner: &RunAs,
) -> Result<()> {
    conf::write_hba(dir, owner, TcpLogins::Scram)?;
    client
        .simple_query("SELECT pg_reload_conf()")
        .map_err(EngineError::sql("reload the branch's pg_hba.conf"))?;
    Ok(())
}

/// Hands the application role to an agent safely: a fresh password (sent
/// as a SCRAM verifier), no superuser or other escalation attributes, and
/// a refusal if it inherits any role that reaches the host.
pub(crate) fn arm_app_role(
    client: &mut postgres::Client,
    role: &str,
    password: &str,
) -> Result<()> {
    // One round trip: this is on the path of every branch creation.
    let sql = format!(
        "ALTER ROLE {ident} LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {verifier};
         SELECT string_agg(r.rolname, ', ') FROM pg_roles r
          WHERE pg_has_role({name}, r.oid, 'MEMBER') AND r.rolname <> {name}
            AND (r.rolsuper OR r.rolname IN ('pg_execute_server_program', 'pg_read_server_files',
                                             'pg_write_server_files'))",
        ident = quote_ident(role),
        verifier = quote_literal(&scram_verifier(password)),
        name = quote_literal(role),
    );
    let messages = client
        .simple_query(&sql)
        .map_err(EngineError::sql("set the branch password"))?;
    let dangerous = messages.iter().find_map(|m| match m {
        postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    if let Some(dangerous) = dangerous {
        return Err(EngineError::WrongState(format!(
            "role '{role}' is a member of {dangerous}, which reaches the host; pgfork will not hand it to an \
             agent: REVOKE those memberships in the source and take a new snapshot"
        )));
    }
    Ok(())
}

impl Engine {
    pub(crate) fn branch_row(&self, name: &str) -> Result<BranchRow> {
        BranchRow::get(self.meta.conn(), name)?
            .ok_or_else(|| EngineError::UnknownBranch(name.into()))
    }

    fn branch_info_of(&self, row: &BranchRow) -> Result<BranchInfo> {
        // A missing source or snapshot row is shown as the branch's error,
        // never fails the listing of the others.
        let source = SourceRow::get(self.meta.conn(), &row.source)?;
        let snapshot = SnapshotRow::get(self.meta.conn(), row.snapshot_id)?;
        let mut info = BranchInfo::new(
            row,
            source.as_ref(),
            snapshot.as_ref(),
            (
                self.branch_dir(&row.name),
                self.socket_dir(ServerKind::Branch, &row.name),
                self.log_path(ServerKind::Branch, &row.name),
            ),
            crate::activity::unix_secs(self.last_active(row)),
        );
        info.compute = self.compute_info(&row.name, false)?;
        Ok(info)
    }

    /// The snapshot `from` means, taking one if needed: a source's latest
    /// (a new one if it has none), a fresh one of a branch, or the named one.
    fn snapshot_for(&mut self, req: &BranchCreate) -> Result<(SnapshotRow, Option<String>, bool)> {
        let from = req.from.as_str();
        if from.contains('@') || from.chars().all(|c| c.is_ascii_digit()) {
            if req.fresh {
                return Err(EngineError::InvalidArgument(format!(
                    "--fresh takes a new snapshot, but '{from}' names an existing one: pass a source or branch"
                )));
            }
            return Ok((self.resolve_snapshot(from)?, None, false));
        }
        let conn = self.meta.conn();
        if let Some(source) = SourceRow::get(conn, from)? {
            if req.fresh {
                if source.mode == "physical" {
                    self.wait_until_fresh(from)?;
                }
            } else {
                // A snapshot older than the source's last refresh holds
                // the import before it: take one of the current data.
                let refreshed_at = meta::RemoteRow::get(conn, from)?.and_then(|r| r.refreshed_at);
                match SnapshotRow::latest_of_source(conn, from)? {
                    Some(s) if refreshed_at.is_none_or(|at| s.created_at >= at) => {
                        return Ok((s, None, false));
                    }
                    Some(_) => self.progress.stage(&format!(
                        "source {from} was refreshed after its newest snapshot: taking one"
                    )),
                    None => self
                        .progress
                        .stage(&format!("source {from} has no snapshot yet: taking one")),
                }
            }
        } else if BranchRow::get(conn, from)?.is_some() {
            self.progress
                .stage(&format!("taking a snapshot of branch {from}"));
        } else {
            return Err(EngineError::UnknownOrigin(from.into()));
        }
        let info = self.take_snapshot_opts(from, req.unmasked)?;
        let row = SnapshotRow::get(self.meta.conn(), info.number)?
            .ok_or_else(|| EngineError::UnknownSnapshot(info.id.clone()))?;
        let parent = row.parent_branch.clone();
        Ok((row, parent, true))
    }

    /// Creates a branch and returns it with its full DSN (a secret).
    pub fn branch_create(&mut self, req: &BranchCreate) -> Result<BranchInfo> {
        let began = Instant::now();
        let mut scoped = req.clone();
        let agent_max = self.scope_create(&mut scoped)?;
        let req = &scoped;
        let created_by = match &req.for_agent {
            Some(agent) => crate::Actor::Agent(agent.clone()).label(),
            None => self.actor.label(),
        };
        names::validate(&req.name)?;
        if let Some(ttl) = req.ttl {
            names::check_duration("ttl", ttl, names::TTL)?;
        }
        names::validate_labels(&req.labels)?;
        if let Some(kind) = meta::name_taken(self.meta.conn(), &req.name)? {
            return Err(EngineError::NameTaken {
                name: req.name.clone(),
                kind,
            });
        }
        self.check_free_space()?;
        self.check_storage_limit(req.max_size)?;
        // Checked before anything is made: a limit that cannot be enforced
        // leaves no snapshot, row or directory behind.
        let origin = self.origin_source(&req.from)?;
        let limits = self.new_branch_limits(&req.name, origin.as_deref(), &req.compute)?;
        let (snapshot, parent_branch, took_snapshot) = self.snapshot_for(req)?;
        let max_size = match req.max_size {
            Some(size) => Some(size),
            None => {
                let default =
                    meta::SourceLimits::get(self.meta.conn(), &snapshot.source)?.branch_max_size;
                self.check_storage_limit(default)?;
                default
            }
        };
        let snapshot_ms = took_snapshot.then(|| ms(began.elapsed()));
        let range = self.config.ports;
        let quota = self.config.max_branches_per_source;
        let uids = self.config.uids;
        let row = self.meta.write(|c| {
            if let Some(kind) = meta::name_taken(c, &req.name)? {
                return Err(EngineError::NameTaken {
                    name: req.name.clone(),
                    kind,
                });
            }
            // Counted inside the write transaction, so that concurrent
            // creates cannot all slip under the quota at once.
            if let Some(max) = quota {
                let count = BranchRow::list(c)?
                    .iter()
                    .filter(|b| b.source == snapshot.source)
                    .count() as u64;
                if count >= u64::from(max) {
                    return Err(EngineError::QuotaExceeded {
                        source_name: snapshot.source.clone(),
                        count,
                        max,
                    });
                }
            }
            if let Some(max) = agent_max {
                let count = BranchRow::list(c)?
                    .iter()
                    .filter(|b| b.created_by.as_deref() == Some(created_by.as_str()))
                    .count() as u64;
                if count >= max {
                    return Err(EngineError::AgentQuota {
                        agent: self.actor.agent().unwrap_or_default().to_string(),
                        count,
                        max,
                    });
                }
            }
            // The snapshot may have been deleted while we looked.
            if SnapshotRow::get(c, snapshot.id)?.is_none_or(|s| !s.is_ready()) {
                return Err(EngineError::UnknownSnapshot(snapshot.label()));
            }
            let now = meta::now();
            let uid = match uids {
                Some(range) => Some(
                    range
                        .free(&BranchRow::uids(c)?)
                        .ok_or(EngineError::NoFreeUid { range })?,
                ),
                None => None,
            };
            let row = BranchRow {
                name: req.name.clone(),
                source: snapshot.source.clone(),
                snapshot_id: snapshot.id,
                parent_branch: parent_branch.clone(),
                state: RunState::Stopped,
                op: Some(Op::mine(OpKind::Creating)),
                port: ports::allocate(c, range, &[])?,
                password: random_password(),
                postmaster: None,
                created_at: now,
                expires_at: req.ttl.map(|t| names::expiry(now, t)).transpose()?,
                protected: req.protect,
                durable: req.durable,
                labels: req.labels.clone(),
                timings: None,
                uid,
                tcp: !req.proxy_only,
                active_at_ms: Some(meta::now_ms()),
                max_size,
                created_by: Some(created_by.clone()),
                problems: Vec::new(),
            };
            row.insert(c)?;
            if !limits.is_empty() {
                meta::compute::set_branch_limits(c, &row.name, &limits)?;
            }
            Ok(row)
        })?;
        tracing::debug!(elapsed = ?began.elapsed(), "branch row inserted");
        crate::failpoint::hit("branch-create:after-insert");
        match self.build_branch(&row).and_then(|t| {
            if req.schema_only {
                self.empty_tables(&row)?;
            }
            Ok(t)
        }) {
            Ok((clone, start)) => {
                let timings = BranchTimings {
                    snapshot_ms: snapshot_ms.map(|t| t as i64),
                    clone_ms: ms(clone) as i64,
                    start_ms: ms(start) as i64,
                    total_ms: ms(began.elapsed()) as i64,
                };
                self.meta
                    .write(|c| BranchRow::set_timings(c, &row.name, timings))?;
                // Its idle time counts from when it is ready, not from when
                // its making began.
                self.touch_branch(&row.name);
                Ok(self.branch_info(&row.name)?.reveal())
            }
            Err(e) => {
                self.destroy_branch(&row.name);
                Err(e)
            }
        }
    }

    /// Refuses work that writes to the pool (a branch, a snapshot, a new
    /// source, an import or refresh) while the pool is below its
    /// free-space floor.
    pub(crate) fn check_free_space(&self) -> Result<()> {
        let Some(floor) = self.config.min_free else {
            return Ok(());
        };
        let pool = self.home.pool();
        let available = pgfork_pool::space::space(&pool)
            .map_err(EngineError::io("statvfs", &pool))?
            .available;
        if available < floor {
            return Err(EngineError::DiskFloor { available, floor });
        }
        Ok(())
    }

    /// Bytes of a branch's files that no longer share blocks with its base
    /// snapshot: what it costs the pool. Read from its qgroup where quotas
    /// are on, else from every file's extent map, so callers that ask
    /// often should cache it.
    pub fn branch_unshared_bytes(&self, name: &str) -> Result<u64> {
        self.visible_branch(name)?;
        let row = self.branch_row(name)?;
        let dir = self.branch_dir(name);
        // Where quotas count it, the filesystem already knows the figure.
        if let Some(usage) = self.branch_quota_usage(&dir) {
            return Ok(usage.used);
        }
        pgfork_pool::extents::unshared_tree_bytes(&dir, &self.snapshot_dir(row.snapshot_id))
            .map_err(EngineError::io("read the extent maps of", &dir))
    }

    /// The OS user a branch's server runs as and its files belong to: its
    /// own sandbox uid, or the home's OS user.
    pub(crate) fn branch_owner(&self, row: &BranchRow) -> RunAs {
        match row.uid {
            Some(uid) => RunAs::sandbox(uid),
            None => self.config.run_as.clone(),
        }
    }

    /// The OS user of short-lived private servers (views of snapshots):
    /// the home's scratch uid, or the home's OS user.
    pub(crate) fn scratch_owner(&self) -> RunAs {
        match self.config.uids {
            Some(range) => RunAs::sandbox(range.scratch()),
            None => self.config.run_as.clone(),
        }
    }

    /// Clones a branch's base snapshot into its directory, owned by the
    /// branch's OS user.
    fn clone_base(&self, row: &BranchRow, dir: &std::path::Path) -> Result<()> {
        let owner = self.branch_owner(row);
        self.config.driver.clone_dir_owned(
            &self.snapshot_dir(row.snapshot_id),
            dir,
            (owner.uid, owner.gid),
        )?;
        self.limit_branch(row, dir)
    }

    /// Clones, starts and arms a branch row in state `creating`.
    fn build_branch(&mut self, row: &BranchRow) -> Result<(Duration, Duration)> {
        let dir = self.branch_dir(&row.name);
        let began = Instant::now();
        self.clone_base(row, &dir)?;
        let cloned = began.elapsed();
        tracing::debug!(?cloned, "cloned");
        crate::failpoint::hit("branch-create:after-clone");
        let pm = self.boot_branch(row, &dir)?;
        tracing::debug!(ready_after = ?pm.ready_after, "started and armed");
        crate::failpoint::hit("branch-create:after-start");
        self.meta.write(|c| {
            BranchRow::set_state(c, &row.name, RunState::Running, Some(pm.pid))?;
            BranchRow::set_op(c, &row.name, None)
        })?;
        Ok((cloned, pm.ready_after))
    }

    /// Starts a branch's server as its own OS user (giving an older
    /// branch a sandbox uid first) and sets its credentials.
    fn boot_branch(&mut self, row: &BranchRow, dir: &std::path::Path) -> Result<Postmaster> {
        let profile = if row.durable {
            Profile::DurableBranch
        } else {
            Profile::Branch
        };
        let row = self.sandboxed(row, dir)?;
        let role = self.source_row(&row.source)?.role;
        let owner = self.branch_owner(&row);
        // A branch for the proxy listens on its unix socket only.
        let extra: Vec<(String, String)> = if row.tcp {
            Vec::new()
        } else {
            vec![("listen_addresses".into(), "''".into())]
        };
        // Until it is armed, the application role has the password of what
        // the snapshot was taken of: the source's (snapshots of branches
        // forget theirs). So TCP logins are refused until then.
        conf::write_hba(dir, &owner, TcpLogins::Refused)?;
        let (mut pm, _) = self.start_server(
            Target::Branch(&row.name),
            dir,
            &owner,
            profile,
            &extra,
            row.port,
        )?;
        crate::failpoint::hit("branch-boot:before-arm");
        if let Err(e) = arm_app_role(&mut pm.client, &role, &row.password)
            .and_then(|()| self.arm_members(&mut pm.client, &row, &role))
            .and_then(|()| open_tcp_logins(&mut pm.client, dir, &owner))
        {
            let _ = stop_server(Some(pm.pid), dir, StopMode::Immediate);
            return Err(e);
        }
        Ok(pm)
    }

    /// `row` with a sandbox uid that owns its directory: a branch made
    /// before sandboxes (or by a pgfork not run as root) is given one now.
    fn sandboxed(&mut self, row: &BranchRow, dir: &std::path::Path) -> Result<BranchRow> {
        let Some(range) = self.config.uids else {
            return Ok(row.clone());
        };
        let mut row = row.clone();
        if row.uid.is_none() {
            let name = row.name.clone();
            row.uid = Some(self.meta.write(|c| {
                let uid = range
                    .free(&BranchRow::uids(c)?)
                    .ok_or(EngineError::NoFreeUid { range })?;
                BranchRow::set_uid(c, &name, uid)?;
                Ok::<_, EngineError>(uid)
            })?);
        }
        let owner = self.branch_owner(&row);
        let owned = std::fs::symlink_metadata(dir)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == owner.uid)
            .map_err(EngineError::io("stat", dir))?;
        if !owned {
            self.config.driver.give(dir, (owner.uid, owner.gid))?;
        }
        Ok(row)
    }

    /// Every branch the actor may see, optionally only those carrying all
    /// `labels`.
    pub fn branch_list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<BranchInfo>> {
        self.branch_list_by(labels, None)
    }

    /// [`Engine::branch_list`], optionally only the branches agent `agent`
    /// made (the registry an orchestrator reads).
    pub fn branch_list_by(
        &self,
        labels: &BTreeMap<String, String>,
        agent: Option<&str>,
    ) -> Result<Vec<BranchInfo>> {
        self.acting_agent()?;
        let made_by = agent.map(|a| crate::Actor::Agent(a.into()).label());
        BranchRow::list(self.meta.conn())?
            .iter()
            .filter(|b| self.may_use_branch(b))
            .filter(|b| made_by.is_none() || b.created_by == made_by)
            .filter(|b| labels.iter().all(|(k, v)| b.labels.get(k) == Some(v)))
            .map(|b| {
                self.branch_info_of(b)
                    .and_then(|info| self.as_seen(b, info))
            })
            .collect()
    }

    /// One branch (password masked; see [`BranchInfo::reveal`]).
    pub fn branch_info(&self, name: &str) -> Result<BranchInfo> {
        self.visible_branch(name)?;
        let row = self.branch_row(name)?;
        let mut info = self.branch_info_of(&row)?;
        info.compute = self.compute_info(name, true)?;
        self.as_seen(&row, info)
    }

    /// Starts a stopped or crashed branch; its data is kept. Starting a
    /// running one does nothing, but counts as a use of it, as a start does.
    pub fn branch_start(&mut self, name: &str) -> Result<BranchInfo> {
        self.visible_branch(name)?;
        let row = self.branch_row(name)?;
        if row.op.is_none() && row.postmaster.is_some_and(|p| p.is_alive()) {
            self.touch_branch(name);
            return self.branch_info(name);
        }
        self.claim(Target::Branch(name), OpKind::Starting)?;
        // Armed again on every start, so that the recorded password is the
        // one in force: a reset that a crash cut short is finished by the
        // reconcile with a fresh clone of the snapshot, which carries the
        // source's password, not the branch's.
        let dir = self.branch_dir(name);
        let lent = self.lend_headroom(&row, &dir);
        let started = self.boot_branch(&row, &dir);
        self.end_headroom(lent);
        let pm = started.as_ref().ok().map(|pm| pm.pid);
        self.settle(Target::Branch(name), after_start(pm))?;
        started?;
        self.touch_branch(name);
        self.branch_info(name)
    }

    /// Stops a branch (fast shutdown); its data is kept.
    pub fn branch_stop(&mut self, name: &str) -> Result<BranchInfo> {
        self.owned_branch(name, "stop")?;
        let row = self.branch_row(name)?;
        self.claim(Target::Branch(name), OpKind::Stopping)?;
        let stopped = stop_server(row.postmaster, &self.branch_dir(name), StopMode::Fast);
        self.tidy_groups(Some(Target::Branch(name)));
        self.settle(
            Target::Branch(name),
            stopped.is_ok().then_some((RunState::Stopped, None)),
        )?;
        stopped?;
        self.branch_info(name)
    }

    /// Throws away a branch's changes: a new clone of its base snapshot,
    /// same name, port and password. It is running afterwards.
    pub fn branch_reset(&mut self, name: &str) -> Result<BranchInfo> {
        self.owned_branch(name, "reset")?;
        let row = self.branch_row(name)?;
        self.claim(Target::Branch(name), OpKind::Resetting)?;
        // The fresh clone is made beside the branch first: if the pool
        // cannot take it, the branch keeps its data and goes on serving.
        let fresh = self.reset_dir(name);
        let _ = self.config.driver.remove(&fresh);
        if let Err(e) = self.clone_base(&row, &fresh) {
            let _ = self.config.driver.remove(&fresh);
            self.settle(Target::Branch(name), None)?;
            let copies = self.config.driver == pgfork_pool::Driver::Copy;
            let snapshot = self.snapshot_dir(row.snapshot_id);
            return self.when_full(Err(e), || Full {
                during: format!("resetting branch '{name}' (a new clone of its snapshot)"),
                needed: copies.then(|| tree_bytes(&snapshot)),
                kept: format!("Branch '{name}' keeps its data and its state"),
            });
        }
        let result = self.swap_in_reset(&row, &fresh);
        let pm = result.as_ref().ok().map(|pm| pm.pid);
        self.settle(Target::Branch(name), after_start(pm))?;
        result?;
        self.touch_branch(name);
        self.branch_info(name)
    }

    /// Stops the branch, replaces its directory with the `fresh` clone and
    /// starts it. A crash in between is finished by the reconcile.
    fn swap_in_reset(&mut self, row: &BranchRow, fresh: &std::path::Path) -> Result<Postmaster> {
        let dir = self.branch_dir(&row.name);
        stop_server(row.postmaster, &dir, StopMode::Immediate)?;
        let group = self.branch_group(&dir);
        self.config.driver.remove(&dir)?;
        self.forget_branch_group(group);
        crate::failpoint::hit("branch-reset:after-remove");
        std::fs::rename(fresh, &dir).map_err(EngineError::io("swap in the new clone", &dir))?;
        self.boot_branch(row, &dir)
    }

    /// Changes TTL (`Some(None)` clears it), protection and labels.
    pub fn branch_set(
        &mut self,
        name: &str,
        ttl: Option<Option<Duration>>,
        protect: Option<bool>,
        add_labels: &BTreeMap<String, String>,
        remove_labels: &[String],
    ) -> Result<BranchInfo> {
        self.owned_branch(name, "change")?;
        self.scope_set(ttl, protect)?;
        let row = self.branch_row(name)?;
        let expires_at = match ttl {
            Some(Some(t)) => Some(names::expiry(meta::now(), t)?),
            Some(None) => None,
            None => row.expires_at,
        };
        let labels = names::merge_labels(&row.labels, add_labels, remove_labels)?;
        let protected = protect.unwrap_or(row.protected);
        self.meta
            .write(|c| BranchRow::set_options(c, name, expires_at, protected, &labels))?;
        self.branch_info(name)
    }

    /// Branches that exist only because of `name`: those cloned from its
    /// snapshots, and theirs in turn.
    fn branch_dependents(&self, name: &str) -> Result<Vec<String>> {
        let snapshots = SnapshotRow::list(self.meta.conn())?;
        let branches = BranchRow::list(self.meta.conn())?;
        let mut found = Vec::new();
        let mut queue = vec![name.to_string()];
        while let Some(parent) = queue.pop() {
            for s in snapshots
                .iter()
                .filter(|s| s.parent_branch.as_deref() == Some(parent.as_str()))
            {
                for b in branches.iter().filter(|b| b.snapshot_id == s.id) {
                    if !found.contains(&b.name) {
                        found.push(b.name.clone());
                        queue.push(b.name.clone());
                    }
                }
            }
        }
        Ok(found)
    }

    /// Deletes a branch and the snapshots taken of it. Refused while other
    /// branches were made from it unless `force`, which deletes them too.
    pub fn branch_delete(&mut self, name: &str, force: bool) -> Result<Vec<String>> {
        self.owned_branch(name, "delete")?;
        self.branch_row(name)?;
        let dependents = self.branch_dependents(name)?;
        if !dependents.is_empty() && !force {
            return Err(EngineError::HasDependents {
                what: format!("branch '{name}'"),
                dependents: dependents.iter().map(|b| format!("branch {b}")).collect(),
            });
        }
        self.claim(Target::Branch(name), OpKind::Deleting)?;
        let mut deleted = Vec::new();
        // Deepest first, so each delete finds no dependents left.
        for dep in dependents.iter().rev() {
            if BranchRow::get(self.meta.conn(), dep)?.is_some() {
                deleted.extend(self.branch_delete(dep, true)?);
            }
        }
        let own: Vec<i64> = SnapshotRow::list(self.meta.conn())?
            .into_iter()
            .filter(|s| s.parent_branch.as_deref() == Some(name))
            .map(|s| s.id)
            .collect();
        for id in own {
            deleted.extend(self.snapshot_delete_id(id, true)?);
        }
        self.destroy_branch(name);
        if BranchRow::get(self.meta.conn(), name)?.is_some() {
            return Err(EngineError::WrongState(format!(
                "branch '{name}' could not be removed completely; run `pgfork doctor`"
            )));
        }
        deleted.push(format!("branch {name}"));
        self.withdraw_requests_of(name)?;
        Ok(deleted)
    }

    /// Removes everything of a branch, best effort, in crash-safe order:
    /// server, directory, socket and log, then the row.
    pub(crate) fn destroy_branch(&mut self, name: &str) {
        let pm = BranchRow::get(self.meta.conn(), name)
            .ok()
            .flatten()
            .and_then(|r| r.postmaster);
        let dir = self.branch_dir(name);
        if let Err(e) = stop_server(pm, &dir, StopMode::Immediate) {
            tracing::warn!("stopping branch {name}: {e}");
            return;
        }
        let group = self.branch_group(&dir);
        if let Err(e) = self.config.driver.remove(&dir) {
            tracing::warn!("removing {}: {e}", dir.display());
            return;
        }
        self.forget_branch_group(group);
        self.remove_server_files(ServerKind::Branch, name);
        // A group that cannot go yet stays recorded; a reconcile removes it.
        self.tidy_groups(Some(Target::Branch(name)));
        if let Err(e) = self.meta.write(|c| BranchRow::delete(c, name)) {
            tracing::warn!("forgetting branch {name}: {e}");
        }
        crate::activity::forget(&self.home, name);
    }

    /// Deletes expired branches that are not protected.
    pub fn gc(&mut self) -> Result<GcReport> {
        self.admin_only("run gc")?;
        let now = meta::now();
        let mut report = GcReport::default();
        let expired: Vec<BranchRow> = BranchRow::list(self.meta.conn())?
            .into_iter()
            .filter(|b| b.expires_at.is_some_and(|t| t <= now))
            .collect();
        let expired_names: Vec<&str> = expired.iter().map(|b| b.name.as_str()).collect();
        for b in &expired {
            if BranchRow::get(self.meta.conn(), &b.name)?.is_none() {
                continue; // Went with a parent.
            }
            if b.protected {
                report.kept.push((b.name.clone(), "protected".into()));
                continue;
            }
            if self.has_open_request(&b.name)? {
                report.kept.push((
                    b.name.clone(),
                    "a promotion request of it is open: approve or reject it (pgfork approvals)"
                        .into(),
                ));
                continue;
            }
            let live: Vec<String> = self
                .branch_dependents(&b.name)?
                .into_iter()
                .filter(|d| !expired_names.contains(&d.as_str()))
                .collect();
            if !live.is_empty() {
                report.kept.push((
                    b.name.clone(),
                    format!(
                        "branches made from it have not expired: {}",
                        live.join(", ")
                    ),
                ));
                continue;
            }
            match self.branch_delete(&b.name, true) {
                Ok(d) => report.deleted.extend(d),
                Err(e @ EngineError::Busy { .. }) => {
                    report.kept.push((b.name.clone(), e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
