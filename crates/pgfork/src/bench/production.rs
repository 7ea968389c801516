//! A stand-in for production: a PostgreSQL cluster outside the pool, run
//! as the servers' OS user, removed when dropped. Used by the sources
//! benchmark to measure what pgfork copies from a real remote database.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use pgfork_engine::Engine;
use pgfork_pg::untrusted::session::{self, Endpoint};

/// A running cluster on 127.0.0.1 with a replication role, an application
/// role and its database `shop`.
pub struct Production {
    /// Its directory (data directory and socket inside).
    pub dir: PathBuf,
    /// TCP port.
    pub port: u16,
    bin: PathBuf,
    uid: u32,
    gid: u32,
}

/// Password of the roles it makes (a throwaway cluster on loopback).
pub const PASSWORD: &str = "bench-only-secret";

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

impl Production {
    /// initdb, replication allowed from loopback, started, roles made.
    pub fn start(engine: &Engine, name: &str) -> Result<Production> {
        let run_as = &engine.config().run_as;
        let dir = std::env::temp_dir().join(format!("pgfork-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::os::unix::fs::chown(&dir, Some(run_as.uid), Some(run_as.gid))?;
        let prod = Production {
            dir,
            port: free_port()?,
            bin: engine.config().bins.dir.clone(),
            uid: run_as.uid,
            gid: run_as.gid,
        };
        let data = prod.dir.join("data");
        prod.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
        )?;
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\n\
             max_wal_senders = 10\nshared_buffers = 256MB\nmax_wal_size = 2GB\n",
            prod.port,
            prod.dir.display()
        );
        append(&data.join("postgresql.conf"), &conf)?;
        append(
            &data.join("pg_hba.conf"),
            "host replication all 127.0.0.1/32 scram-sha-256\n",
        )?;
        prod.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                prod.dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        )?;
        let mut su = prod.superuser()?;
        for sql in [
            format!("CREATE ROLE replicator LOGIN REPLICATION PASSWORD '{PASSWORD}'"),
            format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"),
            "CREATE DATABASE shop OWNER app".to_string(),
        ] {
            su.batch_execute(&sql)?;
        }
        Ok(prod)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let out = Command::new(self.bin.join(tool))
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A URL for `user` (password included: a secret of this throwaway cluster).
    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}:{PASSWORD}@127.0.0.1:{}/shop", self.port)
    }

    /// Superuser over the unix socket.
    pub fn superuser(&self) -> Result<postgres::Client> {
        // The benchmark's own stand-in: nothing in it but what it loaded.
        let ep = Endpoint {
            socket_dir: self.dir.clone(),
            port: self.port,
        };
        session::superuser_in(&ep, "shop")
            .or_else(|_| session::superuser_in(&ep, "postgres"))
            .context("connect to the production stand-in")
    }

    /// The application role.
    pub fn app(&self) -> Result<postgres::Client> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("app")
            .password(PASSWORD)
            .dbname("shop")
            .connect(postgres::NoTls)
            .context("connect as app")
    }

    /// Path of a PostgreSQL program.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

fn append(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

impl Drop for Production {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
