//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand and
//! checked against the route table by a test, so the two cannot drift.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": reference(name) })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description,
            "schema": { "type": "string" } })
}

fn force_param(what: &str) -> Value {
    json!({ "name": "force", "in": "query", "required": false,
            "description": format!("Also delete {what}."), "schema": { "type": "boolean" } })
}

fn body(name: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": reference(name) } } })
}

/// An operation with the error responses every authenticated route has.
fn op(summary: &str, id: &str, mut responses: serde_json::Map<String, Value>) -> Value {
    responses.insert(
        "401".into(),
        error_response("Missing or wrong bearer token."),
    );
    responses.insert(
        "500".into(),
        error_response("The server or PostgreSQL failed; the message says what to do."),
    );
    json!({ "summary": summary, "operationId": id, "responses": responses })
}

fn with(mut op: Value, key: &str, value: Value) -> Value {
    op[key] = value;
    op
}

macro_rules! responses {
    ($($code:literal => $value:expr),* $(,)?) => {{
        let mut m = serde_json::Map::new();
        $( m.insert($code.to_string(), $value); )*
        m
    }};
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let opt_string = json!({ "type": ["string", "null"] });
    let ttl = |what: &str| json!({ "type": "string", "description": format!("{what}: 30m, 2h, 7d; longer than zero and at most 10y.") });
    let labels = json!({
        "type": "object", "maxProperties": 32,
        "description": "At most 32. Keys like Kubernetes label keys: an optional DNS-subdomain prefix (at most 253 characters of lowercase letters, digits, '-' and '.') and '/', then a name of 1-63 letters, digits, '-', '_' and '.' starting and ending with a letter or digit (team, example.com/team). Values at most 256 characters, no control characters.",
        "additionalProperties": { "type": "string", "maxLength": 256 }
    });
    // Compute limits (issue 12), built apart: json! nests only so deep.
    let limit_props = json!({
        "cpu": { "type": ["number", "null"], "description": "CPUs (0.5: half of one)." },
        "memory": { "type": ["integer", "null"], "description": "Bytes." },
        "pids": { "type": ["integer", "null"] }
    });
    let mut compute_props = limit_props.clone();
    compute_props["cgroups"] = json!({ "type": "array", "items": { "type": "string" } });
    compute_props["usage"] = json!({ "type": "object", "additionalProperties": { "type": "integer" },
        "description": "memory_bytes, memory_peak_bytes, cpu_usec, nr_throttled, oom_kills, pids (single-branch GET, while it runs)." });
    compute_props["oom_kills"] = json!({ "type": "integer" });
    let compute = json!({
        "type": "object",
        "description": "Compute limits (null: none) and where the server runs: its control group directories (one per cgroup hierarchy), what it uses, and how many of its processes the kernel killed for going over its memory limit.",
        "properties": compute_props
    });
    let branch_limits = json!({
        "type": "object",
        "description": "Compute limits each new branch gets unless its create says otherwise (null: none).",
        "properties": limit_props
    });
    let mut all = json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": { "error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "description": "Stable code: unauthorized, bad_request, not_found, unknown_branch, unknown_source, unknown_snapshot, unknown_origin, invalid_name, invalid_argument, name_taken, has_dependents, busy, wrong_state, quota_exceeded, disk_floor, no_free_port, no_space, partial_patch, promote_unverified, gate_failed, ..." },
                    "message": { "type": "string", "description": "What went wrong and what to do." }
                }
            } }
        },
        "Health": { "type": "object", "properties": { "status": string, "version": string } },
        "Deleted": { "type": "object", "properties": { "deleted": { "type": "array", "items": string } } },
        "Dsn": { "type": "object", "properties": { "name": string, "dsn": string } },
        "CreateSource": {
            "type": "object", "required": ["name"], "additionalProperties": false,
            "properties": { "name": { "type": "string", "description": "Name; also the database and role." } }
        },
        "CreateSnapshot": {
            "type": "object", "required": ["of"], "additionalProperties": false,
            "properties": {
                "of": { "type": "string", "description": "Source or branch." },
                "unmasked": { "type": "boolean", "default": false },
                "max_size": { "oneOf": [{ "type": "integer" }, { "type": "string" }], "description": "Most bytes the branch may write of its own (bytes, or a size like \"512M\"); enforced by btrfs quotas. Default: the source's." }
            }
        },
        "Rehearse": {
            "type": "object", "required": ["from", "sql"], "additionalProperties": false,
            "properties": {
                "from": { "type": "string", "description": "A source (its newest snapshot), a snapshot id (shop@3) or a branch." },
                "sql": { "type": "string", "description": "The migration: statements run one by one as the application role, honouring its BEGIN/COMMIT." },
                "file": { "type": "string", "description": "Its name in the report (default migration.sql)." },
                "fresh": { "type": "boolean", "default": false, "description": "Snapshot the source first." },
                "keep": { "type": "boolean", "default": false, "description": "Keep the branch; the report then holds its DSN (a secret)." },
                "fail_on": { "type": "string", "enum": ["warning", "error"], "default": "error", "description": "Lint findings this severe make the verdict blocked." },
                "max_lock_ms": { "type": "integer", "minimum": 0, "description": "A lock blocking writes (or reads) on an existing table held longer than this makes the verdict blocked." }
            }
        },
        "Rehearsal": {
            "type": "object",
            "description": "Per statement: outcome (applied, failed, not_run), error (message, sqlstate, at: line and column in the file), ms, rows, in_transaction, locks (relation, mode, existing, blocks, held_ms), rewrites (relation, kind, bytes), wal_bytes. Then lints (squawk: rule, severity, message, at), schema (the schema diff, if it applied), verdict (applies, fails, blocked) and reasons.",
            "required": ["file", "from", "branch", "kept", "verdict", "reasons", "statements", "lints", "elapsed_ms"],
            "properties": {
                "file": { "type": "string" }, "from": { "type": "string" }, "branch": { "type": "string" },
                "kept": { "type": "boolean" }, "dsn": { "type": "string" },
                "verdict": { "type": "string", "enum": ["applies", "fails", "blocked"] },
                "reasons": { "type": "array", "items": { "type": "string" } },
                "statements": { "type": "array", "items": { "type": "object" } },
                "lints": { "type": "array", "items": { "type": "object" } },
                "schema": { "type": "object" },
                "elapsed_ms": { "type": "integer" }
            }
        },
        "RequestPromotion": {
            "type": "object", "required": ["branch"], "additionalProperties": false,
            "properties": {
                "branch": { "type": "string", "description": "The branch to promote (the caller's own)." },
                "note": { "type": "string", "description": "What it is for, for whoever decides." },
                "migration": { "type": "string", "description": "The migration that made the changes: rehearsed on a new branch of the same base snapshot, its report kept in summary.rehearsal." }
            }
        },
        "RejectPromotion": {
            "type": "object", "required": ["reason"], "additionalProperties": false,
            "properties": { "reason": { "type": "string", "description": "Why (the asker reads it)." } }
        },
        "Promotion": {
            "type": "object",
            "required": ["id", "branch", "source", "requested_by", "status", "summary", "created_at"],
            "properties": {
                "id": { "type": "integer" }, "branch": { "type": "string" }, "source": { "type": "string" },
                "requested_by": { "type": "string", "description": "agent:NAME or admin:NAME" },
                "note": { "type": ["string", "null"] },
                "status": { "type": "string", "enum": ["open", "approved", "rejected", "withdrawn"] },
                "summary": { "type": "object", "description": "What the branch changed when asked: base, schema_changes (object, kind), tables (table, inserted, updated, deleted), rows_changed, warnings. No row values." },
                "created_at": { "type": "integer", "description": "Unix seconds." },
                "decided_by": { "type": ["string", "null"] }, "decided_at": { "type": ["integer", "null"] },
                "reason": { "type": ["string", "null"], "description": "Why it was rejected, or why the last approval failed (the request then stays open)." },
                "result": { "type": ["object", "null"], "description": "The promote's report, once approved." }
            }
        },
        "CreateBranch": {
            "type": "object", "required": ["name", "from"], "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "description": "Lowercase letters, digits, - and _; starts with a letter; at most 48." },
                "from": { "type": "string", "description": "A source (its latest snapshot), a snapshot id (shop@3) or a branch." },
                "ttl": ttl("Time to live"),
                "labels": labels.clone(),
                "protect": { "type": "boolean", "default": false },
                "durable": { "type": "boolean", "default": false },
                "fresh": { "type": "boolean", "default": false },
                "schema_only": { "type": "boolean", "default": false },
                "unmasked": { "type": "boolean", "default": false },
                "cpu": { "type": ["number", "string"], "description": "CPUs its server may use (0.5: half a CPU; 0.01 to 1024, at most three decimals), through cgroups; \"none\": no limit. Default: the source's (`pgfork source limits`). 422 compute_unavailable where cgroups cannot enforce it." },
                "memory": { "type": ["integer", "string"], "description": "Memory its server may use: bytes, or a size such as \"512M\" (64M to 16T); over it the branch is killed and shows as crashed until started again; \"none\": no limit. Default: the source's." },
                "pids": { "type": ["integer", "string"], "description": "Most processes its server may run (16 to 4194304); \"none\": no limit. Default: the source's." }
            }
        },
        "SetBranch": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "ttl": ttl("New TTL from now"),
                "clear_ttl": { "type": "boolean" },
                "protect": { "type": "boolean" },
                "labels": { "type": "object", "additionalProperties": { "type": "string", "maxLength": 256 },
                            "description": "Labels to add or change, by the rules of CreateBranch.labels; the branch carries at most 32 afterwards." },
                "unlabel": { "type": "array", "items": { "type": "string" } },
                "cpu": { "type": ["number", "string"], "description": "Compute limits (admins only), as in CreateBranch; \"none\" removes one. A running server's group gets them at once." },
                "memory": { "type": ["integer", "string"] },
                "pids": { "type": ["integer", "string"] }
            }
        },
        "Diff": {
            "type": "object",
            "description": "The engine's diff report: the two sides, the changes found, and the time taken.",
            "properties": {
                "from": string, "to": string, "elapsed_ms": { "type": "integer" },
                "data": { "type": ["object", "null"], "description": "Per table: rows inserted, updated and deleted, with up to `limit` of each." }
            },
            "additionalProperties": true
        },
        "Timings": {
            "type": "object",
            "properties": {
                "snapshot_ms": { "type": ["integer", "null"] }, "clone_ms": { "type": "integer" },
                "start_ms": { "type": "integer" }, "total_ms": { "type": "integer" }
            }
        },
        "Branch": {
            "type": "object",
            "properties": {
                "name": string, "source": string, "snapshot": string, "parent_branch": opt_string,
                "status": { "type": "string", "description": "running, stopped, crashed, or an operation in progress." },
                "port": { "type": "integer" },
                "dsn": { "type": "string", "description": "Connection string; the password is masked except in the response of a create." },
                "database": string, "user": string, "pid": { "type": ["integer", "null"] },
                "data_dir": string, "log": string, "created_at": string, "expires_at": opt_string,
                "last_active_at": { "type": "string", "description": "When the branch was last in use (made, started, a client session, a request about it); the reaper's idle time counts from here." },
                "protected": { "type": "boolean" },
                "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                "timings": reference("Timings"),
                "unshared_bytes": { "type": "integer", "description": "Bytes no longer shared with the base snapshot." },
                "max_size": { "type": ["integer", "null"], "description": "Most bytes it may hold of its own (--max-size), enforced by the filesystem." },
                "compute": compute,
                "error": { "type": "string", "description": "Present only when the branch's stored record cannot be shown whole (an expiry past the year 9999, unreadable labels, a missing snapshot or source row): what is wrong and what to do. The other fields show what could be read." }
            }
        },
        "Source": {
            "type": "object",
            "properties": {
                "name": string, "mode": string, "status": string, "port": { "type": "integer" },
                "database": string, "user": string, "dsn": string, "pg_major": { "type": "integer" },
                "created_at": string, "snapshots": { "type": "integer" }, "branches": { "type": "integer" },
                "masking": string,
                "branch_limits": branch_limits,
                "cgroups": { "type": "array", "items": string, "description": "The control groups its server runs in." }
            }
        },
        "CreateAgent": {
            "type": "object", "required": ["name", "source", "policy"], "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "description": "Agent name: the user name of its connection string (at most 40 characters)." },
                "source": { "type": "string" },
                "policy": { "type": "string", "enum": ["read-only", "dry-run", "branch"] },
                "branch": { "type": "string", "description": "A named branch to use, possibly shared (branch policy)." },
                "per_session": { "type": "boolean", "default": false },
                "keep": { "type": "boolean", "default": false },
                "fresh": { "type": "boolean", "default": false },
                "ttl": ttl("TTL of its branches"),
                "max_rows": { "type": "integer", "description": "Most rows one statement may affect." },
                "statement_timeout": { "type": "string", "description": "30s; at most 1d (0: none)." },
                "max_storage": { "type": "integer", "description": "Bytes its branch may stop sharing." },
                "idle_stop": { "type": "string", "description": "Stop its branch after this long without a session (default 10m, at most 10y; 0: never)." },
                "audit_params": { "type": "boolean", "default": false },
                "max_connections": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 10,
                    "description": "Most proxy sessions the agent holds at once (more are refused with SQLSTATE 53300); also the CONNECTION LIMIT of its own role on the source (read-only, dry-run)." },
                "max_branches": { "type": "integer", "minimum": 0, "description": "Most branches its API token may hold at once (default: no limit); one more is a 429 quota_exceeded naming the limit." },
                "max_ttl": { "type": "string", "default": "24h", "description": "Longest TTL its API token may give a branch; a longer request is a 400 naming the limit (never shortened), and a branch asked for without one gets this." },
                "parent": { "type": "string", "description": "The orchestrator agent it works for: that agent sees, uses, resets and deletes the branches this one makes." }
            }
        },
        "ShareBranch": {
            "type": "object", "required": ["agent"], "additionalProperties": false,
            "properties": {
                "agent": { "type": "string", "description": "The agent to share the branch with (of the branch's source)." },
                "read_only": { "type": "boolean", "default": false, "description": "The member's role holds pg_read_all_data only; otherwise it acts as the branch's own role." }
            }
        },
        "Member": {
            "type": "object",
            "properties": { "branch": string, "agent": string, "read_only": { "type": "boolean" },
                            "role": { "type": "string", "description": "The role the member logs in as on the branch." } }
        },
        "Agent": {
            "type": "object",
            "properties": {
                "name": string, "source": string, "policy": string,
                "status": { "type": "string", "description": "active or revoked." },
                "branch": opt_string, "created_at": string, "revoked_at": opt_string,
                "max_connections": { "type": "integer", "description": "Most proxy sessions at once." }
            },
            "additionalProperties": true
        },
        "AgentSecret": {
            "type": "object",
            "description": "An agent with its new secret, its postgres:// DSN at the proxy and its API token: shown once.",
            "properties": { "name": string, "policy": string, "secret": string, "dsn": string,
                            "api_token": { "type": "string", "description": "Its bearer token for this API and MCP, held to its scope." } },
            "additionalProperties": true
        },
        "AuditRecord": {
            "type": "object",
            "properties": {
                "id": { "type": "integer" }, "at_ms": { "type": "integer" }, "agent": string, "session": string,
                "client": string, "target": string, "policy": string, "statement": string, "params": opt_string,
                "duration_us": { "type": "integer" }, "tag": opt_string, "rows": { "type": ["integer", "null"] },
                "sqlstate": opt_string, "message": opt_string, "tx_status": opt_string, "prev_hash": string, "hash": string
            }
        },
        "AuditVerify": {
            "type": "object",
            "properties": {
                "records": { "type": "integer" }, "ok": { "type": "boolean" },
                "broken_at": { "type": ["integer", "null"] }, "problem": opt_string
            }
        },
        "Snapshot": {
            "type": "object",
            "properties": {
                "id": string, "number": { "type": "integer" }, "source": string, "parent_branch": opt_string,
                "status": string, "created_at": string, "method": opt_string, "lsn": opt_string,
                "branches": { "type": "array", "items": string }
            }
        }
    });
    // Promotion gates (issue 15), built apart: json! nests only so deep.
    let extra = gate_schemas();
    for (k, v) in extra.as_object().expect("an object") {
        all[k] = v.clone();
    }
    all
}

/// Schemas of promote and its gates.
fn gate_schemas() -> Value {
    let string = json!({ "type": "string" });
    let opt_int = json!({ "type": ["integer", "null"] });
    let assertion_file = json!({
        "type": "object", "required": ["name", "sql"], "additionalProperties": false,
        "properties": {
            "name": { "type": "string", "maxLength": 128, "description": "The file's name (no '/'), such as stock.sql; assertions are named after it: stock.sql#2." },
            "sql": { "type": "string", "maxLength": 65536, "description": "SQL queries (SELECT, VALUES, WITH ... SELECT; at most 100) separated by semicolons, each of which must return no rows, or a single row of one boolean column that is true. Anything else (a write, a row lock, SELECT INTO) is refused (400 invalid_argument naming the line). They run as the application role with search_path = pg_catalog, pg_temp: write tables with their schema." }
        }
    });
    let bounds = json!({
        "max_rows": { "type": ["integer", "null"], "minimum": 0, "description": "Most rows one promote may change: inserted, updated, deleted, and those of tables it drops (null: no bound)." },
        "max_tables": { "type": ["integer", "null"], "minimum": 0, "description": "Most tables whose rows one promote may change, dropped ones included (null: no bound)." }
    });
    let mut put_props = bounds.clone();
    put_props["assert"] = json!({ "type": "array", "maxItems": 32, "items": { "$ref": "#/components/schemas/AssertionFile" } });
    let mut gates_props = bounds;
    gates_props["source"] = string.clone();
    gates_props["files"] =
        json!({ "type": "array", "items": { "$ref": "#/components/schemas/AssertionFile" } });
    gates_props["assertions"] =
        json!({ "type": "array", "items": { "$ref": "#/components/schemas/Assertion" } });
    gates_props["error"] = json!({ "type": ["string", "null"], "description": "Why a stored file no longer reads as assertions (changed by hand): promotes are refused until the gates are set again." });
    let gate_result = json!({
        "type": "object",
        "properties": {
            "gate": { "type": "string", "description": "max_rows, max_tables, or an assertion's name (stock.sql#2)." },
            "on": { "type": "string", "enum": ["patch", "branch", "source"], "description": "patch: a bound on the patch's scope; branch: the assertion on the branch, before anything is applied; source: on the source after the patch, inside the promote's transaction." },
            "passed": { "type": "boolean" },
            "detail": { "type": "string", "description": "What was found, in words." },
            "line": opt_int.clone(), "sql": { "type": ["string", "null"] }, "stored": { "type": ["boolean", "null"] },
            "count": { "type": ["integer", "null"], "description": "Rows the assertion returned; rows or tables the patch changes." },
            "limit": opt_int,
            "columns": { "type": "array", "items": { "type": "string" }, "description": "The columns of a failing assertion's rows." },
            "rows": { "type": "array", "items": { "type": "array", "items": { "type": ["string", "null"] } }, "description": "The first rows (at most 5) a failing assertion returned, each value as PostgreSQL prints it (null for NULL)." },
            "error": { "type": ["string", "null"], "description": "The error PostgreSQL raised running the assertion." }
        }
    });
    let limit = |what: &str| json!({ "type": ["number", "string", "null"], "description": what });
    json!({
        "PatchLimits": {
            "type": "object", "additionalProperties": false,
            "description": "What every new branch of the source gets. Absent or null: unchanged; \"none\": no limit.",
            "properties": {
                "branch_cpu": limit("CPUs, 0.01 to 1024 (0.5: half of one)."),
                "branch_memory": limit("Memory: bytes, or a size such as \"512M\"."),
                "branch_pids": limit("Most processes."),
                "branch_max_size": limit("Storage of its own: bytes, or a size such as \"2G\" (btrfs pools with quotas).")
            }
        },
        "SourceLimits": {
            "type": "object",
            "properties": {
                "source": string,
                "branch": {
                    "type": "object",
                    "properties": {
                        "cpu": { "type": ["number", "null"] },
                        "memory": { "type": ["integer", "null"] },
                        "pids": { "type": ["integer", "null"] }
                    }
                },
                "branch_max_size": { "type": ["integer", "null"] }
            }
        },
        "AssertionFile": assertion_file,
        "Assertion": {
            "type": "object",
            "properties": { "name": string, "line": { "type": "integer" }, "sql": string, "stored": { "type": "boolean" } }
        },
        "PutGates": {
            "type": "object", "additionalProperties": false,
            "description": "The source's promotion gates, whole: what the body leaves out is removed.",
            "properties": put_props
        },
        "SourceGates": { "type": "object", "properties": gates_props },
        "GateResult": gate_result,
        "Promote": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "dry_run": { "type": "boolean", "default": false, "description": "Only report what would be applied, the conflicts and the gates (bounds, and the assertions on the branch)." },
                "strategy": { "type": "string", "enum": ["ours", "theirs"], "description": "Resolve conflicts: the branch's version wins, or the source's stays." },
                "yes": { "type": "boolean", "default": false, "description": "Apply to a remote source." },
                "allow_partial": { "type": "boolean", "default": false, "description": "Apply a patch that cannot carry every change." },
                "assert": { "type": "array", "maxItems": 32, "items": { "$ref": "#/components/schemas/AssertionFile" }, "description": "Assertion files to pass besides the source's stored gates." }
            }
        },
        "PromoteReport": {
            "type": "object",
            "description": "What promote did or would do: applied, the conflicts (unresolved ones leave applied false), rows inserted, updated and deleted, the statements, the new snapshot, warnings, and the promotion gates.",
            "properties": {
                "branch": string, "source": string, "applied": { "type": "boolean" },
                "conflicts": { "type": "array", "items": { "type": "object" } },
                "inserted": { "type": "integer" }, "updated": { "type": "integer" }, "deleted": { "type": "integer" },
                "statements": { "type": "array", "items": string },
                "snapshot": { "type": ["string", "null"] },
                "warnings": { "type": "array", "items": string },
                "gates": { "type": "array", "items": { "$ref": "#/components/schemas/GateResult" } }
            },
            "additionalProperties": true
        }
    })
}

/// The document.
pub fn document() -> Value {
    let name = path_param("name", "Branch or source name.");
    let id = path_param("id", "Snapshot id, such as shop@3.");
    let request_id = path_param("id", "Promotion request number.");
    let not_found = error_response("No such object.");
    let conflict = error_response("Busy, has dependents, or in the wrong state.");
    let bad = error_response("Malformed JSON or a bad field; the message names it.");
    let branch = reference("Branch");
    let (branch_name, bad_body, missing) = (name.clone(), bad.clone(), not_found.clone());
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pgfork",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Instant, isolated copy-on-write branches of real PostgreSQL databases. Every route but /health needs `Authorization: Bearer TOKEN`: an admin token (made by `pgfork init`, more by `pgfork token create --admin NAME`), which may do everything, or an agent's (from `pgfork agent create`), which the engine holds to the agent's scope: it creates branches of its own source only (at most max_branches, TTL up to max_ttl, never protected or unmasked), sees and uses its own branches and those shared with it (another agent's branch is a 404 exactly as one that does not exist), resets, stops, deletes and shares only its own, sees its source without DSN, reads its own audit records, and gets a 403 naming what its scope allows for anything else. A revoked or rotated token is a 401 within a second. Every request is audited. Errors are {\"error\": {\"code\", \"message\"}}. Every value is checked before anything is written: a value out of bounds is a 400 (code invalid_argument) whose message names the field, and a query parameter a route does not take is a 400 too. The MCP server is at /mcp (streamable HTTP)."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas()
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/health": { "get": {
                "summary": "Liveness; needs no token.", "operationId": "health", "security": [],
                "responses": { "200": ok("Up.", reference("Health")) }
            } },
            "/openapi.json": { "get": op("This document.", "openapi",
                responses!{ "200" => json!({ "description": "OpenAPI 3.1 document.", "content": { "application/json": { "schema": { "type": "object" } } } }) }) },
            "/metrics": { "get": op("Prometheus metrics (text format).", "metrics",
                responses!{ "200" => json!({ "description": "Metrics.", "content": { "text/plain": { "schema": { "type": "string" } } } }) }) },
            "/v1/sources": {
                "get": op("List sources.", "listSources", responses!{ "200" => ok("Sources.", array_of("Source")) }),
                "post": with(op("Create a local source (a new cluster, started).", "createSource",
                    responses!{ "201" => ok("Created.", reference("Source")), "400" => bad.clone(), "409" => conflict.clone() }),
                    "requestBody", body("CreateSource"))
            },
            "/v1/sources/{name}": {
                "parameters": [name.clone()],
                "get": op("One source.", "getSource", responses!{ "200" => ok("The source.", reference("Source")), "404" => not_found.clone() }),
                "delete": with(op("Delete a source and its snapshots.", "deleteSource",
                    responses!{ "200" => ok("What was deleted.", reference("Deleted")), "404" => not_found.clone(), "409" => conflict.clone() }),
                    "parameters", json!([force_param("its branches")]))
            },
            "/v1/snapshots": {
                "get": with(op("List snapshots.", "listSnapshots", responses!{ "200" => ok("Snapshots.", array_of("Snapshot")) }),
                    "parameters", json!([{ "name": "source", "in": "query", "required": false, "schema": { "type": "string" }, "description": "Only snapshots of this source." }])),
                "post": with(op("Take a consistent, sealed snapshot of a source or branch.", "createSnapshot",
                    responses!{ "201" => ok("Created.", reference("Snapshot")), "400" => bad.clone(), "404" => not_found.clone(), "409" => conflict.clone() }),
                    "requestBody", body("CreateSnapshot"))
            },
            "/v1/snapshots/{id}": {
                "parameters": [id],
                "get": op("One snapshot.", "getSnapshot", responses!{ "200" => ok("The snapshot.", reference("Snapshot")), "404" => not_found.clone() }),
                "delete": with(op("Delete a snapshot.", "deleteSnapshot",
                    responses!{ "200" => ok("What was deleted.", reference("Deleted")), "404" => not_found.clone(), "409" => conflict.clone() }),
                    "parameters", json!([force_param("the branches made from it")]))
            },
            "/v1/branches": {
                "get": with(op("List branches.", "listBranches", responses!{ "200" => ok("Branches.", array_of("Branch")), "400" => bad.clone() }),
                    "parameters", json!([{ "name": "label", "in": "query", "required": false, "description": "KEY=VALUE; repeatable, all must match. Other query parameters are refused (400).",
                        "schema": { "type": "array", "items": { "type": "string" } }, "style": "form", "explode": true },
                        { "name": "agent", "in": "query", "required": false, "schema": { "type": "string" },
                          "description": "Only the branches this agent made (the registry: an orchestrator lists its workers' branches)." }])),
                "post": with(op("Create a branch; the response's dsn carries its password.", "createBranch",
                    responses!{
                        "201" => ok("Created and running.", branch.clone()),
                        "400" => bad.clone(),
                        "404" => error_response("`from` names nothing."),
                        "409" => error_response("The name is taken, or the origin is busy."),
                        "429" => error_response("The source has as many branches as its quota allows."),
                        "503" => error_response("No free TCP port in the configured range."),
                        "507" => error_response("The pool is below its free-space floor, or full.")
                    }),
                    "requestBody", body("CreateBranch"))
            },
            "/v1/branches/{name}": {
                "parameters": [name.clone()],
                "get": op("One branch (password masked), with its unshared bytes.", "getBranch",
                    responses!{ "200" => ok("The branch.", branch.clone()), "404" => not_found.clone() }),
                "patch": with(op("Change TTL, protection or labels.", "setBranch",
                    responses!{ "200" => ok("The branch.", branch.clone()), "400" => bad.clone(), "404" => not_found.clone() }),
                    "requestBody", body("SetBranch")),
                "delete": with(op("Delete a branch.", "deleteBranch",
                    responses!{ "200" => ok("What was deleted.", reference("Deleted")), "404" => not_found.clone(), "409" => conflict.clone() }),
                    "parameters", json!([force_param("the branches made from it")]))
            },
            "/v1/branches/{name}/dsn": {
                "parameters": [name.clone()],
                "get": op("The branch's connection string, with its password.", "getBranchDsn",
                    responses!{ "200" => ok("The DSN.", reference("Dsn")), "404" => not_found.clone() })
            },
            "/v1/branches/{name}/diff": {
                "parameters": [name.clone()],
                "get": with(op("What the branch changed (schema and rows) against its base snapshot, or against another branch or snapshot of the same source.", "diffBranch",
                    responses!{ "200" => ok("The diff report.", reference("Diff")), "400" => bad.clone(), "404" => not_found.clone(), "409" => conflict.clone() }),
                    "parameters", json!([
                        { "name": "against", "in": "query", "required": false, "schema": { "type": "string" }, "description": "A branch or snapshot of the same source (default: the branch's base snapshot)." },
                        { "name": "schema", "in": "query", "required": false, "schema": { "type": "boolean", "default": true }, "description": "Compare the schema." },
                        { "name": "data", "in": "query", "required": false, "schema": { "type": "boolean", "default": true }, "description": "Compare the rows." },
                        { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "default": 20, "minimum": 0, "maximum": 10000 }, "description": "Changed rows listed per table (counts are complete)." },
                        { "name": "full", "in": "query", "required": false, "schema": { "type": "boolean", "default": false }, "description": "Compare every table whole instead of only changed blocks (slow)." },
                        { "name": "sql", "in": "query", "required": false, "schema": { "type": "boolean", "default": false }, "description": "Also return the SQL patch that turns the base into the branch (lists every changed row)." }
                    ]))
            },
            "/v1/branches/{name}/reset": {
                "parameters": [name.clone()],
                "post": op("Throw the branch's changes away (same name, port, password).", "resetBranch",
                    responses!{ "200" => ok("The branch, running.", branch.clone()), "404" => not_found.clone(), "409" => conflict.clone() })
            },
            "/v1/branches/{name}/start": {
                "parameters": [name.clone()],
                "post": op("Start a stopped branch.", "startBranch",
                    responses!{ "200" => ok("The branch.", branch.clone()), "404" => not_found.clone(), "409" => conflict.clone() })
            },
            "/v1/branches/{name}/stop": {
                "parameters": [name.clone()],
                "post": op("Stop a branch; data is kept.", "stopBranch",
                    responses!{ "200" => ok("The branch.", branch), "404" => not_found.clone(), "409" => conflict.clone() })
            },
            "/v1/branches/{name}/share": {
                "parameters": [name.clone()],
                "post": with(op("Share the branch with another agent (its owner or an admin): the member lists it and gets a DSN of its own role.", "shareBranch",
                    responses!{ "200" => ok("The membership.", reference("Member")), "400" => error_response("No such agent, or one of another source."), "403" => error_response("Only the branch's owner shares it."), "404" => not_found.clone() }),
                    "requestBody", body("ShareBranch"))
            },
            "/v1/branches/{name}/share/{agent}": {
                "parameters": [name.clone(), path_param("agent", "The member agent.")],
                "delete": op("Stop sharing: the member's role is dropped and its sessions end at once.", "unshareBranch",
                    responses!{ "200" => ok("Done.", json!({ "type": "object" })), "400" => error_response("Not shared with that agent."), "403" => error_response("Only the branch's owner unshares it."), "404" => not_found.clone() })
            },
            "/v1/branches/{name}/members": {
                "parameters": [name],
                "get": op("The agents the branch is shared with.", "branchMembers",
                    responses!{ "200" => ok("Members.", array_of("Member")), "404" => not_found.clone() })
            },
            "/v1/promotions": {
                "get": with(op("Promotion requests the caller may see (an admin all, an agent its own), newest first.", "listPromotions",
                    responses!{ "200" => ok("Requests.", array_of("Promotion")), "400" => bad.clone() }),
                    "parameters", json!([{ "name": "status", "in": "query", "required": false, "schema": { "type": "string", "enum": ["open", "approved", "rejected", "withdrawn"] } }])),
                "post": with(op("Ask for a branch to be promoted: the only promote an agent may do. The branch does not expire while the request is open.", "requestPromotion",
                    responses!{ "201" => ok("The request, open.", reference("Promotion")), "400" => bad.clone(), "404" => not_found.clone(), "409" => conflict.clone() }),
                    "requestBody", body("RequestPromotion"))
            },
            "/v1/promotions/{id}": {
                "parameters": [request_id.clone()],
                "get": op("One promotion request.", "getPromotion", responses!{ "200" => ok("The request.", reference("Promotion")), "404" => not_found.clone() })
            },
            "/v1/promotions/{id}/approve": {
                "parameters": [request_id.clone()],
                "post": op("Approve (admin): promote now, with every check of promote against the source as it is; if that fails the request stays open and the error says why.", "approvePromotion",
                    responses!{ "200" => ok("The request, approved; result holds the promote's report.", reference("Promotion")), "403" => error_response("Not an admin."), "404" => not_found.clone(), "409" => conflict.clone() })
            },
            "/v1/promotions/{id}/reject": {
                "parameters": [request_id.clone()],
                "post": with(op("Reject (admin), saying why.", "rejectPromotion",
                    responses!{ "200" => ok("The request, rejected.", reference("Promotion")), "400" => bad.clone(), "403" => error_response("Not an admin."), "404" => not_found.clone(), "409" => conflict.clone() }),
                    "requestBody", body("RejectPromotion"))
            },
            "/v1/rehearsals": {
                "post": with(op("Rehearse a migration on a branch made for it: per statement whether it applies, its locks and how long they were held, rewrites, rows, squawk's lints; the schema diff and a verdict. The branch is deleted unless keep.", "rehearseMigration",
                    responses!{ "200" => ok("The rehearsal, whatever its verdict.", reference("Rehearsal")), "400" => bad.clone(), "404" => not_found.clone(), "409" => conflict.clone() }),
                    "requestBody", body("Rehearse"))
            },
            "/v1/agents": {
                "get": op("List agents of the policy proxy.", "listAgents", responses!{ "200" => ok("Agents.", array_of("Agent")) }),
                "post": with(op("Create an agent; the response carries its secret and DSN, once.", "createAgent",
                    responses!{ "201" => ok("Created.", reference("AgentSecret")), "400" => error_response("A bad field, or options that do not fit the policy."), "404" => error_response("No such source.") }),
                    "requestBody", body("CreateAgent"))
            },
            "/v1/agents/{name}": {
                "parameters": [path_param("name", "Agent name.")],
                "get": op("One agent.", "getAgent", responses!{ "200" => ok("The agent.", reference("Agent")), "400" => error_response("No such agent.") })
            },
            "/v1/agents/{name}/rotate": {
                "parameters": [path_param("name", "Agent name.")],
                "post": op("A new secret; the old one stops working.", "rotateAgent", responses!{ "200" => ok("The agent with its new secret.", reference("AgentSecret")), "400" => error_response("No such agent."), "409" => error_response("The agent is revoked.") })
            },
            "/v1/agents/{name}/revoke": {
                "parameters": [path_param("name", "Agent name.")],
                "post": op("Revoke an agent: no new logins; a running proxy ends its sessions within a second.", "revokeAgent", responses!{ "200" => ok("The agent.", reference("Agent")), "400" => error_response("No such agent.") })
            },
            "/v1/audit": {
                "get": with(op("The proxy's audit log, oldest first.", "listAudit", responses!{ "200" => ok("Records.", array_of("AuditRecord")), "400" => error_response("A bad query parameter.") }),
                    "parameters", json!([
                        { "name": "agent", "in": "query", "required": false, "schema": { "type": "string" } },
                        { "name": "since", "in": "query", "required": false, "schema": { "type": "string" }, "description": "A duration: 1h." },
                        { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "default": 1000, "minimum": 1, "maximum": 100000 }, "description": "The newest N." }
                    ]))
            },
            "/v1/audit/verify": {
                "get": op("Recompute the audit log's hash chain.", "verifyAudit", responses!{ "200" => ok("The first broken link, if any.", reference("AuditVerify")) })
            }
        }
    });
    // Promote and its gates (issue 15), apart: json! nests only so deep.
    doc["paths"]["/v1/sources/{name}/gates"] = json!({
        "parameters": [path_param("name", "Source name.")],
        "get": op("The source's promotion gates (admins only).", "getSourceGates",
            responses!{ "200" => ok("The gates.", reference("SourceGates")), "403" => error_response("Not an admin token."), "404" => missing.clone() }),
        "put": with(op("Replace the source's promotion gates (admins only): every promote to it, from any interface, must pass them. Every file is checked first; a refusal changes nothing.", "setSourceGates",
            responses!{ "200" => ok("The gates now.", reference("SourceGates")), "400" => error_response("A file that does not parse, holds no query or holds anything but a query (the message names its line), or a bad field."), "403" => error_response("Not an admin token."), "404" => missing.clone() }),
            "requestBody", body("PutGates"))
    });
    doc["paths"]["/v1/sources/{name}/limits"] = json!({
        "parameters": [path_param("name", "Source name.")],
        "get": op("The limits every new branch of the source gets unless its create says otherwise.", "getSourceLimits",
            responses!{ "200" => ok("The limits.", reference("SourceLimits")), "404" => missing.clone() }),
        "patch": with(op("Change the limits new branches of the source get (admins only); branches made before keep theirs. A limit cgroups or the pool cannot enforce here is refused, and nothing changes.", "setSourceLimits",
            responses!{ "200" => ok("The limits now.", reference("SourceLimits")), "400" => error_response("A value out of bounds or not enforceable here (invalid_argument, naming the field)."), "403" => error_response("Not an admin token."), "404" => missing.clone() }),
            "requestBody", body("PatchLimits"))
    });
    doc["paths"]["/v1/branches/{name}/promote"] = json!({
        "parameters": [branch_name],
        "post": with(op("Apply the branch's changes to its source (admins only), after the three-way conflict check and the promotion gates, in one transaction that checks its own result before committing.", "promoteBranch",
            responses!{
                "200" => ok("The report: applied, or not (unresolved conflicts, dry_run).", reference("PromoteReport")),
                "400" => bad_body,
                "403" => error_response("Not an admin token."),
                "404" => missing.clone(),
                "409" => error_response("Refused: a patch it cannot carry whole (partial_patch), a result that did not verify (promote_unverified), or the wrong state (a remote source without yes)."),
                "422" => error_response("A promotion gate failed (gate_failed): the message names each gate, what it returned (the first rows) and what to do; nothing was applied.")
            }),
            "requestBody", body("Promote"))
    });
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The document lists exactly the routes the router serves.
    #[test]
    fn document_matches_the_route_table() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, _) in item.as_object().unwrap() {
                if method != "parameters" {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routed: BTreeSet<(String, String)> = crate::routes::table()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(documented, routed);
    }

    /// Every reference resolves, every path parameter is declared.
    #[test]
    fn document_is_consistent() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for param in path.split('{').skip(1) {
                let param = param.split('}').next().unwrap();
                let declared = item["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == param && p["in"] == "path"));
                assert!(declared, "{path} does not declare {{{param}}}");
            }
            for (method, op) in item.as_object().unwrap() {
                if method != "parameters" {
                    assert!(
                        op["operationId"].is_string(),
                        "{method} {path} has no operationId"
                    );
                    assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
                }
            }
        }
    }
}
