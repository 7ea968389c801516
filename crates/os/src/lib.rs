//! Operating-system facts pgfork relies on: which user runs the servers and
//! how to recognise a process again after its pid may have been reused.

pub mod process;
pub mod user;

pub use process::ProcessId;
pub use user::{RunAs, UidRange, UserError};
