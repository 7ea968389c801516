//! Logins stay the source's: reading who may log in to the source, and
//! making the clone's roles log in (or not) as the source's do.

use pgfork_pg::sql::{quote_ident, quote_literal};
use pgfork_pg::untrusted::session::{self, Endpoint};
use pgfork_pool::meta::SourceRow;

use crate::{EngineError, Result, agent_roles, sharing};

/// A role's login as the source has it.
#[derive(Debug, Clone)]
pub(super) struct Login {
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

pub(super) fn read_logins(client: &mut postgres::Client) -> Result<Vec<Login>> {
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
pub(super) struct Fenced {
    pub(super) removed: Vec<String>,
    pub(super) warnings: Vec<String>,
}

/// Makes the logins of the cluster served at `ep` (the clone of branch
/// `branch`, started privately) the source's, as [`super`] says.
pub(super) fn fence_logins(
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
