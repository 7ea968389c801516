//! Time to live and protection: what `gc` deletes and what it keeps.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn gc_deletes_expired_branches_and_keeps_protected_ones() {
    let h = TestHome::new(Pool::Btrfs, "ttl");
    h.create_source("temp");
    h.snapshot("temp");
    let expired = h.create_branch("expired", "temp@1", &["--ttl", "1s"]);
    h.create_branch("guarded", "temp@1", &["--ttl", "1s", "--protect"]);
    h.create_branch("later", "temp@1", &["--ttl", "1h"]);
    h.create_branch("forever", "temp@1", &[]);
    assert_eq!(h.branch("guarded")["protected"], true);

    // Expiry has a resolution of one second.
    std::thread::sleep(Duration::from_millis(2100));
    let report = h.json(&["gc"]);
    assert_eq!(report["deleted"], json!(["branch expired"]), "{report:#}");
    assert_eq!(
        report["kept"],
        json!([["guarded", "protected"]]),
        "{report:#}"
    );
    let left = h.branch_names();
    assert_eq!(left, ["forever", "guarded", "later"]);
    let pid = expired["pid"].as_i64().unwrap() as i32;
    assert!(
        !is_running(pid),
        "gc left the expired branch's server running"
    );
    assert!(port_is_free(port_of(&expired)));
    h.assert_settled();

    // Unprotected, it goes on the next gc; without a TTL nothing expires.
    h.json(&["branch", "set", "guarded", "--unprotect"]);
    h.json(&["branch", "set", "later", "--no-ttl"]);
    assert_eq!(h.branch("later")["expires_at"], json!(null));
    let report = h.json(&["gc"]);
    assert_eq!(report["deleted"], json!(["branch guarded"]), "{report:#}");
    assert_eq!(report["kept"], json!([]));
    assert_eq!(h.json(&["gc"])["deleted"], json!([]));
    h.assert_settled();

    // An expired branch that live branches were made from stays, with the
    // reason; once they are gone, it goes.
    h.create_branch("parent", "temp@1", &["--ttl", "1s"]);
    h.create_branch("child", "parent", &[]);
    std::thread::sleep(Duration::from_millis(2100));
    let report = h.json(&["gc"]);
    assert_eq!(report["deleted"], json!([]), "{report:#}");
    assert_eq!(report["kept"][0][0], "parent", "{report:#}");
    assert!(
        report["kept"][0][1].as_str().unwrap().contains("child"),
        "{report:#}"
    );
    h.ok(&["branch", "delete", "child"]);
    let report = h.json(&["gc"]);
    assert!(
        report["deleted"]
            .as_array()
            .unwrap()
            .contains(&json!("branch parent")),
        "{report:#}"
    );
    h.assert_settled();
}
