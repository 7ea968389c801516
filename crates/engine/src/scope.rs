//! What the actor of an engine may do (issue 13), checked here at the
//! engine's public operations, so that the API, MCP and any later interface
//! enforce the same scope. Admins may do everything. An agent may:
//!
//! - create branches of its source (or of snapshots of it, or of its own
//!   branches), at most `max_branches` of them, each with a TTL no longer
//!   than `max_ttl` (24 h unless set; a branch without a TTL gets the
//!   longest), never protected from expiry and never unmasked;
//! - see, use, reset, stop, start and delete its own branches;
//! - see its source and that source's snapshots, without any DSN;
//! - read its own audit records.
//!
//! Anything else is refused with what the scope allows. A branch or source
//! it cannot see is "unknown", as one that does not exist, so that names do
//! not leak.

use std::time::Duration;

use pgfork_pool::meta::{AgentRow, BranchRow, Connection, MemberRow, SnapshotRow};

use crate::identity::Actor;
use crate::{BranchCreate, Engine, EngineError, Result};

/// Longest TTL an agent may ask for unless `agent create --max-ttl` says.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Whether `actor` owns branch `row`: an admin owns every branch; an agent
/// the branches it made and those its workers (`--parent`) made. Only the
/// owner resets, stops, deletes or shares a branch.
pub(crate) fn owns(conn: &Connection, actor: &Actor, row: &BranchRow) -> bool {
    let Actor::Agent(me) = actor else {
        return true;
    };
    let by = row.created_by.as_deref();
    by == Some(actor.label().as_str())
        || by
            .and_then(|b| b.strip_prefix("agent:"))
            .and_then(|worker| AgentRow::get(conn, worker).ok().flatten())
            .is_some_and(|w| w.parent.as_deref() == Some(me.as_str()))
}

/// Whether `actor` may see and use branch `row`: one it owns, or one
/// shared with it. The one definition, for the engine and for the
/// activity clock (which opens no engine).
pub(crate) fn may_use(conn: &Connection, actor: &Actor, row: &BranchRow) -> bool {
    owns(conn, actor, row)
        || actor
            .agent()
            .is_some_and(|me| MemberRow::get(conn, &row.name, me).ok().flatten().is_some())
}

/// The longest TTL `agent` may give a branch.
fn max_ttl(agent: &AgentRow) -> Duration {
    agent
        .max_ttl
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(DEFAULT_MAX_TTL)
}

/// Refuses a TTL longer than `agent`'s maximum, naming it.
fn check_ttl(agent: &AgentRow, ttl: Duration) -> Result<()> {
    let most = max_ttl(agent);
    if ttl <= most {
        return Ok(());
    }
    Err(EngineError::InvalidArgument(format!(
        "TTL {} is longer than agent '{}' may ask for (its --max-ttl is {}): ask for {} or less",
        human(ttl),
        agent.name,
        human(most),
        human(most)
    )))
}

/// What an agent's scope does not allow (`what`: "add sources"), with
/// what it does.
fn forbidden(agent: &AgentRow, what: &str) -> EngineError {
    let most = agent
        .max_branches
        .map(|n| format!("at most {n} branches"))
        .unwrap_or_else(|| "branches".into());
    EngineError::Forbidden(format!(
        "an agent's token cannot {what}: agent '{}' may create {most} of source '{}' with a TTL up \
         to {}, and use, reset and delete its own branches; ask an admin for anything else",
        agent.name,
        agent.source,
        human(max_ttl(agent))
    ))
}

impl Engine {
    /// The acting agent's row, when an agent is acting. A revoked or
    /// deleted agent can do nothing.
    pub(crate) fn acting_agent(&self) -> Result<Option<AgentRow>> {
        let Actor::Agent(name) = &self.actor else {
            return Ok(None);
        };
        match AgentRow::get(self.meta.conn(), name)? {
            Some(a) if a.revoked_at.is_none() => Ok(Some(a)),
            _ => Err(EngineError::Forbidden(format!(
                "agent '{name}' is revoked or deleted: its token no longer works"
            ))),
        }
    }

    /// Refuses an agent what only admins may do (`what`: "add sources").
    pub(crate) fn admin_only(&self, what: &str) -> Result<()> {
        match self.acting_agent()? {
            None => Ok(()),
            Some(agent) => Err(forbidden(&agent, what)),
        }
    }

    /// Whether the actor may see and use branch `row`: its own, or one
    /// shared with it.
    pub(crate) fn may_use_branch(&self, row: &BranchRow) -> bool {
        may_use(self.meta.conn(), &self.actor, row)
    }

    /// Whether the actor owns branch `row` (see [`owns`]).
    pub(crate) fn owns_branch(&self, row: &BranchRow) -> bool {
        owns(self.meta.conn(), &self.actor, row)
    }

    /// Checks a `branch set` of an agent: no protection from expiry, no
    /// TTL removed or made longer than its maximum.
    pub(crate) fn scope_set(
        &self,
        ttl: Option<Option<Duration>>,
        protect: Option<bool>,
    ) -> Result<()> {
        let Some(agent) = self.acting_agent()? else {
            return Ok(());
        };
        if protect == Some(true) {
            return Err(forbidden(&agent, "protect a branch from expiry"));
        }
        match ttl {
            Some(None) => Err(forbidden(&agent, "remove a branch's TTL")),
            Some(Some(t)) => check_ttl(&agent, t),
            None => Ok(()),
        }
    }

    /// Branch `name`, if the actor may use it; otherwise as unknown as a
    /// branch that does not exist.
    pub(crate) fn visible_branch(&self, name: &str) -> Result<BranchRow> {
        self.acting_agent()?;
        let row = self.branch_row(name)?;
        if self.may_use_branch(&row) {
            Ok(row)
        } else {
            Err(EngineError::UnknownBranch(name.into()))
        }
    }

    /// Whether the actor may see source `name` (an agent: its own only).
    pub(crate) fn may_see_source(&self, name: &str) -> Result<bool> {
        Ok(self.acting_agent()?.is_none_or(|a| a.source == name))
    }

    /// Source `name` as the actor may see it; otherwise unknown.
    pub(crate) fn visible_source(&self, name: &str) -> Result<()> {
        if self.may_see_source(name)? {
            Ok(())
        } else {
            Err(EngineError::UnknownSource(name.into()))
        }
    }

    /// Checks a `branch create` against the actor's scope and fills in an
    /// agent's TTL; returns the most branches the agent may hold (counted
    /// when the row is inserted, so that concurrent creates cannot all
    /// slip under it).
    pub(crate) fn scope_create(&self, req: &mut BranchCreate) -> Result<Option<u64>> {
        let Some(agent) = self.acting_agent()? else {
            return Ok(None);
        };
        if req.protect {
            return Err(forbidden(&agent, "protect a branch from expiry"));
        }
        if req.unmasked {
            return Err(forbidden(&agent, "ask for unmasked data"));
        }
        self.scope_origin(&agent, &req.from)?;
        match req.ttl {
            None => req.ttl = Some(max_ttl(&agent)),
            Some(ttl) => check_ttl(&agent, ttl)?,
        }
        Ok(agent.max_branches.map(|n| n.max(0) as u64))
    }

    /// An agent's `--from`: its source, a snapshot of it (not of another's
    /// branch), or one of its own branches.
    fn scope_origin(&self, agent: &AgentRow, from: &str) -> Result<()> {
        let conn = self.meta.conn();
        if from.contains('@') || from.chars().all(|c| c.is_ascii_digit()) {
            let snapshot = self.resolve_snapshot(from)?;
            let own_branch = match &snapshot.parent_branch {
                None => true,
                Some(b) => BranchRow::get(conn, b)?.is_some_and(|r| self.may_use_branch(&r)),
            };
            if snapshot.source != agent.source || !own_branch {
                return Err(EngineError::UnknownSnapshot(from.into()));
            }
            return Ok(());
        }
        if let Some(b) = BranchRow::get(conn, from)? {
            if self.may_use_branch(&b) {
                return Ok(());
            }
        } else if from == agent.source {
            return Ok(());
        }
        Err(EngineError::UnknownOrigin(from.into()))
    }

    /// Whether the actor may see snapshot `row`.
    pub(crate) fn may_see_snapshot(&self, row: &SnapshotRow) -> Result<bool> {
        let Some(agent) = self.acting_agent()? else {
            return Ok(true);
        };
        if row.source != agent.source {
            return Ok(false);
        }
        Ok(match &row.parent_branch {
            None => true,
            Some(b) => {
                BranchRow::get(self.meta.conn(), b)?.is_some_and(|r| self.may_use_branch(&r))
            }
        })
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
