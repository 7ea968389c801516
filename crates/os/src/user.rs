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
