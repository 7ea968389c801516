//! A branch is hostile ground. The agent, as its own non-superuser role,
//! plants code where PostgreSQL runs it for whoever reads or empties the
//! branch: casts of its types (to text, json, from text), an `=` operator
//! on its enum, an IMMUTABLE function in a partial index predicate (the
//! planner evaluates it), triggers and rules. Every operator command that
//! works on the branch must leave that code with the agent's rights only.
//!
//! The trap, `public.pwn(via)`, logs a warning naming the role it runs as;
//! if that role is a superuser it makes the agent's role a superuser and
//! runs a shell command that creates a marker file. Each test checks that
//! the command reached the trapped objects (its output holds their real
//! values, the branch log shows the trap ran as the agent's role) and that
//! the trap never ran as a superuser (no marker, role unchanged). A control
//! at the end runs one trapped read as superuser and sees the trap fire.

mod common;
mod daemon;
mod proxy;

use std::path::PathBuf;

use common::*;
use daemon::{Mcp, Serve};
use proxy::Proxy;
use serde_json::{Value, json};

/// The source's tables, made by the application role before the snapshot.
const SOURCE_SQL: &str = "
CREATE TYPE mood AS ENUM ('ok', 'sad', 'meh');
CREATE TABLE feelings (m mood PRIMARY KEY, note text);
INSERT INTO feelings VALUES ('ok', 'fine'), ('sad', 'blue');
CREATE TABLE ledger (id int, note text);
CREATE TABLE plain (id int PRIMARY KEY, v text);
INSERT INTO plain SELECT g, 'v' || g FROM generate_series(1, 100) g;
";

/// What the agent plants in its branch, with `MARKER` replaced by the
/// marker file's path.
const TRAPS_SQL: &str = r#"
CREATE FUNCTION public.pwn(via text) RETURNS void LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
  RAISE WARNING 'trap % ran as %', via, current_user;
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    EXECUTE 'ALTER ROLE shop SUPERUSER';
    EXECUTE pg_catalog.format('COPY (SELECT 1) TO PROGRAM %L', 'touch MARKER');
  END IF;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'trap % as % failed: %', via, current_user, SQLERRM;
END $f$;
CREATE FUNCTION public.mood_text(mood) RETURNS text LANGUAGE plpgsql IMMUTABLE AS
  $f$ BEGIN PERFORM public.pwn('cast to text'); RETURN 'HIJACKED'; END $f$;
CREATE CAST (mood AS text) WITH FUNCTION public.mood_text(mood);
CREATE FUNCTION public.mood_json(mood) RETURNS json LANGUAGE plpgsql IMMUTABLE AS
  $f$ BEGIN PERFORM public.pwn('cast to json'); RETURN '"HIJACKED"'::json; END $f$;
CREATE CAST (mood AS json) WITH FUNCTION public.mood_json(mood);
CREATE FUNCTION public.mood_jsonb(mood) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS
  $f$ BEGIN PERFORM public.pwn('cast to jsonb'); RETURN '"HIJACKED"'::jsonb; END $f$;
CREATE CAST (mood AS jsonb) WITH FUNCTION public.mood_jsonb(mood);
CREATE FUNCTION public.text_mood(text) RETURNS mood LANGUAGE plpgsql IMMUTABLE AS
  $f$ BEGIN PERFORM public.pwn('cast from text'); RETURN 'meh'; END $f$;
CREATE CAST (text AS mood) WITH FUNCTION public.text_mood(text);
CREATE FUNCTION public.mood_eq(mood, mood) RETURNS bool LANGUAGE plpgsql IMMUTABLE AS
  $f$ BEGIN PERFORM public.pwn('operator ='); RETURN pg_catalog.enum_eq($1, $2); END $f$;
CREATE OPERATOR public.= (LEFTARG = mood, RIGHTARG = mood, FUNCTION = public.mood_eq);
CREATE FUNCTION public.always(int) RETURNS bool LANGUAGE plpgsql IMMUTABLE AS
  $f$ BEGIN PERFORM public.pwn('index predicate'); RETURN true; END $f$;
CREATE INDEX feelings_note ON feelings (note) WHERE public.always(1);
CREATE INDEX plain_v ON plain (v) WHERE public.always(2);
CREATE FUNCTION public.pwn_trigger() RETURNS trigger LANGUAGE plpgsql AS
  $f$ BEGIN PERFORM public.pwn('trigger ' || TG_OP); RETURN NULL; END $f$;
CREATE TRIGGER on_truncate BEFORE TRUNCATE ON plain FOR EACH STATEMENT EXECUTE FUNCTION public.pwn_trigger();
CREATE TRIGGER on_write AFTER INSERT OR UPDATE OR DELETE ON plain FOR EACH STATEMENT EXECUTE FUNCTION public.pwn_trigger();
CREATE FUNCTION public.pwn_text(via text) RETURNS text LANGUAGE plpgsql VOLATILE AS
  $f$ BEGIN PERFORM public.pwn(via); RETURN 'HIJACKED'; END $f$;
CREATE RULE "_RETURN" AS ON SELECT TO ledger DO INSTEAD
  SELECT 1 AS id, public.pwn_text('rule on select') AS note;
CREATE RULE on_update AS ON UPDATE TO feelings DO ALSO SELECT public.pwn('rule on update');
-- The agent's own changes, which every diff must find.
UPDATE feelings SET note = 'changed' WHERE m = 'sad';
DELETE FROM feelings WHERE m = 'ok';
INSERT INTO feelings VALUES ('meh', 'new');
UPDATE plain SET v = 'edited' WHERE id = 7;
"#;

/// A home with source `shop` and a branch `evil` whose agent planted the
/// traps; the marker the trap would create.
struct Trapped {
    home: TestHome,
    marker: PathBuf,
}

impl Trapped {
    fn new(name: &str) -> Trapped {
        let home = TestHome::new(Pool::Xfs, name);
        home.create_source("shop");
        exec(&mut connect(&home.source_dsn("shop")), SOURCE_SQL);
        home.snapshot("shop");
        let evil = home.create_branch("evil", "shop", &[]);
        let marker = std::env::temp_dir().join(format!(
            "pgfork-pwned-{name}-{}-{}",
            std::process::id(),
            port_of(&evil)
        ));
        let _ = std::fs::remove_file(&marker);
        let traps = TRAPS_SQL.replace("MARKER", &marker.display().to_string());
        exec(&mut connect(&dsn_of(&evil)), &traps);
        Trapped { home, marker }
    }

    /// The branch log's length: traps after this are pgfork's doing.
    fn log_mark(&self, branch: &str) -> usize {
        std::fs::read(self.log(branch))
            .map(|b| b.len())
            .unwrap_or(0)
    }

    /// Runs `pgfork --json ARGS` and checks, whether it succeeded or not,
    /// that no trap ran as a superuser; then asserts success and returns
    /// its JSON. (Checked first so that a run that failed after a trap
    /// fired says so.)
    fn json_checked(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.home.run(&all);
        self.assert_never_superuser(&args.join(" "));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pgfork {} failed: {stdout}",
            args.join(" ")
        );
        serde_json::from_str(&stdout).expect("JSON")
    }

    fn log(&self, branch: &str) -> PathBuf {
        self.home
            .root
            .join("logs")
            .join(format!("branch-{branch}.log"))
    }

    /// What the branch log says since `mark`.
    fn log_since(&self, branch: &str, mark: usize) -> String {
        let bytes = std::fs::read(self.log(branch)).unwrap_or_default();
        String::from_utf8_lossy(&bytes[mark.min(bytes.len())..]).into_owned()
    }

    /// Asserts that no trap ever ran as a superuser: no marker, the
    /// agent's role unchanged on the branch and the source, and no log
    /// line of a trap running as `postgres`.
    fn assert_never_superuser(&self, what: &str) {
        assert!(
            !self.marker.exists(),
            "{what}: the trap ran a shell command as a superuser"
        );
        for (label, mut client) in [
            ("branch", self.home.branch_superuser("evil", "postgres")),
            ("source", self.home.source_superuser("shop", "postgres")),
        ] {
            let su: bool = client
                .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'shop'", &[])
                .unwrap()
                .get(0);
            assert!(
                !su,
                "{what}: the agent's role became a superuser on the {label}"
            );
        }
        let log = String::from_utf8_lossy(&std::fs::read(self.log("evil")).unwrap_or_default())
            .into_owned();
        assert!(
            !log.contains("ran as postgres"),
            "{what}: a trap ran as the superuser:\n{log}"
        );
    }
}

impl Drop for Trapped {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.marker);
    }
}

/// The feelings rows a diff reported, as (op, key) pairs, sorted.
fn feelings_changes(data: &Value) -> Vec<(String, String)> {
    let table = data["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "public.feelings")
        .unwrap_or_else(|| panic!("no feelings in {data:#}"));
    let mut out: Vec<(String, String)> = table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["op"].as_str().unwrap().to_string(),
                r["key"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn expected_feelings() -> Vec<(String, String)> {
    [("delete", "ok"), ("insert", "meh"), ("update", "sad")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// `pgfork diff` and `promote --dry-run` read the branch with the agent's
/// rights, immune to its casts and operators.
#[test]
fn diff_and_promote_dry_run_never_run_the_agents_code_as_superuser() {
    let t = Trapped::new("hb-cli");
    let mark = t.log_mark("evil");
    let diff = t.json_checked(&["diff", "evil", "--limit", "50"]);
    // (The schema part quotes the trap functions' bodies, HIJACKED included.)
    let data = diff["data"].to_string();
    assert!(
        !data.contains("HIJACKED"),
        "a cast of the agent's ran: {data}"
    );
    assert_eq!(
        feelings_changes(&diff["data"]),
        expected_feelings(),
        "{diff:#}"
    );
    let plain = diff["data"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "public.plain")
        .expect("plain changed");
    assert_eq!(plain["updated"], 1, "{plain:#}");
    // The diff planned queries on the trapped tables: the planner ran the
    // predicate's function, as the agent's role.
    let log = t.log_since("evil", mark);
    assert!(
        log.contains("trap index predicate ran as shop"),
        "the diff never reached the trapped tables:\n{log}"
    );
    t.assert_never_superuser("diff");

    let mark = t.log_mark("evil");
    let plan = t.json_checked(&["promote", "evil", "--dry-run"]);
    assert_eq!(plan["applied"], false, "{plan:#}");
    let rows: Vec<&str> = plan["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .filter_map(Value::as_str)
        .filter(|s| s.starts_with("INSERT") || s.starts_with("UPDATE") || s.starts_with("DELETE"))
        .collect();
    let rows = rows.join("\n");
    assert!(!rows.contains("HIJACKED"), "{rows}");
    assert!(
        rows.contains(r#""meh""#),
        "the patch carries the new row: {rows}"
    );
    assert!(
        t.log_since("evil", mark).contains("ran as shop"),
        "promote never reached the trapped tables"
    );
    t.assert_never_superuser("promote --dry-run");

    // The dump reads the branch as its own role too.
    let out = t.home.ok(&["branch", "dump", "evil", "--format", "plain"]);
    assert!(
        out.contains("CREATE CAST (public.mood AS text)"),
        "dump incomplete"
    );
    t.assert_never_superuser("branch dump");

    // Control: the same trap, read by a superuser, fires.
    let mut su = t.home.branch_superuser("evil", "shop");
    let hijacked: String = su
        .query_one(
            "SELECT m::text FROM public.feelings WHERE note = 'new'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(hijacked, "HIJACKED", "the cast trap is live");
    assert!(t.marker.exists(), "the control trap did not fire");
}

/// Emptying a branch to its schema truncates as superuser, with triggers
/// off; a trigger the agent enabled ALWAYS is refused, named.
#[test]
fn schema_only_never_fires_the_agents_triggers() {
    let t = Trapped::new("hb-so");
    let info = t.json_checked(&[
        "branch",
        "create",
        "empty",
        "--from",
        "evil",
        "--schema-only",
    ]);
    let mut e = connect(&dsn_of(&info));
    assert_eq!(scalar(&mut e, "SELECT count(*) FROM plain"), 0);
    assert_eq!(scalar(&mut e, "SELECT count(*) FROM feelings"), 0);
    let log = String::from_utf8_lossy(
        &std::fs::read(t.home.root.join("logs/branch-empty.log")).unwrap_or_default(),
    )
    .into_owned();
    assert!(
        !log.contains("trap trigger TRUNCATE"),
        "trigger fired:\n{log}"
    );
    assert!(!t.marker.exists(), "the TRUNCATE trigger ran as superuser");
    t.assert_never_superuser("schema-only");

    exec(
        &mut connect(&t.home.branch_dsn("evil")),
        "ALTER TABLE plain ENABLE ALWAYS TRIGGER on_truncate",
    );
    let err = t.home.fails(&[
        "branch",
        "create",
        "empty2",
        "--from",
        "evil",
        "--schema-only",
    ]);
    assert_eq!(err.code, "unsafe_content", "{}", err.message);
    assert!(
        err.message.contains("public.pwn_trigger()") && err.message.contains("owned by shop"),
        "{}",
        err.message
    );
    let names = t.home.branch_names();
    assert!(!names.contains(&"empty2".to_string()), "{names:?}");
    t.assert_never_superuser("schema-only with an ALWAYS trigger");
    t.home.assert_settled();
}

/// The HTTP API's diff route and the MCP tools `diff_branch` and
/// `describe_schema` read the branch the same way.
#[test]
fn api_and_mcp_diff_and_describe_never_run_the_agents_code_as_superuser() {
    let t = Trapped::new("hb-api");
    let serve = Serve::start(&t.home, &[]);
    let mark = t.log_mark("evil");
    let (status, body) = serve.get("/v1/branches/evil/diff?limit=50");
    t.assert_never_superuser("GET /v1/branches/evil/diff");
    assert_eq!(status, 200, "{body:#}");
    assert!(!body["data"].to_string().contains("HIJACKED"), "{body}");
    assert_eq!(feelings_changes(&body["data"]), expected_feelings());
    assert!(t.log_since("evil", mark).contains("ran as shop"));
    t.assert_never_superuser("GET /v1/branches/evil/diff");
    drop(serve);

    let mut mcp = Mcp::start(&t.home);
    let mark = t.log_mark("evil");
    let diff = mcp.ok("diff_branch", json!({"branch": "evil", "limit": 50}));
    assert!(!diff["data"].to_string().contains("HIJACKED"), "{diff}");
    assert_eq!(feelings_changes(&diff["data"]), expected_feelings());
    assert!(t.log_since("evil", mark).contains("ran as shop"));
    t.assert_never_superuser("MCP diff_branch");
    let schema = mcp.ok("describe_schema", json!({"branch": "evil"}));
    let tables = schema["tables"].as_array().expect("tables");
    assert!(tables.iter().any(|t| t["name"] == "feelings"), "{schema:#}");
    t.assert_never_superuser("MCP describe_schema");
}

/// Lines a program prints, run by the branch's server as its OS user
/// (`COPY ... FROM PROGRAM`), with its exit status.
fn program_output(client: &mut postgres::Client, command: &str) -> String {
    exec(
        client,
        "CREATE TEMP TABLE IF NOT EXISTS out (line text); TRUNCATE out",
    );
    // Tabs and backslashes would be read as COPY's column separators and
    // escapes.
    let sql = format!(
        "COPY out FROM PROGRAM {}",
        quote(&format!(
            "{{ {command} 2>&1; echo exit=$?; }} | tr '\\t\\\\' '  '"
        ))
    );
    client.batch_execute(&sql).expect("COPY FROM PROGRAM");
    client
        .query("SELECT line FROM out", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// What a statement of a superuser session fails with (asserting it fails).
fn error_of(client: &mut postgres::Client, sql: &str) -> String {
    match client.batch_execute(sql) {
        Ok(()) => panic!("`{sql}` should have failed"),
        Err(e) => describe(&e),
    }
}

/// Even its own superuser cannot take a branch server beyond its files: it
/// runs as a uid of its own, and every other server's data, socket and log,
/// every snapshot, meta.db and the secrets belong to others.
#[test]
fn a_branch_superuser_reaches_nothing_but_its_own_files() {
    let home = TestHome::new(Pool::Btrfs, "hb-fence");
    home.create_source("shop");
    exec(
        &mut connect(&home.source_dsn("shop")),
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    let snap = home.snapshot("shop");
    let a = home.create_branch("a", "shop", &[]);
    let b = home.create_branch("b", "shop", &[]);
    let snap_b = home.snapshot("b");
    let (ua, ub) = (a["os_uid"].as_u64(), b["os_uid"].as_u64());
    assert!(ua.is_some() && ub.is_some() && ua != ub, "{a:#}\n{b:#}");
    // A PostgreSQL bug, or an agent who got superuser some other way.
    exec(
        &mut home.branch_superuser("a", "postgres"),
        "ALTER ROLE shop SUPERUSER",
    );
    let mut agent = connect(&dsn_of(&a));
    // Control: it is a superuser and reads its own files.
    let version: String = agent
        .query_one("SELECT pg_read_file('PG_VERSION')", &[])
        .unwrap()
        .get(0);
    assert!(version.trim().parse::<u32>().is_ok(), "{version}");
    let id = program_output(&mut agent, "id -u");
    assert!(
        id.starts_with(&ua.unwrap().to_string()) && id.ends_with("exit=0"),
        "runs as its own uid: {id}"
    );

    let root = &home.root;
    let snapshot_dir = |s: &Value| root.join("pool/snapshots").join(s["number"].to_string());
    let others: Vec<PathBuf> = vec![
        root.join("pool/sources/shop/PG_VERSION"),
        root.join("pool/branches/b/PG_VERSION"),
        snapshot_dir(&snap).join("PG_VERSION"),
        snapshot_dir(&snap_b).join("PG_VERSION"),
        root.join("meta.db"),
        root.join("logs/source-shop.log"),
        root.join("logs/branch-b.log"),
    ];
    for path in &others {
        assert!(path.exists(), "{} should exist", path.display());
        let err = error_of(
            &mut agent,
            &format!(
                "SELECT pg_read_file({})",
                quote(&path.display().to_string())
            ),
        );
        assert!(
            err.contains("Permission denied"),
            "{}: {err}",
            path.display()
        );
        let out = program_output(&mut agent, &format!("cat {}", path.display()));
        assert!(
            out.contains("Permission denied") && out.ends_with("exit=1"),
            "{}: {out}",
            path.display()
        );
    }
    for dir in [
        root.join("pool/sources/shop"),
        root.join("pool/branches/b"),
        root.join("run/source-shop"),
        root.join("run/branch-b"),
        snapshot_dir(&snap),
        snapshot_dir(&snap_b),
    ] {
        let out = program_output(&mut agent, &format!("touch {}/pwned", dir.display()));
        assert!(
            out.contains("Permission denied") && !out.ends_with("exit=0"),
            "{}: {out}",
            dir.display()
        );
        assert!(!dir.join("pwned").exists());
    }
    // The source's and the other branch's sockets: no way in as anyone.
    for (socket, port) in [
        (
            root.join("run/source-shop"),
            port_of(&home.json(&["source", "info", "shop"])),
        ),
        (root.join("run/branch-b"), port_of(&b)),
    ] {
        let out = program_output(
            &mut agent,
            &format!(
                "psql -h {} -p {port} -U postgres -d postgres -c 'select 1'",
                socket.display()
            ),
        );
        assert!(!out.ends_with("exit=0"), "{}: {out}", socket.display());
    }
    let err = error_of(
        &mut agent,
        &format!(
            "COPY (SELECT 1) TO {}",
            quote(&root.join("pool/branches/b/pwned").display().to_string())
        ),
    );
    assert!(err.contains("Permission denied"), "{err}");
    // doctor sees every running branch under its own uid.
    let out = home.run(&["--json", "doctor"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    let isolation: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "isolation")
        .collect();
    assert!(
        !isolation.is_empty() && isolation.iter().all(|c| c["status"] == "ok"),
        "{report:#}"
    );
}

/// A branch made for a proxy agent has no TCP listener: a password the
/// agent sets on its role, and the port it reads, open nothing.
#[test]
fn a_password_set_by_a_proxy_agent_opens_nothing() {
    let home = TestHome::new(Pool::Btrfs, "hb-proxy");
    home.create_source("bank");
    exec(
        &mut connect(&home.source_dsn("bank")),
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int); INSERT INTO accounts VALUES (1, 10)",
    );
    home.snapshot("bank");
    let out = home.json(&[
        "agent", "create", "mig", "--source", "bank", "--policy", "branch",
    ]);
    let secret = out["secret"].as_str().unwrap().to_string();
    let proxy = Proxy::start(&home, &[]);
    let mut c = proxy.connect("mig", &secret, "bank");
    exec(&mut c, "ALTER ROLE CURRENT_USER PASSWORD 'agent-known-pw'");
    let branch_port: String = c
        .query_one("SELECT current_setting('port')", &[])
        .unwrap()
        .get(0);
    let listen_addresses: String = c
        .query_one("SELECT current_setting('listen_addresses')", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        listen_addresses, "",
        "a proxy agent's branch listens on TCP"
    );
    let direct = format!("postgres://bank:agent-known-pw@127.0.0.1:{branch_port}/bank");
    match try_connect(&direct) {
        Ok(_) => panic!("a direct login to the agent's branch succeeded"),
        Err(e) => assert!(e.as_db_error().is_none(), "no server answered: {e}"),
    }
    let info = home.branch("agent-mig");
    assert_eq!(info["tcp"], false, "{info:#}");
    assert!(info["dsn"].as_str().unwrap().contains("host="), "{info:#}");
    // The proxy still reaches it.
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts"), 1);
}

/// Without root, pgfork cannot give servers uids of their own: `init` and
/// `doctor` say plainly what is then missing.
#[test]
fn without_root_init_and_doctor_say_what_isolation_is_missing() {
    let base = Pool::Plain
        .dir()
        .join(format!("nobody-{}", std::process::id()));
    std::fs::create_dir(&base).unwrap();
    let nobody = 65534;
    std::os::unix::fs::chown(&base, Some(nobody), Some(nobody)).unwrap();
    let home = base.join("home");
    let run = |args: &[&str]| -> Value {
        let out = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", PGFORK, "--json", "--home"])
            .arg(&home)
            .args(args)
            .env_remove("PGFORK_HOME")
            .output()
            .expect("runuser");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "pgfork {args:?} as nobody: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let report = run(&["init", "--ports", "29900-29909"]);
    assert!(report["branch_uids"].is_null(), "{report:#}");
    let warned = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("does not run as root"));
    assert!(warned, "{report:#}");
    assert!(
        report["isolation"]
            .as_str()
            .unwrap()
            .contains("could read and change every other branch"),
        "{report:#}"
    );
    let doctor = run(&["doctor"]);
    let isolation = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "isolation")
        .unwrap_or_else(|| panic!("{doctor:#}"))
        .clone();
    assert_eq!(isolation["status"], "warn", "{doctor:#}");
    let _ = std::fs::remove_dir_all(&base);
}
