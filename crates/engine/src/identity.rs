//! Who is asking (issue 13): the home's owner at the command line, an
//! admin token, or an agent's token. Tokens are random, shown once, and
//! kept only as SHA-256 in meta.db; revoking one deletes it, so a running
//! `pgfork serve` refuses it from its next lookup.

use pgfork_pg::sql::random_password;
use pgfork_pool::meta::{self, AgentRow, TokenKind, TokenRow};
use pgfork_pool::{Home, Meta};

use crate::{EngineError, Result, names};

/// The name the home's first admin token has (the one `init` prints).
pub const FIRST_ADMIN: &str = "admin";

/// Who an engine acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Everything: the home's owner at the command line, or an admin token
    /// (its name).
    Admin(String),
    /// What agent NAME's scope allows (see [`crate::scope`]).
    Agent(String),
}

impl Actor {
    /// The home's owner, at the command line.
    pub fn owner() -> Actor {
        Actor::Admin("owner".into())
    }

    /// How meta.db and the audit log record it: `admin:NAME`, `agent:NAME`.
    pub fn label(&self) -> String {
        match self {
            Actor::Admin(n) => format!("admin:{n}"),
            Actor::Agent(n) => format!("agent:{n}"),
        }
    }

    /// The agent's name, when an agent is asking.
    pub fn agent(&self) -> Option<&str> {
        match self {
            Actor::Agent(n) => Some(n),
            Actor::Admin(_) => None,
        }
    }
}

/// A new API bearer token: 56 random letters and digits behind a prefix
/// that makes it recognisable (to people, and to secret scanners).
pub(crate) fn new_api_token() -> String {
    format!("pgf_{}{}", random_password(), &random_password()[..16])
}

/// The hex SHA-256 of a token, as meta.db stores it. A fast hash is enough:
/// the token is random and long, so there is nothing to guess from it.
pub fn hash_api_token(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whose token `token` is: an admin's, or a live (not revoked) agent's.
/// `None` for an unknown, revoked or rotated token.
pub fn resolve_token(home: &Home, token: &str) -> Result<Option<Actor>> {
    resolve_token_hash(home, &hash_api_token(token))
}

/// Whose token has SHA-256 `hash` (see [`hash_api_token`]): what a
/// dashboard session keeps instead of the token itself.
pub fn resolve_token_hash(home: &Home, hash: &str) -> Result<Option<Actor>> {
    let meta = Meta::open(&home.meta_db(), false)?;
    let Some(row) = TokenRow::by_hash(meta.conn(), hash)? else {
        return Ok(None);
    };
    Ok(match row.kind {
        TokenKind::Admin => Some(Actor::Admin(row.name)),
        TokenKind::Agent => AgentRow::get(meta.conn(), &row.name)?
            .filter(|a| a.revoked_at.is_none())
            .map(|a| Actor::Agent(a.name)),
    })
}

/// Whether the home has an admin token (`serve` needs one).
pub fn has_admin_token(home: &Home) -> Result<bool> {
    let meta = Meta::open(&home.meta_db(), false)?;
    Ok(!TokenRow::list(meta.conn(), TokenKind::Admin)?.is_empty())
}

/// Makes admin token `name` and returns it (shown once).
pub fn admin_token_create(home: &Home, name: &str) -> Result<String> {
    names::validate(name)?;
    let mut meta = Meta::open(&home.meta_db(), false)?;
    let token = new_api_token();
    meta.write(|c| {
        if TokenRow::list(c, TokenKind::Admin)?
            .iter()
            .any(|t| t.name == name)
        {
            return Err(EngineError::NameTaken {
                name: name.into(),
                kind: "admin token",
            });
        }
        put(c, TokenKind::Admin, name, &token)
    })?;
    Ok(token)
}

/// The admin tokens (names and creation times; never the tokens).
pub fn admin_token_list(home: &Home) -> Result<Vec<TokenRow>> {
    let meta = Meta::open(&home.meta_db(), false)?;
    Ok(TokenRow::list(meta.conn(), TokenKind::Admin)?)
}

/// Revokes admin token `name`: a running server refuses it at once.
pub fn admin_token_revoke(home: &Home, name: &str) -> Result<()> {
    let mut meta = Meta::open(&home.meta_db(), false)?;
    let deleted = meta.write(|c| TokenRow::delete(c, TokenKind::Admin, name))?;
    if !deleted {
        return Err(EngineError::InvalidArgument(format!(
            "no admin token named '{name}': `pgfork token list` shows them"
        )));
    }
    Ok(())
}

/// Makes a new admin token `name` (default: the first one, `admin`),
/// replacing the old one at once, and returns it.
pub fn rotate_admin_token(home: &Home, name: &str) -> Result<String> {
    let mut meta = Meta::open(&home.meta_db(), false)?;
    let token = new_api_token();
    meta.write(|c| put(c, TokenKind::Admin, name, &token))?;
    Ok(token)
}

/// Gives agent `name` a new API token (replacing any), inside a
/// transaction of the agent's creation or rotation; returns it.
pub(crate) fn put_agent_token(c: &meta::Connection, name: &str) -> Result<String> {
    let token = new_api_token();
    put(c, TokenKind::Agent, name, &token)?;
    Ok(token)
}

/// Removes agent `name`'s API token.
pub(crate) fn delete_agent_token(c: &meta::Connection, name: &str) -> Result<()> {
    TokenRow::delete(c, TokenKind::Agent, name)?;
    Ok(())
}

fn put(c: &meta::Connection, kind: TokenKind, name: &str, token: &str) -> Result<()> {
    TokenRow {
        kind,
        name: name.into(),
        sha256: hash_api_token(token),
        created_at: meta::now(),
    }
    .put(c)?;
    Ok(())
}
