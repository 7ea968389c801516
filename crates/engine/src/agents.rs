//! Agents: credentials of the policy proxy, each bound to a source and a
//! policy. The secret is shown once; meta.db keeps only its SCRAM-SHA-256
//! verifier, which is what the proxy checks a login against.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgfork_pg::sql::{quote_literal, random_password, scram_verifier};
use pgfork_pg::untrusted::session::{self, Endpoint};
use pgfork_pool::meta::{self, AgentRow, BranchRow, SourceRow};
use pgfork_pool::{Home, Meta};
use serde::Serialize;

use crate::view::{Dsn, timestamp};
use crate::{
    BranchCreate, Engine, EngineError, Result, ServerKind, agent_roles, names, socket_dir_in,
};

pub use crate::agent_roles::role_name;

/// Where the proxy listens unless told otherwise.
pub const DEFAULT_PROXY_ADDR: &str = "127.0.0.1:6432";

/// Longest agent name: room for the suffixes of per-session branch names.
pub const MAX_AGENT_NAME: usize = 40;

/// Proxy sessions an agent may hold at once unless `agent create` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The most `--max-connections` may be.
pub const MAX_CONNECTIONS: u32 = 1000;

/// What an agent may do through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Reads the source; every write or escape is refused.
    ReadOnly,
    /// Runs on the source for real; every transaction is rolled back.
    DryRun,
    /// Routed to a branch of its own (or a named, shared one).
    Branch,
}

impl Policy {
    /// The word users type and meta.db stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::ReadOnly => "read-only",
            Policy::DryRun => "dry-run",
            Policy::Branch => "branch",
        }
    }

    /// Parses a policy name.
    pub fn parse(text: &str) -> Result<Policy> {
        match text {
            "read-only" => Ok(Policy::ReadOnly),
            "dry-run" => Ok(Policy::DryRun),
            "branch" => Ok(Policy::Branch),
            _ => Err(EngineError::InvalidArgument(format!(
                "unknown policy '{text}': use read-only, dry-run or branch"
            ))),
        }
    }
}

/// What `agent create` was asked for.
#[derive(Debug, Clone)]
pub struct AgentCreate {
    /// Name (the user name of its connection string).
    pub name: String,
    /// The source it works on.
    pub source: String,
    /// Its policy.
    pub policy: Policy,
    /// A named branch to use, possibly shared with other agents (branch policy).
    pub branch: Option<String>,
    /// TTL of branches made for it.
    pub ttl: Option<Duration>,
    /// Most rows one statement may affect.
    pub max_rows: Option<u64>,
    /// Statement timeout.
    pub statement_timeout: Option<Duration>,
    /// Most bytes its branch may stop sharing with its snapshot.
    pub max_storage: Option<u64>,
    /// Stop its branch after this long without a session.
    pub idle_stop: Option<Duration>,
    /// Each connection gets its own branch.
    pub per_session: bool,
    /// Per-session branches outlive their session.
    pub keep: bool,
    /// Branches are made from a new snapshot of the source.
    pub fresh: bool,
    /// Statement parameters go to the audit log.
    pub audit_params: bool,
    /// Most proxy sessions at once (1..=1000); also its role's CONNECTION LIMIT.
    pub max_connections: u32,
    /// Most branches it may hold through the API and MCP (None: no limit).
    pub max_branches: Option<u32>,
    /// Longest TTL it may give its branches (None: 24 h).
    pub max_ttl: Option<Duration>,
    /// The orchestrator agent it works for: that agent sees, uses, resets
    /// and deletes the branches this one makes.
    pub parent: Option<String>,
}

/// An agent as `agent list` shows it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    /// Name.
    pub name: String,
    /// Source.
    pub source: String,
    /// Policy.
    pub policy: String,
    /// `active` or `revoked`.
    pub status: &'static str,
    /// The branch its sessions use (`per-session` when each has its own).
    pub branch: Option<String>,
    /// TTL of its branches, in seconds.
    pub ttl_secs: Option<i64>,
    /// Rows one statement may affect.
    pub max_rows: Option<i64>,
    /// Statement timeout, in milliseconds.
    pub statement_timeout_ms: Option<i64>,
    /// Storage its branch may use, in bytes.
    pub max_storage: Option<i64>,
    /// Seconds without a session before its branch stops.
    pub idle_stop_secs: Option<i64>,
    /// Whether per-session branches are kept.
    pub keep: bool,
    /// Whether branches come from a new snapshot.
    pub fresh: bool,
    /// Whether parameters are audited.
    pub audit_params: bool,
    /// Most proxy sessions at once.
    pub max_connections: i64,
    /// Most branches it may hold through the API and MCP (null: no limit).
    pub max_branches: Option<i64>,
    /// Longest TTL it may ask for, in seconds.
    pub max_ttl_secs: i64,
    /// The orchestrator agent it works for.
    pub parent: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last rotation.
    pub rotated_at: Option<String>,
    /// Revocation.
    pub revoked_at: Option<String>,
}

impl AgentInfo {
    fn new(row: &AgentRow) -> AgentInfo {
        let branch = match (row.policy.as_str(), row.per_session) {
            ("branch", true) => Some("per-session".to_string()),
            ("branch", false) => Some(agent_branch(row)),
            _ => None,
        };
        AgentInfo {
            name: row.name.clone(),
            source: row.source.clone(),
            policy: row.policy.clone(),
            status: if row.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            },
            branch,
            ttl_secs: row.ttl,
            max_rows: row.max_rows,
            statement_timeout_ms: row.statement_timeout_ms,
            max_storage: row.max_storage,
            idle_stop_secs: row.idle_stop,
            keep: row.keep,
            fresh: row.fresh,
            audit_params: row.audit_params,
            max_connections: row.max_connections,
            max_branches: row.max_branches,
            max_ttl_secs: row
                .max_ttl
                .unwrap_or(crate::scope::DEFAULT_MAX_TTL.as_secs() as i64),
            parent: row.parent.clone(),
            created_at: timestamp(row.created_at),
            rotated_at: row.rotated_at.map(timestamp),
            revoked_at: row.revoked_at.map(timestamp),
        }
    }
}

/// An agent with its new secret: shown once, by `create` and `rotate`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSecret {
    /// The agent.
    #[serde(flatten)]
    pub agent: AgentInfo,
    /// The secret (its password at the proxy).
    pub secret: String,
    /// `postgres://NAME:SECRET@PROXY/DATABASE`.
    pub dsn: String,
    /// Its bearer token for the HTTP API and MCP (shown once, like the
    /// secret; meta.db keeps only a hash).
    pub api_token: String,
}

/// The branch an agent's sessions share (its named branch, or `agent-NAME`).
pub fn agent_branch(row: &AgentRow) -> String {
    row.branch
        .clone()
        .unwrap_or_else(|| format!("agent-{}", row.name))
}

/// Where the proxy of `home` listens: the `proxy_listen` setting, else the default.
pub fn proxy_addr(meta: &Meta) -> Result<String> {
    Ok(meta
        .setting("proxy_listen")?
        .unwrap_or_else(|| DEFAULT_PROXY_ADDR.to_string()))
}

/// Reads an agent without opening (and reconciling) an engine: the proxy
/// does this on every login.
pub fn lookup_agent(home: &Home, name: &str) -> Result<Option<AgentRow>> {
    let meta = Meta::open(&home.meta_db(), false)?;
    Ok(AgentRow::get(meta.conn(), name)?)
}

/// Every agent row, without opening an engine (the proxy's revocation watch).
pub fn agent_rows(home: &Home) -> Result<Vec<AgentRow>> {
    let meta = Meta::open(&home.meta_db(), false)?;
    Ok(AgentRow::list(meta.conn())?)
}

/// How the proxy reaches a source's server for a read-only or dry-run session:
/// over its unix socket (only pgfork can enter it), as a role that is not a
/// superuser, without a password.
#[derive(Debug, Clone)]
pub struct SourceEndpoint {
    /// The source.
    pub source: String,
    /// Unix socket directory.
    pub socket_dir: PathBuf,
    /// Port (names the socket).
    pub port: u16,
    /// Database.
    pub database: String,
    /// Role to log in as.
    pub role: String,
    /// `local`, `logical` or `physical`.
    pub mode: String,
    /// Whether its server runs.
    pub running: bool,
    /// Its postmaster (pid, start tick) while running: a restart gives a new one.
    pub run: Option<(i32, u64)>,
}

/// A source's connection slots, as the proxy budgets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceSlots {
    /// `max_connections`.
    pub max_connections: u32,
    /// Slots ordinary roles cannot use: `superuser_reserved_connections`
    /// (and `reserved_connections`, PostgreSQL 16 on).
    pub reserved: u32,
}

/// A duration setting as stored seconds, within its bound.
fn duration_secs(field: &str, d: Option<Duration>, limit: names::Limit) -> Result<Option<i64>> {
    d.map(|d| names::stored_secs(field, d, limit)).transpose()
}

impl Engine {
    /// An agent's row.
    pub fn agent_row(&self, name: &str) -> Result<AgentRow> {
        AgentRow::get(self.meta.conn(), name)?.ok_or_else(|| {
            EngineError::InvalidArgument(format!(
                "no agent named '{name}': `pgfork agent list` shows them"
            ))
        })
    }

    /// Creates an agent and returns it with its secret (shown once).
    pub fn agent_create(&mut self, req: &AgentCreate) -> Result<AgentSecret> {
        self.admin_only("manage agents")?;
        names::validate(&req.name)?;
        // Every stored value is checked before anything is written (a
        // read-only or dry-run agent gets a role on the source below).
        let ttl = duration_secs("ttl", req.ttl, names::TTL)?;
        let idle_stop = duration_secs("idle_stop", req.idle_stop, names::IDLE)?;
        if let Some(t) = req.statement_timeout {
            names::check_duration("statement_timeout", t, names::STATEMENT_TIMEOUT)?;
        }
        if !(1..=MAX_CONNECTIONS).contains(&req.max_connections) {
            return Err(EngineError::InvalidArgument(format!(
                "max_connections must be 1 to {MAX_CONNECTIONS}, not {}: the most proxy sessions the agent holds at once",
                req.max_connections
            )));
        }
        if req.name.len() > MAX_AGENT_NAME {
            return Err(EngineError::InvalidName {
                name: req.name.clone(),
                reason: "agent names are at most 40 characters",
            });
        }
        let source = self.source_row(&req.source)?;
        if req.policy != Policy::Branch
            && (req.branch.is_some()
                || req.per_session
                || req.keep
                || req.fresh
                || req.max_storage.is_some()
                || req.ttl.is_some())
        {
            return Err(EngineError::InvalidArgument(
                "--branch, --per-session, --keep, --fresh, --ttl and --max-storage are for --policy branch".into(),
            ));
        }
        if req.keep && !req.per_session {
            return Err(EngineError::InvalidArgument(
                "--keep is for --per-session agents".into(),
            ));
        }
        if req.per_session && req.branch.is_some() {
            return Err(EngineError::InvalidArgument(
                "--per-session gives each connection its own branch: it does not take --branch"
                    .into(),
            ));
        }
        if let Some(branch) = &req.branch {
            names::validate(branch)?;
            if let Some(b) = BranchRow::get(self.meta.conn(), branch)?
                && b.source != req.source
            {
                return Err(EngineError::InvalidArgument(format!(
                    "branch '{branch}' is a branch of source '{}', not of '{}'",
                    b.source, req.source
                )));
            }
            if SourceRow::get(self.meta.conn(), branch)?.is_some() {
                return Err(EngineError::NameTaken {
                    name: branch.clone(),
                    kind: "source",
                });
            }
        }
        if req.policy == Policy::DryRun && source.mode == "physical" {
            return Err(EngineError::InvalidArgument(format!(
                "source '{}' is a physical standby, which cannot run writes even to roll them back: \
                 use --policy branch (or read-only)",
                source.name
            )));
        }
        let secret = random_password();
        let row = AgentRow {
            name: req.name.clone(),
            source: req.source.clone(),
            policy: req.policy.as_str().into(),
            verifier: scram_verifier(&secret),
            branch: req.branch.clone(),
            ttl,
            max_rows: req.max_rows.map(|n| n.min(i64::MAX as u64) as i64),
            statement_timeout_ms: req.statement_timeout.map(|d| d.as_millis().max(1) as i64),
            max_storage: req.max_storage.map(|n| n.min(i64::MAX as u64) as i64),
            idle_stop,
            per_session: req.per_session,
            keep: req.keep,
            fresh: req.fresh,
            audit_params: req.audit_params,
            max_connections: i64::from(req.max_connections),
            created_at: meta::now(),
            rotated_at: None,
            revoked_at: None,
            max_branches: req.max_branches.map(i64::from),
            max_ttl: req
                .max_ttl
                .map(|d| {
                    names::check_duration("max-ttl", d, names::TTL)?;
                    Ok::<_, EngineError>(d.as_secs() as i64)
                })
                .transpose()?,
            parent: match &req.parent {
                None => None,
                Some(p) if p == &req.name => {
                    return Err(EngineError::InvalidArgument(format!(
                        "agent '{p}' cannot be its own --parent"
                    )));
                }
                Some(p) => Some(
                    AgentRow::get(self.meta.conn(), p)?
                        .filter(|a| a.revoked_at.is_none())
                        .ok_or_else(|| {
                            EngineError::InvalidArgument(format!(
                                "--parent: no agent named '{p}' (or it is revoked): `pgfork agent list` shows the agents"
                            ))
                        })?
                        .name,
                ),
            },
        };
        // The row first, so that its name is the agent's before its role is
        // made (a name taken already must not touch that agent's role); a
        // crash in between leaves an agent whose first session makes it.
        let api_token = self.meta.write(|c| {
            if AgentRow::get(c, &row.name)?.is_some() {
                return Err(EngineError::InvalidArgument(format!(
                    "agent '{}' exists already (revoked agents keep their name for the audit log): choose another name",
                    row.name
                )));
            }
            row.insert(c)?;
            crate::identity::put_agent_token(c, &row.name)
        })?;
        if req.policy != Policy::Branch
            && let Err(e) = self.make_agent_role(&row)
        {
            self.meta.write(|c| {
                crate::identity::delete_agent_token(c, &row.name)?;
                Ok::<_, EngineError>(AgentRow::delete(c, &row.name)?)
            })?;
            return Err(e);
        }
        self.secret_of(&row, secret, api_token)
    }

    fn secret_of(&self, row: &AgentRow, secret: String, api_token: String) -> Result<AgentSecret> {
        let source = self.source_row(&row.source)?;
        let addr = proxy_addr(&self.meta)?;
        Ok(AgentSecret {
            agent: AgentInfo::new(row),
            dsn: format!(
                "postgres://{}:{secret}@{addr}/{}",
                row.name, source.database
            ),
            secret,
            api_token,
        })
    }

    /// Every agent.
    pub fn agent_list(&self) -> Result<Vec<AgentInfo>> {
        self.admin_only("list agents")?;
        Ok(AgentRow::list(self.meta.conn())?
            .iter()
            .map(AgentInfo::new)
            .collect())
    }

    /// One agent.
    pub fn agent_info(&self, name: &str) -> Result<AgentInfo> {
        // An agent may read its own record, and no other's.
        if self.actor.agent().is_some_and(|me| me != name) {
            self.admin_only("read other agents")?;
        }
        Ok(AgentInfo::new(&self.agent_row(name)?))
    }

    /// Gives an agent a new secret; the old one stops working for new logins.
    pub fn agent_rotate(&mut self, name: &str) -> Result<AgentSecret> {
        self.admin_only("manage agents")?;
        let row = self.agent_row(name)?;
        if row.revoked_at.is_some() {
            return Err(EngineError::WrongState(format!(
                "agent '{name}' is revoked"
            )));
        }
        let secret = random_password();
        let verifier = scram_verifier(&secret);
        // The proxy secret and the API token change together: a rotation
        // is one identity's.
        let api_token = self.meta.write(|c| {
            AgentRow::set_verifier(c, name, &verifier, meta::now())?;
            crate::identity::put_agent_token(c, name)
        })?;
        let row = self.agent_row(name)?;
        self.secret_of(&row, secret, api_token)
    }

    /// Revokes an agent: no new login, and a running proxy ends its
    /// sessions; the role of a read-only or dry-run agent is dropped from
    /// its source (with its sessions there). Revoking again retries that.
    pub fn agent_revoke(&mut self, name: &str) -> Result<AgentInfo> {
        self.admin_only("manage agents")?;
        let row = self.agent_row(name)?;
        self.meta.write(|c| {
            AgentRow::revoke(c, name, meta::now())?;
            crate::identity::delete_agent_token(c, name)
        })?;
        for problem in self.cut_off_agent(name) {
            self.progress.warn(&format!(
                "agent '{name}' is revoked, but not yet cut off a branch ({problem}): run `pgfork agent revoke {name}` again"
            ));
        }
        if row.policy != "branch" {
            let source = self.source_row(&row.source)?;
            if source.mode != "physical" {
                let dropped = source_running(&source)
                    .and_then(|()| agent_roles::drop_role(&self.source_ep(&source), &source, name));
                if let Err(e) = dropped {
                    self.progress.warn(&format!(
                        "agent '{name}' is revoked, but its role {} is still on source '{}' ({e}): \
                         it has no password and only pgfork reaches the source's socket; \
                         run `pgfork agent revoke {name}` again once the source runs to drop it",
                        agent_roles::role_name(name),
                        source.name
                    ));
                }
            }
        }
        self.agent_info(name)
    }

    /// The server-side identity of a new read-only or dry-run agent. On a
    /// local or logical source, its own role, from a clean slate: a role of
    /// that name no agent holds (left by a failed `agent create`) is dropped
    /// first, and so is a half-made one if making it fails. On a physical
    /// standby, where no role can be made, the application role it will log
    /// in as is checked not to be a superuser.
    fn make_agent_role(&mut self, agent: &AgentRow) -> Result<()> {
        let row = self.source_row(&agent.source)?;
        source_running(&row)?;
        if row.mode == "physical" {
            return self.check_standby_role(&row);
        }
        let ep = self.source_ep(&row);
        agent_roles::drop_role(&ep, &row, &agent.name)?;
        agent_roles::ensure(&ep, &row, agent).inspect_err(|_| {
            let _ = agent_roles::drop_role(&ep, &row, &agent.name);
        })
    }

    /// A physical source's read-only agents log in as its application
    /// role (a standby's catalog is the primary's): it must be ordinary.
    fn check_standby_role(&self, row: &SourceRow) -> Result<()> {
        let mut client = self.source_maintenance(row)?;
        let sql = format!(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = {}",
            quote_literal(&row.role)
        );
        let rows = client.simple_query(&sql).map_err(EngineError::sql(
            "check the application role of the standby",
        ))?;
        let unsafe_role = rows
            .iter()
            .any(|m| matches!(m, postgres::SimpleQueryMessage::Row(r) if r.get(0) != Some("f")));
        if unsafe_role {
            return Err(EngineError::WrongState(format!(
                "the application role '{}' of physical source '{}' is missing or a superuser: \
                 read-only agents log in as it, so it must be an ordinary role (source add --role)",
                row.role, row.name
            )));
        }
        Ok(())
    }

    fn source_ep(&self, row: &SourceRow) -> Endpoint {
        self.endpoint(ServerKind::Source, &row.name, row.port)
    }

    /// The source's superuser in its maintenance database: roles are
    /// cluster-wide, and nothing of an agent's lives there.
    fn source_maintenance(&self, row: &SourceRow) -> Result<postgres::Client> {
        source_running(row)?;
        session::maintenance(&self.source_ep(row))
            .map_err(EngineError::sql("connect to the source"))
    }

    /// How a read-only or dry-run session of `agent` reaches its source.
    pub fn source_endpoint(&self, agent: &AgentRow) -> Result<SourceEndpoint> {
        let row = self.source_row(&agent.source)?;
        // A standby's roles are the primary's: there read-only agents log
        // in as the application role (checked not to be a superuser).
        let role = if row.mode == "physical" {
            row.role.clone()
        } else {
            agent_roles::role_name(&agent.name)
        };
        Ok(SourceEndpoint {
            socket_dir: self.socket_dir(ServerKind::Source, &row.name),
            port: row.port,
            database: row.database.clone(),
            role,
            mode: row.mode.clone(),
            running: row.postmaster.is_some_and(|p| p.is_alive()),
            run: row.postmaster.map(|p| (p.pid, p.start_ticks)),
            source: row.name,
        })
    }

    /// The branch a session of a branch-policy agent uses, made from the
    /// source's latest snapshot (a new one with `fresh`) if it does not
    /// exist, and woken if it is stopped. `session_branch` names a
    /// per-session branch. Returns its credentials (a secret) and whether
    /// it was created or woken by this call.
    pub fn agent_branch_ready(
        &mut self,
        agent: &AgentRow,
        session_branch: Option<&str>,
    ) -> Result<(Dsn, Wake)> {
        let name = session_branch
            .map(str::to_string)
            .unwrap_or_else(|| agent_branch(agent));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let attempt = self.try_branch_ready(agent, &name);
            match attempt {
                Err(EngineError::Busy { .. })
                | Err(EngineError::NameTaken { kind: "branch", .. })
                    if Instant::now() < deadline =>
                {
                    // Another session of the same agent is making or waking it.
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn try_branch_ready(&mut self, agent: &AgentRow, name: &str) -> Result<(Dsn, Wake)> {
        let wake = match BranchRow::get(self.meta.conn(), name)? {
            Some(row) => {
                if row.source != agent.source {
                    return Err(EngineError::WrongState(format!(
                        "branch '{name}' belongs to source '{}', not to the agent's source '{}'",
                        row.source, agent.source
                    )));
                }
                let info = self.branch_info(name)?;
                match info.status {
                    "running" => {
                        // A session is about to open on it: no idle stop
                        // now, whoever would decide it.
                        self.touch_branch(name);
                        Wake::Running
                    }
                    "stopped" | "crashed" => {
                        self.branch_start(name)?;
                        Wake::Woken
                    }
                    _ => {
                        let op = row.op.map(|o| o.kind.as_str()).unwrap_or("busy");
                        let pid = row.op.map(|o| o.owner.pid).unwrap_or(0);
                        return Err(EngineError::Busy {
                            what: format!("branch '{name}'"),
                            op,
                            pid,
                        });
                    }
                }
            }
            None => {
                let mut labels = BTreeMap::new();
                labels.insert("pgfork.agent".to_string(), agent.name.clone());
                if agent.per_session {
                    labels.insert("pgfork.session".to_string(), "1".to_string());
                }
                let req = BranchCreate {
                    name: name.to_string(),
                    from: agent.source.clone(),
                    ttl: agent.ttl.map(|s| Duration::from_secs(s.max(1) as u64)),
                    labels,
                    fresh: agent.fresh,
                    // Only the proxy may reach it: no TCP port, so a
                    // password the agent sets on its role opens nothing.
                    proxy_only: true,
                    for_agent: Some(agent.name.clone()),
                    // Where the filesystem can hold it, the agent's
                    // storage budget is a hard limit too, not only the
                    // proxy's sampled check.
                    max_size: agent
                        .max_storage
                        .filter(|_| self.config.quotas.is_some())
                        .map(|n| (n.max(0) as u64).max(crate::storage::MIN_MAX_SIZE)),
                    ..BranchCreate::default()
                };
                self.branch_create(&req)?;
                Wake::Created
            }
        };
        let mut dsn = self.branch_credentials(name)?;
        // A member of a branch shared with it (read-only, say) reaches it
        // as its own role, so the same limits hold through the proxy.
        if let Some(m) = pgfork_pool::meta::MemberRow::get(self.meta.conn(), name, &agent.name)? {
            dsn.user = crate::sharing::member_role(&m.agent);
            dsn.password = m.password;
        }
        Ok((dsn, wake))
    }

    /// The application-role credentials of a branch (a secret).
    pub fn branch_credentials(&self, name: &str) -> Result<Dsn> {
        self.visible_branch(name)?;
        let row = self.branch_row(name)?;
        let source = self.source_row(&row.source)?;
        Ok(Dsn {
            host: "127.0.0.1".into(),
            socket_dir: (!row.tcp).then(|| self.socket_dir(ServerKind::Branch, name)),
            port: row.port,
            user: source.role,
            password: row.password,
            database: source.database,
        })
    }
}

/// What getting an agent's branch ready took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// It was running.
    Running,
    /// It was stopped and has been started.
    Woken,
    /// It did not exist and has been created.
    Created,
}

fn source_running(row: &SourceRow) -> Result<()> {
    if row.postmaster.is_some_and(|p| p.is_alive()) {
        return Ok(());
    }
    Err(EngineError::WrongState(format!(
        "source '{}' is not running: `pgfork source start {}`",
        row.name, row.name
    )))
}

/// An agent that may still log in, and its running source, read without
/// opening (and reconciling) an engine: the proxy does this per session.
fn live_agent(home: &Home, agent: &str) -> Result<(AgentRow, SourceRow, Endpoint)> {
    let meta = Meta::open(&home.meta_db(), false)?;
    let row = AgentRow::get(meta.conn(), agent)?
        .filter(|a| a.revoked_at.is_none())
        .ok_or_else(|| EngineError::WrongState(format!("agent '{agent}' is revoked or gone")))?;
    let source = SourceRow::get(meta.conn(), &row.source)?
        .ok_or_else(|| EngineError::UnknownSource(row.source.clone()))?;
    source_running(&source)?;
    let ep = Endpoint {
        socket_dir: socket_dir_in(home, ServerKind::Source, &source.name),
        port: source.port,
    };
    Ok((row, source, ep))
}

/// Before each proxy session of a read-only or dry-run agent: checks its
/// role on the source as that role (attributes, memberships, grants on
/// every schema, table, view and sequence), and makes or repairs it if
/// needed: the role of an agent made before roles were per agent, of a
/// logical source refreshed into a new cluster, grants on what a role
/// other than the application's made since. Returns whether it repaired.
pub fn prepare_agent_role(home: &Home, agent: &str) -> Result<bool> {
    let (row, source, ep) = live_agent(home, agent)?;
    if source.mode == "physical" || row.policy == "branch" {
        return Ok(false);
    }
    if agent_roles::check(&ep, &source, &row)? == agent_roles::RoleState::Ready {
        return Ok(false);
    }
    agent_roles::ensure(&ep, &source, &row)?;
    Ok(true)
}

/// Makes an agent's role again (the server refused it at login), unless
/// the agent was revoked meanwhile.
pub fn repair_agent_role(home: &Home, agent: &str) -> Result<()> {
    let (row, source, ep) = live_agent(home, agent)?;
    if source.mode == "physical" || row.policy == "branch" {
        return Ok(());
    }
    agent_roles::ensure(&ep, &source, &row)
}

/// A running source's connection slots (read as its superuser).
pub fn source_slots(home: &Home, source: &str) -> Result<SourceSlots> {
    let meta = Meta::open(&home.meta_db(), false)?;
    let row = SourceRow::get(meta.conn(), source)?
        .ok_or_else(|| EngineError::UnknownSource(source.to_string()))?;
    source_running(&row)?;
    let ep = Endpoint {
        socket_dir: socket_dir_in(home, ServerKind::Source, &row.name),
        port: row.port,
    };
    let (max_connections, reserved) = agent_roles::slots(&ep)?;
    Ok(SourceSlots {
        max_connections,
        reserved,
    })
}

/// Records where the proxy listens, so that `agent create` prints
/// connection strings with that address.
pub fn set_proxy_addr(home: &Home, addr: &str) -> Result<()> {
    let mut meta = Meta::open(&home.meta_db(), false)?;
    meta.write(|c| Meta::set_setting(c, "proxy_listen", addr))?;
    Ok(())
}
