//! Masking: rules that say how each personal column of a source is
//! transformed before any branch sees it, and the SQL that applies them.
//!
//! Rules live in a TOML file, one table per `schema.table`, one key per
//! column:
//!
//! ```toml
//! [public.customers]
//! email = "email"
//! name = "name"
//! phone = "phone"
//! ssn = "hash"
//! notes = "null"
//! country = "const:XX"
//! birth_date = "sql:date_trunc('year', birth_date)::date"
//! id = "keep"
//! ```
//!
//! Transforms are deterministic and keyed by a per-source secret: the same
//! input gives the same output everywhere, so joins on masked keys match.

mod personal;
mod plan;
mod rules;
mod transform;

pub use personal::looks_personal;
pub use plan::{CATALOG_QUERY, ColumnInfo, MaskPlan, plan};
pub use rules::{ColumnRule, MaskError, MaskRules};
pub use transform::Transform;
