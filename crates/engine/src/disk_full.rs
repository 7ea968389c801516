//! A full pool (or home) during an operation that writes to it: whatever
//! layer noticed (a clone, PostgreSQL, pg_dump, SQLite), the user gets one
//! error that says the space ran out, about how much the operation needs,
//! what is still serving, and what to do.

use std::path::Path;

use pgfork_pg::PgError;
use pgfork_pool::CloneError;
#[cfg(test)]
use pgfork_pool::MetaError;
use pgfork_pool::space::human_bytes;

use crate::{Engine, EngineError, Result};

/// Room an operation needs besides its data: initdb's catalogs, a few WAL
/// segments and a checkpoint's worth of writes.
pub(crate) const CLUSTER_OVERHEAD: u64 = 96 << 20;

/// The least a new cluster takes (initdb's catalogs and a WAL segment):
/// what checks up front count, so they never refuse what would fit.
pub(crate) const CLUSTER_MIN: u64 = 48 << 20;

/// Where the space ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The pool, which holds sources, snapshots and branches.
    Pool,
    /// The filesystem of the home, which holds meta.db and logs.
    Home,
}

/// What an operation that ran out of space tells the user.
#[derive(Debug)]
pub struct OutOfSpace {
    /// Where the space ran out.
    pub place: Place,
    /// What was being done ("importing source 'shop'").
    pub during: String,
    /// About how much the operation needs, when it can be told.
    pub needed: Option<u64>,
    /// Bytes free afterwards (what was written has been removed).
    pub available: u64,
    /// What still serves, unchanged ("source 'shop' still serves its
    /// previous import").
    pub kept: String,
}

impl std::fmt::Display for OutOfSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match self.place {
            Place::Pool => "the pool",
            Place::Home => "the home's filesystem (meta.db, logs)",
        };
        write!(f, "{place} filled up while {}: ", self.during)?;
        if let Some(needed) = self.needed {
            write!(f, "it needs about {}, ", human_bytes(needed))?;
        }
        write!(
            f,
            "{} is free (anything written was removed). {}. ",
            human_bytes(self.available),
            self.kept
        )?;
        match self.place {
            Place::Pool => write!(
                f,
                "Free space in the pool (pgfork gc, pgfork branch delete, pgfork snapshot delete) \
                 or grow it, then retry"
            ),
            Place::Home => write!(f, "Free space on that filesystem, then retry"),
        }
    }
}

/// Text by which PostgreSQL's programs (pg_dump, pg_restore, initdb) and a
/// server's start-up log report a full disk or quota.
const FULL_TEXTS: [&str; 3] = [
    "No space left on device",
    "Disk quota exceeded",
    "could not extend file",
];

fn text_says_full(text: &str) -> bool {
    FULL_TEXTS.iter().any(|t| text.contains(t))
}

impl EngineError {
    /// Whether this failure means a filesystem ran out of space (or quota),
    /// whichever layer reported it.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            EngineError::NoSpace(_) | EngineError::DiskFloor { .. } => true,
            EngineError::Clone(e) => match e {
                CloneError::NoSpace { .. } => true,
                other => other.is_no_space() || text_says_full(&other.to_string()),
            },
            // By its SQLSTATE only: a message is content the server relays,
            // which a branch's own code can write (RAISE in a trigger).
            EngineError::Pg(PgError::Sql { source, .. }) => {
                source.code() == Some(&postgres::error::SqlState::DISK_FULL)
            }
            EngineError::Pg(PgError::Io { source, .. }) | EngineError::Io { source, .. } => {
                pgfork_pool::space::is_full(source)
            }
            EngineError::Pg(e) => text_says_full(&e.to_string()),
            EngineError::Meta(e) => e.is_disk_full(),
            _ => false,
        }
    }

    /// Where the space ran out, judged by the layer that failed: meta.db
    /// lives in the home, everything else in the pool.
    fn place(&self) -> Place {
        match self {
            EngineError::Meta(_) => Place::Home,
            _ => Place::Pool,
        }
    }
}

/// What an operation says if it runs out of space: built only then.
pub(crate) struct Full {
    /// What was being done.
    pub during: String,
    /// About how much it needs, when that can be told.
    pub needed: Option<u64>,
    /// What still serves.
    pub kept: String,
}

impl Full {
    fn error(self, place: Place, available: u64) -> EngineError {
        EngineError::NoSpace(Box::new(OutOfSpace {
            place,
            during: self.during,
            needed: self.needed,
            available,
            kept: self.kept,
        }))
    }
}

impl Engine {
    /// Turns an out-of-space failure of `result` into [`EngineError::NoSpace`]
    /// naming the operation, the space it needs and what still serves; any
    /// other result passes through. Call it after the partial work has been
    /// removed, so that the free space reported is what the user has.
    pub(crate) fn when_full<T>(&self, result: Result<T>, full: impl FnOnce() -> Full) -> Result<T> {
        match result {
            Err(e) if e.is_out_of_space() && !matches!(e, EngineError::NoSpace(_)) => {
                let place = e.place();
                let at = match place {
                    Place::Pool => self.home.pool(),
                    Place::Home => self.home.root().to_path_buf(),
                };
                let available = pgfork_pool::space::space(&at)
                    .map(|s| s.available)
                    .unwrap_or(0);
                tracing::debug!(error = %e, "out of space");
                Err(full().error(place, available))
            }
            other => other,
        }
    }
}

impl Engine {
    /// Refuses up front, before anything is written, an operation that
    /// needs at least `at_least` bytes of the pool when fewer are free: it
    /// would fill the pool that the sources and branches write to, and
    /// fail anyway. The message is the one a failure in flight gives.
    pub(crate) fn check_room(&self, at_least: u64, full: impl FnOnce() -> Full) -> Result<()> {
        let pool = self.home.pool();
        let available = pgfork_pool::space::space(&pool)
            .map_err(EngineError::io("statvfs", &pool))?
            .available;
        if available >= at_least {
            return Ok(());
        }
        let mut full = full();
        full.needed = Some(full.needed.unwrap_or(at_least).max(at_least));
        Err(full.error(Place::Pool, available))
    }
}

/// Bytes of the files under `dir` (apparent sizes; shared blocks counted
/// in full): an upper bound of what rewriting them can take.
pub(crate) fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_need_what_serves_and_what_to_do() {
        let e = OutOfSpace {
            place: Place::Pool,
            during: "importing source 'shop'".into(),
            needed: Some(3 << 30),
            available: 5 << 20,
            kept: "Source 'shop' was not made".into(),
        };
        let text = e.to_string();
        assert!(text.starts_with("the pool filled up while importing source 'shop'"));
        assert!(text.contains("needs about 3.0 GiB"), "{text}");
        assert!(text.contains("5.0 MiB is free (anything"), "{text}");
        assert!(text.contains("Source 'shop' was not made"), "{text}");
        assert!(text.contains("pgfork gc"), "{text}");
    }

    #[test]
    fn full_disks_are_recognised_in_every_layer() {
        let enospc = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(
            EngineError::Io {
                op: "write",
                path: "/x".into(),
                source: enospc()
            }
            .is_out_of_space()
        );
        assert!(
            EngineError::Pg(PgError::Command {
                program: "pg_restore".into(),
                detail: "could not write to file \"x\": No space left on device".into()
            })
            .is_out_of_space()
        );
        assert!(
            !EngineError::Pg(PgError::Command {
                program: "pg_restore".into(),
                detail: "role \"x\" does not exist".into()
            })
            .is_out_of_space()
        );
        let e = EngineError::Meta(MetaError::Io {
            path: "/home/meta.db".into(),
            source: enospc(),
        });
        assert!(e.is_out_of_space());
        assert_eq!(e.place(), Place::Home);
    }
}
