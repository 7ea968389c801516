//! Operating-system facts pgfork relies on: which user runs the servers,
//! how to recognise a process again after its pid may have been reused,
//! and the control groups that limit what a server may use.

pub mod cgroup;
pub mod mountinfo;
pub mod process;
pub mod user;

pub use process::ProcessId;
pub use user::{RunAs, UidRange, UserError};
