//! The rules of each policy, applied to classified statements. A refusal
//! carries the SQLSTATE and a message that names the policy or budget.

use pgfork_engine::agents::Policy;

use crate::classify::{Statement, Tx};

/// What the rules say about one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on.
    Allow,
    /// Refuse it.
    Refuse {
        /// SQLSTATE.
        code: &'static str,
        /// Message.
        message: String,
    },
}

/// Settings an agent may not change because the proxy set them.
const TIMEOUTS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "transaction_timeout",
];

/// Settings that would undo read-only mode or change who the session is.
const READ_ONLY_GUARDS: &[&str] = &[
    "default_transaction_read_only",
    "transaction_read_only",
    "session_authorization",
    "role",
    "session_replication_role",
];

/// Functions whose effects leave the transaction (so a read-only or
/// dry-run session must not call them) or reach other sessions.
const ESCAPING_FUNCTIONS: &[&str] = &[
    "setval",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_logical_emit_message",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_origin_create",
    "pg_replication_origin_advance",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "lo_import",
    "lo_export",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_send_query",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_file_write",
];

/// Functions that write, refused in read-only sessions (on top of the
/// read-only transaction, which refuses them too).
const WRITING_FUNCTIONS: &[&str] = &[
    "nextval",
    "pg_notify",
    "lo_create",
    "lo_creat",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "lowrite",
    "lo_truncate",
    "pg_advisory_xact_lock",
    "pg_try_advisory_xact_lock",
    "txid_current",
    "pg_current_xact_id",
];

/// The rules one session applies.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The agent's policy.
    pub policy: Policy,
    /// Whether the agent has a statement timeout to protect.
    pub has_timeout: bool,
}

fn refuse(code: &'static str, message: String) -> Verdict {
    Verdict::Refuse { code, message }
}

impl Rules {
    fn name(&self) -> &'static str {
        self.policy.as_str()
    }

    /// Judges one statement.
    pub fn check(&self, s: &Statement) -> Verdict {
        let policy = self.name();
        let code = if self.policy == Policy::ReadOnly {
            "25006"
        } else {
            "42501"
        };
        if s.copy_server_side {
            return refuse(
                code,
                format!(
                    "pgfork policy {policy}: COPY to or from a server file or program is not allowed; use COPY ... FROM STDIN / TO STDOUT"
                ),
            );
        }
        if s.server_wide && self.policy != Policy::Branch {
            return refuse(
                code,
                format!("pgfork policy {policy}: {} is not allowed", s.command),
            );
        }
        if let Some(message) = lexer_setting(s) {
            return refuse("0A000", message);
        }
        let protected = |name: &str| {
            (TIMEOUTS.contains(&name) && (self.has_timeout || self.policy == Policy::DryRun))
                || (self.policy != Policy::Branch && READ_ONLY_GUARDS.contains(&name))
        };
        for name in &s.sets {
            if protected(name) {
                let code = if name.contains("read_only") || self.policy == Policy::ReadOnly {
                    "25006"
                } else {
                    "42501"
                };
                return refuse(
                    code,
                    format!(
                        "pgfork policy {policy}: {name} is set by pgfork and cannot be changed"
                    ),
                );
            }
        }
        for arg in &s.set_config {
            match arg {
                Some(name) if !protected(name) => {}
                Some(name) => {
                    let code = if name.contains("read_only") || self.policy == Policy::ReadOnly {
                        "25006"
                    } else {
                        "42501"
                    };
                    return refuse(
                        code,
                        format!(
                            "pgfork policy {policy}: {name} is set by pgfork and cannot be changed"
                        ),
                    );
                }
                None if self.policy != Policy::Branch || self.has_timeout => {
                    return refuse(
                        code,
                        format!(
                            "pgfork policy {policy}: set_config() needs a constant setting name here"
                        ),
                    );
                }
                None => {}
            }
        }
        match self.policy {
            Policy::Branch => Verdict::Allow,
            Policy::ReadOnly => self.check_read_only(s),
            Policy::DryRun => self.check_dry_run(s),
        }
    }

    fn check_read_only(&self, s: &Statement) -> Verdict {
        let deny = |what: &str| {
            refuse(
                "25006",
                format!(
                    "pgfork policy read-only: {what} is not allowed (this agent may only read)"
                ),
            )
        };
        if s.sets_read_write {
            return deny("a READ WRITE transaction");
        }
        if let Some(f) = s.functions.iter().find(|f| {
            ESCAPING_FUNCTIONS.contains(&f.as_str()) || WRITING_FUNCTIONS.contains(&f.as_str())
        }) {
            return deny(&format!("{f}()"));
        }
        if s.locks_rows {
            return deny("locking rows (FOR UPDATE/SHARE)");
        }
        match s.tx {
            Some(Tx::Prepare) | Some(Tx::Prepared) => return deny(&s.command),
            Some(_) => return Verdict::Allow,
            None => {}
        }
        if !s.sets.is_empty()
            || s.read_only
            || matches!(s.command.as_str(), "RESET" | "EXECUTE" | "DISCARD")
        {
            return Verdict::Allow;
        }
        deny(&s.command)
    }

    fn check_dry_run(&self, s: &Statement) -> Verdict {
        if let Some(f) = s
            .functions
            .iter()
            .find(|f| ESCAPING_FUNCTIONS.contains(&f.as_str()))
        {
            return refuse(
                "42501",
                format!("pgfork policy dry-run: {f}() has effects a rollback does not undo"),
            );
        }
        if matches!(s.tx, Some(Tx::Prepare) | Some(Tx::Prepared)) {
            return refuse(
                "25001",
                format!(
                    "pgfork policy dry-run: {} would keep the transaction past its rollback",
                    s.command
                ),
            );
        }
        if s.no_transaction {
            return refuse(
                "25001",
                format!(
                    "pgfork policy dry-run: {} cannot run inside a transaction, so it cannot be rolled back: refused",
                    s.command
                ),
            );
        }
        if matches!(s.command.as_str(), "LISTEN" | "LOCK") && s.command == "LOCK" {
            // Explicit locks are allowed: lock_timeout keeps them short.
        }
        Verdict::Allow
    }
}

/// Whether a statement ends a transaction (COMMIT, ROLLBACK and their chains).
pub fn ends_transaction(s: &Statement) -> bool {
    matches!(s.tx, Some(Tx::Commit { .. }) | Some(Tx::Rollback { .. }))
}

/// Whether a `standard_conforming_strings` value turns it on.
fn scs_on(v: &str) -> bool {
    matches!(v, "on" | "true" | "yes" | "1")
}

/// The settings that decide how the server splits text into tokens, which
/// the proxy's parser reads with the same rules only while they keep the
/// values it knows: a change that would part them is refused (a change
/// made some other way ends the session when the server reports it).
fn lexer_setting(s: &Statement) -> Option<String> {
    for name in &s.sets {
        match name.as_str() {
            "standard_conforming_strings" => {
                let on = s
                    .set_value
                    .as_deref()
                    .is_some_and(|v| v == "default" || scs_on(v));
                if s.command == "SET" && !on {
                    return Some(
                        "pgfork: standard_conforming_strings stays on through the proxy (its parser reads strings as the server does only then)"
                            .into(),
                    );
                }
            }
            "client_encoding" => {
                if let Some(Err(m)) = s
                    .set_value
                    .as_deref()
                    .filter(|v| *v != "default")
                    .map(crate::parser::ClientEncoding::from_name)
                {
                    return Some(m);
                }
            }
            _ => {}
        }
    }
    for (name, value) in s.set_config.iter().zip(&s.set_config_value) {
        let Some(name) = name.as_deref() else {
            continue;
        };
        // A value that is not a constant (a parameter) is left to the
        // server's report of it, which ends the session if it is one the
        // parser cannot read; each statement still goes alone in a Parse.
        let fine = match (name, value.as_deref()) {
            (_, None) => true,
            ("standard_conforming_strings", Some(v)) => scs_on(v),
            ("client_encoding", Some(v)) => crate::parser::ClientEncoding::from_name(v).is_ok(),
            _ => true,
        };
        if !fine {
            return Some(format!(
                "pgfork: {name} keeps a value the proxy's parser can read (standard_conforming_strings on, an ASCII-safe client_encoding)"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    fn verdict(policy: Policy, sql: &str) -> Vec<Verdict> {
        let rules = Rules {
            policy,
            has_timeout: true,
        };
        classify(sql)
            .unwrap()
            .iter()
            .map(|s| rules.check(s))
            .collect()
    }

    fn allowed(policy: Policy, sql: &str) -> bool {
        verdict(policy, sql).iter().all(|v| *v == Verdict::Allow)
    }

    #[test]
    fn read_only_lets_reads_through() {
        for sql in [
            "SELECT 1",
            "select * from t where a = 'insert into x'",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN INSERT INTO t VALUES (1)",
            "SHOW work_mem",
            "SET work_mem = '8MB'",
            "RESET ALL",
            "BEGIN",
            "BEGIN READ ONLY",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT a",
            "DECLARE c CURSOR FOR SELECT 1",
            "FETCH 10 FROM c",
            "COPY t TO STDOUT",
            "COPY (SELECT 1) TO STDOUT",
            "LISTEN x",
            "VALUES (1), (2)",
            "TABLE t",
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "DEALLOCATE ALL",
        ] {
            assert!(allowed(Policy::ReadOnly, sql), "{sql} should be allowed");
        }
    }

    #[test]
    fn read_only_refuses_writes_and_escapes_with_25006() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE",
            "TRUNCATE t",
            "CREATE TABLE x (a int)",
            "DROP TABLE t",
            "ALTER TABLE t ADD COLUMN b int",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT * INTO new_t FROM t",
            "CREATE TABLE x AS SELECT 1",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM (SELECT * FROM t FOR SHARE) s",
            "SELECT nextval('s')",
            "SELECT setval('s', 1)",
            "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)",
            "SELECT set_config('transaction_read_only', 'off', true)",
            "SET default_transaction_read_only = off",
            "SET SESSION default_transaction_read_only TO DEFAULT",
            "SET transaction_read_only = off",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "SET TRANSACTION READ WRITE",
            "BEGIN READ WRITE",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "SET ROLE postgres",
            "SET SESSION AUTHORIZATION postgres",
            "COPY t FROM STDIN",
            "DO $$BEGIN INSERT INTO t VALUES (1); END$$",
            "CALL p()",
            "GRANT ALL ON t TO PUBLIC",
            "VACUUM t",
            "LOCK TABLE t",
            "PREPARE p AS INSERT INTO t VALUES (1)",
            "EXPLAIN ANALYZE DELETE FROM t",
            "SELECT pg_notify('c', 'x')",
            "NOTIFY c",
            "CREATE EXTENSION dblink",
            "PREPARE TRANSACTION 'x'",
            "SELECT 1; DELETE FROM t",
        ] {
            let v = verdict(Policy::ReadOnly, sql);
            assert!(
                v.iter().any(|v| matches!(v, Verdict::Refuse { code: "25006", message } if message.contains("read-only"))),
                "{sql} should be refused with 25006: {v:?}"
            );
        }
        assert!(!allowed(Policy::ReadOnly, "SET statement_timeout = 0"));
        assert!(!allowed(Policy::ReadOnly, "COPY t FROM PROGRAM 'id'"));
    }

    #[test]
    fn dry_run_refuses_what_a_rollback_cannot_undo() {
        for sql in [
            "VACUUM",
            "VACUUM FULL t",
            "CREATE INDEX CONCURRENTLY i ON t (a)",
            "DROP INDEX CONCURRENTLY i",
            "REINDEX TABLE CONCURRENTLY t",
            "CREATE DATABASE x",
            "DROP DATABASE x",
            "ALTER SYSTEM SET work_mem = '1GB'",
            "PREPARE TRANSACTION 'x'",
            "COMMIT PREPARED 'x'",
            "SELECT setval('s', 100)",
            "SELECT pg_advisory_lock(1)",
            "SET lock_timeout = 0",
            "SET statement_timeout = 0",
            "DISCARD ALL",
            "COPY t FROM '/etc/passwd'",
        ] {
            assert!(
                !allowed(Policy::DryRun, sql),
                "{sql} should be refused in dry-run"
            );
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "CREATE TABLE x (a int)",
            "BEGIN",
            "COMMIT",
            "ANALYZE t",
            "SELECT nextval('s')",
        ] {
            assert!(allowed(Policy::DryRun, sql), "{sql} should run in dry-run");
        }
    }

    #[test]
    fn branch_allows_all_but_the_budget_settings() {
        assert!(allowed(
            Policy::Branch,
            "DROP TABLE t; VACUUM; CREATE INDEX CONCURRENTLY i ON t (a)"
        ));
        assert!(!allowed(Policy::Branch, "SET statement_timeout = 0"));
        assert!(!allowed(
            Policy::Branch,
            "SELECT set_config('statement_timeout', '0', false)"
        ));
        assert!(!allowed(Policy::Branch, "COPY t TO PROGRAM 'id'"));
    }

    #[test]
    fn transaction_ends() {
        let s = classify("COMMIT; END; ROLLBACK; ABORT; COMMIT AND CHAIN; SAVEPOINT a").unwrap();
        let ends: Vec<bool> = s.iter().map(ends_transaction).collect();
        assert_eq!(ends, [true, true, true, true, true, false]);
    }
}
