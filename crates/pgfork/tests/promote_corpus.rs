//! The promote corpus: schema migrations of every kind, each run on a
//! branch of a source holding the old schema (with rows), then promoted.
//! Every case must end one of two ways: promote exits 0 and the source's
//! `pg_dump --schema-only` and rows equal the branch's, or promote refuses
//! and the source is exactly as it was. Each case also says which of the
//! two it expects, so that support, once built, cannot quietly turn into a
//! refusal (or a refusal into a wrong promote).
//!
//! Cases live in `tests/promote_corpus/*.sql`, written for this suite:
//!
//! ```text
//! -- What the case exercises.
//! -- expect: promote | refuse
//! -- old
//! SQL run on the source (as its application role)
//! -- new
//! SQL run on the branch (as its application role)
//! ```
//!
//! `PGFORK_CORPUS=NAME` runs only the cases whose file name contains NAME.
//! The run prints each case's outcome and promote time, and the median and
//! maximum over the cases that promote (recorded in BENCHMARKS.md).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::*;
use serde_json::Value;

struct Case {
    name: String,
    promotes: bool,
    old: String,
    new: String,
}

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/promote_corpus");
    let only = std::env::var("PGFORK_CORPUS").ok();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .filter(|p| {
            only.as_deref()
                .is_none_or(|o| p.file_stem().unwrap().to_string_lossy().contains(o))
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| parse(p)).collect()
}

fn parse(path: &std::path::Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let expect = text
        .lines()
        .find_map(|l| l.strip_prefix("-- expect: "))
        .unwrap_or_else(|| panic!("{name}: no `-- expect:` line"));
    let promotes = match expect.trim() {
        "promote" => true,
        "refuse" => false,
        other => panic!("{name}: expect {other:?}, not promote or refuse"),
    };
    let (_, rest) = text
        .split_once("\n-- old\n")
        .unwrap_or_else(|| panic!("{name}: no `-- old` line"));
    let (old, new) = rest
        .split_once("\n-- new\n")
        .unwrap_or_else(|| panic!("{name}: no `-- new` line"));
    Case {
        name,
        promotes,
        old: old.to_string(),
        new: new.to_string(),
    }
}

/// Runs a script statement by statement, as psql does: each in its own
/// transaction unless the script says BEGIN (an enum value added and then
/// used needs that). A statement ends with a line ending in `;` outside a
/// dollar-quoted body.
fn run_script(client: &mut postgres::Client, script: &str) {
    let mut statement = String::new();
    for line in script.lines() {
        statement.push_str(line);
        statement.push('\n');
        if line.trim_end().ends_with(';') && statement.matches("$$").count().is_multiple_of(2) {
            exec(client, &statement);
            statement.clear();
        }
    }
    if !statement.trim().is_empty() {
        exec(client, &statement);
    }
}

/// What one case came to.
struct Outcome {
    promoted: bool,
    millis: u128,
    /// Why the case is wrong, if it is.
    wrong: Option<String>,
    /// The refusal's message, or the promote's warnings.
    said: String,
}

/// Drops everything of the previous case: every schema the application
/// made, and `public` made anew as `initdb` makes it.
fn reset(superuser: &mut postgres::Client) {
    let schemas: Vec<String> = superuser
        .query(
            "SELECT quote_ident(nspname) FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
               AND nspname NOT IN ('information_schema', 'public')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for s in schemas {
        exec(superuser, &format!("DROP SCHEMA {s} CASCADE"));
    }
    exec(
        superuser,
        "DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION pg_database_owner; \
         GRANT USAGE ON SCHEMA public TO PUBLIC; \
         COMMENT ON SCHEMA public IS 'standard public schema'",
    );
}

fn run_case(home: &TestHome, i: usize, case: &Case, source: &SourceSide) -> Outcome {
    let mut superuser = connect(&source.superuser);
    reset(&mut superuser);
    run_script(&mut connect(&source.dsn), &case.old);
    let branch = format!("case{i}");
    let b = home.create_branch(&branch, "corpus", &["--fresh"]);
    run_script(&mut connect(&dsn_of(&b)), &case.new);
    let schema_before = schema_dump(&source.socket, source.port, "corpus");
    let data_before = data_digest(&mut superuser);

    let began = Instant::now();
    let out = home.run(&["--json", "promote", &branch, "--yes"]);
    let millis = began.elapsed().as_millis();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let promoted = out.status.success() && report["applied"] == true;
    let said = if promoted {
        report["warnings"].to_string()
    } else {
        report["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| report["conflicts"].to_string())
    };
    let wrong = if promoted {
        let branch_schema = schema_dump(&home.branch_socket(&branch), port_of(&b), "corpus");
        let source_schema = schema_dump(&source.socket, source.port, "corpus");
        if source_schema != branch_schema {
            Some(format!(
                "promoted, but the source's schema differs from the branch's:\n{}",
                first_difference(&source_schema, &branch_schema)
            ))
        } else if data_digest(&mut superuser)
            != data_digest(&mut connect(&format!(
                "host={} port={} user=postgres dbname=corpus",
                home.branch_socket(&branch).display(),
                port_of(&b)
            )))
        {
            Some("promoted, but the source's rows differ from the branch's".into())
        } else {
            None
        }
    } else if out.status.code() != Some(1) {
        Some(format!(
            "promote neither succeeded nor failed the documented way ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    } else if schema_dump(&source.socket, source.port, "corpus") != schema_before
        || data_digest(&mut superuser) != data_before
    {
        Some(format!("refused ({said}), but the source changed"))
    } else {
        None
    };
    home.json(&["branch", "delete", &branch]);
    let wrong = wrong.or_else(|| match (case.promotes, promoted) {
        (true, false) => Some(format!("expected to promote, was refused: {said}")),
        (false, true) => Some("expected a refusal, promoted".into()),
        _ => None,
    });
    Outcome {
        promoted,
        millis,
        wrong,
        said,
    }
}

/// The first lines where two dumps part, with a little context.
fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = at.saturating_sub(3);
    format!(
        "source:\n  {}\nbranch:\n  {}",
        a[from..(at + 6).min(a.len())].join("\n  "),
        b[from..(at + 6).min(b.len())].join("\n  ")
    )
}

struct SourceSide {
    dsn: String,
    superuser: String,
    socket: PathBuf,
    port: u16,
}

#[test]
fn every_case_promotes_to_an_equal_dump_or_is_refused_with_the_source_unchanged() {
    let cases = cases();
    assert!(!cases.is_empty(), "no corpus cases found");
    let home = TestHome::new(Pool::Btrfs, "corpus");
    let info = home.create_source("corpus");
    let socket = PathBuf::from(info["socket_dir"].as_str().unwrap());
    let port = port_of(&info);
    let source = SourceSide {
        dsn: home.source_dsn("corpus"),
        superuser: format!(
            "host={} port={port} user=postgres dbname=corpus",
            socket.display()
        ),
        socket,
        port,
    };
    let mut failures = Vec::new();
    let mut times = Vec::new();
    println!("{:<48} {:<8} {:>8}  said", "case", "outcome", "ms");
    for (i, case) in cases.iter().enumerate() {
        let o = run_case(&home, i, case, &source);
        let outcome = if o.promoted { "promoted" } else { "refused" };
        let said: String = o.said.chars().take(150).collect();
        println!("{:<48} {outcome:<8} {:>8}  {said}", case.name, o.millis);
        if o.promoted {
            times.push(o.millis);
        }
        if let Some(w) = o.wrong {
            failures.push(format!("{}: {w}", case.name));
        }
    }
    times.sort();
    if let (Some(max), false) = (times.last(), times.is_empty()) {
        println!(
            "promote time over {} promoted cases: median {} ms, max {max} ms",
            times.len(),
            times[times.len() / 2]
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases went wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    home.assert_settled();
}
