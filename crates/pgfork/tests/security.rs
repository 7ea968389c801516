//! What the agent's role in a branch cannot do: anything that reaches the
//! host or the superuser. Each attempt must be refused by PostgreSQL with
//! the SQLSTATE of a privilege error, not merely fail somehow.

mod common;

use common::*;

/// `insufficient_privilege`.
const DENIED: &str = "42501";
/// `invalid_authorization_specification` (pg_hba.conf `reject`).
const REJECTED: &str = "28000";

/// Statements an agent might try, what each attempt means, and the SQLSTATE
/// PostgreSQL must answer with.
const ATTEMPTS: &[(&str, &str, &str)] = &[
    ("become superuser", "ALTER ROLE shop SUPERUSER", DENIED),
    ("become the superuser", "SET ROLE postgres", DENIED),
    (
        "act as the superuser",
        "SET SESSION AUTHORIZATION postgres",
        DENIED,
    ),
    (
        "make a superuser",
        "CREATE ROLE evil SUPERUSER LOGIN",
        DENIED,
    ),
    (
        "join pg_execute_server_program",
        "GRANT pg_execute_server_program TO shop",
        DENIED,
    ),
    ("run a shell command", "COPY items TO PROGRAM 'id'", DENIED),
    (
        "read a host file with COPY",
        "CREATE TEMP TABLE host_file (line text); COPY host_file FROM '/etc/passwd'",
        DENIED,
    ),
    (
        "write a host file",
        "COPY items TO '/tmp/pgfork-leak'",
        DENIED,
    ),
    (
        "read a host file",
        "SELECT pg_read_file('/etc/passwd')",
        DENIED,
    ),
    (
        "read a host file as bytes",
        "SELECT pg_read_binary_file('/etc/passwd')",
        DENIED,
    ),
    ("list a host directory", "SELECT pg_ls_dir('/')", DENIED),
    (
        "import a host file as a large object",
        "SELECT lo_import('/etc/passwd')",
        DENIED,
    ),
    ("create file_fdw", "CREATE EXTENSION file_fdw", DENIED),
    ("create dblink", "CREATE EXTENSION dblink", DENIED),
    ("create adminpack", "CREATE EXTENSION adminpack", DENIED),
    (
        "load native code",
        "CREATE FUNCTION sys(cstring) RETURNS int AS '/lib/x86_64-linux-gnu/libc.so.6', 'system' LANGUAGE C",
        DENIED,
    ),
    (
        "load a library into the session",
        "LOAD '/lib/x86_64-linux-gnu/libc.so.6'",
        DENIED,
    ),
    (
        "preload a library at every login",
        "ALTER ROLE shop SET session_preload_libraries = 'libc'",
        DENIED,
    ),
    (
        "change server settings",
        "ALTER SYSTEM SET fsync = on",
        DENIED,
    ),
    (
        "change server settings for everyone",
        "ALTER SYSTEM SET shared_preload_libraries = 'x'",
        DENIED,
    ),
];

#[test]
fn agent_role_cannot_reach_the_superuser_or_the_host() {
    let h = TestHome::new(Pool::Xfs, "sec");
    h.create_source("shop");
    load_items(&mut connect(&h.source_dsn("shop")), "base", 10);
    let b = h.create_branch("agent", "shop", &[]);
    let dsn = dsn_of(&b);
    let mut db = connect(&dsn);
    // The connection works and the role may do its own work: each refusal
    // below is about privilege, not a broken session.
    exec(
        &mut db,
        "CREATE TABLE mine (x int); INSERT INTO mine VALUES (1)",
    );
    assert_eq!(
        text(
            &mut db,
            "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user"
        ),
        "false"
    );

    let mut wrong = Vec::new();
    for (what, sql, expected) in ATTEMPTS {
        let mut db = connect(&dsn);
        match db.batch_execute(sql) {
            Ok(()) => wrong.push(format!("{what}: `{sql}` SUCCEEDED")),
            Err(e) => {
                let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                if code != *expected {
                    wrong.push(format!(
                        "{what}: `{sql}` failed with {code} instead of {expected}: {}",
                        describe(&e)
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the agent's role got further than it may:\n{}",
        wrong.join("\n")
    );
    assert!(!std::path::Path::new("/tmp/pgfork-leak").exists());

    // The superuser cannot log in over TCP, with or without a password
    // (pg_hba.conf rejects it before any password is asked).
    let port = port_of(&b);
    for dsn in [
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        format!(
            "postgres://postgres:{}@127.0.0.1:{port}/shop",
            password_of(&dsn)
        ),
    ] {
        let Err(err) = try_connect(&dsn) else {
            panic!("the superuser logged in over TCP");
        };
        assert_eq!(
            err.code().map(|c| c.code()),
            Some(REJECTED),
            "{}",
            describe(&err)
        );
    }
    // The maintenance databases are closed to the agent's role.
    for db in ["postgres", "template1"] {
        let other = format!("{}/{db}", dsn.rsplit_once('/').unwrap().0);
        assert_eq!(
            sqlstate(try_connect(&other), &format!("connect to {db}")),
            DENIED
        );
    }
    // A wrong password for the agent's role fails too.
    let guessed = dsn.replace(&password_of(&dsn), "guess");
    assert_eq!(
        sqlstate(try_connect(&guessed), "a guessed password"),
        "28P01"
    );
    // Nothing of the attempts changed the role.
    let mut su = h.branch_superuser("agent", "shop");
    assert_eq!(
        text(
            &mut su,
            "SELECT (rolsuper OR rolcreaterole OR rolreplication OR rolbypassrls)::text \
             FROM pg_roles WHERE rolname = 'shop'"
        ),
        "false"
    );
    assert_eq!(
        scalar(
            &mut su,
            "SELECT count(*) FROM pg_roles WHERE rolname = 'evil'"
        ),
        0
    );
}

/// No password pgfork hands out (source or branch) ever shows up in a
/// server log or on pgfork's stderr, even with debug logging, through
/// create, reset, restart, failed logins and statement errors.
#[test]
fn passwords_never_appear_in_logs_or_stderr() {
    let h = TestHome::new(Pool::Btrfs, "secret");
    h.create_source("vault");
    let source_dsn = h.source_dsn("vault");
    load_items(&mut connect(&source_dsn), "base", 10);
    // Human output of create prints the DSN on stdout (asked for); debug
    // logging goes to stderr.
    let human = h.ok(&["-vv", "branch", "create", "one", "--from", "vault"]);
    let one = human.trim().to_string();
    let two = dsn_of(&h.json(&["-vv", "branch", "create", "two", "--from", "one"]));
    h.ok(&["-vv", "branch", "reset", "one"]);
    h.ok(&["-vv", "branch", "stop", "two"]);
    h.ok(&["-vv", "branch", "start", "two"]);
    h.ok(&["-vv", "snapshot", "create", "two"]);
    h.ok(&["-vv", "branch", "info", "one"]);
    h.ok(&["-vv", "branch", "list"]);
    h.ok(&["-vv", "source", "info", "vault"]);
    h.ok(&["-vv", "source", "list"]);
    let masked = h.ok(&["branch", "info", "one"]);

    let mut passwords = Vec::new();
    for dsn in [&source_dsn, &one, &two] {
        // Each password is real (it logs in) and long enough that finding
        // it by accident is impossible.
        let mut db = connect(dsn);
        // A failing statement and a failed login get logged by the server.
        assert!(db.batch_execute("SELECT * FROM no_such_table").is_err());
        let wrong = dsn.replace(&password_of(dsn), "not-the-password");
        assert!(try_connect(&wrong).is_err());
        let password = password_of(dsn);
        assert!(password.len() >= 16, "short password");
        passwords.push(password);
    }
    assert!(
        !masked.contains(&passwords[1]),
        "branch info shows the password"
    );

    let stderr = h.stderr_seen();
    assert!(
        stderr.contains("DEBUG"),
        "-vv produced no debug output to search"
    );
    let logs = read_tree(&h.root.join("logs"));
    assert!(
        logs.iter()
            .any(|(_, text)| String::from_utf8_lossy(text)
                .contains("password authentication failed")),
        "the server logs lack the failed logins this test made"
    );
    for password in &passwords {
        assert!(
            !stderr.contains(password.as_str()),
            "a password is on stderr"
        );
        for (path, content) in &logs {
            assert!(
                !String::from_utf8_lossy(content).contains(password.as_str()),
                "a password is in {}",
                path.display()
            );
        }
    }
}

/// Until a branch's server has given the application role the branch's own
/// password, the role still has the password of what the snapshot was
/// taken of: the source's (a snapshot of a branch forgets its password when
/// it is sealed). pgfork is killed in that window (`branch-boot:before-arm`)
/// of a create and of a reset, leaving the server up with the old password:
/// TCP logins with it must be rejected by pg_hba.conf, not let in.
#[test]
fn a_branch_takes_no_tcp_login_before_its_own_password() {
    let h = TestHome::new(Pool::Btrfs, "arming");
    h.create_source("shop");
    let source_dsn = h.source_dsn("shop");
    load_items(&mut connect(&source_dsn), "base", 10);
    let a = h.create_branch("alice", "shop", &[]);
    let alice_dsn = dsn_of(&a);
    let on = |port: u16, dsn: &str| {
        format!("postgres://shop:{}@127.0.0.1:{port}/shop", password_of(dsn))
    };

    for from in ["shop", "alice"] {
        h.crash_at(
            "branch-boot:before-arm",
            &["branch", "create", "bob", "--from", from],
        );
        let port = h.recorded_port("bob").expect("bob's row records its port");
        for (whose, dsn) in [("the source's", &source_dsn), ("alice's", &alice_dsn)] {
            assert_eq!(
                sqlstate(
                    try_connect(&on(port, dsn)),
                    &format!("{whose} password on bob's half-made server (from {from})")
                ),
                REJECTED,
                "bob's server must be up and refuse TCP logins until armed"
            );
        }
        // The next command undoes bob; nothing of him is left.
        assert_eq!(
            h.json(&["branch", "list"]).as_array().map(Vec::len),
            Some(1)
        );
    }

    h.crash_at("branch-boot:before-arm", &["branch", "reset", "alice"]);
    let port = h.recorded_port("alice").expect("alice's port");
    assert_eq!(
        sqlstate(
            try_connect(&on(port, &source_dsn)),
            "the source's password on alice's half-reset server"
        ),
        REJECTED
    );
    // Once started properly, alice takes her own password and only hers.
    let started = h.json(&["branch", "start", "alice"]);
    assert_eq!(started["status"], "running", "{started:#}");
    connect(&h.branch_dsn("alice"));
    assert_eq!(
        sqlstate(
            try_connect(&on(port_of(&started), &source_dsn)),
            "the source's password on the armed branch"
        ),
        "28P01"
    );
    h.assert_settled();
}
