//! A role of its own on the source for each read-only and dry-run agent of
//! a local or logical source, so that what the server lets it do is what
//! its policy allows, whatever the proxy makes of its SQL: no superuser, no
//! membership (not `pg_read_all_data`, `pg_read_all_stats` or
//! `pg_signal_backend`), no ownership, a CONNECTION LIMIT, and table rights
//! by policy. `agent create` makes it, every proxy session checks it first
//! (and repairs it), `agent revoke` drops it.
//!
//! SECURITY.md, rule 1: role DDL runs in the maintenance database; in the
//! application database pgfork's superuser sends only GRANT, ALTER DEFAULT
//! PRIVILEGES and DROP OWNED (none runs code of anyone's), and the catalog
//! is read as the agent's role itself, with pinned settings.

use std::time::{Duration, Instant};

use pgfork_pg::sql::{quote_ident, quote_literal};
use pgfork_pg::untrusted::session::{self, Access, Endpoint};
use pgfork_pool::meta::{AgentRow, SourceRow};

use crate::{EngineError, Result};

/// Agents' roles are this prefix and the agent's name.
pub const ROLE_PREFIX: &str = "pgfork_agent_";

/// The role all read-only agents shared before each had its own: a member
/// of `pg_read_all_data`, which reads `pg_authid`. Dropped where found.
const LEGACY_READER: &str = "pgfork_reader";

/// How long to wait for the role's own connection slots: a session pgfork
/// just closed may take a moment to leave the server's count.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// The role agent `agent` logs in to its (local or logical) source as.
pub fn role_name(agent: &str) -> String {
    format!("{ROLE_PREFIX}{agent}")
}

/// What an agent's role may do with the application's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rights {
    /// read-only: SELECT on tables, views and sequences.
    Read,
    /// dry-run: the application role's table rights without its ownership
    /// (no ALTER, DROP, TRUNCATE, REFERENCES or TRIGGER), and USAGE but not
    /// UPDATE on sequences (nextval, but no setval).
    Write,
}

impl Rights {
    /// The rights of a policy; none for `branch` (its branch is its own).
    pub(crate) fn of(policy: &str) -> Option<Rights> {
        match policy {
            "read-only" => Some(Rights::Read),
            "dry-run" => Some(Rights::Write),
            _ => None,
        }
    }

    fn on_tables(self) -> &'static str {
        match self {
            Rights::Read => "SELECT",
            Rights::Write => "SELECT, INSERT, UPDATE, DELETE",
        }
    }

    fn on_sequences(self) -> &'static str {
        match self {
            Rights::Read => "SELECT",
            Rights::Write => "USAGE, SELECT",
        }
    }

    /// The role's own settings, as `pg_roles.rolconfig` shows them.
    fn settings(self) -> Vec<String> {
        match self {
            Rights::Read => vec!["default_transaction_read_only=on".into()],
            Rights::Write => Vec::new(),
        }
    }
}

/// Creates the role if missing and sets every attribute, in the maintenance
/// database. `VALID UNTIL '-infinity'`: a password the agent might set on
/// its own role never works; the proxy's trust login over the unix socket
/// does not use one.
fn role_sql(role: &str, connection_limit: i64, rights: Rights) -> String {
    let ident = quote_ident(role);
    let mut sql = format!(
        "DO $$BEGIN
           IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN
             CREATE ROLE {ident};
           END IF;
         END$$;
         ALTER ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
           CONNECTION LIMIT {connection_limit} PASSWORD NULL VALID UNTIL '-infinity';
         ALTER ROLE {ident} RESET ALL;",
        lit = quote_literal(role),
    );
    if rights == Rights::Read {
        sql.push_str(&format!(
            "\nALTER ROLE {ident} SET default_transaction_read_only = on;"
        ));
    }
    sql
}

/// CONNECT on the database, and default privileges so that what the
/// application role makes later (in any schema) is the role's too.
fn database_sql(role: &str, database: &str, app_role: &str, rights: Rights) -> String {
    let (r, app) = (quote_ident(role), quote_ident(app_role));
    format!(
        "GRANT CONNECT ON DATABASE {db} TO {r};
         ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT USAGE ON SCHEMAS TO {r};
         ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT {tables} ON TABLES TO {r};
         ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT {sequences} ON SEQUENCES TO {r};",
        db = quote_ident(database),
        tables = rights.on_tables(),
        sequences = rights.on_sequences(),
    )
}

/// The grants on what exists now in `schemas` (empty if there are none).
fn schemas_sql(role: &str, schemas: &[String], rights: Rights) -> String {
    if schemas.is_empty() {
        return String::new();
    }
    let r = quote_ident(role);
    let list = schemas
        .iter()
        .map(|s| quote_ident(s))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "GRANT USAGE ON SCHEMA {list} TO {r};
         GRANT {tables} ON ALL TABLES IN SCHEMA {list} TO {r};
         GRANT {sequences} ON ALL SEQUENCES IN SCHEMA {list} TO {r};",
        tables = rights.on_tables(),
        sequences = rights.on_sequences(),
    )
}

/// Whether the session's own role has exactly the attributes
/// [`role_sql`] gives it and is a member of nothing.
const ATTRIBUTES_OK: &str = "
SELECT r.rolcanlogin
       AND NOT (r.rolsuper OR r.rolinherit OR r.rolcreaterole OR r.rolcreatedb
                OR r.rolreplication OR r.rolbypassrls)
       AND r.rolconnlimit = $1::pg_catalog.int4
       AND r.rolvaliduntil = '-infinity'
       AND coalesce(r.rolconfig, '{}') = $2::pg_catalog.text[]
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members m WHERE m.member = r.oid)
  FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER";

/// The application's schemas: all but the system's.
const SCHEMAS: &str = "
SELECT n.nspname::pg_catalog.text FROM pg_catalog.pg_namespace n
 WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 1";

/// Whether a schema, table, view or sequence of the application lacks a
/// right the session's own role should have (`$1`: dry-run's rights).
const GRANTS_MISSING: &str = "
WITH s AS (SELECT n.oid FROM pg_catalog.pg_namespace n
            WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema')
SELECT NOT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CONNECT')
    OR EXISTS (SELECT FROM s WHERE NOT pg_catalog.has_schema_privilege(s.oid, 'USAGE'))
    OR EXISTS (
       SELECT FROM pg_catalog.pg_class c JOIN s ON s.oid = c.relnamespace
        WHERE CASE
          WHEN c.relkind = 'S' THEN NOT (pg_catalog.has_sequence_privilege(c.oid, 'SELECT')
               AND (NOT $1::pg_catalog.bool OR pg_catalog.has_sequence_privilege(c.oid, 'USAGE')))
          WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f') THEN NOT (pg_catalog.has_table_privilege(c.oid, 'SELECT')
               AND (NOT $1::pg_catalog.bool OR (pg_catalog.has_table_privilege(c.oid, 'INSERT')
                    AND pg_catalog.has_table_privilege(c.oid, 'UPDATE')
                    AND pg_catalog.has_table_privilege(c.oid, 'DELETE'))))
          ELSE false END)";

/// What the check before a session found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoleState {
    /// Attributes and grants as they should be.
    Ready,
    /// No such role, or it may not log in or connect (a logical source
    /// refreshed into a new cluster, an agent made before roles were per agent).
    Missing,
    /// The role's attributes changed, or objects lack its grants (made by
    /// a role other than the application's, or a new schema of theirs).
    Stale,
}

fn sql(context: &str) -> impl FnOnce(postgres::Error) -> EngineError {
    EngineError::sql(context)
}

fn code(e: &postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// A session as the agent's role in the application database, waiting a
/// moment for a slot under its CONNECTION LIMIT; `None` if the role cannot
/// log in or connect.
fn as_agent(ep: &Endpoint, source: &SourceRow, role: &str) -> Result<Option<postgres::Client>> {
    let deadline = Instant::now() + SLOT_WAIT;
    loop {
        match session::as_role(ep, &source.database, role, Access::ReadOnly) {
            Ok(c) => return Ok(Some(c)),
            // invalid_authorization_specification (no such role, NOLOGIN),
            // insufficient_privilege (no CONNECT on the database).
            Err(e) if matches!(code(&e), Some("28000" | "42501")) => return Ok(None),
            Err(e) if code(&e) == Some("53300") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => {
                return Err(sql(&format!(
                    "connect to source '{}' as {role}",
                    source.name
                ))(e));
            }
        }
    }
}

/// Checks the role of a read-only or dry-run agent, as that role.
pub(crate) fn check(ep: &Endpoint, source: &SourceRow, agent: &AgentRow) -> Result<RoleState> {
    let Some(rights) = Rights::of(&agent.policy) else {
        return Ok(RoleState::Ready);
    };
    let role = role_name(&agent.name);
    let Some(mut client) = as_agent(ep, source, &role)? else {
        return Ok(RoleState::Missing);
    };
    let limit = connection_limit(agent) as i32;
    let attributes = client
        .query_opt(ATTRIBUTES_OK, &[&limit, &rights.settings()])
        .map_err(sql("check the agent's role"))?
        .is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true));
    if !attributes {
        return Ok(RoleState::Stale);
    }
    let missing: bool = client
        .query_one(GRANTS_MISSING, &[&(rights == Rights::Write)])
        .map_err(sql("check the agent's grants"))?
        .get(0);
    Ok(if missing {
        RoleState::Stale
    } else {
        RoleState::Ready
    })
}

/// The CONNECTION LIMIT of an agent's role, within the bounds `agent
/// create` enforces (a row written by hand may hold anything).
pub(crate) fn connection_limit(agent: &AgentRow) -> i64 {
    agent
        .max_connections
        .clamp(1, crate::agents::MAX_CONNECTIONS as i64)
}

/// Makes (or repairs) the role of a read-only or dry-run agent and its
/// grants. Retried a few times: two sessions repairing at once can trip
/// over each other's catalog updates.
pub(crate) fn ensure(ep: &Endpoint, source: &SourceRow, agent: &AgentRow) -> Result<()> {
    let mut tries = 0;
    loop {
        match ensure_once(ep, source, agent) {
            Err(EngineError::Pg(pgfork_pg::PgError::Sql { source: e, .. }))
                if tries < 3
                    && matches!(
                        code(&e),
                        Some("XX000" | "23505" | "42710" | "40001" | "40P01")
                    ) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50 * tries));
            }
            other => return other,
        }
    }
}

fn ensure_once(ep: &Endpoint, source: &SourceRow, agent: &AgentRow) -> Result<()> {
    let Some(rights) = Rights::of(&agent.policy) else {
        return Ok(());
    };
    let role = role_name(&agent.name);
    let mut su = session::maintenance(ep).map_err(sql("connect to the source"))?;
    su.batch_execute(&role_sql(&role, connection_limit(agent), rights))
        .map_err(sql(&format!("create the role {role}")))?;
    revoke_memberships(&mut su, &role, source.pg_major)?;
    drop_legacy_reader(&mut su);
    drop(su);
    let mut db = session::superuser_in(ep, &source.database)
        .map_err(sql("connect to the source's database"))?;
    db.batch_execute(&database_sql(&role, &source.database, &source.role, rights))
        .map_err(sql(&format!("grant {role} its database")))?;
    let mut me = as_agent(ep, source, &role)?.ok_or_else(|| {
        EngineError::WrongState(format!(
            "the role {role} made for the agent cannot log in to database '{}' of source '{}': \
             see the source's log (pgfork source info {}) and pg_hba.conf",
            source.database, source.name, source.name
        ))
    })?;
    let schemas: Vec<String> = me
        .query(SCHEMAS, &[])
        .map_err(sql("list the source's schemas"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(me);
    db.batch_execute(&schemas_sql(&role, &schemas, rights))
        .map_err(sql(&format!("grant {role} the application's tables")))?;
    Ok(())
}

/// Revokes every role membership of `role`, and fails if one is left.
fn revoke_memberships(su: &mut postgres::Client, role: &str, pg_major: u32) -> Result<()> {
    let list = "SELECT g.rolname::pg_catalog.text, gr.rolname::pg_catalog.text
                  FROM pg_catalog.pg_auth_members m
                  JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
                  JOIN pg_catalog.pg_roles r ON r.oid = m.member
                  LEFT JOIN pg_catalog.pg_roles gr ON gr.oid = m.grantor
                 WHERE r.rolname = $1";
    let rows = su
        .query(list, &[&role])
        .map_err(sql("list the role's memberships"))?;
    for row in &rows {
        let group: String = row.get(0);
        let grantor: Option<String> = row.get(1);
        // Since PostgreSQL 16 a membership is one per grantor.
        let by = match grantor {
            Some(g) if pg_major >= 16 => format!(" GRANTED BY {}", quote_ident(&g)),
            _ => String::new(),
        };
        su.batch_execute(&format!(
            "REVOKE {} FROM {}{by} CASCADE",
            quote_ident(&group),
            quote_ident(role)
        ))
        .map_err(sql(&format!("revoke {group} from {role}")))?;
    }
    if !rows.is_empty() && !su.query(list, &[&role]).map_err(sql("list"))?.is_empty() {
        return Err(EngineError::WrongState(format!(
            "the role {role} is still a member of another role after pgfork revoked it: \
             revoke it by hand (REVOKE ... FROM {role}) and try again"
        )));
    }
    Ok(())
}

/// Drops the role read-only agents used to share, if it is there.
fn drop_legacy_reader(su: &mut postgres::Client) {
    let sql = format!("DROP ROLE IF EXISTS {}", quote_ident(LEGACY_READER));
    if let Err(e) = su.batch_execute(&sql) {
        tracing::warn!(
            "could not drop the old shared role {LEGACY_READER} (it reads every table and pg_authid): {e}; \
             drop it by hand"
        );
    }
}

/// Drops an agent's role: no new login, its sessions ended, what it owns
/// or was granted in the application database gone, then the role.
/// Returns whether there was one.
pub(crate) fn drop_role(ep: &Endpoint, source: &SourceRow, agent: &str) -> Result<bool> {
    let role = role_name(agent);
    let ident = quote_ident(&role);
    let mut su = session::maintenance(ep).map_err(sql("connect to the source"))?;
    let exists = su
        .query_opt(
            "SELECT FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&role],
        )
        .map_err(sql("look for the agent's role"))?
        .is_some();
    if !exists {
        return Ok(false);
    }
    su.batch_execute(&format!("ALTER ROLE {ident} NOLOGIN"))
        .map_err(sql(&format!("lock {role}")))?;
    su.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = $1",
        &[&role],
    )
    .map_err(sql(&format!("end the sessions of {role}")))?;
    let mut db = session::superuser_in(ep, &source.database)
        .map_err(sql("connect to the source's database"))?;
    db.batch_execute(&format!("DROP OWNED BY {ident}"))
        .map_err(sql(&format!("drop what {role} owns or was granted")))?;
    drop(db);
    su.batch_execute(&format!("DROP ROLE {ident}")).map_err(|e| {
        EngineError::WrongState(format!(
            "could not drop the role {role} on source '{}': {e}; it may hold rights in another \
             database of the source: DROP OWNED BY {role} there, then run `pgfork agent revoke {agent}` again",
            source.name
        ))
    })?;
    Ok(true)
}

/// Connection slots of a source: `max_connections` and how many of them
/// ordinary roles cannot use (`superuser_reserved_connections`, and
/// `reserved_connections` since PostgreSQL 16).
pub(crate) fn slots(ep: &Endpoint) -> Result<(u32, u32)> {
    let mut su = session::maintenance(ep).map_err(sql("connect to the source"))?;
    let row = su
        .query_one(
            "SELECT pg_catalog.current_setting('max_connections')::pg_catalog.int4,
                    pg_catalog.current_setting('superuser_reserved_connections')::pg_catalog.int4
                    + coalesce(pg_catalog.current_setting('reserved_connections', true)::pg_catalog.int4, 0)",
            &[],
        )
        .map_err(sql("read the source's connection settings"))?;
    let (max, reserved): (i32, i32) = (row.get(0), row.get(1));
    Ok((max.max(0) as u32, reserved.max(0) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_roles_read_and_start_read_only() {
        let sql = role_sql("pgfork_agent_a-b", 3, Rights::Read);
        assert!(sql.contains("CREATE ROLE \"pgfork_agent_a-b\";"), "{sql}");
        assert!(sql.contains("NOINHERIT"), "{sql}");
        assert!(sql.contains("CONNECTION LIMIT 3 PASSWORD NULL VALID UNTIL '-infinity'"));
        assert!(sql.contains("SET default_transaction_read_only = on"));
        let grants = schemas_sql("r", &["public".into(), "We ird".into()], Rights::Read);
        assert!(
            grants.contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\", \"We ird\" TO \"r\""),
            "{grants}"
        );
        assert!(grants.contains("GRANT SELECT ON ALL SEQUENCES"));
        assert!(!grants.contains("INSERT"));
    }

    #[test]
    fn dry_run_roles_write_rows_but_own_nothing() {
        let sql = role_sql("pgfork_agent_t", 10, Rights::Write);
        assert!(!sql.contains("default_transaction_read_only = on"), "{sql}");
        let grants = schemas_sql("r", &["public".into()], Rights::Write);
        assert!(grants.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES"));
        assert!(grants.contains("GRANT USAGE, SELECT ON ALL SEQUENCES"));
        for never in [
            "TRUNCATE",
            "TRIGGER",
            "REFERENCES",
            "UPDATE ON ALL SEQ",
            "ALL PRIVILEGES",
        ] {
            assert!(!grants.contains(never), "{never}: {grants}");
        }
        let db = database_sql("r", "shop", "shop", Rights::Write);
        assert!(
            db.contains("FOR ROLE \"shop\" GRANT USAGE, SELECT ON SEQUENCES TO \"r\""),
            "{db}"
        );
        assert_eq!(schemas_sql("r", &[], Rights::Write), "");
    }

    #[test]
    fn policies_and_limits() {
        assert_eq!(Rights::of("branch"), None);
        assert_eq!(role_name("x"), "pgfork_agent_x");
        let mut a = AgentRow {
            max_connections: 0,
            ..AgentRow::default()
        };
        assert_eq!(connection_limit(&a), 1);
        a.max_connections = 5000;
        assert_eq!(connection_limit(&a), 1000);
    }
}
