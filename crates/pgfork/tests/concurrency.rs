//! Several pgfork processes at once on one home: they serialise their
//! decisions in meta.db, so each branch gets its own name and port and
//! nothing is left half-made.

mod common;

use std::collections::BTreeSet;

use common::*;

on_every_pool!(simultaneous_branch_creates_all_succeed_on_distinct_ports);

/// Branches started at the same moment.
const AT_ONCE: usize = 6;

fn simultaneous_branch_creates_all_succeed_on_distinct_ports(pool: Pool) {
    let h = TestHome::new(pool, "conc");
    h.create_source("busy");
    load_items(&mut connect(&h.source_dsn("busy")), "base", 100);
    h.snapshot("busy");

    let outputs: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..AT_ONCE)
            .map(|i| {
                let h = &h;
                s.spawn(move || {
                    let name = format!("par{i}");
                    h.output(
                        &mut h.command(&["--json", "branch", "create", &name, "--from", "busy@1"]),
                    )
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut ports = BTreeSet::new();
    for (i, out) in outputs.iter().enumerate() {
        assert!(
            out.status.success(),
            "par{i} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ports.insert(port_of(&info));
        let mut db = connect(&dsn_of(&info));
        assert_eq!(tagged(&mut db, "base"), 100);
        load_items(&mut db, &format!("par{i}"), 1);
    }
    assert_eq!(
        ports.len(),
        AT_ONCE,
        "ports were handed out twice: {ports:?}"
    );
    h.assert_settled();

    // The same name at once: exactly one wins, the others are told why.
    let outputs: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let h = &h;
                s.spawn(move || {
                    h.output(
                        &mut h.command(&["--json", "branch", "create", "twin", "--from", "busy@1"]),
                    )
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let winners = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1, "one of three creates of 'twin' must win");
    for out in outputs.iter().filter(|o| !o.status.success()) {
        let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(err["error"]["code"], "name_taken", "{err:#}");
    }
    h.assert_settled();
}
