//! `pgfork rehearse`: run a migration file on a branch made for it and
//! report, statement by statement, whether it applies and what it would
//! cost in production (locks and how long they were held, rewrites, WAL),
//! beside squawk's static rules, then the schema diff and a verdict.

mod lint;
mod observe;
mod run;
pub(crate) mod script;

use std::time::Instant;

use serde::Serialize;

pub use lint::{LintFinding, Severity};
pub use script::Position;

use crate::{BranchCreate, DiffRequest, Engine, EngineError, Result};
use pgfork_diff::schema::SchemaDiff;

/// How long a rehearsal's branch may live if pgfork dies before deleting
/// it (the reaper takes it then).
const BRANCH_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What `rehearse` was asked for.
#[derive(Debug, Clone)]
pub struct RehearseRequest {
    /// A source, snapshot or branch to branch from.
    pub from: String,
    /// The file's name, for messages.
    pub file: String,
    /// The migration.
    pub sql: String,
    /// Snapshot the source first.
    pub fresh: bool,
    /// Keep the branch afterwards.
    pub keep: bool,
    /// Lint findings at least this severe make the verdict `blocked`.
    pub fail_on: Severity,
    /// A write-blocking lock on an existing table held longer than this
    /// makes the verdict `blocked`.
    pub max_lock_ms: Option<u64>,
}

/// The rehearsal's conclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every statement applied, nothing passed a threshold (exit 0).
    Applies,
    /// A statement failed (exit 1).
    Fails,
    /// It applies, but a lint or lock finding passed a threshold (exit 2).
    Blocked,
}

impl Verdict {
    /// The exit code `pgfork rehearse` ends with.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Applies => 0,
            Verdict::Fails => 1,
            Verdict::Blocked => 2,
        }
    }
}

/// What happened to one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran.
    Applied,
    /// The server refused it (nothing after it ran).
    Failed,
    /// An earlier statement failed.
    NotRun,
}

/// The server's error for a statement.
#[derive(Debug, Clone, Serialize)]
pub struct StatementError {
    /// The message.
    pub message: String,
    /// SQLSTATE.
    pub sqlstate: String,
    /// Where in the file the server points, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Position>,
    /// `DETAIL`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `HINT`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// A relation lock a statement took.
#[derive(Debug, Clone, Serialize)]
pub struct Lock {
    /// `schema.relation`.
    pub relation: String,
    /// `ACCESS EXCLUSIVE`, `SHARE`, ...
    pub mode: String,
    /// The relation existed before the statement (a new one blocks no one).
    pub existing: bool,
    /// What it keeps others from doing: `reads and writes`, `writes`, or
    /// nothing (`null`).
    pub blocks: Option<&'static str>,
    /// For a blocking lock on an existing relation: how long it was held,
    /// from the statement's start to the end of its transaction; what a
    /// concurrent reader or writer in production would wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_ms: Option<f64>,
}

/// A relation whose data a statement wrote anew.
#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    /// `schema.relation`.
    pub relation: String,
    /// `table`, `index`, ...
    pub kind: &'static str,
    /// Its size after the statement.
    pub bytes: u64,
}

/// One statement's report.
#[derive(Debug, Clone, Serialize)]
pub struct StatementReport {
    /// 1-based.
    pub index: usize,
    /// Where it starts in the file.
    pub at: Position,
    /// Its text (the first 200 characters).
    pub sql: String,
    /// What happened.
    pub outcome: Outcome,
    /// The server's error, for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StatementError>,
    /// Wall time.
    pub ms: f64,
    /// Rows it affected, where the server says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// It ran in a transaction (its own, or the file's); `false` for a
    /// statement PostgreSQL runs only alone (`CREATE INDEX CONCURRENTLY`),
    /// whose locks are not observed.
    pub in_transaction: bool,
    /// Relation locks it took.
    pub locks: Vec<Lock>,
    /// Relations it wrote anew.
    pub rewrites: Vec<Rewrite>,
    /// WAL it wrote, in bytes, if the role may read the WAL position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_bytes: Option<u64>,
}

/// What `rehearse` found.
#[derive(Debug, Clone, Serialize)]
pub struct RehearsalReport {
    /// The file rehearsed.
    pub file: String,
    /// What the branch came from.
    pub from: String,
    /// The branch it ran on.
    pub branch: String,
    /// Whether that branch was kept (`--keep`).
    pub kept: bool,
    /// Its connection string, when kept (a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsn: Option<String>,
    /// The conclusion.
    pub verdict: Verdict,
    /// Why it is `blocked`, or which statement failed.
    pub reasons: Vec<String>,
    /// Each statement.
    pub statements: Vec<StatementReport>,
    /// Squawk's findings.
    pub lints: Vec<LintFinding>,
    /// What the migration changed in the schema (if it applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaDiff>,
    /// Time for the whole rehearsal.
    pub elapsed_ms: u64,
}

/// Whether `lock` is a weaker lock on a relation the statement also holds
/// `ACCESS EXCLUSIVE` on (which says it all).
pub fn outranked(lock: &Lock, all: &[Lock]) -> bool {
    lock.mode != "ACCESS EXCLUSIVE"
        && all
            .iter()
            .any(|l| l.relation == lock.relation && l.mode == "ACCESS EXCLUSIVE")
}

impl Engine {
    /// Rehearses a migration on a branch of `req.from` made for it.
    pub fn rehearse(&mut self, req: &RehearseRequest) -> Result<RehearsalReport> {
        let began = Instant::now();
        if req.sql.trim().is_empty() {
            return Err(EngineError::InvalidArgument(format!(
                "{} holds no SQL: give a migration file with at least one statement",
                req.file
            )));
        }
        let statements = script::statements(&req.sql).map_err(|e| {
            EngineError::InvalidArgument(format!(
                "{} cannot be split into statements ({e}): check its quoting",
                req.file
            ))
        })?;
        let lints = lint::lint(&req.sql);
        let name = format!("rehearse-{}", crate::names::random_suffix());
        let info = self.branch_create(&BranchCreate {
            name: name.clone(),
            from: req.from.clone(),
            fresh: req.fresh,
            ttl: Some(BRANCH_TTL),
            ..BranchCreate::default()
        })?;
        let outcome = self.rehearse_on(&info, &statements, req, &req.sql);
        let (statements, schema) = match outcome {
            Ok(done) => done,
            Err(e) => {
                self.forget_rehearsal(&name, req.keep);
                return Err(e);
            }
        };
        self.forget_rehearsal(&name, req.keep);
        let mut reasons = Vec::new();
        let failed = statements.iter().find(|s| s.outcome == Outcome::Failed);
        if let Some(s) = failed {
            reasons.push(format!(
                "statement {} (line {}) failed: {}",
                s.index,
                s.at.line,
                s.error.as_ref().map_or("", |e| e.message.as_str())
            ));
        }
        for f in lints.iter().filter(|f| f.severity >= req.fail_on) {
            reasons.push(format!("line {}: {} ({})", f.at.line, f.message, f.rule));
        }
        if let Some(max) = req.max_lock_ms {
            for s in &statements {
                for l in s.locks.iter().filter(|l| !outranked(l, &s.locks)) {
                    if l.held_ms.is_some_and(|ms| ms > max as f64) {
                        reasons.push(format!(
                            "statement {} (line {}) held {} on {} for {:.0} ms (more than {max} ms): \
                             production {} on it would wait that long",
                            s.index,
                            s.at.line,
                            l.mode,
                            l.relation,
                            l.held_ms.unwrap_or(0.0),
                            l.blocks.unwrap_or("access")
                        ));
                    }
                }
            }
        }
        let verdict = if failed.is_some() {
            Verdict::Fails
        } else if reasons.is_empty() {
            Verdict::Applies
        } else {
            Verdict::Blocked
        };
        Ok(RehearsalReport {
            file: req.file.clone(),
            from: req.from.clone(),
            branch: name,
            kept: req.keep,
            dsn: req
                .keep
                .then(|| info.dsn_with_password().unwrap_or(info.dsn)),
            verdict,
            reasons,
            statements,
            lints,
            schema,
            elapsed_ms: began.elapsed().as_millis() as u64,
        })
    }

    /// Runs the statements on the branch, then diffs its schema.
    fn rehearse_on(
        &mut self,
        info: &crate::BranchInfo,
        statements: &[script::Statement],
        req: &RehearseRequest,
        text: &str,
    ) -> Result<(Vec<StatementReport>, Option<SchemaDiff>)> {
        let endpoint = pgfork_pg::untrusted::session::Endpoint {
            socket_dir: info.socket_dir.clone(),
            port: info.port,
        };
        let mut client =
            pgfork_pg::untrusted::session::as_role_unpinned(&endpoint, &info.database, &info.user)
                .map_err(EngineError::sql("connect to the rehearsal's branch"))?;
        let reports = run::run(&mut client, statements, text).map_err(EngineError::sql(
            &format!("observe the rehearsal of {}", req.file),
        ))?;
        drop(client);
        let applied = reports.iter().all(|s| s.outcome == Outcome::Applied);
        let schema = if applied {
            let d = self.diff(&DiffRequest {
                target: info.name.clone(),
                against: None,
                schema: true,
                data: false,
                limit: 0,
                full: false,
                sql: false,
            })?;
            d.schema
        } else {
            None
        };
        Ok((reports, schema))
    }

    /// Deletes the rehearsal's branch unless it is to be kept; a failure
    /// to delete is said, and the branch's TTL takes it later.
    fn forget_rehearsal(&mut self, name: &str, keep: bool) {
        if keep {
            return;
        }
        if let Err(e) = self.branch_delete(name, true) {
            self.progress.warn(&format!(
                "could not delete the rehearsal's branch {name} ({e}); it expires within the hour, \
                 or run: pgfork branch delete {name}"
            ));
        }
    }
}
