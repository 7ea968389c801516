//! pgfork's policy proxy: one PostgreSQL endpoint where each agent
//! credential gets what its policy allows: `read-only` (the source, through
//! a role and transaction mode that cannot write, behind a parser that
//! refuses writes first), `dry-run` (the source, every transaction rolled
//! back) or `branch` (its own copy-on-write branch). Every statement is
//! written to a hash-chained audit log.
//!
//! The binary runs it with [`run`], alone (`pgfork proxy`) or inside
//! `pgfork serve`.

pub mod audit;
pub mod classify;
pub mod login;
pub mod parser;
pub mod policy;
pub mod scram;
pub mod server;
pub mod session;
pub mod shape;
pub mod upstream;
pub mod wire;

pub use server::{ProxyError, ProxyOptions, run};
