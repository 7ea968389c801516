//! Crash injection for tests: `PGFORK_FAILPOINT=NAME` makes the process
//! kill itself with SIGKILL when it reaches failpoint NAME, exactly as if
//! it had been killed there. Unset, a failpoint costs one env lookup.

/// Environment variable naming the failpoint to crash at.
pub const ENV: &str = "PGFORK_FAILPOINT";

/// Crashes here if the environment asks for it.
pub fn hit(name: &str) {
    if std::env::var(ENV).is_ok_and(|v| v == name) {
        // SAFETY: raising a signal on ourselves has no memory effects.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}
