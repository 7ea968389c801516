//! Promotion requests and approvals through the API, MCP and the CLI: an
//! agent asks (it cannot promote, nor approve), a webhook hears of it, the
//! branch does not expire meanwhile, an admin approves (the source
//! changes) or rejects (with a reason the agent reads), and deleting the
//! branch withdraws its request.

mod common;
mod daemon;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use daemon::{As, Mcp, Serve};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A webhook receiver on loopback: the JSON bodies POSTed to it.
fn hook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                seen.lock().unwrap().push(v);
            }
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn agents_ask_admins_decide() {
    let h = TestHome::new(Pool::Btrfs, "approvals");
    h.create_source("shop");
    let source_dsn = h.source_dsn("shop");
    exec(
        &mut connect(&source_dsn),
        "CREATE TABLE items (id int PRIMARY KEY, price int);
         INSERT INTO items SELECT g, g FROM generate_series(1, 20) g;",
    );
    let (hook_url, heard) = hook();
    let serve = Serve::start(&h, &["--notify-url", &hook_url]);
    let admin = As {
        serve: &serve,
        token: serve.token.clone(),
    };
    let agent = |name: &str| {
        let made = h.json(&[
            "agent", "create", name, "--source", "shop", "--policy", "branch",
        ]);
        made["api_token"].as_str().unwrap().to_string()
    };
    let worker_token = agent("worker");
    let worker = As {
        serve: &serve,
        token: worker_token.clone(),
    };
    let other = As {
        serve: &serve,
        token: agent("other"),
    };
    let (status, b) = worker.post(
        "/v1/branches",
        json!({ "name": "fix", "from": "shop", "ttl": "1h" }),
    );
    assert_eq!(status, StatusCode::CREATED, "{b:#}");
    exec(
        &mut connect(&dsn_of(&b)),
        "UPDATE items SET price = price * 2 WHERE id <= 5",
    );

    // A stored gate every promote of the source must pass.
    h.json(&["source", "gates", "shop", "--max-rows", "100"]);

    // The agent asks; it may not approve its own request.
    let (status, req) = worker.post(
        "/v1/promotions",
        json!({ "branch": "fix", "note": "double the first five prices",
                "migration": "UPDATE items SET price = price * 2 WHERE id <= 5;\n" }),
    );
    assert_eq!(status, StatusCode::CREATED, "{req:#}");
    let id = req["id"].as_i64().unwrap();
    assert_eq!(req["status"], "open");
    assert_eq!(req["requested_by"], "agent:worker");
    assert_eq!(req["summary"]["rows_changed"], 5, "{req:#}");
    assert!(
        !req.to_string().contains("\"price\""),
        "no row values: {req:#}"
    );
    // pgfork rehearsed the migration on the same base, and kept the report.
    let rehearsal = &req["summary"]["rehearsal"];
    assert_eq!(rehearsal["verdict"], "applies", "{req:#}");
    assert_eq!(rehearsal["statements"][0]["rows"], 5, "{req:#}");
    assert!(rehearsal["dsn"].is_null(), "its branch is gone: {req:#}");
    // The request shows how the gates went on the branch, and the conflicts.
    let preview = &req["summary"]["preview"];
    assert_eq!(preview["conflicts"], 0, "{req:#}");
    let gates = preview["gates"].as_array().unwrap();
    assert!(
        gates
            .iter()
            .any(|g| g["passed"] == true && g["limit"] == 100),
        "{req:#}"
    );
    let (status, _) = worker.post(&format!("/v1/promotions/{id}/approve"), json!({}));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = worker.post("/v1/promotions", json!({ "branch": "fix" }));
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one open request per branch: {body:#}"
    );
    // Others neither see it nor its branch.
    assert_eq!(other.get("/v1/promotions").1, json!([]));
    assert_eq!(
        other.get(&format!("/v1/promotions/{id}")).0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = other.post("/v1/promotions", json!({ "branch": "fix" }));
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A person hears of it.
    let began = Instant::now();
    while heard.lock().unwrap().is_empty() && began.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = heard.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "promotion_requested");
    assert_eq!(events[0]["request"]["id"], id);

    // While it is open, the branch does not expire.
    h.json(&["branch", "set", "fix", "--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let gc = h.json(&["gc"]);
    assert!(gc.to_string().contains("promotion request"), "{gc:#}");
    assert!(h.run(&["branch", "info", "fix"]).status.success());

    // The admin approves on the command line: the source changes.
    let approved = h.json(&["approvals", "approve", &id.to_string()]);
    assert_eq!(approved["status"], "approved", "{approved:#}");
    assert_eq!(approved["result"]["applied"], true, "{approved:#}");
    assert_eq!(
        scalar(&mut connect(&source_dsn), "SELECT sum(price) FROM items"),
        210 + 15
    );
    let err = h.fails(&["approvals", "approve", &id.to_string()]);
    assert!(err.message.contains("approved already"), "{err:?}");
    let (_, mine) = worker.get(&format!("/v1/promotions/{id}"));
    assert_eq!(mine["status"], "approved");

    // Through MCP: asked, then rejected with a reason the agent reads.
    let (status, b2) = worker.post("/v1/branches", json!({ "name": "risky", "from": "shop" }));
    assert_eq!(status, StatusCode::CREATED);
    exec(
        &mut connect(&dsn_of(&b2)),
        "DELETE FROM items WHERE id > 10",
    );
    let mut mcp = Mcp::start_as(&h, "worker", &worker_token);
    let r = mcp.ok(
        "request_promotion",
        json!({ "branch": "risky", "note": "cleanup" }),
    );
    let id2 = r["id"].as_i64().unwrap();
    assert_eq!(r["summary"]["rows_changed"], 10, "{r:#}");
    drop(mcp);
    let (status, body) = admin.post(
        &format!("/v1/promotions/{id2}/reject"),
        json!({ "reason": "" }),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    let (status, body) = admin.post(
        &format!("/v1/promotions/{id2}/reject"),
        json!({ "reason": "deletes half the catalogue" }),
    );
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let (_, seen) = worker.get(&format!("/v1/promotions/{id2}"));
    assert_eq!(
        (seen["status"].as_str(), seen["reason"].as_str()),
        (Some("rejected"), Some("deletes half the catalogue"))
    );
    assert_eq!(
        scalar(&mut connect(&source_dsn), "SELECT count(*) FROM items"),
        20,
        "a rejected request changes nothing"
    );

    // Deleting a branch withdraws its open request.
    let (status, _) = worker.post("/v1/promotions", json!({ "branch": "risky" }));
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = worker.send(Method::DELETE, "/v1/branches/risky", None);
    assert_eq!(status, StatusCode::OK);
    let listed = h.json(&["approvals", "list", "--status", "withdrawn"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    let err = h.fails(&["approvals", "list", "--status", "maybe"]);
    assert_eq!(err.code, "invalid_argument");
    let err = h.fails(&["approvals", "show", "999"]);
    assert_eq!(err.code, "unknown_request");

    // Requests and decisions are in the audit log.
    let audit = h.json(&["audit", "--limit", "200"]).to_string();
    for action in [
        "POST /v1/promotions",
        "approvals approve",
        "tool request_promotion",
    ] {
        assert!(audit.contains(action), "{action} not audited");
    }
    drop(serve);
    h.assert_settled();
}
