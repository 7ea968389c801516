//! What code a superuser would run by working on some relations.
//!
//! Reading, writing or emptying a table runs more than the statement says:
//! triggers and rules, index expressions and predicates (the planner
//! evaluates constant calls in them while planning), check constraints,
//! generated columns, partition keys, domain constraints and casts of the
//! values written, and the queries of views and materialized views. Each
//! of these records, in `pg_depend`, the functions and operators it calls.
//! [`superuser_hazards`] follows those records from the relations pgfork
//! is about to work on and lists every function owned by a role that is
//! not a superuser: code that such a role could have written or replaced,
//! and that would run with a superuser's rights. Callers refuse to go on
//! while the list is not empty.
//!
//! Triggers and rules are counted only when they fire with
//! `session_replication_role = replica`, which callers set (`ENABLE
//! ALWAYS` and `ENABLE REPLICA` ones). Bodies of functions owned by a
//! superuser are trusted: a superuser wrote them.

use std::collections::{HashMap, HashSet, VecDeque};

/// What is done to a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    /// Queried: planning alone evaluates index predicates and expressions.
    Read,
    /// Rows inserted, updated or deleted.
    Write,
    /// `TRUNCATE`.
    Truncate,
    /// `REFRESH MATERIALIZED VIEW`: its query runs.
    Refresh,
}

/// Code of a role that is not a superuser, which the work would run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hazard {
    /// The function (`schema.name(args)`).
    pub function: String,
    /// Its owner.
    pub owner: String,
    /// How it is reached, from the relation or type worked on.
    pub path: Vec<String>,
}

impl std::fmt::Display for Hazard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "function {} (owned by {}, not a superuser), reached through {}",
            self.function,
            self.owner,
            self.path.join(" -> ")
        )
    }
}

/// A catalog row the search visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    /// A relation, and what is done to it.
    Relation(u32, Work),
    /// A row of a catalog whose `pg_depend` references are followed
    /// (`pg_rewrite`, `pg_trigger`, `pg_constraint`, `pg_attrdef`, an
    /// index in `pg_class`, `pg_policy`).
    Object(&'static str, u32),
    /// A type whose values are written: domain constraints and casts.
    Type(u32),
    /// An operator: its function.
    Operator(u32),
    /// A function: the leaf, judged by its owner.
    Function(u32),
}

/// Trigger event bits of `pg_trigger.tgtype`.
const TRIGGER_ROW_WRITES: i32 = 4 | 8 | 16;
const TRIGGER_TRUNCATE: i32 = 32;

/// The code of non-superusers that working on `relations` (and writing
/// values of `types`) would run as superuser. The connection must be a
/// superuser's with pinned settings ([`super::session::superuser_in`]).
pub fn superuser_hazards(
    client: &mut postgres::Client,
    relations: &[(u32, Work)],
    types: &[u32],
) -> Result<Vec<Hazard>, postgres::Error> {
    let mut parent: HashMap<Node, Node> = HashMap::new();
    let mut seen: HashSet<Node> = HashSet::new();
    let mut queue: VecDeque<Node> = relations
        .iter()
        .map(|(oid, work)| Node::Relation(*oid, *work))
        .chain(types.iter().map(|t| Node::Type(*t)))
        .collect();
    seen.extend(queue.iter().copied());
    let mut hazards = Vec::new();
    while let Some(node) = queue.pop_front() {
        if let Node::Function(oid) = node {
            if let Some(owner) = non_superuser_owner(client, oid)? {
                hazards.push(Hazard {
                    function: describe(client, "pg_proc", oid)?,
                    owner,
                    path: path_to(client, &parent, node)?,
                });
            }
            continue;
        }
        for next in expand(client, node)? {
            if seen.insert(next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    Ok(hazards)
}

/// The nodes one step from `node`.
fn expand(client: &mut postgres::Client, node: Node) -> Result<Vec<Node>, postgres::Error> {
    let mut out = Vec::new();
    match node {
        Node::Relation(rel, work) => {
            out.extend(depends(client, "pg_class", rel)?);
            let relkind: String = match client.query_opt(
                "SELECT relkind::pg_catalog.text FROM pg_class WHERE oid = $1",
                &[&rel],
            )? {
                Some(r) => r.get(0),
                None => return Ok(out),
            };
            if matches!(relkind.as_str(), "v" | "m") || work == Work::Refresh {
                out.extend(objects(client, "pg_rewrite", RETURN_RULE, &[&rel])?);
            }
            if work != Work::Truncate {
                out.extend(objects(client, "pg_class", INDEXES, &[&rel])?);
            }
            if work == Work::Write {
                out.extend(objects(client, "pg_constraint", CONSTRAINTS, &[&rel])?);
                out.extend(objects(client, "pg_attrdef", DEFAULTS, &[&rel])?);
                out.extend(objects(client, "pg_rewrite", WRITE_RULES, &[&rel])?);
                out.extend(objects(
                    client,
                    "pg_trigger",
                    TRIGGERS,
                    &[&rel, &TRIGGER_ROW_WRITES],
                )?);
            }
            if work == Work::Truncate {
                out.extend(objects(
                    client,
                    "pg_trigger",
                    TRIGGERS,
                    &[&rel, &TRIGGER_TRUNCATE],
                )?);
            }
        }
        Node::Object(catalog, oid) => out.extend(depends(client, catalog, oid)?),
        Node::Type(oid) => {
            for r in client.query(TYPE_CODE, &[&oid])? {
                let kind: String = r.get(0);
                let target: u32 = r.get(1);
                out.push(match kind.as_str() {
                    "base" => Node::Type(target),
                    "constraint" => Node::Object("pg_constraint", target),
                    _ => Node::Function(target),
                });
            }
        }
        Node::Operator(oid) => {
            if let Some(r) = client.query_opt(
                "SELECT oprcode::pg_catalog.oid FROM pg_operator WHERE oid = $1",
                &[&oid],
            )? {
                out.push(Node::Function(r.get(0)));
            }
        }
        Node::Function(_) => {}
    }
    Ok(out)
}

const RETURN_RULE: &str =
    "SELECT oid FROM pg_rewrite WHERE ev_class = $1 AND rulename OPERATOR(pg_catalog.=) '_RETURN'";
const INDEXES: &str = "SELECT indexrelid FROM pg_index WHERE indrelid = $1";
const CONSTRAINTS: &str = "SELECT oid FROM pg_constraint WHERE conrelid = $1";
const DEFAULTS: &str = "SELECT oid FROM pg_attrdef WHERE adrelid = $1";
/// Rules other than a view's own, that fire in replica mode.
const WRITE_RULES: &str = "SELECT oid FROM pg_rewrite WHERE ev_class = $1 \
     AND ev_type OPERATOR(pg_catalog.<>) '1' AND ev_enabled IN ('A', 'R')";
/// Triggers for the events in $2 that fire in replica mode.
const TRIGGERS: &str = "SELECT oid FROM pg_trigger WHERE tgrelid = $1 \
     AND tgenabled IN ('A', 'R') AND (tgtype::pg_catalog.int4 OPERATOR(pg_catalog.&) $2) \
     OPERATOR(pg_catalog.<>) 0";
/// What writing a value of a type runs: a domain's constraints and base
/// type, and the functions of casts from or to it.
const TYPE_CODE: &str = "\
    SELECT 'base', typbasetype FROM pg_type WHERE oid = $1 AND typtype = 'd' \
    UNION ALL SELECT 'constraint', oid FROM pg_constraint WHERE contypid = $1 \
    UNION ALL SELECT 'function', castfunc FROM pg_cast \
     WHERE (castsource = $1 OR casttarget = $1) AND castfunc OPERATOR(pg_catalog.<>) 0";

/// Rows of `catalog` that `sql` selects, as nodes to follow.
fn objects(
    client: &mut postgres::Client,
    catalog: &'static str,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<Node>, postgres::Error> {
    Ok(client
        .query(sql, params)?
        .iter()
        .map(|r| Node::Object(catalog, r.get(0)))
        .collect())
}

/// What `pg_depend` says the object calls or reads: functions, operators,
/// and relations (a rule's query reads its tables and views).
fn depends(
    client: &mut postgres::Client,
    catalog: &str,
    oid: u32,
) -> Result<Vec<Node>, postgres::Error> {
    let rows = client.query(
        "SELECT refclassid::pg_catalog.regclass::pg_catalog.text, refobjid FROM pg_depend \
          WHERE classid = $1::pg_catalog.text::pg_catalog.regclass AND objid = $2 \
            AND refclassid IN ('pg_proc'::pg_catalog.regclass, 'pg_operator'::pg_catalog.regclass, \
                               'pg_class'::pg_catalog.regclass)",
        &[&catalog, &oid],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let refclass: String = r.get(0);
            let refoid: u32 = r.get(1);
            match refclass.as_str() {
                "pg_proc" => Some(Node::Function(refoid)),
                "pg_operator" => Some(Node::Operator(refoid)),
                // A rule's query reads the relations it names (and an
                // index names its table, a view its own rule's relation).
                "pg_class" if !(catalog == "pg_class" && refoid == oid) => {
                    Some(Node::Relation(refoid, Work::Read))
                }
                _ => None,
            }
        })
        .collect())
}

/// The owner of function `oid`, if it is not a superuser.
fn non_superuser_owner(
    client: &mut postgres::Client,
    oid: u32,
) -> Result<Option<String>, postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT r.rolname::pg_catalog.text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner \
              WHERE p.oid = $1 AND NOT r.rolsuper",
            &[&oid],
        )?
        .map(|r| r.get(0)))
}

fn describe(
    client: &mut postgres::Client,
    catalog: &str,
    oid: u32,
) -> Result<String, postgres::Error> {
    let row = client.query_one(
        "SELECT pg_catalog.pg_describe_object($1::pg_catalog.text::pg_catalog.regclass, $2, 0)",
        &[&catalog, &oid],
    )?;
    Ok(row
        .get::<_, Option<String>>(0)
        .unwrap_or_else(|| format!("{catalog} {oid}")))
}

/// The objects from a seed down to `node`'s parent, described.
fn path_to(
    client: &mut postgres::Client,
    parent: &HashMap<Node, Node>,
    node: Node,
) -> Result<Vec<String>, postgres::Error> {
    let mut chain = Vec::new();
    let mut at = parent.get(&node).copied();
    while let Some(n) = at {
        chain.push(n);
        at = parent.get(&n).copied();
    }
    chain.reverse();
    chain
        .into_iter()
        .map(|n| match n {
            Node::Relation(oid, _) => describe(client, "pg_class", oid),
            Node::Object(catalog, oid) => describe(client, catalog, oid),
            Node::Type(oid) => describe(client, "pg_type", oid),
            Node::Operator(oid) => describe(client, "pg_operator", oid),
            Node::Function(oid) => describe(client, "pg_proc", oid),
        })
        .collect()
}
