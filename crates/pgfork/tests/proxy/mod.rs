//! Helpers for the policy proxy tests: a `pgfork proxy` child process on a
//! port of the test home, agents, and a checksum of a source's data.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, TestHome};

pub mod fingerprint;
pub mod raw;

/// A running `pgfork proxy`, killed on drop.
pub struct Proxy {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Proxy {
    /// Starts the proxy of `home` on the last port of its range.
    pub fn start(home: &TestHome, extra: &[&str]) -> Proxy {
        let port = home.ports.1;
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["proxy", "--listen", &listen];
        args.extend_from_slice(extra);
        let mut cmd = home.command(&args);
        if let Some(filter) = std::env::var_os("PGFORK_TEST_PROXY_LOG") {
            cmd.env("PGFORK_LOG", filter);
        }
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgfork proxy");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            first.contains("listening"),
            "pgfork proxy did not start: {first}"
        );
        // Keep draining stderr so the proxy never blocks on it (shown with
        // PGFORK_TEST_PROXY_LOG set to a log filter, e.g. `debug`).
        let show = std::env::var_os("PGFORK_TEST_PROXY_LOG").is_some();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if show {
                    eprintln!("proxy: {line}");
                }
            }
        });
        Proxy { child, port }
    }

    /// A libpq-style URL for `agent` with `secret`.
    pub fn url(&self, agent: &str, secret: &str, db: &str) -> String {
        format!("postgres://{agent}:{secret}@127.0.0.1:{}/{db}", self.port)
    }

    /// A connection through the proxy.
    pub fn connect(&self, agent: &str, secret: &str, db: &str) -> postgres::Client {
        common::connect(&self.url(agent, secret, db))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGTERM lets it end sessions and flush the audit log.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `agent create NAME --source SOURCE --policy POLICY EXTRA...`: the secret.
pub fn agent(home: &TestHome, name: &str, source: &str, policy: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "agent", "create", name, "--source", source, "--policy", policy,
    ];
    args.extend_from_slice(extra);
    let out = home.json(&args);
    assert_eq!(out["policy"], policy, "{out:#}");
    let secret = out["secret"].as_str().expect("secret").to_string();
    assert!(out["dsn"].as_str().expect("dsn").contains(&secret));
    secret
}

/// A checksum of every table's rows and of the schema of database `db` of
/// source `source` (read as superuser): what no policy but branch may change.
pub fn checksum(home: &TestHome, source: &str, db: &str) -> String {
    let mut su = home.source_superuser(source, db);
    let mut parts = vec![common::text(
        &mut su,
        "SELECT md5(string_agg(format('%s.%s:%s:%s', c.relnamespace::regnamespace, c.relname, c.relkind, \
           (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
              FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)), ';' ORDER BY 1))
           FROM pg_class c WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)",
    )];
    parts.extend(
        fingerprint::table_digests(&mut su)
            .into_iter()
            .map(|(_, digest)| digest),
    );
    parts.push(common::text(
        &mut su,
        "SELECT coalesce(string_agg(rolname, ',' ORDER BY rolname), '') FROM pg_roles",
    ));
    parts.join("|")
}

/// psql through the proxy: each statement on its own `-c`, errors go on.
/// Returns stdout and stderr.
pub fn psql(url: &str, statements: &[&str]) -> (String, String) {
    let mut cmd = Command::new("/usr/bin/psql");
    cmd.arg(url).arg("-X").arg("-v").arg("ON_ERROR_STOP=0");
    for s in statements {
        cmd.arg("-c").arg(s);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run psql");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The SQLSTATE of a failed statement (asserting it failed).
pub fn fails(client: &mut impl postgres::GenericClient, sql: &str) -> String {
    match client.batch_execute(sql) {
        Ok(()) => panic!("`{sql}` should have failed through the proxy"),
        Err(e) => sqlstate(&e),
    }
}

/// The SQLSTATE of an error (or what it was, if it has none).
pub fn sqlstate(e: &postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no code: {e}"))
}
