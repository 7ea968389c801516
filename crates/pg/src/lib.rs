//! Driving unpatched PostgreSQL binaries: finding them, `initdb`, writing
//! the settings pgfork owns, starting a postmaster and waiting for it by
//! connecting, stopping it, roles and passwords, online backups.

pub mod backup;
pub mod bin;
pub mod conf;
pub mod control;
mod error;
pub mod initdb;
pub mod remote;
pub mod server;
pub mod sql;
pub mod transfer;
pub mod untrusted;

pub use bin::{PgBinaries, PgVersion};
pub use error::{PgError, describe};
pub use server::{Postmaster, StartSpec, StopMode};

/// The bootstrap superuser of every cluster pgfork makes. pgfork alone uses
/// it, over a unix socket only the server's OS user (and root) can reach.
pub const SUPERUSER: &str = "postgres";
