//! What a branch changed, and applying it back.
//!
//! - [`schema`]: every schema object of a database read from its catalogs,
//!   two such readings compared, and the SQL that turns one into the other,
//!   ordered by dependencies.
//! - [`data`]: rows inserted, updated and deleted, found by reading only
//!   the pages whose blocks the branch no longer shares with its base.

pub mod data;
mod error;
pub mod schema;

pub use error::DiffError;
