//! The sessions pgfork opens to its servers, by what each may touch.

use std::path::PathBuf;
use std::time::Duration;

use crate::SUPERUSER;

/// Settings pinned at the start of every session pgfork opens, over
/// whatever the role or database says (`ALTER ROLE ... SET`, which the
/// agent can do for its own role): startup options outrank both.
///
/// `search_path` decides which functions and operators exist for our
/// queries; the others decide how values print, and so whether two sides
/// of a diff compare equal and whether a patch means the same on the
/// source (`DateStyle` with DMY would swap days and months).
pub const PINNED: &[(&str, &str)] = &[
    ("search_path", "pg_catalog,pg_temp"),
    // An error rather than silently filtered rows, should a policy apply.
    ("row_security", "off"),
    ("DateStyle", "ISO,MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("standard_conforming_strings", "on"),
    ("lc_monetary", "C"),
    ("lc_numeric", "C"),
    ("xmloption", "content"),
    ("local_preload_libraries", ""),
    ("statement_timeout", "0"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
];

/// Whether a content session may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every transaction is read-only (diff, describe).
    ReadOnly,
    /// Writes allowed (promote applying to its source).
    ReadWrite,
}

/// A server's unix socket.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Socket directory.
    pub socket_dir: PathBuf,
    /// Port (names the socket file).
    pub port: u16,
}

/// The `options` startup parameter that pins [`PINNED`] (and read-only
/// transactions for [`Access::ReadOnly`]), for sessions opened elsewhere
/// from a DSN.
pub fn pinned_options(access: Access) -> String {
    let mut parts: Vec<String> = PINNED
        .iter()
        .map(|(name, value)| format!("-c {name}={}", escape(value)))
        .collect();
    if access == Access::ReadOnly {
        parts.push("-c default_transaction_read_only=on".into());
    }
    parts.join(" ")
}

/// Backslash-escapes what the server would split the options string on.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(' ', "\\ ")
}

fn config(ep: &Endpoint, database: &str, user: &str, access: Access) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .host_path(&ep.socket_dir)
        .port(ep.port)
        .user(user)
        .dbname(database)
        .application_name("pgfork")
        .options(&pinned_options(access))
        .connect_timeout(Duration::from_secs(10));
    config
}

/// The superuser, in the maintenance database `postgres`, which
/// application roles cannot connect to (sources revoke it) and so hold no
/// objects of an agent's: for cluster-wide work only (roles, CHECKPOINT,
/// backups, `pg_stat_activity`), never for reading application data.
pub fn maintenance(ep: &Endpoint) -> Result<postgres::Client, postgres::Error> {
    config(ep, "postgres", SUPERUSER, Access::ReadWrite).connect(postgres::NoTls)
}

/// The application role `role` in `database`: the role an agent holds, so
/// that any code of the agent's that runs while pgfork reads or writes
/// content runs with the agent's rights and no more. Over the unix socket,
/// which only pgfork (and the server's own OS user) can enter.
pub fn as_role(
    ep: &Endpoint,
    database: &str,
    role: &str,
    access: Access,
) -> Result<postgres::Client, postgres::Error> {
    config(ep, database, role, access).connect(postgres::NoTls)
}

/// The application role `role` in `database` with its own settings, as a
/// client of the agent's would connect: for running the role's own SQL as
/// it would run in production (a rehearsed migration). Nothing but the
/// role's rights is at stake; pgfork's own queries in such a session name
/// every function and operator in `pg_catalog`.
pub fn as_role_unpinned(
    ep: &Endpoint,
    database: &str,
    role: &str,
) -> Result<postgres::Client, postgres::Error> {
    let mut config = postgres::Config::new();
    config
        .host_path(&ep.socket_dir)
        .port(ep.port)
        .user(role)
        .dbname(database)
        .application_name("pgfork rehearse")
        .connect_timeout(Duration::from_secs(10));
    config.connect(postgres::NoTls)
}

/// The superuser in an application database. Only for work that cannot be
/// done otherwise, on content whose code has been checked with
/// [`super::hazards::superuser_hazards`] first (or that pgfork has just
/// made itself).
pub fn superuser_in(ep: &Endpoint, database: &str) -> Result<postgres::Client, postgres::Error> {
    config(ep, database, SUPERUSER, Access::ReadWrite).connect(postgres::NoTls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_pin_the_search_path_and_escape() {
        let text = pinned_options(Access::ReadOnly);
        assert!(text.contains("-c search_path=pg_catalog,pg_temp"), "{text}");
        assert!(text.contains("-c default_transaction_read_only=on"));
        assert!(text.contains("-c local_preload_libraries= "), "{text}");
        assert!(!pinned_options(Access::ReadWrite).contains("read_only"));
        assert_eq!(escape("a b\\c"), "a\\ b\\\\c");
    }
}
