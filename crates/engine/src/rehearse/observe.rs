//! What a statement did to the server, read from the catalogs of its own
//! session: relation files, locks, WAL.
//!
//! These queries run in the rehearsal's session, as the application role
//! (the migration's `SET`s in force), so every function and operator is
//! named in `pg_catalog`: a search path the migration changed cannot
//! redirect them.

use std::collections::HashMap;

use postgres::Client;

/// A relation with storage, as it was at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// `schema.name`, quoted where needed.
    pub name: String,
    /// `table`, `index`, `materialized view`, ...
    pub kind: &'static str,
    /// Its file node: a new one means its data was written anew.
    pub filenode: u32,
}

/// The user relations of the database, by OID.
pub type Relations = HashMap<u32, Relation>;

const RELATIONS: &str = "
SELECT c.oid, pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::pg_catalog.text,
       pg_catalog.pg_relation_filenode(c.oid)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
 WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,i,m,p,I}'::pg_catalog.char[])
   AND NOT (n.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema}'::pg_catalog.name[]))
   AND n.nspname::pg_catalog.text OPERATOR(pg_catalog.!~~) 'pg\\_to%'
   AND n.nspname::pg_catalog.text OPERATOR(pg_catalog.!~~) 'pg\\_temp%'";

fn kind(relkind: &str) -> &'static str {
    match relkind {
        "r" => "table",
        "p" => "partitioned table",
        "i" | "I" => "index",
        "m" => "materialized view",
        _ => "relation",
    }
}

/// The user relations now.
pub fn relations(client: &mut Client) -> Result<Relations, postgres::Error> {
    Ok(client
        .query(RELATIONS, &[])?
        .iter()
        .map(|r| {
            let filenode: Option<u32> = r.get(3);
            (
                r.get::<_, u32>(0),
                Relation {
                    name: r.get(1),
                    kind: kind(r.get::<_, &str>(2)),
                    filenode: filenode.unwrap_or(0),
                },
            )
        })
        .collect())
}

/// Relations whose data was written anew between `before` and `after`
/// (a rewrite, a rebuilt index), with their size now.
pub fn rewritten(
    client: &mut Client,
    before: &Relations,
    after: &Relations,
) -> Result<Vec<(u32, u64)>, postgres::Error> {
    let mut out = Vec::new();
    for (oid, now) in after {
        if let Some(was) = before.get(oid)
            && was.filenode != now.filenode
            && now.filenode != 0
        {
            let size: i64 = client
                .query_one(
                    "SELECT pg_catalog.pg_relation_size($1::pg_catalog.oid)",
                    &[oid],
                )?
                .get(0);
            out.push((*oid, size.max(0) as u64));
        }
    }
    out.sort();
    Ok(out)
}

/// The relation locks this session holds now: OID and mode
/// (`AccessExclusiveLock`).
pub fn locks(client: &mut Client) -> Result<Vec<(u32, String)>, postgres::Error> {
    Ok(client
        .query(
            "SELECT l.relation, l.mode FROM pg_catalog.pg_locks l \
              WHERE l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid() \
                AND l.locktype OPERATOR(pg_catalog.=) 'relation' AND l.granted \
                AND l.relation IS NOT NULL",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Whether a lock mode keeps others from writing (and, for
/// `ACCESS EXCLUSIVE`, from reading): the ones whose hold time a
/// production table would feel.
pub fn blocks(mode: &str) -> Option<&'static str> {
    match mode {
        "AccessExclusiveLock" => Some("reads and writes"),
        "ExclusiveLock" | "ShareRowExclusiveLock" | "ShareLock" => Some("writes"),
        _ => None,
    }
}

/// `AccessExclusiveLock` as PostgreSQL's documentation names it.
pub fn mode_name(mode: &str) -> String {
    let bare = mode.strip_suffix("Lock").unwrap_or(mode);
    let mut out = String::new();
    for (i, ch) in bare.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// Where the WAL insert position is, in bytes; `None` if this role may not
/// ask.
pub fn wal_position(client: &mut Client) -> Option<u64> {
    let lsn: String = client
        .query_one(
            "SELECT pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text",
            &[],
        )
        .ok()?
        .get(0);
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_modes_read_as_the_documentation_writes_them() {
        assert_eq!(mode_name("AccessExclusiveLock"), "ACCESS EXCLUSIVE");
        assert_eq!(mode_name("ShareRowExclusiveLock"), "SHARE ROW EXCLUSIVE");
        assert_eq!(blocks("RowExclusiveLock"), None);
        assert_eq!(blocks("ShareLock"), Some("writes"));
    }
}
