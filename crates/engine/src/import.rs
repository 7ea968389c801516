//! Logical sources: a parallel pg_dump/pg_restore import of a remote
//! database into a new cluster in the pool, and refreshes that import
//! into a fresh cluster and swap it in atomically.

use std::path::Path;
use std::time::Duration;

use pgfork_pg::conf::{self, Profile, ServerConf};
use pgfork_pg::remote::{self, RemoteUrl};
use pgfork_pg::server::{self, StartSpec};
use pgfork_pg::sql::{quote_ident, quote_literal};
use pgfork_pg::transfer::{self, LocalDb};
use pgfork_pg::{StopMode, initdb};
use pgfork_pool::meta::{self, OpKind, RemoteRow, RunState, SourceRow};
use pgfork_pool::{home, hygiene};

use crate::disk_full::{CLUSTER_MIN, Full};
use crate::remote::RemoteFacts;
use crate::server::{Target, stop_server};
use crate::view::SourceInfo;
use crate::{Engine, EngineError, Result, ServerKind};

/// Roles that own objects or hold grants in the current database: they
/// must exist before pg_restore recreates ownership and privileges.
const ROLES_QUERY: &str = "\
WITH owners AS (
    SELECT c.relowner AS r FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
    UNION SELECT nspowner FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
    UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION SELECT defaclrole FROM pg_default_acl
    UNION SELECT datdba FROM pg_database WHERE datname = current_database()
), grants AS (
    SELECT (aclexplode(relacl)).grantee AS r FROM pg_class WHERE relacl IS NOT NULL
    UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE nspacl IS NOT NULL
    UNION SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE proacl IS NOT NULL
    UNION SELECT (aclexplode(typacl)).grantee FROM pg_type WHERE typacl IS NOT NULL
    UNION SELECT (aclexplode(defaclacl)).grantee FROM pg_default_acl
    UNION SELECT (aclexplode(datacl)).grantee FROM pg_database WHERE datname = current_database() AND datacl IS NOT NULL
)
SELECT rolname FROM pg_roles
 WHERE oid IN (SELECT r FROM owners UNION SELECT r FROM grants) AND rolname !~ '^pg_'
 ORDER BY 1";

/// Tables in the remote database, to size the progress bar.
const TABLE_COUNT: &str = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Swaps two directories atomically (renameat2 RENAME_EXCHANGE).
pub(crate) fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a_c = std::ffi::CString::new(a.as_os_str().as_bytes()).expect("path without NUL");
    let b_c = std::ffi::CString::new(b.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: both are valid C strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a_c.as_ptr(),
            libc::AT_FDCWD,
            b_c.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn jobs() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
        .clamp(1, 8)
}

impl Engine {
    /// First import of a new logical source, then its server starts.
    pub(crate) fn build_logical(
        &mut self,
        row: &SourceRow,
        url: &RemoteUrl,
        password: Option<&str>,
        facts: &RemoteFacts,
    ) -> Result<()> {
        let dir = self.source_dir(&row.name);
        self.import_into(row, url, password, facts, &dir)?;
        let (pm, _) = self.start_source(row)?;
        let name = row.name.clone();
        self.meta.write(|c| {
            SourceRow::set_state(c, &name, RunState::Running, Some(pm.pid))?;
            SourceRow::set_op(c, &name, None)?;
            if let Some(mut r) = RemoteRow::get(c, &name)? {
                r.refreshed_at = Some(meta::now());
                r.refresh_error = None;
                r.put(c)?;
            }
            Ok::<_, EngineError>(())
        })?;
        Ok(())
    }

    /// Imports the remote database into `dir` (which must not exist): a new
    /// cluster, the roles that own or are granted anything, then a parallel
    /// dump and restore through a private, unsynced import server.
    fn import_into(
        &mut self,
        row: &SourceRow,
        url: &RemoteUrl,
        password: Option<&str>,
        facts: &RemoteFacts,
        dir: &Path,
    ) -> Result<()> {
        let owner = (self.config.run_as.uid, self.config.run_as.gid);
        self.config.driver.create_root(dir, Some(owner))?;
        self.progress.stage(&format!("initdb for {}", row.name));
        initdb::initdb(&self.config.bins, dir, &self.config.run_as)?;
        conf::install(dir, &self.config.run_as)?;
        let socket_dir = self.socket_dir(ServerKind::Import, &row.name);
        let log = self.log_path(ServerKind::Import, &row.name);
        ServerConf::new(row.port, &socket_dir, Profile::Import).write(dir, &self.config.run_as)?;
        let spec = StartSpec {
            bins: &self.config.bins,
            datadir: dir,
            log: &log,
            run_as: &self.config.run_as,
            socket_dir: &socket_dir,
            port: row.port,
            overrides: &[],
            timeout: Duration::from_secs(120),
            cgroup: None,
        };
        let mut pm = server::start(&spec)
            .inspect_err(|_| self.remove_server_files(ServerKind::Import, &row.name))?;
        let result = self.import_with(&mut pm.client, row, url, password, facts, &socket_dir);
        drop(pm.client);
        let stopped = server::stop(pm.pid, StopMode::Fast, Duration::from_secs(600));
        self.remove_server_files(ServerKind::Import, &row.name);
        result?;
        stopped?;
        Ok(())
    }

    fn import_with(
        &mut self,
        client: &mut postgres::Client,
        row: &SourceRow,
        url: &RemoteUrl,
        password: Option<&str>,
        facts: &RemoteFacts,
        socket_dir: &Path,
    ) -> Result<()> {
        let bins = self.config.bins.clone();
        let mut roles: Vec<String> = remote::query(&bins, url, password, ROLES_QUERY)?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
        roles.push(row.role.clone());
        roles.push(facts.db_owner.clone());
        roles.sort();
        roles.dedup();
        for role in &roles {
            // Roles come over without passwords or attributes: branches
            // get their own credentials, and nobody here is a superuser.
            client
                .batch_execute(&format!(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {lit}) THEN \
                     CREATE ROLE {ident} NOLOGIN; END IF; END $$",
                    lit = quote_literal(role),
                    ident = quote_ident(role)
                ))
                .map_err(EngineError::sql(&format!("create role {role}")))?;
        }
        let db = quote_ident(&row.database);
        let create = format!(
            "CREATE DATABASE {db} OWNER {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_ident(&facts.db_owner),
            quote_literal(&facts.encoding),
            quote_literal(&facts.collate),
            quote_literal(&facts.ctype)
        );
        if let Err(e) = client.batch_execute(&create) {
            self.progress.warn(&format!(
                "could not create {} with the remote's locale ({e}); using C instead",
                row.database
            ));
            client
                .batch_execute(&format!(
                    "CREATE DATABASE {db} OWNER {} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'",
                    quote_ident(&facts.db_owner)
                ))
                .map_err(EngineError::sql("create the database"))?;
        }
        client
            .batch_execute(
                "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC; \
                 REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC",
            )
            .map_err(EngineError::sql("lock the maintenance databases"))?;

        let tables: u64 = remote::query(&bins, url, password, TABLE_COUNT)?
            .first()
            .and_then(|r| r.first())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        // pg_dump runs as us: nobody else needs to see the dumps.
        hygiene::make_dir(&self.home.dumps(), home::PRIVATE_DIR)
            .map_err(EngineError::io("create", &self.home.dumps()))?;
        let dump_dir = self
            .home
            .dumps()
            .join(format!("{}-{}", row.name, std::process::id()));
        let _ = std::fs::remove_dir_all(&dump_dir);
        let progress = self.progress.clone();
        self.progress
            .stage(&format!("pg_dump of {}", url.redacted()));
        let on_dump = |d: u64, t: u64| progress.progress("tables dumped", d, t);
        let dumped = transfer::dump(&bins, url, password, &dump_dir, jobs(), tables, &on_dump);
        crate::failpoint::hit("import:after-dump");
        let restored = dumped.and_then(|()| {
            self.progress
                .stage(&format!("pg_restore into {}", row.name));
            let on_restore = |d: u64, t: u64| progress.progress("tables restored", d, t);
            let target = LocalDb {
                socket_dir,
                port: row.port,
                dbname: &row.database,
            };
            transfer::restore(&bins, &target, &dump_dir, jobs(), tables, &on_restore)
        });
        let _ = std::fs::remove_dir_all(&dump_dir);
        restored?;
        Ok(())
    }

    /// Re-imports a logical source into a new cluster and swaps it in.
    /// Branches and snapshots made before keep working: they are copies.
    /// If the import fails, the previous one stays in use.
    pub fn source_refresh(&mut self, name: &str) -> Result<SourceInfo> {
        self.admin_only("refresh sources")?;
        let row = self.source_row(name)?;
        if row.mode != "logical" {
            return Err(EngineError::WrongState(format!(
                "source '{name}' is {}: only logical sources are refreshed (a physical one is always fresh)",
                row.mode
            )));
        }
        self.check_free_space()?;
        let remote = RemoteRow::get(self.meta.conn(), name)?.ok_or_else(|| {
            EngineError::WrongState(format!("source {name} has no remote recorded"))
        })?;
        let url = RemoteUrl::parse(&remote.url).map_err(EngineError::InvalidArgument)?;
        let password = self.remote_password(&remote);
        self.claim(Target::Source(name), OpKind::Refreshing)?;
        hygiene::make_dir(&self.home.staging(), home::TRAVERSE_DIR)
            .map_err(EngineError::io("create", &self.home.staging()))?;
        let staging = self.home.staging().join(name);
        let facts = self.remote_facts(&url, password.as_deref());
        let needed = facts.as_ref().ok().map(crate::remote::import_bytes);
        let full = || Full {
            during: format!(
                "refreshing source '{name}' (an import of {})",
                url.redacted()
            ),
            needed,
            kept: format!(
                "Source '{name}' still serves its previous import, and its snapshots and branches are untouched"
            ),
        };
        let result = facts.and_then(|facts| {
            self.check_room(CLUSTER_MIN + facts.database_bytes, full)?;
            self.refresh_into(&row, &url, password.as_deref(), &facts, &staging)
        });
        let _ = self.config.driver.remove(&staging);
        let result = self.when_full(result, full);
        let error = result.as_ref().err().map(|e| e.to_string());
        let pm = result.as_ref().ok().copied();
        self.meta.write(|c| {
            if let Some(pm) = pm {
                SourceRow::set_state(c, name, RunState::Running, Some(pm))?;
            }
            if let Some(mut r) = RemoteRow::get(c, name)? {
                if error.is_none() {
                    r.refreshed_at = Some(meta::now());
                }
                r.refresh_error = error.clone();
                r.put(c)?;
            }
            SourceRow::set_op(c, name, None)
        })?;
        result?;
        // Branches made `--from` the source take its newest snapshot: take
        // one of the new import now (if this fails, the next such branch
        // takes one, see Engine::snapshot_for).
        let policy = meta::PolicyRow::get(self.meta.conn(), name)?;
        if let Err(e) = self.take_snapshot_opts(name, policy.unmasked_ok) {
            self.progress.warn(&format!(
                "source '{name}' is refreshed, but no snapshot of it was taken ({e}); the next branch of it takes one"
            ));
        }
        self.source_info(name)
    }

    /// Imports into `staging`, then swaps it with the source's directory
    /// while the source is stopped for a moment.
    fn refresh_into(
        &mut self,
        row: &SourceRow,
        url: &RemoteUrl,
        password: Option<&str>,
        facts: &RemoteFacts,
        staging: &Path,
    ) -> Result<pgfork_os::ProcessId> {
        self.config.driver.remove(staging)?;
        self.import_into(row, url, password, facts, staging)?;
        crate::failpoint::hit("source-refresh:before-swap");
        let dir = self.source_dir(&row.name);
        self.progress
            .stage(&format!("swapping in the new import of {}", row.name));
        stop_server(row.postmaster, &dir, StopMode::Fast)?;
        exchange(staging, &dir).map_err(EngineError::io("swap in the new import", &dir))?;
        crate::failpoint::hit("source-refresh:after-swap");
        match self.start_source(row) {
            Ok((pm, _)) => Ok(pm.pid),
            Err(e) => {
                // Put the previous import back and serve it again.
                exchange(staging, &dir)
                    .map_err(EngineError::io("swap back the previous import", &dir))?;
                let _ = self.start_source(row);
                Err(e)
            }
        }
    }
}
