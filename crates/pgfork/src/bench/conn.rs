//! Connections as an application sees them: TCP, the application role,
//! SCRAM. Also the "first successful query" that every timing ends on.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where and as whom an application connects.
#[derive(Clone)]
pub struct AppConn {
    /// Host (loopback).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Role.
    pub user: String,
    /// Password (a secret: never in argv, only in the environment).
    pub password: String,
    /// Database.
    pub database: String,
}

impl std::fmt::Debug for AppConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "postgres://{}:********@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

impl AppConn {
    /// Parses a `postgres://user:password@host:port/db` URL.
    pub fn parse(url: &str) -> Result<AppConn> {
        let config: postgres::Config = url.parse().context("parse a connection string")?;
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            _ => bail!("connection string has no TCP host"),
        };
        Ok(AppConn {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().unwrap_or_default().to_string(),
            password: String::from_utf8_lossy(config.get_password().unwrap_or_default())
                .into_owned(),
            database: config.get_dbname().unwrap_or_default().to_string(),
        })
    }

    /// The same server and role, another database.
    pub fn with_database(&self, database: &str) -> AppConn {
        AppConn {
            database: database.to_string(),
            ..self.clone()
        }
    }

    fn config(&self) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.database)
            .application_name("pgfork-bench")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Opens a connection.
    pub fn connect(&self) -> Result<postgres::Client> {
        self.config()
            .connect(postgres::NoTls)
            .with_context(|| format!("connect to {self:?}"))
    }

    /// Points a libpq program (pgbench, pg_dump, pg_restore) at this
    /// database through the environment, so the password stays out of `ps`.
    pub fn apply_env(&self, cmd: &mut Command) {
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", &self.database)
            .env("PGAPPNAME", "pgfork-bench")
            .env("PGSSLMODE", "disable")
            .env_remove("PGSERVICE")
            .env_remove("PGSERVICEFILE")
            .env_remove("PGPASSFILE");
    }
}

/// Opens a new connection and runs `SELECT 1`, retrying until it answers
/// or `patience` runs out: the end of every "to first successful query".
/// A retry is unexpected (commands return only once a server is ready), so
/// the count of failed attempts is returned to be reported.
pub fn first_query(conn: &AppConn, patience: Duration) -> Result<u32> {
    let deadline = Instant::now() + patience;
    let mut failures = 0;
    loop {
        let attempt = conn.connect().and_then(|mut client| {
            client
                .simple_query("SELECT 1")
                .context("SELECT 1")
                .map(|_| ())
        });
        match attempt {
            Ok(()) => return Ok(failures),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("no answer within {patience:?}")));
            }
            Err(_) => {
                failures += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// How long to keep retrying a first query.
pub const PATIENCE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_branch_urls_and_hides_the_password() {
        let c = AppConn::parse("postgres://shop:s3cret@127.0.0.1:15433/shop").unwrap();
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.user.as_str(),
                c.database.as_str()
            ),
            ("127.0.0.1", 15433, "shop", "shop")
        );
        assert_eq!(c.password, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.with_database("x").database, "x");
    }
}
