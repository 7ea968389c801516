//! Where pgfork keeps everything (home), what it remembers (meta.db) and how
//! it copies data directories (clone drivers, pool images).

pub mod beneath;
pub mod driver;
pub mod extents;
pub mod home;
pub mod hygiene;
pub mod image;
pub mod meta;
pub mod quota;
pub mod space;

pub use driver::{CloneError, Driver, Probe};
pub use home::Home;
pub use image::{FsKind, ImageError, PoolImage};
pub use meta::{Meta, MetaError};
