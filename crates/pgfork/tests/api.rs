//! `pgfork serve` driven over HTTP the way a program does: the token, bad
//! input, quotas and the disk floor (through the API and the CLI alike), a
//! hundred creates at once, the OpenAPI document against the live routes,
//! the reaper, and the metrics.

mod common;
mod daemon;

use std::time::Duration;

use common::*;
use daemon::Serve;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

fn shop(h: &TestHome) {
    h.create_source("shop");
    load_items(&mut connect(&h.source_dsn("shop")), "base", 100);
    h.snapshot("shop");
}

#[test]
fn bad_input_gets_clear_errors() {
    let h = TestHome::bare(Pool::Xfs, "apierr");
    let report = h.init(&["--max-branches-per-source", "2"]);
    assert!(
        report["api_token"].as_str().is_some_and(|t| t.len() > 30),
        "init prints a token once: {report:#}"
    );
    assert!(
        h.json(&["init"]).get("api_token").is_none(),
        "a second init keeps the token and does not print it"
    );
    shop(&h);
    let s = Serve::start(&h, &["--idle-stop", "0"]);

    // No token and a wrong token: the same 401, saying nothing more.
    let anon = s.http.get(format!("{}/v1/branches", s.url)).send().unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anon.headers()["www-authenticate"], "Bearer");
    let anon_body = anon.text().unwrap();
    let wrong = s
        .http
        .get(format!("{}/v1/branches", s.url))
        .bearer_auth("pgf_wrong")
        .send()
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.text().unwrap(), anon_body);
    let health = s.http.get(format!("{}/health", s.url)).send().unwrap();
    assert_eq!(health.status(), StatusCode::OK, "/health needs no token");

    // Malformed JSON names the field.
    let (st, body) = s.post("/v1/branches", json!({ "name": 5, "from": "shop" }));
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'name'"),
        "{body}"
    );
    let (st, body) = s.post("/v1/branches", json!({ "name": "b" }));
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`from`"),
        "{body}"
    );
    let (st, body) = s.post(
        "/v1/branches",
        json!({ "name": "b", "from": "shop", "tll": "1h" }),
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("tll"),
        "{body}"
    );
    let (st, body) = s.send(
        s.req(Method::POST, "/v1/branches")
            .header("content-type", "application/json")
            .body("{\"name\": "),
    );
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let (st, body) = s.post("/v1/branches", json!({ "name": "Bad!", "from": "shop" }));
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_name")
    );

    // Unknown names, routes and methods.
    for (path, code) in [
        ("/v1/branches/nope", "unknown_branch"),
        ("/v1/sources/nope", "unknown_source"),
        ("/v1/snapshots/shop@99", "unknown_snapshot"),
        ("/v1/nothing", "not_found"),
    ] {
        let (st, body) = s.get(path);
        assert_eq!(
            (st, error_code(&body)),
            (StatusCode::NOT_FOUND, code),
            "{path}"
        );
    }
    let (st, body) = s.post("/v1/branches", json!({ "name": "b", "from": "nowhere" }));
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::NOT_FOUND, "unknown_origin")
    );
    let (st, body) = s.send(s.req(Method::PUT, "/v1/branches"));
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );

    // An agent's connection limit: bounded, stored, shown.
    for n in [0, 1001] {
        let (st, body) = s.post(
            "/v1/agents",
            json!({ "name": "ro", "source": "shop", "policy": "read-only", "max_connections": n }),
        );
        assert_eq!(
            (st, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_argument"),
            "{n}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("'max_connections'"),
            "{body}"
        );
    }
    let (st, body) = s.post(
        "/v1/agents",
        json!({ "name": "ro", "source": "shop", "policy": "read-only", "max_connections": 4 }),
    );
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["max_connections"], 4);
    let (st, body) = s.post(
        "/v1/agents",
        json!({ "name": "br", "source": "shop", "policy": "branch" }),
    );
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let (_, list) = s.get("/v1/agents");
    let limits: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["max_connections"].as_i64()))
        .collect();
    assert_eq!(limits, [("br", Some(10)), ("ro", Some(4))]);

    // The quota: the API and the CLI refuse alike, and say why.
    for name in ["q1", "q2"] {
        let (st, body) = s.post("/v1/branches", json!({ "name": name, "from": "shop" }));
        assert_eq!(st, StatusCode::CREATED, "{body}");
        assert!(dsn_of(&body).contains(&password_of(&h.branch_dsn(name))));
    }
    let (st, body) = s.post("/v1/branches", json!({ "name": "q3", "from": "shop" }));
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max-branches-per-source")
    );
    assert_eq!(
        h.fails(&["branch", "create", "q3", "--from", "shop"]).code,
        "quota_exceeded"
    );
    let (st, _) = s.post("/v1/branches", json!({ "name": "q1", "from": "shop" }));
    assert_eq!(st, StatusCode::CONFLICT, "name taken");

    // Diff of a branch: the rows it changed, through the engine's diff.
    exec(
        &mut connect(&h.branch_dsn("q1")),
        "DELETE FROM items WHERE id <= 7",
    );
    let (st, diff) = s.get("/v1/branches/q1/diff?limit=2");
    assert_eq!(st, StatusCode::OK, "{diff}");
    let items = diff["data"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"].as_str().unwrap().ends_with("items"))
        .unwrap_or_else(|| panic!("no items in {diff}"));
    assert_eq!(items["deleted"], 7, "{items}");
    let (st, body) = s.get("/v1/branches/q1/diff?schema=false&data=false");
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    // The floor, set on the home while the server runs: 507.
    h.ok(&["init", "--min-free", "1T"]);
    let (st, body) = s.post("/v1/branches", json!({ "name": "f1", "from": "q1" }));
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::INSUFFICIENT_STORAGE, "disk_floor")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("min-free"),
        "{body}"
    );
    assert_eq!(
        h.fails(&["branch", "create", "f1", "--from", "q1"]).code,
        "disk_floor"
    );
    h.ok(&["init", "--min-free", "0", "--max-branches-per-source", "0"]);
    let (st, body) = s.post("/v1/branches", json!({ "name": "f1", "from": "q1" }));
    assert_eq!(st, StatusCode::CREATED, "limits removed: {body}");
    assert!(s.metric("pgfork_branch_creation_failures_total{code=\"quota_exceeded\"}") >= 1.0);
    assert!(s.metric("pgfork_branch_creation_failures_total{code=\"disk_floor\"}") >= 1.0);

    // A rotated token replaces the old one on the running server.
    let old = s.token.clone();
    let new = h.json(&["token", "rotate"])["api_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(wait_until(Duration::from_secs(5), || {
        s.http
            .get(format!("{}/v1/branches", s.url))
            .bearer_auth(&old)
            .send()
            .is_ok_and(|r| r.status() == StatusCode::UNAUTHORIZED)
    }));
    let ok = s
        .http
        .get(format!("{}/v1/branches", s.url))
        .bearer_auth(&new)
        .send()
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    drop(s);
    h.assert_settled();
}

#[test]
fn openapi_document_matches_the_live_routes() {
    let h = TestHome::new(Pool::Xfs, "apidoc");
    let s = Serve::start(&h, &["--idle-stop", "0"]);
    let (st, doc) = s.get("/openapi.json");
    assert_eq!(st, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 10);
    for (path, item) in paths {
        let concrete = path.replace("{name}", "nope").replace("{id}", "nope@1");
        for (method, _) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let m: Method = method.to_uppercase().parse().unwrap();
            let mut req = s.req(m.clone(), &concrete);
            if m == Method::POST || m == Method::PATCH {
                req = req.json(&json!({}));
            }
            let (st, body) = s.send(req);
            // Served by a handler: anything but the router's own 404/405.
            assert!(
                !matches!(error_code(&body), "not_found" | "method_not_allowed")
                    && st != StatusCode::UNAUTHORIZED,
                "{method} {path} is documented but not served: {st} {body}"
            );
        }
    }
}

/// A hundred creates at once against a quota of ten: each one succeeds or
/// is refused cleanly, and nothing is left half-made.
#[test]
fn hundred_concurrent_creates_succeed_or_fail_cleanly() {
    let h = TestHome::bare(Pool::Xfs, "apiconc");
    h.init(&["--max-branches-per-source", "10"]);
    shop(&h);
    let s = Serve::start(&h, &["--idle-stop", "0"]);
    let results: Vec<(StatusCode, Value)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..100)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    s.post(
                        "/v1/branches",
                        json!({ "name": format!("c{i}"), "from": "shop@1" }),
                    )
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let created: Vec<&Value> = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    for (st, body) in &results {
        assert!(
            *st == StatusCode::CREATED
                || (*st == StatusCode::TOO_MANY_REQUESTS && error_code(body) == "quota_exceeded"),
            "a create neither succeeded nor failed cleanly: {st} {body}"
        );
    }
    assert_eq!(created.len(), 10, "exactly the quota is created");
    for b in &created {
        let mut db = connect(&dsn_of(b));
        assert_eq!(tagged(&mut db, "base"), 100);
    }
    let (_, list) = s.get("/v1/branches");
    assert_eq!(list.as_array().unwrap().len(), 10);
    assert_eq!(s.metric("pgfork_branch_creations_total"), 10.0);
    assert_eq!(
        s.metric("pgfork_branch_creation_failures_total{code=\"quota_exceeded\"}"),
        90.0
    );

    // The same name ten times at once: one wins, the rest are told why.
    h.ok(&["init", "--max-branches-per-source", "0"]);
    let results: Vec<(StatusCode, Value)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..10)
            .map(|_| {
                let s = &s;
                scope.spawn(move || {
                    s.post("/v1/branches", json!({ "name": "twin", "from": "shop@1" }))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(
        results
            .iter()
            .filter(|(st, _)| *st == StatusCode::CREATED)
            .count(),
        1
    );
    for (st, body) in results.iter().filter(|(st, _)| *st != StatusCode::CREATED) {
        assert_eq!(
            (*st, error_code(body)),
            (StatusCode::CONFLICT, "name_taken"),
            "{body}"
        );
    }
    drop(s);
    h.assert_settled();
}

#[test]
fn reaper_stops_idle_deletes_expired_and_idle_and_metrics_show_it() {
    let h = TestHome::new(Pool::Btrfs, "apireap");
    shop(&h);
    let s = Serve::start(
        &h,
        &[
            "--reap-every",
            "1s",
            "--idle-stop",
            "3s",
            "--idle-delete",
            "12s",
        ],
    );
    let create = |name: &str, extra: Value| {
        let mut body = json!({ "name": name, "from": "shop" });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (st, b) = s.post("/v1/branches", body);
        assert_eq!(st, StatusCode::CREATED, "{b}");
        b
    };
    let busy = create("busy", json!({ "protect": true }));
    // A session at once: on a loaded machine the next creates can take
    // longer than --idle-stop.
    let mut session = connect(&dsn_of(&busy));
    create("idle", json!({ "protect": true }));
    create("brief", json!({ "ttl": "1s" }));
    create("doomed", json!({}));

    // Watched through the list: a request about one branch is a use of it,
    // which would keep it from ever being idle. Null once it is deleted.
    let status = |name: &str| {
        let (_, list) = s.get("/v1/branches");
        list.as_array()
            .and_then(|l| l.iter().find(|b| b["name"] == name))
            .map(|b| b["status"].clone())
            .unwrap_or(Value::Null)
    };
    assert!(
        wait_until(Duration::from_secs(30), || status("idle") == "stopped"),
        "an idle branch is stopped"
    );
    assert!(
        wait_until(Duration::from_secs(30), || status("brief").is_null()),
        "an expired branch is deleted"
    );
    assert_eq!(
        status("busy"),
        "running",
        "a branch with a session keeps running"
    );
    assert_eq!(scalar(&mut session, "SELECT 1"), 1);
    assert!(s.metric("pgfork_reaper_actions_total{action=\"idle_stop\"}") >= 1.0);
    assert!(s.metric("pgfork_reaper_actions_total{action=\"ttl_delete\"}") >= 1.0);

    // Waking a stopped branch is timed.
    let (st, woke) = s.post("/v1/branches/idle/start", json!({}));
    assert_eq!(
        (st, woke["status"].as_str()),
        (StatusCode::OK, Some("running"))
    );
    assert_eq!(s.metric("pgfork_branch_wake_duration_seconds_count"), 1.0);

    // Unprotected and idle long enough: deleted; protected ones stay.
    assert!(
        wait_until(Duration::from_secs(40), || status("doomed").is_null()),
        "an idle unprotected branch is deleted"
    );
    assert!(s.metric("pgfork_reaper_actions_total{action=\"idle_delete\"}") >= 1.0);
    assert_eq!(s.get("/v1/branches/busy").0, StatusCode::OK);

    // Metrics: states, creation histogram, snapshot age, unshared bytes
    // (sampled at start), and `branch info` shows the same per branch.
    let text = s.metrics().1;
    assert!(
        text.contains("pgfork_branches{state=\"running\"}"),
        "{text}"
    );
    assert!(
        text.contains("pgfork_branch_create_duration_seconds_count{phase=\"start\"} 4"),
        "{text}"
    );
    assert!(text.contains("pgfork_snapshot_age_seconds{snapshot=\"shop@1\",source=\"shop\"}"));
    let info = h.branch("busy");
    assert!(info["timings"]["clone_ms"].is_u64(), "{info:#}");
    assert!(info["timings"]["total_ms"].as_u64().unwrap() > 0);
    assert!(info["unshared_bytes"].is_u64(), "{info:#}");
    drop(session);
    drop(s);
    h.assert_settled();
}

/// Serve refuses a non-loopback address unless told.
#[test]
fn serve_listens_on_loopback_only_unless_allowed() {
    let h = TestHome::new(Pool::Plain, "apilisten");
    let out = h.output(&mut h.command(&["serve", "--listen", "0.0.0.0:0"]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}
