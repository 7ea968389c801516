//! Local sources: clusters pgfork runs itself in the pool.

use pgfork_pg::conf;
use pgfork_pg::remote::RemoteUrl;
use pgfork_pg::sql::{quote_ident, quote_literal, random_password, scram_verifier};
use pgfork_pg::untrusted::session;
use pgfork_pg::{StopMode, initdb};
use pgfork_pool::meta::{
    self, BranchRow, Op, OpKind, PolicyRow, RemoteRow, RunState, SnapshotRow, SourceRow,
};

use crate::disk_full::{CLUSTER_OVERHEAD, Full};
use crate::server::{Target, after_start, stop_server};
use crate::view::{RemoteInfo, SourceInfo};
use crate::{Engine, EngineError, Result, ServerKind, names, ports};

impl Engine {
    pub(crate) fn source_row(&self, name: &str) -> Result<SourceRow> {
        SourceRow::get(self.meta.conn(), name)?
            .ok_or_else(|| EngineError::UnknownSource(name.into()))
    }

    fn source_info_of(&self, row: &SourceRow) -> Result<SourceInfo> {
        let snapshots = SnapshotRow::list(self.meta.conn())?
            .iter()
            .filter(|s| s.source == row.name && s.parent_branch.is_none() && s.is_ready())
            .count();
        let branches = BranchRow::list(self.meta.conn())?
            .iter()
            .filter(|b| b.source == row.name)
            .count();
        let paths = (
            self.source_dir(&row.name),
            self.socket_dir(ServerKind::Source, &row.name),
            self.log_path(ServerKind::Source, &row.name),
        );
        let mut info = SourceInfo::new(row, paths, snapshots, branches);
        if let Some(r) = RemoteRow::get(self.meta.conn(), &row.name)? {
            info.remote = Some(RemoteInfo {
                url: r.url,
                password_saved: r.saved_password.is_some(),
                refresh_every: r.refresh_every,
                refreshed_at: r.refreshed_at.map(crate::view::timestamp),
                refresh_error: r.refresh_error,
            });
        }
        if row.mode == "physical" && info.pid.is_some() {
            info.lag = self.source_lag(&row.name).ok();
        }
        let policy = PolicyRow::get(self.meta.conn(), &row.name)?;
        info.snapshot_schedule = policy.snapshot_every.zip(policy.snapshot_keep);
        info.branch_limits = self.source_branch_limits(&row.name)?;
        info.cgroups = pgfork_pool::meta::CgroupRow::of(self.meta.conn(), "source", &row.name)?;
        info.masking = match (&policy.mask_rules, policy.unmasked_ok) {
            (Some(_), _) => "rules",
            (None, true) => "unmasked-allowed",
            (None, false) => "none",
        };
        Ok(info)
    }

    /// Creates a local source: a new cluster in the pool with an
    /// application role (not a superuser) that owns a database of the same
    /// name, started and ready for data.
    pub fn source_create(&mut self, name: &str) -> Result<SourceInfo> {
        self.admin_only("create sources")?;
        names::validate(name)?;
        self.check_free_space()?;
        let range = self.config.ports;
        let major = self.config.bins.version.major;
        let row = self.meta.write(|c| {
            if let Some(kind) = meta::name_taken(c, name)? {
                return Err(EngineError::NameTaken {
                    name: name.into(),
                    kind,
                });
            }
            let row = SourceRow {
                name: name.into(),
                mode: "local".into(),
                state: RunState::Stopped,
                op: Some(Op::mine(OpKind::Creating)),
                port: ports::allocate(c, range, &[])?,
                database: name.into(),
                role: name.into(),
                password: random_password(),
                postmaster: None,
                pg_major: major,
                created_at: meta::now(),
            };
            row.insert(c)?;
            Ok(row)
        })?;
        let built = self.build_source(&row);
        if built.is_err() {
            self.destroy_source(name);
        }
        self.when_full(built, || Full {
            during: format!("creating source '{name}'"),
            needed: Some(CLUSTER_OVERHEAD),
            kept: format!("Source '{name}' was not made"),
        })?;
        self.source_info(name)
    }

    fn build_source(&mut self, row: &SourceRow) -> Result<()> {
        let dir = self.source_dir(&row.name);
        let owner = (self.config.run_as.uid, self.config.run_as.gid);
        self.config.driver.create_root(&dir, Some(owner))?;
        self.progress
            .stage(&format!("initdb for source {}", row.name));
        initdb::initdb(&self.config.bins, &dir, &self.config.run_as)?;
        conf::install(&dir, &self.config.run_as)?;
        crate::failpoint::hit("source-create:after-initdb");
        self.progress
            .stage(&format!("starting source {}", row.name));
        let (mut pm, _) = self.start_source(row)?;
        let role = quote_ident(&row.role);
        let verifier = quote_literal(&scram_verifier(&row.password));
        let statements = [
            format!(
                "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {verifier}"
            ),
            format!(
                "CREATE DATABASE {} OWNER {role}",
                quote_ident(&row.database)
            ),
            // The application role has no business in the maintenance databases.
            "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC".to_string(),
            "REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC".to_string(),
        ];
        for sql in &statements {
            pm.client
                .batch_execute(sql)
                .map_err(EngineError::sql("set up the application role and database"))?;
        }
        if row.pg_major < 15 {
            // Before 15 the public schema belongs to the bootstrap superuser.
            // The database was made a moment ago: nothing in it but ours.
            let mut db = session::superuser_in(
                &self.endpoint(ServerKind::Source, &row.name, row.port),
                &row.database,
            )
            .map_err(EngineError::sql("connect to the new database"))?;
            db.batch_execute(&format!("ALTER SCHEMA public OWNER TO {role}"))
                .map_err(EngineError::sql(
                    "give the public schema to the application role",
                ))?;
        }
        self.meta.write(|c| {
            SourceRow::set_state(c, &row.name, RunState::Running, Some(pm.pid))?;
            SourceRow::set_op(c, &row.name, None)
        })?;
        Ok(())
    }

    /// Every source.
    pub fn source_list(&self) -> Result<Vec<SourceInfo>> {
        let agent = self.acting_agent()?;
        SourceRow::list(self.meta.conn())?
            .iter()
            .filter(|r| agent.as_ref().is_none_or(|a| a.source == r.name))
            .map(|r| self.scoped_source_info(r))
            .collect()
    }

    /// One source.
    pub fn source_info(&self, name: &str) -> Result<SourceInfo> {
        self.visible_source(name)?;
        let row = self.source_row(name)?;
        self.scoped_source_info(&row)
    }

    /// A source as the actor may see it: an agent never gets its
    /// connection string or where its files and sockets are.
    fn scoped_source_info(&self, row: &SourceRow) -> Result<SourceInfo> {
        let mut info = self.source_info_of(row)?;
        if self.acting_agent()?.is_some() {
            info.dsn = String::new();
            info.data_dir = Default::default();
            info.socket_dir = Default::default();
            info.log = Default::default();
            info.cgroups = Vec::new();
        }
        Ok(info)
    }

    /// Starts a stopped (or crashed) source.
    pub fn source_start(&mut self, name: &str) -> Result<SourceInfo> {
        self.admin_only("start sources")?;
        let row = self.source_row(name)?;
        // Running and nobody at work on it: nothing to do. While another
        // process stops (or refreshes) it, the claim says so (busy)
        // rather than report a server about to go as started.
        if row.op.is_none() && row.postmaster.is_some_and(|p| p.is_alive()) {
            return self.source_info(name);
        }
        self.claim(Target::Source(name), OpKind::Starting)?;
        let started = self.start_source(&row);
        let pm = started.as_ref().ok().map(|(pm, _)| pm.pid);
        self.settle(Target::Source(name), after_start(pm))?;
        started?;
        self.source_info(name)
    }

    /// Stops a source (fast shutdown); its data and snapshots stay.
    pub fn source_stop(&mut self, name: &str) -> Result<SourceInfo> {
        self.admin_only("stop sources")?;
        let row = self.source_row(name)?;
        self.claim(Target::Source(name), OpKind::Stopping)?;
        let stopped = stop_server(row.postmaster, &self.source_dir(name), StopMode::Fast);
        self.tidy_groups(Some(Target::Source(name)));
        self.settle(
            Target::Source(name),
            stopped.is_ok().then_some((RunState::Stopped, None)),
        )?;
        stopped?;
        self.source_info(name)
    }

    /// Deletes a source with its snapshots. Refused while branches of it
    /// exist unless `force`, which deletes them first. Returns what was deleted.
    pub fn source_delete(&mut self, name: &str, force: bool) -> Result<Vec<String>> {
        self.admin_only("delete sources")?;
        self.source_row(name)?;
        let branches: Vec<String> = BranchRow::list(self.meta.conn())?
            .into_iter()
            .filter(|b| b.source == name)
            .map(|b| b.name)
            .collect();
        if !branches.is_empty() && !force {
            return Err(EngineError::HasDependents {
                what: format!("source '{name}'"),
                dependents: branches.iter().map(|b| format!("branch {b}")).collect(),
            });
        }
        self.claim(Target::Source(name), OpKind::Deleting)?;
        let mut deleted = Vec::new();
        for branch in branches {
            // A cascade may already have taken a branch of a branch.
            if BranchRow::get(self.meta.conn(), &branch)?.is_some() {
                deleted.extend(self.branch_delete(&branch, true)?);
            }
        }
        for snap in SnapshotRow::list(self.meta.conn())?
            .into_iter()
            .filter(|s| s.source == name)
        {
            deleted.extend(self.snapshot_delete_id(snap.id, true)?);
        }
        self.destroy_source(name);
        if SourceRow::get(self.meta.conn(), name)?.is_some() {
            return Err(EngineError::WrongState(format!(
                "source '{name}' could not be removed completely; see the log and run `pgfork doctor`"
            )));
        }
        deleted.push(format!("source {name}"));
        Ok(deleted)
    }

    /// Removes everything of a source, best effort, in the order that
    /// keeps a crash recoverable: server, directory, files, then the row.
    pub(crate) fn destroy_source(&mut self, name: &str) {
        self.destroy_source_reaching(name, None);
    }

    /// [`Engine::destroy_source`], reaching a physical source's primary
    /// with `password` when given (a `source add` that failed before the
    /// standby's passfile was written still has it in hand).
    pub(crate) fn destroy_source_reaching(&mut self, name: &str, password: Option<&str>) {
        let row = SourceRow::get(self.meta.conn(), name).ok().flatten();
        let pm = row.as_ref().and_then(|r| r.postmaster);
        let dir = self.source_dir(name);
        if let Err(e) = stop_server(pm, &dir, StopMode::Immediate) {
            tracing::warn!("stopping source {name}: {e}");
            return;
        }
        if let Err(e) = self.config.driver.remove(&dir) {
            tracing::warn!("removing {}: {e}", dir.display());
            return;
        }
        self.remove_server_files(ServerKind::Source, name);
        self.remove_server_files(ServerKind::Import, name);
        self.tidy_groups(Some(Target::Source(name)));
        if row.is_some_and(|r| r.mode == "physical")
            && let Ok(Some(remote)) = RemoteRow::get(self.meta.conn(), name)
            && let Ok(url) = RemoteUrl::parse(&remote.url)
        {
            let password = password
                .map(str::to_string)
                .or_else(|| self.remote_password(&remote));
            self.drop_remote_slot(name, &url, password.as_deref());
        }
        let _ = std::fs::remove_file(self.home.secrets().join(format!("{name}.pgpass")));
        if let Err(e) = self.meta.write(|c| SourceRow::delete(c, name)) {
            tracing::warn!("forgetting source {name}: {e}");
        }
    }
}
