//! Process identity that survives pid reuse: a pid plus its start time.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process as the kernel knows it: its pid and the clock tick it started at.
///
/// Two processes never share both, so a stored `ProcessId` can be checked for
/// liveness later without mistaking a newer process that got the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// Kernel process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

/// What `/proc/PID/stat` says about a process.
struct Stat {
    state: char,
    start_ticks: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain
    // spaces or parentheses, so split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), start time is field 22: 18 fields further.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_ticks })
}

impl ProcessId {
    /// The calling process.
    pub fn current() -> ProcessId {
        let pid = std::process::id() as i32;
        ProcessId::of(pid).expect("/proc/self/stat is readable")
    }

    /// The calling thread, as the kernel names it (its tid, which is the
    /// pid for a process's main thread). Operations recorded in meta.db are
    /// owned by threads: in `pgfork serve` many requests run in one process,
    /// each on its own thread, and one must see another's operation as
    /// busy, not as a nested step of its own. `/proc/TID/stat` works for any
    /// thread, so [`ProcessId::is_alive`] tells when that thread is gone.
    pub fn current_thread() -> ProcessId {
        let tid = nix::unistd::gettid().as_raw();
        ProcessId::of(tid).expect("/proc/TID/stat of the calling thread is readable")
    }

    /// The process that has `pid` now, if any.
    pub fn of(pid: i32) -> Option<ProcessId> {
        read_stat(pid).map(|s| ProcessId {
            pid,
            start_ticks: s.start_ticks,
        })
    }

    /// Whether this very process still runs (zombies count as exited).
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some(s) => s.start_ticks == self.start_ticks && s.state != 'Z' && s.state != 'X',
            None => false,
        }
    }

    /// Sends `signal` to the process if it is still this process.
    pub fn signal(&self, signal: Signal) -> bool {
        self.is_alive() && kill(Pid::from_raw(self.pid), signal).is_ok()
    }

    /// Sends `signal` to the process group this process leads (its children
    /// included), if the leader is still this process or already gone.
    pub fn signal_group(&self, signal: Signal) {
        if self.pid > 1 {
            let _ = killpg(Pid::from_raw(self.pid), signal);
        }
    }

    /// Waits until the process has exited, polling; false on timeout.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            // A child of ours must be reaped or it stays a zombie; reaping a
            // pid that is not our child just fails, which is fine.
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(self.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            if !self.is_alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_stable() {
        let me = ProcessId::current();
        assert!(me.is_alive());
        assert_eq!(ProcessId::of(me.pid), Some(me));
        let other = ProcessId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(
            !other.is_alive(),
            "a different start time is a different process"
        );
    }

    #[test]
    fn threads_have_their_own_identity() {
        let main = ProcessId::current_thread();
        assert!(main.is_alive());
        let other = std::thread::spawn(ProcessId::current_thread)
            .join()
            .unwrap();
        assert_ne!(other, main);
        assert!(!other.is_alive(), "an exited thread is gone");
    }

    #[test]
    fn exited_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId::of(child.id() as i32);
        child.wait().unwrap();
        if let Some(id) = id {
            assert!(!id.is_alive());
        }
    }
}
