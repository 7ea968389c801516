//! What is in a branch: emptying it to its schema, dumping it.

use std::io::Write;
use std::process::{Command, Stdio};

use pgfork_pool::meta::BranchRow;

use pgfork_pg::untrusted::hazards::{Work, superuser_hazards};
use pgfork_pg::untrusted::session;

use crate::{Engine, EngineError, Result, ServerKind};

/// Empties every user table (partitions through their parents), large
/// object and materialized view, and forgets the statistics, which sample
/// real values. Sequences restart.
const EMPTY_TABLES: &str = r#"
DO $$
DECLARE
    tables text;
    mv record;
BEGIN
    SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') INTO tables
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence <> 't'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%';
    IF tables IS NOT NULL THEN
        EXECUTE 'TRUNCATE ' || tables || ' RESTART IDENTITY CASCADE';
    END IF;
    PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
    FOR mv IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'm' AND c.relispopulated LOOP
        EXECUTE format('REFRESH MATERIALIZED VIEW %I.%I', mv.nspname, mv.relname);
    END LOOP;
    DELETE FROM pg_statistic s USING pg_class c, pg_namespace n
     WHERE s.starelid = c.oid AND n.oid = c.relnamespace
       AND n.nspname NOT IN ('pg_catalog', 'information_schema');
END
$$;
"#;

/// What [`EMPTY_TABLES`] truncates, and the materialized views it
/// refreshes whose owner is a superuser (REFRESH runs the query as the
/// owner: a non-superuser's runs with that role's rights only).
const EMPTIED: &str = r#"
SELECT c.oid, c.relkind = 'm'
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles o ON o.oid = c.relowner
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
   AND c.relpersistence <> 't'
   AND (c.relkind IN ('r', 'p') OR (c.relkind = 'm' AND c.relispopulated AND o.rolsuper))
"#;

/// Formats `pg_dump` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// `-Fc`: for pg_restore.
    Custom,
    /// `-Fp`: SQL text.
    Plain,
}

impl Engine {
    /// Leaves a new branch with its schema and no rows. As superuser (the
    /// application role may not own every table), with triggers and rules
    /// off; refused if emptying would still run code of a role that is not
    /// a superuser (a TRUNCATE trigger enabled ALWAYS, the query of a
    /// superuser's materialized view calling such code).
    pub(crate) fn empty_tables(&mut self, row: &BranchRow) -> Result<()> {
        let source = self.source_row(&row.source)?;
        let ep = self.endpoint(ServerKind::Branch, &row.name, row.port);
        let mut client = session::superuser_in(&ep, &source.database)
            .map_err(EngineError::sql("connect to empty the branch"))?;
        let targets: Vec<(u32, Work)> = client
            .query(EMPTIED, &[])
            .map_err(EngineError::sql("list what emptying touches"))?
            .iter()
            .map(|r| {
                let refresh: bool = r.get(1);
                (
                    r.get(0),
                    if refresh {
                        Work::Refresh
                    } else {
                        Work::Truncate
                    },
                )
            })
            .collect();
        let hazards = superuser_hazards(&mut client, &targets, &[])
            .map_err(EngineError::sql("check what emptying would run"))?;
        if let Some(first) = hazards.first() {
            return Err(EngineError::UnsafeContent(format!(
                "--schema-only would run, as superuser, {first}{}: drop or disable it on the origin, \
                 or make the branch without --schema-only and empty it as its own role",
                crate::masking::more(hazards.len())
            )));
        }
        client
            .batch_execute("SET session_replication_role = replica")
            .map_err(EngineError::sql("disable triggers for emptying"))?;
        client
            .batch_execute(EMPTY_TABLES)
            .map_err(EngineError::sql("empty the branch's tables"))?;
        session::maintenance(&ep)
            .and_then(|mut m| m.batch_execute("CHECKPOINT"))
            .map_err(EngineError::sql("checkpoint"))?;
        Ok(())
    }

    /// Writes a `pg_dump` of a running branch's database to `out`.
    pub fn branch_dump(&self, name: &str, format: DumpFormat, out: &mut dyn Write) -> Result<()> {
        let row = self.visible_branch(name)?;
        if !row.postmaster.is_some_and(|p| p.is_alive()) {
            return Err(EngineError::WrongState(format!(
                "branch '{name}' is not running: pgfork branch start {name}"
            )));
        }
        let source = self.source_row(&row.source)?;
        let mut child = Command::new(self.config.bins.tool("pg_dump"))
            .arg("-h")
            .arg(self.socket_dir(ServerKind::Branch, name))
            .args([
                "-p",
                &row.port.to_string(),
                // As the application role, like all reading of content:
                // pg_dump plans queries on the agent's tables.
                "-U",
                &source.role,
                "-d",
                &source.database,
            ])
            .arg(if format == DumpFormat::Custom {
                "-Fc"
            } else {
                "-Fp"
            })
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                EngineError::Pg(pgfork_pg::PgError::Command {
                    program: "pg_dump".into(),
                    detail: e.to_string(),
                })
            })?;
        let mut stdout = child.stdout.take().expect("piped");
        let copied = std::io::copy(&mut stdout, out);
        let result = child.wait_with_output().map_err(|e| {
            EngineError::Pg(pgfork_pg::PgError::Command {
                program: "pg_dump".into(),
                detail: e.to_string(),
            })
        })?;
        if !result.status.success() {
            return Err(EngineError::Pg(pgfork_pg::PgError::Command {
                program: "pg_dump".into(),
                detail: String::from_utf8_lossy(&result.stderr).trim().to_string(),
            }));
        }
        copied.map_err(|e| EngineError::Io {
            op: "write the dump",
            path: "stdout".into(),
            source: e,
        })?;
        out.flush().map_err(|e| EngineError::Io {
            op: "write the dump",
            path: "stdout".into(),
            source: e,
        })?;
        Ok(())
    }
}
