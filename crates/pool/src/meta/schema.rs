//! The meta.db schema and its migrations (by `PRAGMA user_version`).

use rusqlite::Connection;

use super::MetaError;

/// Each entry moves the schema one version up.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sources (
    name       TEXT PRIMARY KEY,
    mode       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('running', 'stopped')),
    op         TEXT,
    op_pid     INTEGER,
    op_start   INTEGER,
    port       INTEGER NOT NULL UNIQUE,
    database   TEXT NOT NULL,
    role       TEXT NOT NULL,
    password   TEXT NOT NULL,
    pm_pid     INTEGER,
    pm_start   INTEGER,
    pg_major   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE snapshots (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT NOT NULL REFERENCES sources(name),
    parent_branch TEXT,
    op            TEXT,
    op_pid        INTEGER,
    op_start      INTEGER,
    created_at    INTEGER NOT NULL,
    lsn           TEXT,
    method        TEXT,
    seal_ms       INTEGER
);

CREATE TABLE branches (
    name          TEXT PRIMARY KEY,
    source        TEXT NOT NULL REFERENCES sources(name),
    snapshot_id   INTEGER NOT NULL REFERENCES snapshots(id),
    parent_branch TEXT,
    state         TEXT NOT NULL CHECK (state IN ('running', 'stopped')),
    op            TEXT,
    op_pid        INTEGER,
    op_start      INTEGER,
    port          INTEGER NOT NULL UNIQUE,
    password      TEXT NOT NULL,
    pm_pid        INTEGER,
    pm_start      INTEGER,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    protected     INTEGER NOT NULL DEFAULT 0,
    durable       INTEGER NOT NULL DEFAULT 0,
    labels        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX branches_snapshot ON branches(snapshot_id);
CREATE INDEX snapshots_parent ON snapshots(parent_branch);
"#,
    r#"
-- Remote sources (physical standby or logical import).
CREATE TABLE remotes (
    source         TEXT PRIMARY KEY REFERENCES sources(name) ON DELETE CASCADE,
    url            TEXT NOT NULL,      -- never with a password
    saved_password TEXT,               -- only with --save-password
    refresh_every  INTEGER,            -- seconds, logical sources
    refreshed_at   INTEGER,
    refresh_error  TEXT
);

-- What may happen to a source's data on its way to branches.
CREATE TABLE policies (
    source         TEXT PRIMARY KEY REFERENCES sources(name) ON DELETE CASCADE,
    snapshot_every INTEGER,            -- seconds
    snapshot_keep  INTEGER,
    mask_rules     TEXT,               -- TOML
    mask_secret    BLOB,
    unmasked_ok    INTEGER NOT NULL DEFAULT 0
);

ALTER TABLE snapshots ADD COLUMN masked INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- How long each branch took to make (milliseconds), for `branch info` and
-- the daemon's metrics; NULL for branches made before this version.
ALTER TABLE branches ADD COLUMN snapshot_ms INTEGER;
ALTER TABLE branches ADD COLUMN clone_ms INTEGER;
ALTER TABLE branches ADD COLUMN start_ms INTEGER;
ALTER TABLE branches ADD COLUMN total_ms INTEGER;
"#,
    r#"
-- Agents: credentials of the policy proxy. The secret itself is never
-- stored, only its SCRAM-SHA-256 verifier.
CREATE TABLE agents (
    name                 TEXT PRIMARY KEY,
    source               TEXT NOT NULL REFERENCES sources(name) ON DELETE CASCADE,
    policy               TEXT NOT NULL CHECK (policy IN ('read-only', 'dry-run', 'branch')),
    verifier             TEXT NOT NULL,
    branch               TEXT,               -- a named branch to use (shared); NULL: the agent's own
    ttl                  INTEGER,            -- seconds, of branches made for the agent
    max_rows             INTEGER,            -- rows one statement may affect
    statement_timeout_ms INTEGER,
    max_storage          INTEGER,            -- bytes its branch may stop sharing
    idle_stop            INTEGER,            -- seconds without a session before its branch stops
    per_session          INTEGER NOT NULL DEFAULT 0,
    keep                 INTEGER NOT NULL DEFAULT 0,
    fresh                INTEGER NOT NULL DEFAULT 0,
    audit_params         INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL,
    rotated_at           INTEGER,
    revoked_at           INTEGER
);

-- Every statement the proxy passed on or refused. Append-only (the
-- triggers) and hash-chained: each record carries the hash of the one
-- before it, so `pgfork audit --verify` finds a changed or removed record.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    agent       TEXT NOT NULL,
    session     TEXT NOT NULL,
    client      TEXT NOT NULL,
    target      TEXT NOT NULL,
    policy      TEXT NOT NULL,
    statement   TEXT NOT NULL,
    params      TEXT,
    duration_us INTEGER NOT NULL,
    tag         TEXT,
    rows        INTEGER,
    sqlstate    TEXT,
    message     TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_agent ON audit(agent, at_ms);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
"#,
    r#"
-- Each branch's server runs as an OS uid of its own (as root; NULL: the
-- home's OS user), and branches made for proxy agents listen on no TCP
-- port (tcp = 0): only the proxy reaches them, over the unix socket.
ALTER TABLE branches ADD COLUMN uid INTEGER;
ALTER TABLE branches ADD COLUMN tcp INTEGER NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX branches_uid ON branches(uid);
"#,
    r#"
-- When each branch was last in use (Unix milliseconds): made, started,
-- a proxy session, an API or MCP request about it, a session the reaper
-- saw. The reaper and the proxy stop it when this is old enough, whichever
-- process recorded it, and a restarted daemon still knows it. Branches
-- made before this version count as used now.
ALTER TABLE branches ADD COLUMN active_at_ms INTEGER;
UPDATE branches SET active_at_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
"#,
    r#"
-- The transaction status the client was told after each audited statement.
ALTER TABLE audit ADD COLUMN tx_status TEXT;
"#,
    r#"
-- Most proxy sessions an agent holds at once; also the CONNECTION LIMIT
-- of a read-only or dry-run agent's own role on its source.
ALTER TABLE agents ADD COLUMN max_connections INTEGER NOT NULL DEFAULT 10;
"#,
    r#"
-- Storage limits: a branch's own (--max-size) and each source's default.
ALTER TABLE branches ADD COLUMN max_size INTEGER;
CREATE TABLE source_limits (
    source          TEXT PRIMARY KEY REFERENCES sources(name) ON DELETE CASCADE,
    branch_max_size INTEGER
);
-- Compute limits (cgroups, issue 12). A branch's server's limits; the
-- defaults a source gives the branches made from it; and every control
-- group pgfork made, recorded before it is made and forgotten once it is
-- removed, so that another pgfork process (a CLI call in another cgroup,
-- the daemon) finds it again and none is left behind.
CREATE TABLE branch_compute (
    branch     TEXT PRIMARY KEY REFERENCES branches(name) ON DELETE CASCADE,
    cpu_millis INTEGER,                -- thousandths of a CPU
    memory     INTEGER,                -- bytes
    pids       INTEGER,
    oom_kills  INTEGER NOT NULL DEFAULT 0  -- counted in groups since removed
);
CREATE TABLE source_compute (
    source            TEXT PRIMARY KEY REFERENCES sources(name) ON DELETE CASCADE,
    branch_cpu_millis INTEGER,
    branch_memory     INTEGER,
    branch_pids       INTEGER
);
CREATE TABLE cgroups (
    path TEXT PRIMARY KEY,             -- absolute directory, one per hierarchy
    kind TEXT NOT NULL CHECK (kind IN ('source', 'branch')),
    name TEXT NOT NULL
);
CREATE INDEX cgroups_owner ON cgroups(kind, name);
"#,
    r#"
-- Identities (issue 13). API tokens, each an admin's or an agent's; only
-- the SHA-256 is kept, and revoking deletes the row. The home's one token
-- so far becomes the admin token 'admin'.
CREATE TABLE api_tokens (
    kind       TEXT NOT NULL CHECK (kind IN ('admin', 'agent')),
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
INSERT INTO api_tokens (kind, name, sha256, created_at)
    SELECT 'admin', 'admin', value, CAST(strftime('%s', 'now') AS INTEGER)
      FROM settings WHERE key = 'api_token_sha256';
DELETE FROM settings WHERE key = 'api_token_sha256';
-- Who made a branch: 'admin:NAME' or 'agent:NAME' (NULL: made before
-- identities, by the home's owner).
ALTER TABLE branches ADD COLUMN created_by TEXT;
CREATE INDEX branches_created_by ON branches(created_by);
-- An agent's limits on the API and MCP.
ALTER TABLE agents ADD COLUMN max_branches INTEGER;
ALTER TABLE agents ADD COLUMN max_ttl INTEGER;
"#,
    r#"
-- Branches shared with agents other than their maker (issue 13): each
-- member logs in to the branch as a role of its own, whose password is
-- kept here as the branch's own is.
CREATE TABLE branch_members (
    branch     TEXT NOT NULL REFERENCES branches(name) ON DELETE CASCADE,
    agent      TEXT NOT NULL,
    read_only  INTEGER NOT NULL,
    password   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (branch, agent)
);
CREATE INDEX branch_members_agent ON branch_members(agent);
-- An orchestrator agent and its workers: the parent sees, uses, resets
-- and deletes the branches its workers make.
ALTER TABLE agents ADD COLUMN parent TEXT;
"#,
    r#"
-- Promotion gates (issue 15): what every promote to a source must pass,
-- from any interface. Bounds on the patch's scope (NULL: none), and the
-- assertion files as the admin wrote them (parsed again at each promote),
-- in the order given.
CREATE TABLE source_gates (
    source     TEXT PRIMARY KEY REFERENCES sources(name) ON DELETE CASCADE,
    max_rows   INTEGER,
    max_tables INTEGER
);
CREATE TABLE source_assertions (
    source   TEXT NOT NULL REFERENCES sources(name) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name     TEXT NOT NULL,
    sql      TEXT NOT NULL,
    PRIMARY KEY (source, position),
    UNIQUE (source, name)
);
"#,
    r#"
-- Promotion requests (issue 15): an agent asks, an admin approves (which
-- promotes) or rejects. summary and result are JSON.
CREATE TABLE promotion_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    branch       TEXT NOT NULL,
    source       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    note         TEXT,
    status       TEXT NOT NULL CHECK (status IN ('open', 'approved', 'rejected', 'withdrawn')),
    summary      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    decided_by   TEXT,
    decided_at   INTEGER,
    reason       TEXT,
    result       TEXT
);
CREATE INDEX promotion_requests_branch ON promotion_requests(branch, status);
CREATE UNIQUE INDEX promotion_requests_one_open ON promotion_requests(branch) WHERE status = 'open';
"#,
];

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MetaError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(MetaError::TooNew { found, known });
    }
    if found == known {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the lock.
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for sql in &MIGRATIONS[found as usize..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}
