//! Schema diff: read every object from the catalogs, compare, write SQL.
//!
//! (Being written: see the module plan in the crate docs.)
