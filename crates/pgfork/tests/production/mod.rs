//! A PostgreSQL cluster standing in for production, outside any pool:
//! the remote that sources are copied from in the tests.

#![allow(dead_code)]

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::common::*;

/// Personal data that masking must never let through.
pub const PEOPLE: i64 = 300;

/// A PostgreSQL cluster standing in for production: outside any pool, on
/// its own port, with a replication role, an application role that owns
/// database `shop`, pgbench tables and a table of fake personal data.
pub struct Production {
    pub dir: PathBuf,
    pub port: u16,
}

pub fn postgres_uid() -> (u32, u32) {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres uid");
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .expect("id");
    let gid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres gid");
    (uid, gid)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Production {
    pub fn start(name: &str) -> Production {
        let dir = PathBuf::from(format!(
            "/var/tmp/pgfork-prod-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("prod dir");
        let (uid, gid) = postgres_uid();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown prod dir");
        let prod = Production {
            dir,
            port: free_port(),
        };
        prod.as_postgres(
            pg_tool("initdb").as_os_str(),
            &[
                "-D",
                prod.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
        );
        let conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 10\nfsync = off\n",
            prod.port,
            prod.dir.display()
        );
        let mut pg_conf = fs::OpenOptions::new()
            .append(true)
            .open(prod.data().join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut pg_conf, conf.as_bytes()).unwrap();
        let mut hba = fs::OpenOptions::new()
            .append(true)
            .open(prod.data().join("pg_hba.conf"))
            .unwrap();
        std::io::Write::write_all(
            &mut hba,
            b"host replication all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        prod.as_postgres(
            pg_tool("pg_ctl").as_os_str(),
            &[
                "-D",
                prod.data().to_str().unwrap(),
                "-l",
                prod.dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        let mut su = prod.superuser("postgres");
        exec(
            &mut su,
            "CREATE ROLE replicator LOGIN REPLICATION PASSWORD 'rep-secret-pw'",
        );
        exec(&mut su, "CREATE ROLE app LOGIN PASSWORD 'app-secret-pw'");
        exec(&mut su, "CREATE DATABASE shop OWNER app");
        pgbench_init(&prod.url("app", "app-secret-pw"), 1);
        let mut app = connect(&prod.url("app", "app-secret-pw"));
        exec(
            &mut app,
            "CREATE TABLE people (id int PRIMARY KEY, email text UNIQUE, name text, phone text)",
        );
        exec(
            &mut app,
            &format!(
                "INSERT INTO people SELECT g, 'person' || g || '@corp-example.com', 'Realname Surname' || g, \
                 '+44 20 7946 ' || lpad(g::text, 4, '0') FROM generate_series(1, {PEOPLE}) g"
            ),
        );
        exec(
            &mut app,
            "CREATE TABLE orders (id serial PRIMARY KEY, email text, amount int)",
        );
        exec(
            &mut app,
            &format!(
                "INSERT INTO orders (email, amount) SELECT 'person' || (g % {PEOPLE} + 1) || '@corp-example.com', g \
                 FROM generate_series(1, 2000) g"
            ),
        );
        exec(&mut app, "ANALYZE people, orders");
        prod
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn as_postgres(&self, program: &std::ffi::OsStr, args: &[&str]) {
        let (uid, gid) = postgres_uid();
        let out = Command::new(program)
            .args(args)
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("run as postgres");
        assert!(
            out.status.success(),
            "{:?} {args:?}: {}",
            program,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/shop", self.port)
    }

    pub fn superuser(&self, db: &str) -> postgres::Client {
        superuser(&self.dir, self.port, db)
    }

    pub fn app(&self) -> postgres::Client {
        connect(&self.url("app", "app-secret-pw"))
    }

    /// pgbench writing to production until the child is killed.
    pub fn pgbench_load(&self, seconds: u32) -> Child {
        Command::new(pg_tool("pgbench"))
            .args([
                "-n",
                "-c",
                "4",
                "-T",
                &seconds.to_string(),
                &self.url("app", "app-secret-pw"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbench")
    }
}

impl Drop for Production {
    fn drop(&mut self) {
        let (uid, gid) = postgres_uid();
        let _ = Command::new(pg_tool("pg_ctl"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
