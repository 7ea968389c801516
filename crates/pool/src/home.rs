//! The home directory and the fixed layout under it.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the default home.
pub const HOME_ENV: &str = "PGFORK_HOME";

/// Mode of the home and of the directories that servers, running as another
/// OS user, must pass through to reach their data and sockets.
pub const TRAVERSE_DIR: u32 = 0o711;
/// Mode of directories only pgfork itself reads.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of every file pgfork keeps in the home.
pub const PRIVATE_FILE: u32 = 0o600;

/// The directory holding meta.db, the pool, logs and sockets.
///
/// Layout, with modes (see [`crate::hygiene`] for why and how they are
/// checked):
/// ```text
/// HOME/                     0711  owned by the user running pgfork
/// HOME/meta.db              0600  metadata (SQLite; also -wal, -shm)
/// HOME/pool.img             0600  optional pool image, loop-mounted on HOME/pool
/// HOME/tick.lock            0600  held while `pgfork tick` runs
/// HOME/pool/                0711  the pool (and its directories below, except dumps)
/// HOME/pool/sources/NAME          source data directories (0700, server user)
/// HOME/pool/snapshots/ID          sealed, immutable snapshots
/// HOME/pool/branches/NAME         branch data directories
/// HOME/pool/staging/NAME          a logical source's next import
/// HOME/pool/dumps/NAME      0700  dumps in transit (pg_dump runs as pgfork's user)
/// HOME/pool/views/KEY             short-lived readable clones of snapshots
/// HOME/secrets/NAME.pgpass  0600  a standby's replication password (dir 0700,
///                                 0711 when servers run as another OS user)
/// HOME/logs/                0700  server logs (files 0600)
/// HOME/run/                 0711  unix socket directories (0700, server user)
/// ```
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `explicit`, else `$PGFORK_HOME`, else `/var/lib/pgfork` as root, else
    /// `~/.local/share/pgfork`.
    pub fn resolve(explicit: Option<&Path>) -> Home {
        let root = explicit
            .map(Path::to_path_buf)
            .or_else(|| {
                std::env::var_os(HOME_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| {
                if pgfork_os::RunAs::we_are_root() {
                    PathBuf::from("/var/lib/pgfork")
                } else {
                    let base = std::env::var_os("XDG_DATA_HOME")
                        .map(PathBuf::from)
                        .or_else(|| {
                            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share"))
                        })
                        .unwrap_or_else(|| PathBuf::from("."));
                    base.join("pgfork")
                }
            });
        let root = std::path::absolute(&root).unwrap_or(root);
        Home { root }
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The metadata database.
    pub fn meta_db(&self) -> PathBuf {
        self.root.join("meta.db")
    }
    /// The pool image file, when the pool is a loop-mounted image.
    pub fn image(&self) -> PathBuf {
        self.root.join("pool.img")
    }
    /// The pool: the filesystem that holds every data directory.
    pub fn pool(&self) -> PathBuf {
        self.root.join("pool")
    }
    /// Directory of source data directories.
    pub fn sources(&self) -> PathBuf {
        self.pool().join("sources")
    }
    /// Directory of snapshots.
    pub fn snapshots(&self) -> PathBuf {
        self.pool().join("snapshots")
    }
    /// Directory of branch data directories.
    pub fn branches(&self) -> PathBuf {
        self.pool().join("branches")
    }
    /// Imports and refreshes in progress of logical sources.
    pub fn staging(&self) -> PathBuf {
        self.pool().join("staging")
    }
    /// Short-lived clones of snapshots started to be read (by `diff`).
    pub fn views(&self) -> PathBuf {
        self.pool().join("views")
    }
    /// Dumps in transit during a logical import.
    pub fn dumps(&self) -> PathBuf {
        self.pool().join("dumps")
    }
    /// Credentials a standby needs to reconnect on its own.
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }
    /// Server logs.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Unix socket directories.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    /// The lock `pgfork tick` holds while it runs.
    pub fn tick_lock(&self) -> PathBuf {
        self.root.join("tick.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_home_wins_and_is_absolute() {
        let home = Home::resolve(Some(Path::new("rel/home")));
        assert!(home.root().is_absolute());
        assert!(home.root().ends_with("rel/home"));
        assert_eq!(home.branches(), home.root().join("pool/branches"));
    }
}
