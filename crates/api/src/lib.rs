//! pgfork for programs and agents: the HTTP API (JSON, bearer token,
//! OpenAPI document), the MCP server (stdio and streamable HTTP),
//! Prometheus metrics, the web dashboard, and the reaper that `pgfork serve`
//! runs.
//!
//! The binary only parses flags and calls [`serve`] or [`mcp_stdio`].

// The OpenAPI document is one json! literal, deeper than the default.
#![recursion_limit = "256"]

mod activity;
mod audit;
mod auth;
mod body;
pub mod dashboard;
pub mod error;
mod mcp;
pub mod metrics;
pub mod notify;
pub mod openapi;
mod query;
mod reaper;
pub mod routes;
mod server;
mod state;

pub use mcp::PgforkMcp;
pub use reaper::ReaperOptions;
pub use server::{ServeError, ServeOptions, app, mcp_stdio, serve};
pub use state::Shared;
