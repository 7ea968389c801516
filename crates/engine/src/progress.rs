//! How the engine tells a person what a long operation is doing.

/// Receives stages of long operations; the CLI draws them, programs ignore them.
pub trait Progress: Send + Sync {
    /// A new stage began ("sealing snapshot shop@3").
    fn stage(&self, message: &str);
    /// Something the user should know but that is not an error.
    fn warn(&self, message: &str);
    /// Progress of a long copy: `done` of `total` units of `what`.
    fn progress(&self, what: &str, done: u64, total: u64) {
        tracing::trace!(what, done, total);
    }
}

/// Progress that goes to `tracing` only.
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&self, message: &str) {
        tracing::debug!("{message}");
    }
    fn warn(&self, message: &str) {
        tracing::warn!("{message}");
    }
}
