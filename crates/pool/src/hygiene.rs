//! The home is private: narrow modes, no symbolic link followed, nothing
//! that another user prepared or can change.
//!
//! pgfork (often as root) reads and writes the home by path. Whoever else
//! can write in the home, or in a directory above it, could plant a link
//! (`meta.db -> /etc/shadow`) or swap the whole home for one of theirs
//! between a check and a use. So a home is used only when it, the
//! directories above it and every entry pgfork uses in it can be changed by
//! nobody but the invoking user and root: once that holds, what was checked
//! stays as it was, and the checks need not be repeated at every open.
//!
//! Findings come in two kinds: [`Severity::Unsafe`] (someone else could
//! have changed the home: pgfork refuses it) and [`Severity::Loose`] (a
//! mode wider than needed, as older pgfork versions left them:
//! [`tighten`] narrows it, and `pgfork init` calls it).

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Home;
use crate::home::{PRIVATE_DIR, PRIVATE_FILE, TRAVERSE_DIR};

/// What an entry of the home must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

/// A path pgfork uses in the home, and the widest mode it may have.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where.
    pub path: PathBuf,
    /// Directory or file.
    pub kind: Kind,
    /// Permission bits beyond these are too wide.
    pub widest: u32,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Another user could have changed the home: pgfork refuses to use it.
    Unsafe,
    /// A mode wider than pgfork needs: `pgfork init` narrows it.
    Loose,
}

/// One problem with a home: what is wrong, and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The path concerned.
    pub path: PathBuf,
    /// How serious.
    pub severity: Severity,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Finding {
    fn unsafe_(path: &Path, message: String) -> Finding {
        Finding {
            path: path.to_path_buf(),
            severity: Severity::Unsafe,
            message,
        }
    }
}

/// Whether `uid` may own what pgfork uses: the invoking user, or root.
pub fn trusted(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// The entries pgfork uses directly in the home (not the home itself).
pub fn layout(home: &Home) -> Vec<Entry> {
    let dir = |path, widest| Entry {
        path,
        kind: Kind::Dir,
        widest,
    };
    let file = |path| Entry {
        path,
        kind: Kind::File,
        widest: PRIVATE_FILE,
    };
    vec![
        file(home.meta_db()),
        file(home.root().join("meta.db-wal")),
        file(home.root().join("meta.db-shm")),
        file(home.image()),
        file(home.tick_lock()),
        dir(home.pool(), TRAVERSE_DIR),
        dir(home.sources(), TRAVERSE_DIR),
        dir(home.snapshots(), TRAVERSE_DIR),
        dir(home.branches(), TRAVERSE_DIR),
        dir(home.staging(), TRAVERSE_DIR),
        dir(home.views(), TRAVERSE_DIR),
        dir(home.dumps(), PRIVATE_DIR),
        dir(home.run(), TRAVERSE_DIR),
        dir(home.logs(), PRIVATE_DIR),
        // 0711 when servers run as another OS user: a standby reads its
        // own passfile by name, and cannot list or add any.
        dir(home.secrets(), TRAVERSE_DIR),
    ]
}

/// Everything wrong with a home: the directories above it, the home, the
/// entries in it, and the files in its logs and secrets. A home that does
/// not exist yet has only its would-be parents checked.
pub fn audit(home: &Home) -> Vec<Finding> {
    let mut out = Vec::new();
    check_ancestors(home.root(), &mut out);
    out.extend(audit_layout(home));
    if out.iter().all(|f| f.severity != Severity::Unsafe) {
        for dir in [home.logs(), home.secrets()] {
            check_contents(&dir, &mut out);
        }
    }
    out
}

/// The checks every command makes before it opens a home: the home itself
/// and the entries pgfork uses in it (the directories above and the files
/// in logs are left to `init` and `doctor`, which take longer).
pub fn audit_layout(home: &Home) -> Vec<Finding> {
    let mut out = Vec::new();
    if check_root(home.root(), &mut out) {
        for entry in layout(home) {
            check_entry(&entry, &mut out);
        }
    }
    out
}

/// Narrows every mode in the home that is wider than its entry allows,
/// never through a link. For a home that [`audit`] found safe: then the
/// entries are the invoking user's or root's, and the files in secrets,
/// which may be the server user's, sit in a directory nobody else writes.
/// Returns what it changed, with the old and new modes.
pub fn tighten(home: &Home) -> io::Result<Vec<(PathBuf, u32, u32)>> {
    let mut entries = vec![Entry {
        path: home.root().to_path_buf(),
        kind: Kind::Dir,
        widest: TRAVERSE_DIR,
    }];
    entries.extend(layout(home));
    for dir in [home.logs(), home.secrets()] {
        entries.extend(files_in(&dir).into_iter().map(|path| Entry {
            path,
            kind: Kind::File,
            widest: PRIVATE_FILE,
        }));
    }
    let mut changed = Vec::new();
    for entry in entries {
        let Ok(meta) = fs::symlink_metadata(&entry.path) else {
            continue;
        };
        let mode = meta.mode() & 0o777;
        if !is_kind(&meta, entry.kind) || mode & !entry.widest == 0 {
            continue;
        }
        chmod_nofollow(&entry.path, mode & entry.widest)?;
        changed.push((entry.path, mode, mode & entry.widest));
    }
    Ok(changed)
}

/// Creates directory `path` (and missing parents) with `mode`, which
/// `create_dir_all` alone would leave to the umask.
pub fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir_all(path)?;
    chmod_nofollow(path, mode)
}

/// Sets the mode of `path` through a descriptor opened without following
/// a link, so that a link planted there changes nothing.
fn chmod_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

fn is_kind(meta: &Metadata, kind: Kind) -> bool {
    match kind {
        Kind::Dir => meta.file_type().is_dir(),
        Kind::File => meta.file_type().is_file(),
    }
}

fn owner_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| format!("{} (uid {uid})", u.name))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The `chown` argument that gives a path to the invoking user.
fn me() -> String {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten();
    let group = nix::unistd::Group::from_gid(gid).ok().flatten();
    match (user, group) {
        (Some(u), Some(g)) => format!("{}:{}", u.name, g.name),
        _ => format!("{uid}:{gid}"),
    }
}

fn link_target(path: &Path) -> String {
    fs::read_link(path)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The home itself; returns whether it exists and is safe to look into.
fn check_root(root: &Path, out: &mut Vec<Finding>) -> bool {
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
        Err(e) => {
            out.push(Finding::unsafe_(
                root,
                format!(
                    "cannot examine the home {}: {e}; run pgfork as its owner",
                    root.display()
                ),
            ));
            return false;
        }
    };
    let shown = root.display();
    if meta.file_type().is_symlink() {
        out.push(Finding::unsafe_(
            root,
            format!(
                "the home {shown} is a symbolic link to {}: pgfork follows no link in its home; \
                 pass the real directory (--home or PGFORK_HOME)",
                link_target(root)
            ),
        ));
        return false;
    }
    if !meta.is_dir() {
        out.push(Finding::unsafe_(
            root,
            format!("the home {shown} is not a directory: move it away, or choose another --home"),
        ));
        return false;
    }
    let mode = meta.mode() & 0o777;
    let foreign = !trusted(meta.uid());
    let writable = mode & 0o022 != 0;
    if foreign || writable {
        let what = match (foreign, writable) {
            (true, true) => format!(
                "is owned by {} and mode {mode:04o} (writable by others)",
                owner_name(meta.uid())
            ),
            (true, false) => format!("is owned by {}", owner_name(meta.uid())),
            _ => format!("is mode {mode:04o}: writable by other users"),
        };
        out.push(Finding::unsafe_(
            root,
            format!(
                "the home {shown} {what}, so someone else may have prepared what is in it: \
                 remove it, or (after checking its contents) `chown {} {shown} && chmod 0711 {shown}`, \
                 or choose another --home",
                me()
            ),
        ));
        return false;
    }
    if mode & !TRAVERSE_DIR != 0 {
        out.push(loose(root, mode, TRAVERSE_DIR));
    }
    true
}

fn loose(path: &Path, mode: u32, widest: u32) -> Finding {
    Finding {
        path: path.to_path_buf(),
        severity: Severity::Loose,
        message: format!(
            "{} has mode {mode:04o}, wider than {widest:04o}: `pgfork init` narrows it (or `chmod {:04o} {}`)",
            path.display(),
            mode & widest,
            path.display()
        ),
    }
}

/// One entry of the layout; a missing one is fine (it is made when needed).
fn check_entry(entry: &Entry, out: &mut Vec<Finding>) {
    let path = &entry.path;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            out.push(Finding::unsafe_(
                path,
                format!("cannot examine {}: {e}", path.display()),
            ));
            return;
        }
    };
    if meta.file_type().is_symlink() {
        out.push(Finding::unsafe_(
            path,
            format!(
                "{} is a symbolic link to {}: pgfork follows no link in its home, and someone may \
                 have planted it; remove the link (or replace it by what it points to, if you made it)",
                path.display(),
                link_target(path)
            ),
        ));
    } else if !is_kind(&meta, entry.kind) {
        let want = match entry.kind {
            Kind::Dir => "a directory",
            Kind::File => "a regular file",
        };
        out.push(Finding::unsafe_(
            path,
            format!("{} is not {want}: move it out of the home", path.display()),
        ));
    } else if !trusted(meta.uid()) {
        out.push(Finding::unsafe_(
            path,
            format!(
                "{} is owned by {}, not by you or root, so someone else made it: \
                 check it, then `chown {} {}` or remove it",
                path.display(),
                owner_name(meta.uid()),
                me(),
                path.display()
            ),
        ));
    } else if meta.mode() & 0o777 & !entry.widest != 0 {
        out.push(loose(path, meta.mode() & 0o777, entry.widest));
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return Vec::new();
    };
    if !meta.is_dir() {
        return Vec::new();
    }
    fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The files in logs and secrets: no links, owner-only modes. Their owner
/// may be the server's OS user (a standby reads its passfile itself).
fn check_contents(dir: &Path, out: &mut Vec<Finding>) {
    for path in files_in(dir) {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            out.push(Finding::unsafe_(
                &path,
                format!(
                    "{} is a symbolic link to {}: pgfork makes none there, someone planted it; remove it",
                    path.display(),
                    link_target(&path)
                ),
            ));
        } else if meta.is_file() && meta.mode() & 0o777 & !PRIVATE_FILE != 0 {
            out.push(loose(&path, meta.mode() & 0o777, PRIVATE_FILE));
        }
    }
}

/// The directories above the home. Whoever can write in one of them can
/// rename the home away and put one of theirs in its place, between
/// pgfork's checks and its uses: the home would be theirs again. A sticky
/// directory (like /tmp) is fine when its owner is trusted: the sticky bit
/// keeps others from renaming what is not theirs.
fn check_ancestors(root: &Path, out: &mut Vec<Finding>) {
    let Some(parent) = root.parent() else {
        return;
    };
    // A link on the way can be pointed elsewhere by its owner.
    for dir in parent.ancestors() {
        if let Ok(meta) = fs::symlink_metadata(dir)
            && meta.file_type().is_symlink()
            && !trusted(meta.uid())
        {
            out.push(Finding::unsafe_(
                dir,
                format!(
                    "{} (above the home) is a symbolic link owned by {}, who can point it elsewhere: \
                     choose a home whose path has no such link",
                    dir.display(),
                    owner_name(meta.uid())
                ),
            ));
        }
    }
    // The directories the path really goes through, links resolved; those
    // not made yet will be made by pgfork, as the invoking user.
    let Some(real) = parent.ancestors().find_map(|d| fs::canonicalize(d).ok()) else {
        return;
    };
    for dir in real.ancestors() {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode();
        let sticky = mode & 0o1000 != 0;
        let why = if !trusted(meta.uid()) {
            format!("is owned by {}", owner_name(meta.uid()))
        } else if mode & 0o022 != 0 && !sticky {
            format!("is mode {:04o}: writable by other users", mode & 0o777)
        } else {
            continue;
        };
        out.push(Finding::unsafe_(
            dir,
            format!(
                "{} (above the home {}) {why}, who could rename the home away and put their own in \
                 its place: choose a home under directories only you and root can write{}",
                dir.display(),
                root.display(),
                if trusted(meta.uid()) {
                    format!(", or `chmod go-w {}` (or `chmod +t`)", dir.display())
                } else {
                    String::new()
                }
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_in(dir: &Path) -> Home {
        Home::resolve(Some(&dir.join("home")))
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_fresh_layout_has_no_findings() {
        let tmp = tempfile::tempdir().unwrap();
        let home = home_in(tmp.path());
        make_dir(home.root(), TRAVERSE_DIR).unwrap();
        make_dir(&home.logs(), PRIVATE_DIR).unwrap();
        let found = audit_layout(&home);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn links_in_the_home_are_unsafe_and_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let home = home_in(tmp.path());
        make_dir(home.root(), TRAVERSE_DIR).unwrap();
        let target = tmp.path().join("elsewhere");
        fs::write(&target, b"keep").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&target, home.meta_db()).unwrap();
        let found = audit_layout(&home);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Unsafe);
        assert!(found[0].message.contains("symbolic link"), "{found:?}");
        tighten(&home).unwrap();
        assert_eq!(mode(&target), 0o644, "tighten followed the link");
    }

    #[test]
    fn wide_modes_are_loose_and_tighten_narrows_them() {
        let tmp = tempfile::tempdir().unwrap();
        let home = home_in(tmp.path());
        make_dir(home.root(), 0o755).unwrap();
        make_dir(&home.logs(), 0o755).unwrap();
        fs::write(home.logs().join("source-a.log"), b"x").unwrap();
        fs::set_permissions(
            home.logs().join("source-a.log"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fs::write(home.tick_lock(), b"").unwrap();
        fs::set_permissions(home.tick_lock(), fs::Permissions::from_mode(0o644)).unwrap();
        let found: Vec<Finding> = audit(&home)
            .into_iter()
            .filter(|f| f.path.starts_with(home.root()))
            .collect();
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().all(|f| f.severity == Severity::Loose));
        assert_eq!(tighten(&home).unwrap().len(), 4);
        assert_eq!(mode(home.root()), 0o711);
        assert_eq!(mode(&home.logs()), 0o700);
        assert_eq!(mode(&home.logs().join("source-a.log")), 0o600);
        assert_eq!(mode(&home.tick_lock()), 0o600);
    }

    #[test]
    fn a_writable_home_is_unsafe() {
        let tmp = tempfile::tempdir().unwrap();
        let home = home_in(tmp.path());
        make_dir(home.root(), 0o777).unwrap();
        let found = audit_layout(&home);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Unsafe);
        assert!(found[0].message.contains("0777"), "{found:?}");
    }
}
