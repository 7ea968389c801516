//! One identity per agent (issue 13): agents' API tokens on a real `pgfork
//! serve` and `pgfork mcp --agent`, held to their scope by the engine; admin
//! tokens made, listed and revoked; revoked and rotated tokens refused
//! within a second.

mod common;
mod daemon;
mod proxy;

use std::time::{Duration, Instant};

use common::*;
use daemon::{As, Mcp, Serve};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An API client with one identity's token.
fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

/// Polls for up to two seconds until `path` answers `status` for `who`.
fn answers_within(who: &As, path: &str, status: StatusCode) -> Duration {
    let began = Instant::now();
    loop {
        if who.get(path).0 == status {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{path} did not answer {status} within two seconds"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn agents_are_held_to_their_scope_on_the_api_and_mcp() {
    let h = TestHome::new(Pool::Xfs, "ident");
    for source in ["shop", "other"] {
        h.create_source(source);
        load_items(&mut connect(&h.source_dsn(source)), "base", 10);
    }
    let serve = Serve::start(&h, &[]);
    let admin = As {
        serve: &serve,
        token: serve.token.clone(),
    };
    let agent = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "agent", "create", name, "--source", "shop", "--policy", "branch",
        ];
        args.extend_from_slice(extra);
        let made = h.json(&args);
        let token = made["api_token"]
            .as_str()
            .expect("an API token")
            .to_string();
        assert!(token.starts_with("pgf_"), "{made:#}");
        token
    };
    let alice = As {
        serve: &serve,
        token: agent("alice", &["--max-branches", "2", "--max-ttl", "2h"]),
    };
    let bob = As {
        serve: &serve,
        token: agent("bob", &[]),
    };

    // Each makes a branch of its source; the registry records who.
    let (status, a1) = alice.post("/v1/branches", json!({ "name": "a1", "from": "shop" }));
    assert_eq!(status, StatusCode::CREATED, "{a1:#}");
    assert_eq!(a1["created_by"], "agent:alice");
    assert!(
        a1["expires_at"].is_string(),
        "an agent's branch always expires: {a1:#}"
    );
    let (status, b1) = bob.post("/v1/branches", json!({ "name": "b1", "from": "shop" }));
    assert_eq!(status, StatusCode::CREATED, "{b1:#}");
    let (_, all) = admin.get("/v1/branches");
    assert_eq!(names(&all), ["a1", "b1"]);
    assert_eq!(names(&alice.get("/v1/branches").1), ["a1"]);
    assert_eq!(names(&admin.get("/v1/branches?agent=bob").1), ["b1"]);

    // Bob's branch is unknown to alice, whatever she tries: she gets what
    // a branch that does not exist gets, so its name does not leak.
    for (method, path) in [
        (Method::GET, "/v1/branches/b1"),
        (Method::GET, "/v1/branches/b1/dsn"),
        (Method::GET, "/v1/branches/b1/diff"),
        (Method::POST, "/v1/branches/b1/reset"),
        (Method::POST, "/v1/branches/b1/start"),
        (Method::POST, "/v1/branches/b1/stop"),
        (Method::DELETE, "/v1/branches/b1"),
    ] {
        let (status, body) = alice.send(method.clone(), path, None);
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body:#}");
        let nowhere = path.replace("b1", "nosuch");
        let (_, none) = alice.send(method.clone(), &nowhere, None);
        assert_eq!(
            body.to_string().replace("b1", "nosuch"),
            none.to_string(),
            "{method} {path}: bob's branch must look like one that does not exist"
        );
    }
    assert_eq!(
        h.branch("b1")["status"],
        "running",
        "bob's branch was touched"
    );
    // Her own branch is hers to use.
    let (status, dsn) = alice.get("/v1/branches/a1/dsn");
    assert_eq!(status, StatusCode::OK, "{dsn:#}");
    assert_eq!(
        scalar(
            &mut connect(dsn["dsn"].as_str().unwrap()),
            "SELECT count(*) FROM items"
        ),
        10
    );

    // Creating outside her grant, past her TTL or quota, or protected.
    let (status, body) = alice.post("/v1/branches", json!({ "name": "x1", "from": "other" }));
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_origin"),
        "{body:#}"
    );
    let (status, body) = alice.post("/v1/branches", json!({ "name": "x2", "from": "b1" }));
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_origin"),
        "{body:#}"
    );
    let (status, body) = alice.post(
        "/v1/branches",
        json!({ "name": "x3", "from": "shop", "ttl": "3h" }),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    assert!(body.to_string().contains("--max-ttl is 2h"), "{body:#}");
    let (status, body) = alice.post(
        "/v1/branches",
        json!({ "name": "x4", "from": "shop", "protect": true }),
    );
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body:#}"
    );
    let (status, _) = alice.post("/v1/branches", json!({ "name": "a2", "from": "a1" }));
    assert_eq!(status, StatusCode::CREATED, "a branch of her own branch");
    let (status, body) = alice.post("/v1/branches", json!({ "name": "a3", "from": "shop" }));
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded")
    );
    assert!(body.to_string().contains("--max-branches 2"), "{body:#}");
    assert_eq!(names(&alice.get("/v1/branches").1), ["a1", "a2"]);

    // Sources: hers only, without a DSN; nothing an admin does.
    let (_, sources) = alice.get("/v1/sources");
    assert_eq!(names(&sources), ["shop"]);
    assert_eq!(sources[0]["dsn"], "", "{sources:#}");
    assert_eq!(alice.get("/v1/sources/other").0, StatusCode::NOT_FOUND);
    for (method, path, body) in [
        (Method::POST, "/v1/sources", Some(json!({ "name": "mine" }))),
        (Method::DELETE, "/v1/sources/shop", None),
        (Method::POST, "/v1/snapshots", Some(json!({ "of": "shop" }))),
        (Method::GET, "/v1/agents", None),
        (Method::POST, "/v1/agents/bob/revoke", None),
        (Method::GET, "/v1/audit/verify", None),
    ] {
        let (status, answer) = alice.send(method.clone(), path, body);
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer:#}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("agent 'alice' may create at most 2 branches of source 'shop'")
                && !message.contains("bob"),
            "{method} {path}: the refusal must say what the scope allows, and name nothing else: {message}"
        );
    }
    let (_, audit) = alice.get("/v1/audit");
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["agent"] == "alice"),
        "{audit:#}"
    );

    // MCP on stdio as alice: her branches only.
    let mut mcp = Mcp::start_as(&h, "alice", &alice.token);
    let listed = mcp.ok("list_branches", json!({}));
    let listed: Vec<&str> = listed["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["a1", "a2"]);
    let (code_, _) = mcp.refused("run_sql", json!({ "branch": "b1", "sql": "SELECT 1" }));
    assert_eq!(code_, "unknown_branch");
    let (code_, _) = mcp.refused("delete_branch", json!({ "branch": "b1" }));
    assert_eq!(code_, "unknown_branch");
    let ran = mcp.ok(
        "run_sql",
        json!({ "branch": "a1", "sql": "SELECT count(*) FROM items" }),
    );
    assert_eq!(ran["rows"][0][0], "10");
    drop(mcp);
    // Launched with another agent's token, it does not start.
    let out = h
        .command(&["mcp", "--agent", "alice"])
        .env("PGFORK_TOKEN", &bob.token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a valid token of agent 'alice'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every API request and MCP call is in the audit log, hers only to
    // her, and the chain holds.
    let (_, audit) = alice.get("/v1/audit?limit=1000");
    let records = audit.as_array().unwrap();
    let did = |statement: &str, target: &str, tag: &str| {
        records
            .iter()
            .any(|r| r["statement"] == statement && r["target"] == target && r["tag"] == tag)
    };
    assert!(did("POST /v1/branches", "-", "201"), "{audit:#}");
    assert!(did("GET /v1/branches/b1/dsn", "b1", "404"), "{audit:#}");
    assert!(did("POST /v1/sources", "-", "403"), "{audit:#}");
    assert!(did("tool run_sql", "a1", "ok"), "{audit:#}");
    assert!(did("tool delete_branch", "b1", "error"), "{audit:#}");
    assert!(records.iter().all(|r| r["agent"] == "alice"), "{audit:#}");
    let (_, everyone) = admin.get("/v1/audit?limit=1000");
    assert!(
        everyone
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["agent"] == "bob" && r["statement"] == "POST /v1/branches"),
        "{everyone:#}"
    );
    let verified = h.json(&["audit", "--verify"]);
    assert_eq!(verified["ok"], true, "{verified:#}");

    // Revoking, rotating: the old tokens stop within a second. A revoked
    // agent's branch DSN opens nothing any more, and its session ends.
    let bob_dsn = dsn_of(&b1);
    let mut bobs_session = connect(&bob_dsn);
    let (status, _) = admin.post("/v1/agents/bob/revoke", json!({}));
    assert_eq!(status, StatusCode::OK);
    answers_within(&bob, "/v1/branches", StatusCode::UNAUTHORIZED);
    assert!(
        bobs_session.simple_query("SELECT 1").is_err(),
        "the revoked agent's session on its branch survived"
    );
    assert_eq!(
        sqlstate(try_connect(&bob_dsn), "the revoked agent's DSN"),
        "28P01"
    );
    assert_eq!(
        h.branch("b1")["status"],
        "running",
        "the branch itself stays, for an admin"
    );
    let rotated = h.json(&["agent", "rotate", "alice"]);
    let old = As {
        serve: &serve,
        token: alice.token.clone(),
    };
    answers_within(&old, "/v1/branches", StatusCode::UNAUTHORIZED);
    let renewed = As {
        serve: &serve,
        token: rotated["api_token"].as_str().unwrap().into(),
    };
    assert_eq!(names(&renewed.get("/v1/branches").1), ["a1", "a2"]);
    let (status, body) = renewed.delete("/v1/branches/a2");
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let unknown = As {
        serve: &serve,
        token: "pgf_not-a-token".into(),
    };
    let (status, body) = unknown.get("/v1/branches");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "a valid bearer token is required");

    // Admin tokens: several, each revoked alone.
    let made = h.json(&["token", "create", "ci", "--admin"]);
    let ci = As {
        serve: &serve,
        token: made["api_token"].as_str().unwrap().into(),
    };
    assert_eq!(names(&ci.get("/v1/branches").1), ["a1", "b1"]);
    let listed = h.json(&["token", "list"]);
    assert_eq!(names(&listed), ["admin", "ci"]);
    assert!(!listed.to_string().contains(&ci.token));
    h.ok(&["token", "revoke", "ci"]);
    answers_within(&ci, "/v1/branches", StatusCode::UNAUTHORIZED);
    assert_eq!(admin.get("/v1/branches").0, StatusCode::OK);
    let err = h.fails(&["token", "create", "admin", "--admin"]);
    assert_eq!(err.code, "name_taken", "{}", err.message);
}

#[test]
fn a_shared_branch_gives_each_member_its_own_role_until_unshared() {
    let h = TestHome::new(Pool::Btrfs, "shared");
    h.create_source("shop");
    load_items(&mut connect(&h.source_dsn("shop")), "base", 10);
    let serve = Serve::start(&h, &[]);
    let token = |name: &str| {
        let made = h.json(&[
            "agent", "create", name, "--source", "shop", "--policy", "branch",
        ]);
        As {
            serve: &serve,
            token: made["api_token"].as_str().unwrap().into(),
        }
    };
    let (owner, reader, writer, outsider) = (
        token("owner"),
        token("reader"),
        token("writer"),
        token("outsider"),
    );
    // A proxy credential that routes to the shared branch.
    let proxied_secret = proxy::agent(&h, "viaproxy", "shop", "branch", &["--branch", "team"]);
    let (status, _) = owner.post("/v1/branches", json!({ "name": "team", "from": "shop" }));
    assert_eq!(status, StatusCode::CREATED);

    // Only the owner shares, only with agents that exist.
    let (status, body) = reader.post("/v1/branches/team/share", json!({ "agent": "reader" }));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
    let (status, body) = owner.post("/v1/branches/team/share", json!({ "agent": "nobody" }));
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument")
    );
    let (status, member) = owner.post(
        "/v1/branches/team/share",
        json!({ "agent": "reader", "read_only": true }),
    );
    assert_eq!(status, StatusCode::OK, "{member:#}");
    assert_eq!(member["role"], "pgfork_member_reader");
    let (status, _) = owner.post("/v1/branches/team/share", json!({ "agent": "writer" }));
    assert_eq!(status, StatusCode::OK);

    let (status, _) = owner.post(
        "/v1/branches/team/share",
        json!({ "agent": "viaproxy", "read_only": true }),
    );
    assert_eq!(status, StatusCode::OK);
    let proxy = proxy::Proxy::start(&h, &[]);
    let mut via = proxy.connect("viaproxy", &proxied_secret, "shop");
    assert_eq!(scalar(&mut via, "SELECT count(*) FROM items"), 10);
    assert_eq!(
        text(&mut via, "SELECT session_user::text"),
        "pgfork_member_viaproxy",
        "through the proxy a member reaches the branch as its own role"
    );
    let e = via
        .batch_execute("BEGIN READ WRITE; DELETE FROM items; COMMIT")
        .expect_err("a read-only member wrote through the proxy");
    assert_eq!(proxy::sqlstate(&e), "42501", "{}", describe(&e));
    drop(via);
    drop(proxy);

    // Members list it and get DSNs of their own roles.
    assert_eq!(names(&reader.get("/v1/branches").1), ["team"]);
    assert!(names(&outsider.get("/v1/branches").1).is_empty());
    let dsn_of_member = |who: &As| {
        let (status, body) = who.get("/v1/branches/team/dsn");
        assert_eq!(status, StatusCode::OK, "{body:#}");
        body["dsn"].as_str().unwrap().to_string()
    };
    let (reader_dsn, writer_dsn) = (dsn_of_member(&reader), dsn_of_member(&writer));
    assert!(
        reader_dsn.starts_with("postgres://pgfork_member_reader:"),
        "{reader_dsn}"
    );
    let owner_dsn = dsn_of_member(&owner);
    assert_ne!(password_of(&reader_dsn), password_of(&owner_dsn));
    let mut as_reader = connect(&reader_dsn);
    assert_eq!(scalar(&mut as_reader, "SELECT count(*) FROM items"), 10);
    for sql in [
        "INSERT INTO items (tag, payload) VALUES ('r', 'r')",
        "BEGIN READ WRITE; INSERT INTO items (tag, payload) VALUES ('r', 'r'); COMMIT",
        "CREATE TABLE mine (x int)",
    ] {
        let e = as_reader
            .batch_execute(sql)
            .expect_err("a read-only member wrote");
        let state = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        assert!(
            state == "25006" || state == "42501",
            "{sql}: {state} {}",
            describe(&e)
        );
        let _ = as_reader.batch_execute("ROLLBACK");
    }
    let mut as_writer = connect(&writer_dsn);
    exec(
        &mut as_writer,
        "INSERT INTO items (tag, payload) VALUES ('w', 'w'); CREATE TABLE notes (x int)",
    );
    assert_eq!(
        text(
            &mut connect(&owner_dsn),
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'notes'"
        ),
        "shop",
        "what a writer makes belongs to the branch's role"
    );

    // Members neither reset, delete, stop nor share it.
    for (method, path) in [
        (Method::POST, "/v1/branches/team/reset"),
        (Method::POST, "/v1/branches/team/stop"),
        (Method::DELETE, "/v1/branches/team"),
    ] {
        let (status, body) = writer.send(method.clone(), path, None);
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body:#}");
    }
    let (status, _) = writer.post("/v1/branches/team/share", json!({ "agent": "outsider" }));
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A reset by the owner keeps the members (their roles are made again).
    let (status, _) = owner.post("/v1/branches/team/reset", json!({}));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        scalar(&mut connect(&reader_dsn), "SELECT count(*) FROM items"),
        10
    );

    // Unsharing ends the member's sessions at once and hides the branch.
    let mut open = connect(&reader_dsn);
    let (status, _) = owner.send(Method::DELETE, "/v1/branches/team/share/reader", None);
    assert_eq!(status, StatusCode::OK);
    assert!(
        open.simple_query("SELECT 1").is_err(),
        "the session survived"
    );
    assert!(try_connect(&reader_dsn).is_err());
    assert_eq!(reader.get("/v1/branches/team").0, StatusCode::NOT_FOUND);
    let (_, members) = owner.get("/v1/branches/team/members");
    let agents: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["viaproxy", "writer"]);
    h.ok(&["branch", "unshare", "team", "--agent", "writer"]);
    assert!(try_connect(&writer_dsn).is_err());

    // An orchestrator and its worker: the orchestrator lists, uses and
    // discards what the worker made; nobody else sees it.
    let orchestrator = token("orch");
    let made = h.json(&[
        "agent", "create", "worker1", "--source", "shop", "--policy", "branch", "--parent", "orch",
    ]);
    assert_eq!(made["parent"], "orch", "{made:#}");
    let worker = As {
        serve: &serve,
        token: made["api_token"].as_str().unwrap().into(),
    };
    let (status, _) = worker.post("/v1/branches", json!({ "name": "w1-try", "from": "shop" }));
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        names(&orchestrator.get("/v1/branches?agent=worker1").1),
        ["w1-try"]
    );
    assert_eq!(
        orchestrator.get("/v1/branches/w1-try/dsn").0,
        StatusCode::OK
    );
    assert!(names(&outsider.get("/v1/branches?agent=worker1").1).is_empty());
    assert_eq!(orchestrator.delete("/v1/branches/w1-try").0, StatusCode::OK);
    let err = h.fails(&[
        "agent", "create", "worker2", "--source", "shop", "--policy", "branch", "--parent", "ghost",
    ]);
    assert!(
        err.message.contains("no agent named 'ghost'"),
        "{}",
        err.message
    );
    h.assert_settled();
}

/// A branch made from a shared branch carries the parent's member roles
/// in its catalog, passwords and all; none of them may open the child,
/// which is its owner's alone until shared again.
#[test]
fn a_branch_of_a_shared_branch_takes_no_login_of_the_parents_members() {
    let h = TestHome::new(Pool::Btrfs, "shared-child");
    h.create_source("shop");
    let serve = Serve::start(&h, &[]);
    let token = |name: &str| {
        let made = h.json(&[
            "agent", "create", name, "--source", "shop", "--policy", "branch",
        ]);
        As {
            serve: &serve,
            token: made["api_token"].as_str().unwrap().into(),
        }
    };
    let (owner, member) = (token("owner"), token("member"));
    let (status, _) = owner.post("/v1/branches", json!({ "name": "team", "from": "shop" }));
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = owner.post("/v1/branches/team/share", json!({ "agent": "member" }));
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let (status, body) = member.get("/v1/branches/team/dsn");
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let member_dsn = body["dsn"].as_str().unwrap().to_string();
    connect(&member_dsn); // the member's own way in works on the parent

    let (status, child) = owner.post("/v1/branches", json!({ "name": "child", "from": "team" }));
    assert_eq!(status, StatusCode::CREATED, "{child:#}");
    let parent_port = format!(":{}/", port_of(&h.branch("team")));
    let child_port = format!(":{}/", port_of(&child));
    let on_child = member_dsn.replace(&parent_port, &child_port);
    assert_ne!(on_child, member_dsn, "{member_dsn}");
    let Err(e) = try_connect(&on_child) else {
        panic!("a parent's member logged in to the child");
    };
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("28P01"),
        "{}",
        describe(&e)
    );
    let (status, _) = member.get("/v1/branches/child");
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the child is not the member's"
    );
}
