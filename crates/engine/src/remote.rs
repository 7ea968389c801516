//! Remote sources: a streaming standby of a remote primary (`physical`)
//! or a pg_dump/pg_restore import (`logical`), kept in the pool.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgfork_pg::conf::{self, Profile, conf_value, write_owned};
use pgfork_pg::remote::{self, RemoteUrl};
use pgfork_pg::untrusted::session;
use pgfork_pg::{Postmaster, control, transfer};
use pgfork_pool::meta::{self, Op, OpKind, PolicyRow, RemoteRow, RunState, SourceRow};
use pgfork_pool::{home, hygiene};
use serde::Serialize;

use crate::disk_full::{CLUSTER_MIN, CLUSTER_OVERHEAD, Full};
use crate::server::Target;
use crate::view::SourceInfo;
use crate::{Engine, EngineError, Result, ServerKind, names, ports};

/// How a remote source is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A streaming standby in the pool: always fresh; needs replication rights.
    Physical,
    /// A parallel pg_dump/pg_restore import, refreshed on a schedule.
    Logical,
}

impl Mode {
    /// The word stored in meta.db.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Physical => "physical",
            Mode::Logical => "logical",
        }
    }
}

/// What `source add` was asked for.
#[derive(Debug, Clone)]
pub struct SourceAdd {
    /// New source name.
    pub name: String,
    /// `postgres://` URL of the remote database.
    pub url: String,
    /// Physical or logical.
    pub mode: Mode,
    /// Refresh a logical source this often.
    pub refresh_every: Option<Duration>,
    /// Role branch DSNs log in as (default: the database's owner).
    pub role: Option<String>,
    /// Store the password in meta.db (for scheduled refreshes).
    pub save_password: bool,
}

/// Replication state of a physical source.
#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    /// WAL receiver status (`streaming`, ...), if one runs.
    pub receiver: Option<String>,
    /// Bytes the standby has not yet replayed of what the primary reported.
    pub bytes: Option<i64>,
    /// Seconds since the last message from the primary.
    pub seconds_since_message: Option<f64>,
    /// Seconds between now and the last replayed transaction's commit.
    pub replay_delay_seconds: Option<f64>,
    /// WAL position replayed.
    pub replay_lsn: Option<String>,
}

/// The password field of a `.pgpass` line (the fifth, `:`-separated,
/// with `\\` and `\:` escapes).
fn passfile_password(line: &str) -> Option<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.push(chars.next()?),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    (fields.len() == 4).then_some(field)
}

/// The SQL deciding which role branches log in as, and whether it may.
const ROLE_QUERY: &str = "SELECT current_setting('server_version_num'), current_user,
    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
    pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype,
    pg_database_size(current_database()),
    (SELECT sum(pg_database_size(oid)) FROM pg_database
      WHERE datallowconn AND has_database_privilege(oid, 'CONNECT'))
  FROM pg_database WHERE datname = current_database()";

/// What the remote said about itself.
pub(crate) struct RemoteFacts {
    pub major: u32,
    pub can_replicate: bool,
    pub db_owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// Bytes of the database a logical source imports.
    pub database_bytes: u64,
    /// Bytes of every database this login can see: what a base backup
    /// copies, give or take the WAL.
    pub cluster_bytes: u64,
}

/// About what a logical import takes in the pool: the dump (compressed,
/// removed afterwards, put at half the database) beside the restored
/// database and a new cluster.
pub(crate) fn import_bytes(facts: &RemoteFacts) -> u64 {
    facts.database_bytes + facts.database_bytes / 2 + CLUSTER_OVERHEAD
}

impl Engine {
    /// The password to reach a source's remote: the saved one, else
    /// `PGPASSWORD`, else the standby's own passfile (physical sources).
    pub(crate) fn remote_password(&self, remote: &RemoteRow) -> Option<String> {
        remote
            .saved_password
            .clone()
            .or_else(|| std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()))
            .or_else(|| {
                let text = std::fs::read_to_string(self.passfile(&remote.source)).ok()?;
                passfile_password(text.lines().next()?)
            })
    }

    pub(crate) fn remote_facts(
        &self,
        url: &RemoteUrl,
        password: Option<&str>,
    ) -> Result<RemoteFacts> {
        let rows = remote::query(&self.config.bins, url, password, ROLE_QUERY)?;
        let row = rows.first().filter(|r| r.len() == 9).ok_or_else(|| {
            EngineError::WrongState(format!(
                "{} answered the catalog query with nothing",
                url.redacted()
            ))
        })?;
        Ok(RemoteFacts {
            major: row[0].parse::<u32>().unwrap_or(0) / 10000,
            can_replicate: row[2] == "t",
            db_owner: row[3].clone(),
            encoding: row[4].clone(),
            collate: row[5].clone(),
            ctype: row[6].clone(),
            database_bytes: row[7].parse().unwrap_or(0),
            cluster_bytes: row[8].parse().unwrap_or(0),
        })
    }

    /// Checks that `role` exists on the remote and is not a superuser:
    /// superuser in a branch is the host (`COPY ... TO PROGRAM`).
    fn check_branch_role(&self, url: &RemoteUrl, password: Option<&str>, role: &str) -> Result<()> {
        let sql = format!(
            "SELECT rolsuper FROM pg_roles WHERE rolname = {}",
            pgfork_pg::sql::quote_literal(role)
        );
        let rows = remote::query(&self.config.bins, url, password, &sql)?;
        match rows.first().map(|r| r[0].as_str()) {
            None => Err(EngineError::InvalidArgument(format!(
                "role '{role}' does not exist on {}: pass --role with an existing role",
                url.redacted()
            ))),
            Some("t") => Err(EngineError::InvalidArgument(format!(
                "role '{role}' is a superuser on {}; branches must not log in as a superuser (it can run \
                 programs on the host): pass --role with a non-superuser role, e.g. the application's owner role",
                url.redacted()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Adds a remote source: a streaming standby (physical) or an import
    /// (logical) of the database at `req.url`.
    pub fn source_add(&mut self, req: &SourceAdd) -> Result<SourceInfo> {
        self.admin_only("add sources")?;
        names::validate(&req.name)?;
        self.check_free_space()?;
        if let Some(kind) = meta::name_taken(self.meta.conn(), &req.name)? {
            return Err(EngineError::NameTaken {
                name: req.name.clone(),
                kind,
            });
        }
        let url = RemoteUrl::parse(&req.url)
            .map_err(|e| EngineError::InvalidArgument(format!("--from: {e}")))?;
        if req.mode == Mode::Physical && req.refresh_every.is_some() {
            return Err(EngineError::InvalidArgument(
                "--refresh-every is for logical sources; a physical source is always fresh".into(),
            ));
        }
        let refresh_every = req
            .refresh_every
            .map(|d| names::stored_secs("refresh_every", d, names::INTERVAL))
            .transpose()?;
        let password = url
            .password
            .clone()
            .or_else(|| std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()));
        self.progress.stage(&format!("checking {}", url.redacted()));
        let facts = self.remote_facts(&url, password.as_deref())?;
        let local = self.config.bins.version.major;
        check_compatible(req.mode, &facts, local, &url.redacted())?;
        let role = req.role.clone().unwrap_or_else(|| facts.db_owner.clone());
        self.check_branch_role(&url, password.as_deref(), &role)?;
        let full = || Full {
            during: match req.mode {
                Mode::Physical => format!(
                    "adding source '{}' (a base backup of {})",
                    req.name,
                    url.redacted()
                ),
                Mode::Logical => format!(
                    "adding source '{}' (an import of {})",
                    req.name,
                    url.redacted()
                ),
            },
            needed: Some(match req.mode {
                Mode::Physical => facts.cluster_bytes + CLUSTER_OVERHEAD,
                Mode::Logical => import_bytes(&facts),
            }),
            kept: format!(
                "Source '{}' was not added; the remote was only read",
                req.name
            ),
        };
        // At least the data itself must fit (the dump of an import is
        // compressed and goes once restored).
        let at_least = CLUSTER_MIN
            + match req.mode {
                Mode::Physical => facts.cluster_bytes,
                Mode::Logical => facts.database_bytes,
            };
        self.check_room(at_least, full)?;

        let range = self.config.ports;
        let row = self.meta.write(|c| {
            if let Some(kind) = meta::name_taken(c, &req.name)? {
                return Err(EngineError::NameTaken {
                    name: req.name.clone(),
                    kind,
                });
            }
            let row = SourceRow {
                name: req.name.clone(),
                mode: req.mode.as_str().into(),
                state: RunState::Stopped,
                op: Some(Op::mine(OpKind::Creating)),
                port: ports::allocate(c, range, &[])?,
                database: url.database(),
                role: role.clone(),
                // Sources copied from elsewhere have no password of ours:
                // their roles get one only in branches.
                password: String::new(),
                postmaster: None,
                pg_major: local,
                created_at: meta::now(),
            };
            row.insert(c)?;
            RemoteRow {
                source: req.name.clone(),
                url: url.redacted(),
                saved_password: if req.save_password {
                    password.clone()
                } else {
                    None
                },
                refresh_every,
                refreshed_at: None,
                refresh_error: None,
            }
            .put(c)?;
            PolicyRow {
                source: req.name.clone(),
                mask_secret: Some(crate::masking::new_secret()),
                ..PolicyRow::default()
            }
            .put(c)?;
            Ok(row)
        })?;
        let built = match req.mode {
            Mode::Physical => self.build_standby(&row, &url, password.as_deref()),
            Mode::Logical => self.build_logical(&row, &url, password.as_deref(), &facts),
        };
        if built.is_err() {
            self.destroy_source_reaching(&req.name, password.as_deref());
        }
        self.when_full(built, full)?;
        self.source_info(&req.name)
    }

    /// Replication slot name of a physical source on its primary.
    pub(crate) fn slot_name(name: &str) -> String {
        format!("pgfork_{}", name.replace('-', "_"))
    }

    fn passfile(&self, name: &str) -> PathBuf {
        self.home.secrets().join(format!("{name}.pgpass"))
    }

    fn build_standby(
        &mut self,
        row: &SourceRow,
        url: &RemoteUrl,
        password: Option<&str>,
    ) -> Result<()> {
        let dir = self.source_dir(&row.name);
        let owner = (self.config.run_as.uid, self.config.run_as.gid);
        self.config.driver.create_root(&dir, Some(owner))?;
        self.progress
            .stage(&format!("pg_basebackup from {}", url.redacted()));
        let progress = self.progress.clone();
        let on_progress =
            move |done: u64, total: u64| progress.progress("base backup (kB)", done, total);
        transfer::basebackup(
            &self.config.bins,
            url,
            password,
            &dir,
            &self.config.run_as,
            Some(&Self::slot_name(&row.name)),
            &on_progress,
        )?;
        crate::failpoint::hit("source-add:after-basebackup");
        // The primary's own settings would override ours (auto.conf is read
        // last): keep them aside, for reference only.
        let auto = dir.join("postgresql.auto.conf");
        if auto.exists() {
            std::fs::rename(&auto, dir.join("postgresql.auto.conf.primary"))
                .map_err(EngineError::io("rename", &auto))?;
        }
        conf::install(&dir, &self.config.run_as)?;
        write_owned(&dir.join("standby.signal"), b"", &self.config.run_as)?;
        if let Some(password) = password {
            // A standby running as another OS user must pass through to
            // its passfile; otherwise nobody but us needs in.
            let mode = if self.config.run_as.needs_switch() {
                home::TRAVERSE_DIR
            } else {
                home::PRIVATE_DIR
            };
            hygiene::make_dir(&self.home.secrets(), mode)
                .map_err(EngineError::io("create", &self.home.secrets()))?;
            let file = self.passfile(&row.name);
            let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
            let line = format!(
                "*:*:*:{}:{}\n",
                escape(url.user.as_deref().unwrap_or("*")),
                escape(password)
            );
            // 0600, owned by the server's user, who reads it to reconnect.
            write_owned(&file, line.as_bytes(), &self.config.run_as)?;
        }
        self.progress
            .stage(&format!("starting standby {}", row.name));
        let (mut pm, _) = self.start_source(row)?;
        // A source is added once it streams, so `source info` right after
        // says "streaming" and `--fresh` can rely on it.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status: Option<String> = pm
                .client
                .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
                .map_err(EngineError::sql("read the WAL receiver"))?
                .and_then(|r| r.get(0));
            if status.as_deref() == Some("streaming") {
                break;
            }
            if Instant::now() > deadline {
                self.progress.warn(&format!(
                    "standby {} is not streaming yet (WAL receiver: {}); see {}",
                    row.name,
                    status.as_deref().unwrap_or("not running"),
                    self.log_path(ServerKind::Source, &row.name).display()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.meta.write(|c| {
            SourceRow::set_state(c, &row.name, RunState::Running, Some(pm.pid))?;
            SourceRow::set_op(c, &row.name, None)
        })?;
        Ok(())
    }

    /// Settings a standby needs on every start: how to reach its primary,
    /// and limits at least as high as the primary's (hot standby refuses
    /// to run otherwise; they are recorded in pg_control).
    fn standby_settings(&self, row: &SourceRow) -> Result<Vec<(String, String)>> {
        let remote = RemoteRow::get(self.meta.conn(), &row.name)?.ok_or_else(|| {
            EngineError::WrongState(format!("source {} has no remote recorded", row.name))
        })?;
        let url = RemoteUrl::parse(&remote.url).map_err(EngineError::InvalidArgument)?;
        let mut conninfo = url.conninfo(None);
        let passfile = self.passfile(&row.name);
        if passfile.exists() {
            conninfo.push_str(&format!(
                " passfile={}",
                conf_value(&passfile.display().to_string())
            ));
        }
        conninfo.push_str(&format!(" application_name={}", Self::slot_name(&row.name)));
        let mut settings = vec![
            ("primary_conninfo".to_string(), conf_value(&conninfo)),
            (
                "primary_slot_name".to_string(),
                conf_value(&Self::slot_name(&row.name)),
            ),
        ];
        let limits = control::read_settings(&self.config.bins, &self.source_dir(&row.name))?;
        for (setting, value) in limits {
            settings.push((setting, value));
        }
        Ok(settings)
    }

    /// Starts a source's server with the settings of its mode.
    pub(crate) fn start_source(&mut self, row: &SourceRow) -> Result<(Postmaster, u16)> {
        let dir = self.source_dir(&row.name);
        let (profile, extra) = match row.mode.as_str() {
            "physical" => (Profile::Standby, self.standby_settings(row)?),
            _ => (Profile::Source, Vec::new()),
        };
        let owner = self.config.run_as.clone();
        self.start_server(
            Target::Source(&row.name),
            &dir,
            &owner,
            profile,
            &extra,
            row.port,
        )
    }

    /// Drops a physical source's slot on its primary, so the primary stops
    /// keeping WAL for it. Best effort: says what to do if it cannot.
    pub(crate) fn drop_remote_slot(&self, name: &str, url: &RemoteUrl, password: Option<&str>) {
        let slot = Self::slot_name(name);
        let sql = format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {}",
            pgfork_pg::sql::quote_literal(&slot)
        );
        if let Err(e) = remote::query(&self.config.bins, url, password, &sql) {
            self.progress.warn(&format!(
                "could not drop replication slot {slot} on {} ({e}); drop it there yourself \
                 (SELECT pg_drop_replication_slot('{slot}')), or the primary keeps WAL for it",
                url.redacted()
            ));
        }
    }

    /// Replication state of a physical source.
    pub fn source_lag(&self, name: &str) -> Result<Lag> {
        self.visible_source(name)?;
        let row = self.source_row(name)?;
        if row.mode != "physical" {
            return Err(EngineError::WrongState(format!(
                "source '{name}' is {}, not physical",
                row.mode
            )));
        }
        let mut client = session::maintenance(&self.endpoint(ServerKind::Source, name, row.port))
            .map_err(|e| {
            EngineError::WrongState(format!(
                "standby {name} is not answering ({e}): pgfork source start {name}"
            ))
        })?;
        let r = client
            .query_one(
                "SELECT (SELECT status FROM pg_stat_wal_receiver),
                        (SELECT (latest_end_lsn - pg_last_wal_replay_lsn())::bigint FROM pg_stat_wal_receiver),
                        (SELECT extract(epoch FROM now() - last_msg_receipt_time)::float8 FROM pg_stat_wal_receiver),
                        extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
                        pg_last_wal_replay_lsn()::text",
                &[],
            )
            .map_err(EngineError::sql("read replication state"))?;
        Ok(Lag {
            receiver: r.get(0),
            bytes: r.get::<_, Option<i64>>(1).map(|b| b.max(0)),
            seconds_since_message: r.get(2),
            replay_delay_seconds: r.get(3),
            replay_lsn: r.get(4),
        })
    }

    /// Waits until a physical source has replayed everything its primary
    /// had committed when this was called, so a snapshot taken next holds
    /// every row committed before `--fresh` was asked for.
    pub(crate) fn wait_until_fresh(&self, name: &str) -> Result<()> {
        let row = self.source_row(name)?;
        let remote = RemoteRow::get(self.meta.conn(), name)?.ok_or_else(|| {
            EngineError::WrongState(format!("source {name} has no remote recorded"))
        })?;
        let url = RemoteUrl::parse(&remote.url).map_err(EngineError::InvalidArgument)?;
        let target = remote::query(
            &self.config.bins,
            &url,
            self.remote_password(&remote).as_deref(),
            "SELECT pg_current_wal_lsn()::text",
        )?
        .first()
        .and_then(|r| r.first().cloned())
        .ok_or_else(|| {
            EngineError::WrongState("the primary did not report its WAL position".into())
        })?;
        let mut client = session::maintenance(&self.endpoint(ServerKind::Source, name, row.port))
            .map_err(EngineError::sql("connect to the standby"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        self.progress.stage(&format!(
            "waiting for standby {name} to replay up to {target}"
        ));
        loop {
            let caught_up: bool = client
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&target],
                )
                .map_err(EngineError::sql("read the standby's replay position"))?
                .get(0);
            if caught_up {
                return Ok(());
            }
            if Instant::now() > deadline {
                let lag = self
                    .source_lag(name)
                    .ok()
                    .and_then(|l| l.bytes)
                    .unwrap_or(-1);
                return Err(EngineError::WrongState(format!(
                    "standby {name} has not replayed up to {target} after 60 s ({lag} bytes behind); \
                     check `pgfork source info {name}` and the primary's load, then retry"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether a remote can be a source of `mode` for local binaries of major
/// version `local`: a physical copy needs the same major and the
/// REPLICATION privilege; `pg_dump` cannot dump a newer server.
fn check_compatible(mode: Mode, facts: &RemoteFacts, local: u32, remote: &str) -> Result<()> {
    let remote_major = facts.major;
    match mode {
        Mode::Physical if remote_major != local => Err(EngineError::InvalidArgument(format!(
            "{remote} runs PostgreSQL {remote_major}, but the local binaries are PostgreSQL {local}: a \
             physical copy needs the same major version; install PostgreSQL {remote_major} and point pgfork \
             at it (pgfork init --pg-bin DIR), or use --mode logical"
        ))),
        Mode::Physical if !facts.can_replicate => Err(EngineError::InvalidArgument(format!(
            "the role on {remote} has no REPLICATION privilege, which --mode physical needs: grant it \
             (ALTER ROLE ... REPLICATION and a 'replication' line in pg_hba.conf), or use --mode logical \
             (managed services usually allow only that)"
        ))),
        Mode::Logical if remote_major > local => Err(EngineError::InvalidArgument(format!(
            "{remote} runs PostgreSQL {remote_major}, newer than the local binaries (PostgreSQL {local}); \
             pg_dump cannot dump a newer server: install PostgreSQL {remote_major} or newer and run pgfork \
             init --pg-bin DIR"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_lines_unescape() {
        assert_eq!(
            passfile_password("*:*:*:rep:s\\:e\\\\cret").as_deref(),
            Some("s:e\\cret")
        );
        assert_eq!(passfile_password("*:*:*:rep"), None);
    }

    fn facts(major: u32, can_replicate: bool) -> RemoteFacts {
        RemoteFacts {
            major,
            can_replicate,
            db_owner: "app".into(),
            encoding: "UTF8".into(),
            collate: "C".into(),
            ctype: "C".into(),
            database_bytes: 0,
            cluster_bytes: 0,
        }
    }

    #[test]
    fn versions_and_privileges_decide_the_mode() {
        let remote = "postgres://rep@db/shop";
        let refusal = |mode, f: RemoteFacts| {
            check_compatible(mode, &f, 15, remote)
                .unwrap_err()
                .to_string()
        };
        let err = refusal(Mode::Physical, facts(16, true));
        assert!(
            err.contains("PostgreSQL 16")
                && err.contains("PostgreSQL 15")
                && err.contains("--mode logical"),
            "{err}"
        );
        let err = refusal(Mode::Physical, facts(15, false));
        assert!(
            err.contains("REPLICATION") && err.contains("--mode logical"),
            "{err}"
        );
        let err = refusal(Mode::Logical, facts(17, false));
        assert!(
            err.contains("PostgreSQL 17") && err.contains("newer"),
            "{err}"
        );
        // pg_dump 15 dumps older servers; a physical copy of the same major works.
        check_compatible(Mode::Logical, &facts(13, false), 15, remote).unwrap();
        check_compatible(Mode::Physical, &facts(15, true), 15, remote).unwrap();
    }
}
