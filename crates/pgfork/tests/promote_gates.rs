//! Promotion gates (issue 15): assertion files and bounds on a promote's
//! scope, given with `promote --assert FILE` or stored for the source
//! (`pgfork source gates`, `/v1/sources/{name}/gates`), obeyed by every
//! promote from any interface. Assertions run on the branch before
//! anything is applied (also with `--dry-run`) and on the source inside
//! the promote's transaction after the patch; a failure anywhere leaves
//! the source exactly as it was.

mod common;
mod daemon;

use std::path::{Path, PathBuf};

use common::*;
use daemon::Serve;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL);
INSERT INTO accounts SELECT g, 'owner ' || g, 100 FROM generate_series(1, 50) g;
CREATE TABLE notes (id int PRIMARY KEY, account_id int REFERENCES accounts(id), body text);
INSERT INTO notes SELECT g, g, 'note ' || g FROM generate_series(1, 20) g;
";

/// Every owner has one account at most (a rule the source has no
/// constraint for).
const OWNERS: &str = "-- one account per owner
SELECT owner, count(*) AS accounts
  FROM public.accounts
 GROUP BY owner
HAVING count(*) > 1
 ORDER BY owner;
";

/// No negative balance; the accounts table keeps its size (a single true).
const BALANCES: &str = "-- balances
SELECT id, balance FROM public.accounts WHERE balance < 0 ORDER BY id;

SELECT count(*) BETWEEN 40 AND 60 FROM public.accounts;

-- An assertion runs for 30 s at most, wherever it runs.
SELECT pg_catalog.current_setting('statement_timeout') = '30s';
";

fn shop(home: &TestHome) -> String {
    home.create_source("shop");
    let dsn = home.source_dsn("shop");
    exec(&mut connect(&dsn), SCHEMA);
    home.snapshot("shop");
    dsn
}

/// Writes `sql` to `dir/name` and returns the path.
fn file(dir: &Path, name: &str, sql: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, sql).unwrap();
    path
}

fn gate<'a>(report: &'a Value, name: &str, on: &str) -> &'a Value {
    report["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == name && g["on"] == on)
        .unwrap_or_else(|| panic!("no gate {name} on {on}: {report:#}"))
}

fn snapshots(home: &TestHome) -> usize {
    home.json(&["snapshot", "list", "--source", "shop"])
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn an_assertion_that_fails_on_the_source_after_the_patch_rolls_the_promote_back() {
    let home = TestHome::new(Pool::Btrfs, "gatesrc");
    let source_dsn = shop(&home);
    let dir = tempfile::tempdir().unwrap();
    let owners = file(dir.path(), "owners.sql", OWNERS);
    let owners = owners.to_str().unwrap();

    // The branch gives carol an account; meanwhile the source gave her
    // another one. Neither side breaks the rule alone, and the two rows
    // have different keys, so there is no conflict: only the assertion
    // run on the source after the patch sees both.
    let b = home.create_branch("carol", "shop", &[]);
    exec(
        &mut connect(&dsn_of(&b)),
        "INSERT INTO accounts VALUES (51, 'carol', 10); UPDATE notes SET body = 'carol joined' WHERE id = 1",
    );
    exec(
        &mut connect(&source_dsn),
        "INSERT INTO accounts VALUES (52, 'carol', 20)",
    );
    let before = data_digest(&mut connect(&source_dsn));
    let snapshots_before = snapshots(&home);

    // The dry run evaluates the gates it can without writing: on the branch.
    let dry = home.json(&["promote", "carol", "--dry-run", "--assert", owners]);
    assert_eq!(dry["applied"], false);
    let g = gate(&dry, "owners.sql#1", "branch");
    assert_eq!(g["passed"], true, "{dry:#}");
    assert_eq!(g["line"], 2, "{g:#}");
    assert_eq!(g["count"], 0);
    assert_eq!(g["detail"], "returned no rows");

    let err = home.fails(&["promote", "carol", "--assert", owners]);
    assert_eq!(err.code, "gate_failed", "{err:?}");
    for words in [
        "refused by 1 promotion gate",
        "rolled back",
        "assertion owners.sql#1 (line 2) on the source after the patch",
        "returned 1 row",
        "HAVING count(*) > 1",
        r#"{"owner":"carol","accounts":"2"}"#,
        "pgfork diff carol",
    ] {
        assert!(err.message.contains(words), "{words:?} in {}", err.message);
    }
    assert_eq!(
        data_digest(&mut connect(&source_dsn)),
        before,
        "the source changed although the promote was refused"
    );
    assert_eq!(
        snapshots(&home),
        snapshots_before,
        "no snapshot is taken of a refused promote"
    );

    // Once the source's own duplicate is gone, the same promote goes
    // through, and the report says where each assertion ran.
    exec(
        &mut connect(&source_dsn),
        "DELETE FROM accounts WHERE id = 52",
    );
    let report = home.json(&["promote", "carol", "--assert", owners]);
    assert_eq!(report["applied"], true, "{report:#}");
    assert_eq!(gate(&report, "owners.sql#1", "branch")["passed"], true);
    let on_source = gate(&report, "owners.sql#1", "source");
    assert_eq!(on_source["passed"], true, "{report:#}");
    assert_eq!(on_source["stored"], false);
    assert_eq!(
        scalar(
            &mut connect(&source_dsn),
            "SELECT count(*) FROM accounts WHERE owner = 'carol'"
        ),
        1
    );
    assert_eq!(
        text(
            &mut connect(&source_dsn),
            "SELECT body FROM notes WHERE id = 1"
        ),
        "carol joined"
    );
    // The source's session was read-only only inside each gate's savepoint:
    // the promote's own check ran and committed after it.
    assert!(report["snapshot"].as_str().is_some(), "{report:#}");

    // Read-only is the server's doing, not the parse check's: a function
    // the parse cannot see into, which writes only when it finds the
    // source's new row, is stopped by the gate's read-only savepoint inside
    // the promote's transaction, and the promote rolls back.
    exec(
        &mut connect(&source_dsn),
        "CREATE FUNCTION public.audit_ok() RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
           IF EXISTS (SELECT 1 FROM public.accounts WHERE owner = 'auditor') THEN
             INSERT INTO public.notes VALUES (999, NULL, 'written by a gate');
           END IF;
           RETURN true;
         END $$",
    );
    home.snapshot("shop");
    let b = home.create_branch("sneaky", "shop", &[]);
    exec(
        &mut connect(&dsn_of(&b)),
        "UPDATE notes SET body = 'sneaky' WHERE id = 2",
    );
    exec(
        &mut connect(&source_dsn),
        "INSERT INTO accounts VALUES (60, 'auditor', 0)",
    );
    let audit = file(dir.path(), "audit.sql", "SELECT public.audit_ok()");
    let before = data_digest(&mut connect(&source_dsn));
    let err = home.fails(&["promote", "sneaky", "--assert", audit.to_str().unwrap()]);
    assert_eq!(err.code, "gate_failed", "{err:?}");
    assert!(
        err.message.contains("on the source after the patch")
            && err
                .message
                .contains("cannot execute INSERT in a read-only transaction"),
        "{}",
        err.message
    );
    assert_eq!(data_digest(&mut connect(&source_dsn)), before);
    home.assert_settled();
}

#[test]
fn an_assertion_failing_on_the_branch_refuses_before_anything_is_applied() {
    let home = TestHome::new(Pool::Xfs, "gatebr");
    let source_dsn = shop(&home);
    let dir = tempfile::tempdir().unwrap();
    let balances = file(dir.path(), "balances.sql", BALANCES);
    let balances = balances.to_str().unwrap();

    let b = home.create_branch("overdraw", "shop", &[]);
    exec(
        &mut connect(&dsn_of(&b)),
        "UPDATE accounts SET balance = -5 WHERE id <= 7",
    );
    let before = data_digest(&mut connect(&source_dsn));

    // --dry-run: the report lists the gates, and the command fails.
    let out = home.run(&[
        "--json",
        "promote",
        "overdraw",
        "--dry-run",
        "--assert",
        balances,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed gate fails the dry run"
    );
    let dry: Value = serde_json::from_slice(&out.stdout).expect("the report, as JSON");
    assert_eq!(dry["applied"], false);
    let negative = gate(&dry, "balances.sql#1", "branch");
    assert_eq!(negative["passed"], false, "{dry:#}");
    assert_eq!(negative["line"], 2);
    assert_eq!(negative["count"], 7);
    assert_eq!(
        negative["rows"].as_array().unwrap().len(),
        5,
        "the first five rows"
    );
    assert_eq!(negative["columns"], json!(["id", "balance"]));
    assert_eq!(negative["rows"][0], json!(["1", "-5"]));
    let size = gate(&dry, "balances.sql#2", "branch");
    assert_eq!(size["passed"], true, "{dry:#}");
    assert_eq!(size["detail"], "returned true");
    assert_eq!(size["line"], 4);
    let bounded = gate(&dry, "balances.sql#3", "branch");
    assert_eq!(bounded["passed"], true, "a timeout is set: {dry:#}");
    // Human output says the same.
    let human = home.fails_human(&["promote", "overdraw", "--dry-run", "--assert", balances]);
    assert!(
        human.contains("balances.sql#1") && human.contains("would be refused"),
        "{human}"
    );

    // The promote is refused before anything is applied.
    let err = home.fails(&["promote", "overdraw", "--assert", balances]);
    assert_eq!(err.code, "gate_failed", "{err:?}");
    for words in [
        "assertion balances.sql#1 (line 2) on the branch: returned 7 rows",
        "first rows (5 of 7)",
        r#"{"id":"1","balance":"-5"}"#,
        "the file given with --assert",
    ] {
        assert!(err.message.contains(words), "{words:?} in {}", err.message);
    }
    assert!(
        !err.message.contains("balances.sql#2"),
        "only failed gates are named: {}",
        err.message
    );
    assert_eq!(data_digest(&mut connect(&source_dsn)), before);

    // A bound on the patch's scope, stored for the source: 7 rows change.
    home.json(&["source", "gates", "shop", "--max-rows", "3"]);
    let err = home.fails(&["promote", "overdraw"]);
    assert_eq!(err.code, "gate_failed", "{err:?}");
    assert!(
        err.message
            .contains("max_rows of source shop: the patch changes 7 rows")
            && err.message.contains("at most 3 may change")
            && err.message.contains("pgfork source gates shop"),
        "{}",
        err.message
    );
    let dry = home.run(&["--json", "promote", "overdraw", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(1));
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    let rows = gate(&dry, "max_rows", "patch");
    assert_eq!(
        (&rows["passed"], &rows["count"], &rows["limit"]),
        (&json!(false), &json!(7), &json!(3)),
        "{dry:#}"
    );
    assert_eq!(data_digest(&mut connect(&source_dsn)), before);

    // Within its bounds (one table, 7 rows), it goes through.
    home.json(&[
        "source",
        "gates",
        "shop",
        "--max-rows",
        "none",
        "--max-tables",
        "1",
    ]);
    let report = home.json(&["promote", "overdraw"]);
    assert_eq!(report["applied"], true, "{report:#}");
    let tables = gate(&report, "max_tables", "patch");
    assert_eq!(
        (&tables["passed"], &tables["count"]),
        (&json!(true), &json!(1))
    );
    assert!(
        tables["detail"]
            .as_str()
            .unwrap()
            .contains("public.accounts"),
        "{tables:#}"
    );
    assert_eq!(
        scalar(
            &mut connect(&source_dsn),
            "SELECT count(*) FROM accounts WHERE balance < 0"
        ),
        7
    );
}

#[test]
fn stored_gates_are_checked_before_they_are_kept_and_every_promote_obeys_them() {
    let home = TestHome::new(Pool::Xfs, "gatestore");
    let source_dsn = shop(&home);
    let dir = tempfile::tempdir().unwrap();
    let none = home.json(&["source", "gates", "shop"]);
    assert_eq!(
        (&none["max_rows"], &none["max_tables"], &none["files"]),
        (&Value::Null, &Value::Null, &json!([])),
        "{none:#}"
    );

    // A file that writes is refused, naming the line; nothing is stored.
    let writes = file(
        dir.path(),
        "fix.sql",
        "SELECT 1 WHERE false;\n\n  UPDATE public.accounts SET balance = 0;\n",
    );
    let owners = file(dir.path(), "owners.sql", OWNERS);
    let err = home.fails(&[
        "source",
        "gates",
        "shop",
        "--assert",
        owners.to_str().unwrap(),
        "--assert",
        writes.to_str().unwrap(),
        "--max-rows",
        "10",
    ]);
    assert_eq!(err.code, "invalid_argument", "{err:?}");
    assert!(
        err.message
            .contains("assertion file fix.sql, line 3: UPDATE is not a query")
            && err.message.contains("nothing was changed"),
        "{}",
        err.message
    );
    let cte = file(
        dir.path(),
        "cte.sql",
        "WITH gone AS (DELETE FROM public.notes RETURNING *)\nSELECT * FROM gone",
    );
    let err = home.fails(&["source", "gates", "shop", "--assert", cte.to_str().unwrap()]);
    assert!(
        err.message.contains("cte.sql, line 1") && err.message.contains("must not write"),
        "{}",
        err.message
    );
    let empty = file(dir.path(), "empty.sql", "-- nothing yet\n");
    let err = home.fails(&[
        "source",
        "gates",
        "shop",
        "--assert",
        empty.to_str().unwrap(),
    ]);
    assert!(err.message.contains("holds no query"), "{}", err.message);
    let missing = dir.path().join("missing.sql");
    let err = home.fails(&[
        "source",
        "gates",
        "shop",
        "--assert",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(err.code, "invalid_argument");
    assert!(
        err.message.contains("cannot use assertion file") && err.message.contains("missing.sql"),
        "{}",
        err.message
    );
    assert_eq!(
        home.json(&["source", "gates", "shop"]),
        none,
        "nothing was stored"
    );
    let err = home.fails(&["source", "gates", "shop", "--max-rows", "lots"]);
    assert_eq!(err.code, "invalid_argument");
    let err = home.fails(&["source", "gates", "nowhere"]);
    assert_eq!(err.code, "unknown_source");

    // Stored, shown, and obeyed by a promote that gives no --assert.
    let set = home.json(&[
        "source",
        "gates",
        "shop",
        "--assert",
        owners.to_str().unwrap(),
        "--max-tables",
        "5",
    ]);
    assert_eq!(set["max_tables"], 5);
    assert_eq!(set["files"][0]["name"], "owners.sql");
    assert_eq!(set["assertions"][0]["name"], "owners.sql#1");
    assert_eq!(set["assertions"][0]["line"], 2);
    assert_eq!(home.json(&["source", "gates", "shop"]), set);
    let shown = home.ok(&["source", "gates", "shop"]);
    assert!(
        shown.contains("owners.sql#1 (line 2)") && shown.contains("max tables"),
        "{shown}"
    );
    // Changing one bound keeps the rest.
    let set = home.json(&["source", "gates", "shop", "--max-rows", "1000"]);
    assert_eq!(
        (&set["max_rows"], &set["max_tables"]),
        (&json!(1000), &json!(5))
    );
    assert_eq!(set["files"].as_array().unwrap().len(), 1);

    let b = home.create_branch("twin", "shop", &[]);
    exec(
        &mut connect(&dsn_of(&b)),
        "UPDATE accounts SET owner = 'owner 1' WHERE id = 2",
    );
    let before = data_digest(&mut connect(&source_dsn));
    let err = home.fails(&["promote", "twin"]);
    assert_eq!(err.code, "gate_failed", "{err:?}");
    assert!(
        err.message
            .contains("assertion owners.sql#1 (line 2, stored for source shop) on the branch")
            && err
                .message
                .contains(r#"{"owner":"owner 1","accounts":"2"}"#),
        "{}",
        err.message
    );
    assert_eq!(data_digest(&mut connect(&source_dsn)), before);
    // A replace has no patch to hold to the gates: refused while they stand.
    let err = home.fails(&["promote", "twin", "--replace", "--yes"]);
    assert_eq!(err.code, "wrong_state", "{err:?}");
    assert!(
        err.message.contains("has promotion gates") && err.message.contains("--clear"),
        "{}",
        err.message
    );
    assert_eq!(data_digest(&mut connect(&source_dsn)), before);

    // --clear removes them all; the promote then goes through.
    let cleared = home.json(&["source", "gates", "shop", "--clear"]);
    assert_eq!(cleared, none);
    let report = home.json(&["promote", "twin"]);
    assert_eq!(report["applied"], true, "{report:#}");
    assert_eq!(report["gates"], json!([]));

    // A gate that errors (here: a table without its schema, which the
    // pinned search_path does not find) fails, saying why.
    let unqualified = file(
        dir.path(),
        "plain.sql",
        "SELECT * FROM accounts WHERE balance < 0",
    );
    let b = home.create_branch("again", "shop", &[]);
    exec(
        &mut connect(&dsn_of(&b)),
        "UPDATE accounts SET balance = 1 WHERE id = 3",
    );
    let err = home.fails(&[
        "promote",
        "again",
        "--assert",
        unqualified.to_str().unwrap(),
    ]);
    assert_eq!(err.code, "gate_failed", "{err:?}");
    assert!(
        err.message.contains("relation \"accounts\" does not exist")
            && err.message.contains("as public.orders"),
        "{}",
        err.message
    );
    // The source's gates go when the source does.
    home.json(&["source", "gates", "shop", "--max-rows", "1"]);
    home.json(&["source", "delete", "shop", "--force"]);
    home.create_source("shop");
    assert_eq!(home.json(&["source", "gates", "shop"]), none);
}

#[test]
fn stored_gates_apply_through_the_http_api() {
    let home = TestHome::new(Pool::Btrfs, "gateapi");
    let source_dsn = shop(&home);
    let b = home.create_branch("api", "shop", &[]);
    exec(
        &mut connect(&dsn_of(&b)),
        "UPDATE accounts SET balance = -1 WHERE id = 9",
    );
    let before = data_digest(&mut connect(&source_dsn));
    let agent = home.json(&[
        "agent", "create", "bot", "--source", "shop", "--policy", "branch",
    ]);
    let agent_token = agent["api_token"].as_str().unwrap().to_string();
    let s = Serve::start(&home, &["--idle-stop", "0"]);
    let code = |body: &Value| body["error"]["code"].as_str().unwrap_or("").to_string();
    let put = |body: Value| s.send(s.req(Method::PUT, "/v1/sources/shop/gates").json(&body));

    // A file that writes: 400 naming the line; nothing stored.
    let (st, body) = put(json!({
        "assert": [{ "name": "fix.sql", "sql": "SELECT 1 WHERE false;\nDELETE FROM public.notes" }],
        "max_rows": 10
    }));
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "invalid_argument")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fix.sql, line 2: DELETE is not a query"),
        "{body}"
    );
    let (st, body) = s.get("/v1/sources/shop/gates");
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["files"], json!([]), "{body}");
    let (st, body) = put(json!({ "assert": [], "bogus": 1 }));
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    // Stored through the API, seen by the CLI.
    let (st, body) = put(json!({
        "assert": [{ "name": "balances.sql", "sql": BALANCES }],
        "max_rows": 100
    }));
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["assertions"].as_array().unwrap().len(), 3, "{body}");
    let cli = home.json(&["source", "gates", "shop"]);
    assert_eq!(cli["max_rows"], 100);
    assert_eq!(cli["files"][0]["sql"], BALANCES);

    // Admins only.
    let (st, body) = s.send(
        s.http
            .get(format!("{}/v1/sources/shop/gates", s.url))
            .bearer_auth(&agent_token),
    );
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (st, _) = s.send(
        s.http
            .post(format!("{}/v1/branches/api/promote", s.url))
            .bearer_auth(&agent_token)
            .json(&json!({})),
    );
    assert!(
        st == StatusCode::FORBIDDEN || st == StatusCode::NOT_FOUND,
        "an agent cannot promote: {st}"
    );

    // A dry run through the API reports the failed gate; the promote is a
    // 422 gate_failed, and nothing changes.
    let (st, dry) = s.post("/v1/branches/api/promote", json!({ "dry_run": true }));
    assert_eq!(st, StatusCode::OK, "{dry}");
    assert_eq!(dry["applied"], false);
    let negative = gate(&dry, "balances.sql#1", "branch");
    assert_eq!(negative["passed"], false, "{dry:#}");
    assert_eq!(negative["stored"], true);
    assert_eq!(negative["rows"], json!([["9", "-1"]]));
    assert_eq!(gate(&dry, "max_rows", "patch")["passed"], true);
    let (st, body) = s.post("/v1/branches/api/promote", json!({}));
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "gate_failed"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("balances.sql#1 (line 2, stored for source shop) on the branch"),
        "{body}"
    );
    let (st, body) = s.post("/v1/branches/api/promote", json!({ "strategy": "mine" }));
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(data_digest(&mut connect(&source_dsn)), before);

    // The request's own assertions are added to the stored ones.
    let (st, body) = put(json!({ "max_rows": 100 }));
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["files"], json!([]), "PUT replaces the whole: {body}");
    let (st, body) = s.post(
        "/v1/branches/api/promote",
        json!({ "assert": [{ "name": "nine.sql", "sql": "SELECT id FROM public.accounts WHERE id = 9 AND balance < 0" }] }),
    );
    assert_eq!(
        (st, code(&body).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "gate_failed"),
        "{body}"
    );
    assert_eq!(data_digest(&mut connect(&source_dsn)), before);

    let (st, report) = s.post("/v1/branches/api/promote", json!({}));
    assert_eq!(st, StatusCode::OK, "{report}");
    assert_eq!(report["applied"], true, "{report:#}");
    assert_eq!(gate(&report, "max_rows", "patch")["count"], 1);
    assert_eq!(
        scalar(
            &mut connect(&source_dsn),
            "SELECT count(*) FROM accounts WHERE balance < 0"
        ),
        1
    );
    let (st, body) = put(json!({}));
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (&body["max_rows"], &body["files"]),
        (&Value::Null, &json!([]))
    );
}
