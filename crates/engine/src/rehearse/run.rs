//! Running a migration's statements one by one and watching each.
//!
//! Outside a transaction of the file's own, each statement runs in a
//! transaction of its own (`BEGIN`, the statement, a look at `pg_locks`,
//! `COMMIT`), which is how it would run in autocommit, but lets its locks
//! be read before they are released. A statement PostgreSQL refuses in a
//! transaction (`CREATE INDEX CONCURRENTLY`, `VACUUM`) runs alone. Inside
//! the file's own `BEGIN ... COMMIT`, locks are read after each statement
//! and held until the `COMMIT`, and their hold time runs until then.

use std::time::Instant;

use postgres::{Client, SimpleQueryMessage};

use super::observe::{self, Relations};
use super::script::{Control, Statement, position};
use super::{Lock, Outcome, Rewrite, StatementError, StatementReport};

/// SQLSTATE of "cannot run inside a transaction block".
const ACTIVE_SQL_TRANSACTION: &str = "25001";

/// Runs `statements` (of `text`) on `client` and reports each. Errors of
/// the statements are in the report; an `Err` is a failure to observe.
pub fn run(
    client: &mut Client,
    statements: &[Statement],
    text: &str,
) -> Result<Vec<StatementReport>, postgres::Error> {
    let mut reports: Vec<StatementReport> = Vec::new();
    // In the file's own transaction: the blocking locks taken so far, as
    // (statement, lock) indexes, with when the statement began.
    let mut open: Option<Vec<(usize, usize, Instant)>> = None;
    let mut failed = false;
    for (i, st) in statements.iter().enumerate() {
        let mut report = StatementReport {
            index: i + 1,
            at: st.at,
            sql: st.sql.chars().take(200).collect(),
            outcome: Outcome::NotRun,
            error: None,
            ms: 0.0,
            rows: None,
            in_transaction: true,
            locks: Vec::new(),
            rewrites: Vec::new(),
            wal_bytes: None,
        };
        if failed {
            reports.push(report);
            continue;
        }
        let own_transaction = open.is_none() && st.control == Control::Other;
        if own_transaction {
            client.batch_execute("BEGIN")?;
        }
        let held_before: Vec<(u32, String)> = if open.is_some() {
            observe::locks(client)?
        } else {
            Vec::new()
        };
        let before = observe::relations(client)?;
        let wal_before = observe::wal_position(client);
        let began = Instant::now();
        let mut result = client.simple_query(&st.sql);
        if own_transaction
            && result
                .as_ref()
                .err()
                .and_then(|e| e.code())
                .is_some_and(|c| c.code() == ACTIVE_SQL_TRANSACTION)
        {
            client.batch_execute("ROLLBACK")?;
            report.in_transaction = false;
            let began = Instant::now();
            result = client.simple_query(&st.sql);
            report.ms = ms(began);
        } else {
            report.ms = ms(began);
        }
        match result {
            Err(e) => {
                failed = true;
                report.outcome = Outcome::Failed;
                report.error = Some(statement_error(&e, st, text));
                if own_transaction && report.in_transaction || open.is_some() {
                    client.batch_execute("ROLLBACK")?;
                }
                open = None;
            }
            Ok(messages) => {
                report.outcome = Outcome::Applied;
                report.rows = messages.iter().rev().find_map(|m| match m {
                    SimpleQueryMessage::CommandComplete(n) => Some(*n),
                    _ => None,
                });
                if report.in_transaction {
                    observe_effects(client, &mut report, &before, &held_before)?;
                }
                report.wal_bytes = wal_before
                    .zip(observe::wal_position(client))
                    .map(|(a, b)| b.saturating_sub(a));
                match (st.control, own_transaction) {
                    (_, true) if !report.in_transaction => {}
                    (_, true) => {
                        client.batch_execute("COMMIT")?;
                        let held = ms(began);
                        for l in report.locks.iter_mut().filter(|l| counts(l)) {
                            l.held_ms = Some(held);
                        }
                    }
                    (Control::Begin, _) => open = Some(Vec::new()),
                    (Control::End, _) => {
                        let ended = Instant::now();
                        for (s, l, from) in open.take().unwrap_or_default() {
                            if let Some(lock) = reports[s].locks.get_mut(l) {
                                lock.held_ms = Some(ms_between(from, ended));
                            }
                        }
                    }
                    (Control::Other, false) => {
                        if let Some(open) = open.as_mut() {
                            for (l, lock) in report.locks.iter().enumerate() {
                                if counts(lock) {
                                    open.push((i, l, began));
                                }
                            }
                        }
                    }
                }
            }
        }
        reports.push(report);
    }
    if open.is_some() {
        // A file that never commits: nothing of it stays, as in psql.
        client.batch_execute("ROLLBACK")?;
    }
    Ok(reports)
}

/// A blocking lock on a relation that existed: the ones production feels.
fn counts(lock: &Lock) -> bool {
    lock.existing && lock.blocks.is_some()
}

/// Locks the statement took (beyond those held before it) and relations
/// it wrote anew.
fn observe_effects(
    client: &mut Client,
    report: &mut StatementReport,
    before: &Relations,
    held_before: &[(u32, String)],
) -> Result<(), postgres::Error> {
    let after = observe::relations(client)?;
    for (oid, mode) in observe::locks(client)? {
        if held_before.contains(&(oid, mode.clone())) {
            continue;
        }
        let Some(rel) = after.get(&oid).or_else(|| before.get(&oid)) else {
            continue; // a catalog, or a relation of another kind
        };
        report.locks.push(Lock {
            relation: rel.name.clone(),
            mode: observe::mode_name(&mode),
            existing: before.contains_key(&oid),
            blocks: observe::blocks(&mode),
            held_ms: None,
        });
    }
    report
        .locks
        .sort_by(|a, b| (&a.relation, &a.mode).cmp(&(&b.relation, &b.mode)));
    for (oid, bytes) in observe::rewritten(client, before, &after)? {
        let rel = &after[&oid];
        report.rewrites.push(Rewrite {
            relation: rel.name.clone(),
            kind: rel.kind,
            bytes,
        });
    }
    Ok(())
}

fn statement_error(e: &postgres::Error, st: &Statement, text: &str) -> StatementError {
    let Some(db) = e.as_db_error() else {
        return StatementError {
            message: e.to_string(),
            sqlstate: e.code().map(|c| c.code().to_string()).unwrap_or_default(),
            at: None,
            detail: None,
            hint: None,
        };
    };
    // The server counts characters from 1 within the statement.
    let at = match db.position() {
        Some(postgres::error::ErrorPosition::Original(p)) => {
            let chars = (*p as usize).saturating_sub(1);
            let bytes: usize = st.sql.chars().take(chars).map(char::len_utf8).sum();
            Some(position(text, st.offset + bytes))
        }
        _ => Some(st.at),
    };
    StatementError {
        message: db.message().to_string(),
        sqlstate: db.code().code().to_string(),
        at,
        detail: db.detail().map(str::to_string),
        hint: db.hint().map(str::to_string),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    to.duration_since(from).as_secs_f64() * 1000.0
}
