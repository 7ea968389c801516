//! Finding the PostgreSQL binaries on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::PgError;

/// A PostgreSQL version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PgVersion {
    /// Major version (15 for 15.4).
    pub major: u32,
    /// Minor version (4 for 15.4).
    pub minor: u32,
}

impl std::fmt::Display for PgVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl PgVersion {
    /// Parses `postgres (PostgreSQL) 15.4 (Debian 15.4-1)` or `16beta1`.
    pub fn parse_banner(banner: &str) -> Option<PgVersion> {
        let word = banner
            .split_whitespace()
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
        let digits: Vec<u32> = word
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .take(2)
            .map(|s| s.parse().unwrap_or(0))
            .collect();
        Some(PgVersion {
            major: *digits.first()?,
            minor: digits.get(1).copied().unwrap_or(0),
        })
    }
}

/// The directory holding `postgres`, `initdb` and friends, and their version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgBinaries {
    /// The bin directory.
    pub dir: PathBuf,
    /// Their version.
    pub version: PgVersion,
}

const REQUIRED: [&str; 3] = ["postgres", "initdb", "pg_controldata"];

impl PgBinaries {
    /// `explicit`, else `pg_config --bindir`, else the newest
    /// `/usr/lib/postgresql/*/bin`, else `PATH`.
    pub fn find(explicit: Option<&Path>) -> Result<PgBinaries, PgError> {
        if let Some(dir) = explicit {
            return Self::at(dir).ok_or_else(|| PgError::NoBinaries {
                searched: dir.display().to_string(),
            });
        }
        let mut searched = Vec::new();
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
        searched.push("pg_config --bindir".to_string());
        for root in ["/usr/lib/postgresql", "/usr/pgsql"] {
            let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
                .collect();
            versions.sort_by_key(|v| std::cmp::Reverse(v.0));
            candidates.extend(versions.into_iter().map(|(_, p)| p));
            searched.push(format!("{root}/*/bin"));
        }
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path));
            searched.push("PATH".to_string());
        }
        candidates
            .iter()
            .find_map(|dir| Self::at(dir))
            .ok_or(PgError::NoBinaries {
                searched: searched.join(", "),
            })
    }

    /// The binaries in `dir`, if all pgfork needs are there and run.
    pub fn at(dir: &Path) -> Option<PgBinaries> {
        if !REQUIRED.iter().all(|b| dir.join(b).is_file()) {
            return None;
        }
        let out = Command::new(dir.join("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        let version = PgVersion::parse_banner(&String::from_utf8_lossy(&out.stdout))?;
        Some(PgBinaries {
            dir: dir.to_path_buf(),
            version,
        })
    }

    /// Path of one program.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether an optional program (pg_amcheck, pgbench...) is present.
    pub fn has(&self, name: &str) -> bool {
        self.tool(name).is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_parse() {
        let v = PgVersion::parse_banner("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)")
            .unwrap();
        assert_eq!(
            v,
            PgVersion {
                major: 15,
                minor: 18
            }
        );
        assert_eq!(
            PgVersion::parse_banner("postgres (PostgreSQL) 17beta2")
                .unwrap()
                .major,
            17
        );
        assert!(PgVersion::parse_banner("garbage").is_none());
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let err = PgBinaries::find(Some(Path::new("/nonexistent/pg/bin"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("/nonexistent/pg/bin"), "{msg}");
    }
}
