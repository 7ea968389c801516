//! Shared branches (issue 13): a branch's owner (the agent that made it,
//! or an admin) shares it with other agents. Each member logs in as a role
//! of its own on the branch: a read-write member's role acts as the
//! application role (its session starts as it, so that what it makes
//! belongs to the branch's role); a read-only member's role holds only
//! `pg_read_all_data`. Members see and use the branch; only its owner
//! resets, stops, deletes or shares it. Unsharing drops the role and ends
//! the member's sessions at once. Roles are made again on every start of
//! the branch's server, so that a reset (a fresh clone) keeps its members.

use pgfork_pg::sql::{quote_ident, quote_literal, random_password, scram_verifier};
use pgfork_pool::meta::{self, AgentRow, BranchRow, MemberRow};
use serde::Serialize;

use crate::identity::Actor;
use crate::view::{BranchInfo, Dsn};
use crate::{Engine, EngineError, Result, ServerKind};

/// A membership as `branch share` reports it (never the member's password).
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The branch.
    pub branch: String,
    /// The member agent.
    pub agent: String,
    /// Whether it may only read.
    pub read_only: bool,
    /// The role it logs in as on the branch.
    pub role: String,
}

/// The role agent `agent` logs in as on branches shared with it.
pub fn member_role(agent: &str) -> String {
    format!("pgfork_member_{agent}")
}

impl Member {
    fn of(row: &MemberRow) -> Member {
        Member {
            branch: row.branch.clone(),
            agent: row.agent.clone(),
            read_only: row.read_only,
            role: member_role(&row.agent),
        }
    }
}

/// Creates or updates a member's role on a running branch: its password,
/// no escalation attributes, and what it may do.
pub(crate) fn arm_member(
    client: &mut postgres::Client,
    app_role: &str,
    m: &MemberRow,
) -> Result<()> {
    let role = quote_ident(&member_role(&m.agent));
    let name = quote_literal(&member_role(&m.agent));
    let app = quote_ident(app_role);
    let attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";
    let verifier = quote_literal(&scram_verifier(&m.password));
    let grants = if m.read_only {
        format!(
            "REVOKE {app} FROM {role}; GRANT pg_read_all_data TO {role};
             ALTER ROLE {role} SET default_transaction_read_only = on; ALTER ROLE {role} RESET role;"
        )
    } else {
        format!(
            "REVOKE pg_read_all_data FROM {role}; GRANT {app} TO {role};
             ALTER ROLE {role} RESET default_transaction_read_only; ALTER ROLE {role} SET role = {app_lit};",
            app_lit = quote_literal(app_role)
        )
    };
    let sql = format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN
             CREATE ROLE {role}; END IF; END $$;
         ALTER ROLE {role} {attributes} PASSWORD {verifier};
         {grants}"
    );
    client
        .batch_execute(&sql)
        .map_err(EngineError::sql("give a member its role on the branch"))
}

/// Ends a member's sessions on a running branch and drops its role.
pub(crate) fn disarm_member(
    client: &mut postgres::Client,
    app_role: &str,
    agent: &str,
) -> Result<()> {
    let role = member_role(agent);
    let sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {name};
         DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN
             REASSIGN OWNED BY {ident} TO {app}; DROP OWNED BY {ident}; DROP ROLE {ident};
         END IF; END $$;",
        name = quote_literal(&role),
        ident = quote_ident(&role),
        app = quote_ident(app_role),
    );
    client
        .batch_execute(&sql)
        .map_err(EngineError::sql("drop a member's role on the branch"))
}

impl Engine {
    /// The acting agent's membership of branch `row`, if it has one.
    pub(crate) fn membership(&self, row: &BranchRow) -> Result<Option<MemberRow>> {
        match self.actor.agent() {
            Some(agent) => Ok(MemberRow::get(self.meta.conn(), &row.name, agent)?),
            None => Ok(None),
        }
    }

    /// Branch `name` if the actor owns it; unknown if it cannot see it,
    /// refused if it is only a member.
    pub(crate) fn owned_branch(&self, name: &str, what: &str) -> Result<BranchRow> {
        let row = self.visible_branch(name)?;
        if self.owns_branch(&row) {
            return Ok(row);
        }
        Err(EngineError::Forbidden(format!(
            "branch '{name}' is shared with agent '{}', and only its owner may {what} it",
            self.actor.agent().unwrap_or_default()
        )))
    }

    /// Shares branch `name` with agent `agent` (read-only, or as the
    /// branch's role). Sharing again changes the access; the member's role
    /// gets a fresh password.
    pub fn branch_share(&mut self, name: &str, agent: &str, read_only: bool) -> Result<Member> {
        let row = self.owned_branch(name, "share")?;
        let member = AgentRow::get(self.meta.conn(), agent)?
            .filter(|a| a.revoked_at.is_none())
            .ok_or_else(|| {
                EngineError::InvalidArgument(format!(
                    "no agent named '{agent}' (or it is revoked): `pgfork agent list` shows the agents"
                ))
            })?;
        if row.created_by.as_deref() == Some(&Actor::Agent(member.name.clone()).label()) {
            return Err(EngineError::InvalidArgument(format!(
                "agent '{agent}' made branch '{name}': it has it already"
            )));
        }
        if member.source != row.source {
            return Err(EngineError::InvalidArgument(format!(
                "agent '{agent}' works on source '{}', and branch '{name}' is of another source",
                member.source
            )));
        }
        let m = MemberRow {
            branch: name.into(),
            agent: agent.into(),
            read_only,
            password: random_password(),
            created_at: meta::now(),
        };
        self.meta.write(|c| m.put(c))?;
        if row.postmaster.is_some_and(|p| p.is_alive()) {
            let app_role = self.source_row(&row.source)?.role;
            let armed = self
                .branch_superuser(&row)
                .and_then(|mut c| arm_member(&mut c, &app_role, &m));
            if let Err(e) = armed {
                self.meta.write(|c| MemberRow::delete(c, name, agent))?;
                return Err(e);
            }
        }
        Ok(Member::of(&m))
    }

    /// Ends agent `agent`'s membership of branch `name`: its role is
    /// dropped and its sessions end at once.
    pub fn branch_unshare(&mut self, name: &str, agent: &str) -> Result<()> {
        let row = self.owned_branch(name, "unshare")?;
        if !self.meta.write(|c| MemberRow::delete(c, name, agent))? {
            return Err(EngineError::InvalidArgument(format!(
                "branch '{name}' is not shared with agent '{agent}'"
            )));
        }
        if row.postmaster.is_some_and(|p| p.is_alive()) {
            let app_role = self.source_row(&row.source)?.role;
            let mut client = self.branch_superuser(&row)?;
            disarm_member(&mut client, &app_role, agent)?;
        }
        Ok(())
    }

    /// The members of branch `name` (its owner and admins may ask).
    pub fn branch_members(&self, name: &str) -> Result<Vec<Member>> {
        let row = self.visible_branch(name)?;
        Ok(MemberRow::of_branch(self.meta.conn(), &row.name)?
            .iter()
            .map(Member::of)
            .collect())
    }

    /// Gives every member of a starting branch its role (after a reset the
    /// clone has none), and drops the member roles its data brought along
    /// that are not its members': a branch of a shared branch holds the
    /// parent's member roles, passwords and all, which must open nothing
    /// here.
    pub(crate) fn arm_members(
        &self,
        client: &mut postgres::Client,
        row: &BranchRow,
        app_role: &str,
    ) -> Result<()> {
        let members = MemberRow::of_branch(self.meta.conn(), &row.name)?;
        let present: Vec<String> = client
            .query(
                "SELECT rolname::pg_catalog.text FROM pg_catalog.pg_roles \
                  WHERE rolname::pg_catalog.text OPERATOR(pg_catalog.~~) 'pgfork\\_member\\_%'",
                &[],
            )
            .map_err(EngineError::sql("list the member roles of a branch"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for role in present {
            let agent = role.trim_start_matches("pgfork_member_");
            if !members.iter().any(|m| m.agent == agent) {
                disarm_member(client, app_role, agent)?;
            }
        }
        for m in members {
            arm_member(client, app_role, &m)?;
        }
        Ok(())
    }

    /// A branch as the actor sees it: a member gets its own role and
    /// password in the DSN, never the owner's.
    pub(crate) fn as_seen(&self, row: &BranchRow, mut info: BranchInfo) -> Result<BranchInfo> {
        if self.owns_branch(row) {
            return Ok(info);
        }
        if let Some(m) = self.membership(row)? {
            let mine = info.secret.as_ref().map(|d| Dsn {
                user: member_role(&m.agent),
                password: m.password.clone(),
                ..d.clone()
            });
            info.user = member_role(&m.agent);
            info.dsn = mine.as_ref().map(Dsn::redacted).unwrap_or_default();
            info.secret = mine;
        }
        Ok(info)
    }

    /// Cuts a revoked agent off every branch it holds: its memberships go
    /// (roles dropped, sessions ended), and the branches it made get a new
    /// password, with their open sessions ended, so that a DSN it was
    /// handed opens nothing. A stopped branch takes the new password at its
    /// next start. Failures are reported, not fatal: the agent's tokens are
    /// gone already.
    pub(crate) fn cut_off_agent(&mut self, agent: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let label = Actor::Agent(agent.into()).label();
        let branches = match BranchRow::list(self.meta.conn()) {
            Ok(b) => b,
            Err(e) => return vec![e.to_string()],
        };
        for row in branches {
            let running = row.postmaster.is_some_and(|p| p.is_alive());
            let app_role = match self.source_row(&row.source) {
                Ok(s) => s.role,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            let member = MemberRow::get(self.meta.conn(), &row.name, agent)
                .ok()
                .flatten();
            if member.is_some() {
                let gone = self
                    .meta
                    .write(|c| MemberRow::delete(c, &row.name, agent))
                    .map_err(EngineError::from)
                    .and_then(|_| match running {
                        true => self
                            .branch_superuser(&row)
                            .and_then(|mut c| disarm_member(&mut c, &app_role, agent)),
                        false => Ok(()),
                    });
                if let Err(e) = gone {
                    problems.push(format!("branch '{}': {e}", row.name));
                }
            }
            if row.created_by.as_deref() == Some(label.as_str()) {
                let password = random_password();
                let rotated = self
                    .meta
                    .write(|c| BranchRow::set_password(c, &row.name, &password))
                    .map_err(EngineError::from)
                    .and_then(|()| match running {
                        true => self.branch_superuser(&row).and_then(|mut c| {
                            crate::branch::arm_app_role(&mut c, &app_role, &password)?;
                            c.batch_execute(&format!(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}",
                                quote_literal(&app_role)
                            ))
                            .map_err(EngineError::sql("end the revoked agent's sessions"))
                        }),
                        false => Ok(()),
                    });
                if let Err(e) = rotated {
                    problems.push(format!("branch '{}': {e}", row.name));
                }
            }
        }
        problems
    }

    /// A superuser session in the branch's database (REASSIGN OWNED acts
    /// on the current database only).
    fn branch_superuser(&self, row: &BranchRow) -> Result<postgres::Client> {
        let ep = self.endpoint(ServerKind::Branch, &row.name, row.port);
        let database = self.source_row(&row.source)?.database;
        pgfork_pg::untrusted::session::superuser_in(&ep, &database)
            .map_err(EngineError::sql("connect to the branch"))
    }
}
