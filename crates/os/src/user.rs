//! The OS user that owns data directories and runs the PostgreSQL servers.

use nix::unistd::{Gid, Uid, User, geteuid};
use serde::{Deserialize, Serialize};

/// Errors resolving the OS user that runs the servers.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The named user does not exist on this machine.
    #[error(
        "OS user '{0}' does not exist; PostgreSQL refuses to run as root, so pgfork runs it as \
         an unprivileged user: create one (useradd --system {0}) or pass --os-user NAME"
    )]
    Missing(String),
    /// The named user is root.
    #[error(
        "OS user '{0}' is root; PostgreSQL refuses to run as root: pass --os-user with an unprivileged user"
    )]
    Root(String),
    /// The password database could not be read.
    #[error("could not look up OS user '{name}': {source}")]
    Lookup { name: String, source: nix::Error },
}

/// The unprivileged user that owns data directories and runs servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl RunAs {
    /// As root: the named user (PostgreSQL refuses root). Otherwise the
    /// calling user, whatever `name` says, since only root can switch users.
    pub fn resolve(name: &str) -> Result<RunAs, UserError> {
        if !Self::we_are_root() {
            return Ok(Self::current());
        }
        let user = User::from_name(name)
            .map_err(|source| UserError::Lookup {
                name: name.into(),
                source,
            })?
            .ok_or_else(|| UserError::Missing(name.into()))?;
        if user.uid.is_root() {
            return Err(UserError::Root(name.into()));
        }
        Ok(RunAs {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// A numeric user with no passwd entry, whose group id is its user id:
    /// how a sandboxed server runs (PostgreSQL only needs to own its data
    /// directory).
    pub fn sandbox(uid: u32) -> RunAs {
        RunAs {
            name: format!("uid {uid}"),
            uid,
            gid: uid,
        }
    }

    /// The user this process runs as.
    pub fn current() -> RunAs {
        let uid = geteuid();
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        RunAs {
            name,
            uid: uid.as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    /// Whether this process runs as root, and so must switch users to run servers.
    pub fn we_are_root() -> bool {
        geteuid().is_root()
    }

    /// Whether spawned servers need a user switch (we are root, they are not).
    pub fn needs_switch(&self) -> bool {
        Self::we_are_root() && self.uid != 0
    }

    /// Gives `path` to this user (no-op unless we are root).
    pub fn chown(&self, path: &std::path::Path) -> std::io::Result<()> {
        if !Self::we_are_root() {
            return Ok(());
        }
        nix::unistd::chown(
            path,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )
        .map_err(std::io::Error::from)
    }
}

/// OS user ids reserved for pgfork's sandboxed servers: the first for
/// short-lived private servers (seals of branch snapshots, the views `diff`
/// reads), each of the others for at most one branch at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidRange {
    /// First uid, inclusive.
    pub first: u32,
    /// Last uid, inclusive.
    pub last: u32,
}

/// Where default ranges are placed: above the uids and subordinate-uid
/// ranges systems hand out, below 2^31 (15,000 x 16,384 fits).
const DEFAULT_BASE: u32 = 1_900_000_000;
/// Uids per default range, and how many such ranges there are.
/// 16,383 branches per home, and 15,000 slots: two homes on one machine
/// share a range once in 15,000.
const DEFAULT_SPAN: u32 = 16_384;
const DEFAULT_SLOTS: u32 = 15_000;

impl UidRange {
    /// The default range of a home: one of 15,000 slots of 16,384 uids from
    /// 1,900,000,000, picked by a hash of its path, so that two homes on
    /// one machine almost never share uids (`init --branch-uids` picks
    /// another).
    pub fn default_for(home: &std::path::Path) -> UidRange {
        // FNV-1a: stable across builds and platforms, unlike DefaultHasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in home.as_os_str().as_encoded_bytes() {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let first = DEFAULT_BASE + (hash % u64::from(DEFAULT_SLOTS)) as u32 * DEFAULT_SPAN;
        UidRange {
            first,
            last: first + DEFAULT_SPAN - 1,
        }
    }

    /// Parses `FIRST-LAST`: at least 2 uids, all above 65535 (ordinary
    /// and system users live below) and below 2^31.
    pub fn parse(text: &str) -> Result<UidRange, String> {
        let bad = || format!("uid range '{text}' is not FIRST-LAST (e.g. 2000000000-2000065535)");
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let first: u32 = a.trim().parse().map_err(|_| bad())?;
        let last: u32 = b.trim().parse().map_err(|_| bad())?;
        if first <= 65_535 || last >= 1 << 31 || last <= first {
            return Err(format!(
                "uid range '{text}' must hold at least 2 uids between 65536 and 2147483647"
            ));
        }
        Ok(UidRange { first, last })
    }

    /// The uid of short-lived private servers.
    pub fn scratch(&self) -> u32 {
        self.first
    }

    /// The lowest branch uid not in `taken`.
    pub fn free(&self, taken: &std::collections::BTreeSet<u32>) -> Option<u32> {
        (self.first + 1..=self.last).find(|u| !taken.contains(u))
    }

    /// Whether `uid` is one of this range's.
    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ranges_are_stable_and_in_bounds() {
        let a = UidRange::default_for(std::path::Path::new("/var/lib/pgfork"));
        assert_eq!(
            a,
            UidRange::default_for(std::path::Path::new("/var/lib/pgfork"))
        );
        assert_ne!(
            a,
            UidRange::default_for(std::path::Path::new("/srv/pgfork"))
        );
        assert!(a.first > 65_535 && a.last < 1 << 31 && a.last - a.first == DEFAULT_SPAN - 1);
        assert_eq!(UidRange::parse(&a.to_string()), Ok(a));
    }

    #[test]
    fn ranges_are_checked_and_allocated_from_the_bottom() {
        assert!(UidRange::parse("1000-2000").is_err());
        assert!(UidRange::parse("70000-70000").is_err());
        assert!(UidRange::parse("70000").is_err());
        let r = UidRange::parse("70000-70002").unwrap();
        assert_eq!(r.scratch(), 70000);
        let mut taken = std::collections::BTreeSet::new();
        assert_eq!(r.free(&taken), Some(70001));
        taken.insert(70001);
        assert_eq!(r.free(&taken), Some(70002));
        taken.insert(70002);
        assert_eq!(r.free(&taken), None);
    }
}
