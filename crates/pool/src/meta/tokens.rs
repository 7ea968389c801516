//! API tokens (issue 13): each belongs to an admin or to an agent, and
//! meta.db keeps only its SHA-256. Revoking deletes the row.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::MetaError;

/// Whose token it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Everything, as the home's owner.
    Admin,
    /// What the agent of the same name may do.
    Agent,
}

impl TokenKind {
    /// The word meta.db stores.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Agent => "agent",
        }
    }

    fn parse(text: &str) -> Result<TokenKind, MetaError> {
        match text {
            "admin" => Ok(TokenKind::Admin),
            "agent" => Ok(TokenKind::Agent),
            other => Err(MetaError::Corrupt {
                table: "api_tokens",
                column: "kind",
                value: other.into(),
            }),
        }
    }
}

/// One API token, as meta.db keeps it (the hash, never the token).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    /// Admin or agent.
    pub kind: TokenKind,
    /// The admin token's name, or the agent's.
    pub name: String,
    /// SHA-256 of the token, hex.
    #[serde(skip)]
    pub sha256: String,
    /// Creation (or last rotation) time, Unix seconds.
    pub created_at: i64,
}

impl TokenRow {
    /// Stores a token, replacing the one of the same kind and name (a
    /// rotation: the old token stops working at once).
    pub fn put(&self, conn: &Connection) -> Result<(), MetaError> {
        conn.execute(
            "INSERT INTO api_tokens (kind, name, sha256, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, name) DO UPDATE SET sha256 = excluded.sha256,
                                                    created_at = excluded.created_at",
            params![self.kind.as_str(), self.name, self.sha256, self.created_at],
        )?;
        Ok(())
    }

    /// Whose token has hash `sha256`, if anyone's.
    pub fn by_hash(conn: &Connection, sha256: &str) -> Result<Option<TokenRow>, MetaError> {
        let row = conn
            .query_row(
                "SELECT kind, name, sha256, created_at FROM api_tokens WHERE sha256 = ?1",
                [sha256],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(kind, name, sha256, created_at)| {
            Ok(TokenRow {
                kind: TokenKind::parse(&kind)?,
                name,
                sha256,
                created_at,
            })
        })
        .transpose()
    }

    /// Every token of `kind`, by name.
    pub fn list(conn: &Connection, kind: TokenKind) -> Result<Vec<TokenRow>, MetaError> {
        let mut stmt = conn.prepare(
            "SELECT name, sha256, created_at FROM api_tokens WHERE kind = ?1 ORDER BY name",
        )?;
        let rows = stmt
            .query_map([kind.as_str()], |r| {
                Ok(TokenRow {
                    kind,
                    name: r.get(0)?,
                    sha256: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Removes a token; whether there was one.
    pub fn delete(conn: &Connection, kind: TokenKind, name: &str) -> Result<bool, MetaError> {
        Ok(conn.execute(
            "DELETE FROM api_tokens WHERE kind = ?1 AND name = ?2",
            params![kind.as_str(), name],
        )? > 0)
    }
}
