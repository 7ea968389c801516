//! Control groups: CPU, memory and process limits on the servers pgfork
//! starts.
//!
//! Each controller lives in exactly one hierarchy: a cgroup v1 hierarchy
//! of its own (or shared with others, such as `cpu,cpuacct`), or the
//! unified v2 hierarchy. pgfork uses each controller where the kernel has
//! it, so a machine with v1 `cpu`, `memory` and `pids` hierarchies and an
//! empty v2 mount (systemd's "hybrid" layout) is driven through v1, one
//! with everything on v2 through v2, and a mix through both. A group is
//! therefore a set of directories, one per hierarchy involved.
//!
//! Where groups go: under the calling process's own group of each
//! hierarchy (`/proc/self/cgroup`), never elsewhere: pgfork moves no
//! process out of where it was put. On v2 a group that holds processes
//! cannot hand controllers to groups under it (the "no internal
//! processes" rule), so there the groups go under the nearest of: the
//! root, the own group if its `cgroup.subtree_control` already delegates
//! the controllers, or its parent if systemd marked that parent delegated
//! (`trusted.delegate`/`user.delegate`, as with `Delegate=yes` and
//! `DelegateSubgroup=`); otherwise v2 is reported as not usable.
//!
//! Putting a process into a group without a race: [`Group::join`] opens
//! each directory's `cgroup.procs` before the child is forked (as pgfork,
//! with its rights), and the child writes "0" into each (`enter`) between
//! fork and exec: the kernel moves the writer, so the server runs in its
//! group from its first instruction and every process it forks is born
//! there.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A resource controller pgfork uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    /// CPU bandwidth (quota) and weight (shares).
    Cpu,
    /// Memory limit and out-of-memory kills.
    Memory,
    /// Number of processes.
    Pids,
    /// CPU usage accounting: a controller of its own on v1 only (v2's
    /// `cpu.stat` has it). Optional: used for figures, never for limits.
    Cpuacct,
}

impl Controller {
    /// The controllers limits are set with.
    pub const LIMITS: [Controller; 3] = [Controller::Cpu, Controller::Memory, Controller::Pids];

    /// Every controller pgfork joins groups of.
    pub const ALL: [Controller; 4] = [
        Controller::Cpu,
        Controller::Memory,
        Controller::Pids,
        Controller::Cpuacct,
    ];

    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpuacct => "cpuacct",
        }
    }

    fn parse(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which cgroup interface a hierarchy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// One hierarchy per controller (or a few co-mounted).
    V1,
    /// The unified hierarchy.
    V2,
}

/// One mounted hierarchy that carries controllers pgfork uses, and where
/// in it pgfork's groups go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hierarchy {
    /// v1 or v2.
    pub version: Version,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The directory pgfork's groups are made under (see the module
    /// documentation).
    pub base: PathBuf,
    /// Controllers of [`Controller::ALL`] it carries.
    pub controllers: Vec<Controller>,
}

/// What this machine offers to the calling process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cgroups {
    /// The hierarchies pgfork can make groups in.
    pub hierarchies: Vec<Hierarchy>,
    /// Controllers it cannot use, each with the reason and what to do.
    pub unusable: Vec<(Controller, String)>,
}

/// Limits and weight of one group. `None` leaves a limit off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU bandwidth in thousandths of a CPU (500: half a CPU).
    pub cpu_millis: Option<u32>,
    /// Memory in bytes (swap included where the kernel accounts it).
    pub memory_bytes: Option<u64>,
    /// Most processes.
    pub pids: Option<u32>,
    /// CPU weight in v2 units (1-10000, 100 is the default); on v1 it
    /// becomes `cpu.shares` = weight × 1024 / 100.
    pub cpu_weight: Option<u32>,
}

/// The CFS period pgfork sets: quota = CPUs × this.
pub const CPU_PERIOD_US: u64 = 100_000;

/// What a group has used, as far as its hierarchies tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Memory charged now (page cache included), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The most memory charged at once, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// CPU time used, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_usec: Option<u64>,
    /// CFS periods in which the group was throttled by its quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nr_throttled: Option<u64>,
    /// Processes killed by the kernel's out-of-memory killer for this
    /// group's limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    /// Processes now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

/// Errors of cgroup work, each saying what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A controller is not available to this process.
    #[error("the {controller} controller is not usable: {reason}")]
    Unusable {
        /// The controller.
        controller: Controller,
        /// Why, and what to do.
        reason: String,
    },
    /// A cgroup file or directory operation failed.
    #[error("{op} {}: {source}{}", path.display(), hint(source))]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A group cannot be removed while processes are in it.
    #[error(
        "the control group {} still holds processes {pids:?}: stop them (they belong to a server \
         pgfork lost track of; `pgfork doctor` lists them), then run the command again",
        path.display()
    )]
    Busy {
        /// The group directory.
        path: PathBuf,
        /// Processes in it.
        pids: Vec<i32>,
    },
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (cgroups need root, or a cgroup delegated to the user running pgfork)"
        }
        Some(libc::EROFS) => " (the cgroup filesystem is mounted read-only, as in most containers)",
        Some(libc::EINVAL) => " (the kernel refused the value)",
        _ => "",
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

/// A line of `/proc/self/mountinfo` that mounts a cgroup hierarchy.
#[derive(Debug, Clone)]
struct CgroupMount {
    version: Version,
    root: PathBuf,
    point: PathBuf,
    read_only: bool,
    /// v1: the controllers in its super options.
    controllers: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 3 {
            continue;
        }
        let version = match right[0] {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => continue,
        };
        let read_only = left[5].split(',').any(|o| o == "ro");
        let controllers = right[2]
            .split(',')
            .filter(|o| Controller::parse(o).is_some())
            .map(str::to_string)
            .collect();
        mounts.push(CgroupMount {
            version,
            root: PathBuf::from(crate::mountinfo::unescape(left[3])),
            point: PathBuf::from(crate::mountinfo::unescape(left[4])),
            read_only,
            controllers,
        });
    }
    mounts
}

/// `/proc/self/cgroup`: (hierarchy controllers, own path); v2 has none.
fn parse_self_cgroup(text: &str) -> Vec<(Vec<String>, PathBuf)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let list = if controllers.is_empty() {
                Vec::new()
            } else {
                controllers.split(',').map(str::to_string).collect()
            };
            Some((list, PathBuf::from(path)))
        })
        .collect()
}

/// `point` + (`own` under the mount's `root`), or `None` if this process
/// sits outside what is mounted there.
fn own_dir(point: &Path, root: &Path, own: &Path) -> Option<PathBuf> {
    let rel = own.strip_prefix(root).ok()?;
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return None;
    }
    if rel.as_os_str().is_empty() {
        return Some(point.to_path_buf());
    }
    Some(point.join(rel))
}

fn writable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Whether systemd (or an administrator) marked a v2 group as delegated.
fn delegated(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    ["trusted.delegate", "user.delegate"].iter().any(|name| {
        let name = std::ffi::CString::new(*name).expect("no NUL");
        let mut value = [0u8; 8];
        // SAFETY: both strings are NUL-terminated, the buffer's length is passed.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        n > 0 && value[0] == b'1'
    })
}

impl Cgroups {
    /// What the calling process may use, from `/proc/self/mountinfo` and
    /// `/proc/self/cgroup`.
    pub fn detect() -> Cgroups {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Cgroups::detect_from(&mountinfo, &own)
    }

    /// [`Cgroups::detect`] on given texts (the directories they name are
    /// looked at for real: tests point them at a temporary directory).
    pub fn detect_from(mountinfo: &str, self_cgroup: &str) -> Cgroups {
        let mounts = parse_mountinfo(mountinfo);
        let own = parse_self_cgroup(self_cgroup);
        let mut found = Cgroups::default();
        let mut placed: Vec<Controller> = Vec::new();

        // v1 first: a controller bound to a v1 hierarchy is not on v2.
        for m in mounts.iter().filter(|m| m.version == Version::V1) {
            let ours: Vec<Controller> = m
                .controllers
                .iter()
                .filter_map(|c| Controller::parse(c))
                .filter(|c| !placed.contains(c))
                .collect();
            if ours.is_empty() {
                continue;
            }
            placed.extend(&ours);
            let own_path = own
                .iter()
                .find(|(list, _)| m.controllers.iter().any(|c| list.contains(c)))
                .map(|(_, p)| p.clone());
            let reason = match own_path.as_deref() {
                None => Some(format!(
                    "/proc/self/cgroup names no group of the v1 hierarchy at {}",
                    m.point.display()
                )),
                Some(p) => match own_dir(&m.point, &m.root, p) {
                    None => Some(format!(
                        "this process's group {} is outside what is mounted at {}",
                        p.display(),
                        m.point.display()
                    )),
                    Some(_) if m.read_only => Some(format!(
                        "{} is mounted read-only (a container without cgroup access?): run pgfork \
                         where it may create groups",
                        m.point.display()
                    )),
                    Some(dir) if !dir.is_dir() => Some(format!("{} does not exist", dir.display())),
                    Some(dir) if !writable(&dir) => Some(format!(
                        "{} is not writable by uid {}: run pgfork as root, or delegate that group \
                         to its user",
                        dir.display(),
                        nix::unistd::geteuid()
                    )),
                    Some(dir) => {
                        found.hierarchies.push(Hierarchy {
                            version: Version::V1,
                            mount: m.point.clone(),
                            base: dir,
                            controllers: ours.clone(),
                        });
                        None
                    }
                },
            };
            if let Some(reason) = reason {
                for c in ours {
                    found.unusable.push((c, reason.clone()));
                }
            }
        }

        let wanted: Vec<Controller> = Controller::LIMITS
            .into_iter()
            .filter(|c| !placed.contains(c))
            .collect();
        let v2 = mounts.iter().find(|m| m.version == Version::V2);
        let own_v2 = own
            .iter()
            .find(|(list, _)| list.is_empty())
            .map(|(_, p)| p.clone());
        if let (Some(m), Some(own_path), false) = (v2, own_v2, wanted.is_empty()) {
            match v2_base(m, &own_path, &wanted) {
                Ok((base, available)) => {
                    for c in &wanted {
                        if !available.contains(c) {
                            found.unusable.push((
                                *c,
                                format!(
                                    "the v2 hierarchy at {} does not offer it to {} (not in its \
                                     cgroup.controllers): enable it in the parent's \
                                     cgroup.subtree_control, or delegate it (systemd: Delegate=yes)",
                                    m.point.display(),
                                    base.display()
                                ),
                            ));
                        }
                    }
                    if !available.is_empty() {
                        placed.extend(&available);
                        found.hierarchies.push(Hierarchy {
                            version: Version::V2,
                            mount: m.point.clone(),
                            base,
                            controllers: available,
                        });
                    }
                }
                Err(reason) => {
                    for c in &wanted {
                        found.unusable.push((*c, reason.clone()));
                    }
                }
            }
        }
        for c in Controller::LIMITS {
            if !placed.contains(&c) && !found.unusable.iter().any(|(u, _)| *u == c) {
                found.unusable.push((
                    c,
                    "no mounted cgroup hierarchy carries it (neither a v1 hierarchy nor the v2 \
                     one's controllers): mount it, or boot with cgroup v2 and its controllers"
                        .to_string(),
                ));
            }
        }
        found.unusable.sort_by_key(|(c, _)| *c);
        found
    }

    /// The hierarchy that carries `controller`, if it is usable.
    pub fn hierarchy_of(&self, controller: Controller) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.contains(&controller))
    }

    /// Why `controller` cannot be used, if it cannot.
    pub fn why_unusable(&self, controller: Controller) -> Option<&str> {
        self.unusable
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, r)| r.as_str())
    }

    /// Whether `controller` can be used.
    pub fn usable(&self, controller: Controller) -> bool {
        self.hierarchy_of(controller).is_some()
    }

    /// The group at `rel` (relative, e.g. `pgfork-1a2b/branches/b1`)
    /// under every hierarchy's base. Nothing is made yet.
    pub fn group(&self, rel: &Path) -> Group {
        Group {
            dirs: self
                .hierarchies
                .iter()
                .map(|h| GroupDir {
                    path: h.base.join(rel),
                    version: h.version,
                    controllers: h.controllers.clone(),
                    base: Some(h.base.clone()),
                })
                .collect(),
        }
    }
}

/// Where pgfork's groups go on a v2 hierarchy, and which of `wanted`
/// that place can hand to groups under it.
fn v2_base(
    m: &CgroupMount,
    own: &Path,
    wanted: &[Controller],
) -> Result<(PathBuf, Vec<Controller>), String> {
    let Some(dir) = own_dir(&m.point, &m.root, own) else {
        return Err(format!(
            "this process's v2 group {} is outside what is mounted at {}",
            own.display(),
            m.point.display()
        ));
    };
    if m.read_only {
        return Err(format!(
            "{} is mounted read-only (a container without cgroup access?): run pgfork where it \
             may create groups",
            m.point.display()
        ));
    }
    let offered = |d: &Path| -> Vec<Controller> {
        let list = words(&d.join("cgroup.controllers"));
        wanted
            .iter()
            .copied()
            .filter(|c| list.iter().any(|w| w == c.name()))
            .collect()
    };
    let delegating = |d: &Path, cs: &[Controller]| -> bool {
        let list = words(&d.join("cgroup.subtree_control"));
        cs.iter().all(|c| list.iter().any(|w| w == c.name()))
    };
    let is_root = dir == m.point;
    // The root may hold processes and still hand controllers down; so may
    // a group whose subtree_control already does.
    let own_usable = is_root || (!offered(&dir).is_empty() && delegating(&dir, &offered(&dir)));
    let candidate = if own_usable {
        Some(dir.clone())
    } else {
        dir.parent()
            .filter(|p| p.starts_with(&m.point) && *p != m.point.as_path() && delegated(p))
            .map(Path::to_path_buf)
    };
    let Some(base) = candidate else {
        return Err(format!(
            "this process sits in the v2 group {}, which holds processes, so the kernel will not \
             hand controllers to groups under it (no internal processes); run pgfork in a \
             delegated cgroup whose parent is free of processes (systemd: Delegate=yes with \
             DelegateSubgroup=, or `systemd-run -p Delegate=yes`), or as a process of the root group",
            dir.display()
        ));
    };
    if !writable(&base.join("cgroup.subtree_control")) {
        return Err(format!(
            "{} is not writable by uid {}: run pgfork as root, or delegate that group to its user",
            base.display(),
            nix::unistd::geteuid()
        ));
    }
    Ok((base.clone(), offered(&base)))
}

/// One group's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDir {
    /// The directory.
    pub path: PathBuf,
    /// Its hierarchy's interface.
    pub version: Version,
    /// The controllers of ours there.
    pub controllers: Vec<Controller>,
    /// The base it is made under (known for groups being made, not for
    /// groups found again by path).
    base: Option<PathBuf>,
}

/// A group: one directory per hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Its directories.
    pub dirs: Vec<GroupDir>,
}

/// `cgroup.procs` of every directory of a group, open for writing; the
/// descriptors close on exec, so the server does not inherit them.
#[derive(Debug)]
pub struct Join {
    files: Vec<File>,
}

impl Join {
    /// The raw descriptors, for [`enter`] in a `pre_exec` closure.
    pub fn fds(&self) -> Vec<RawFd> {
        self.files.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

/// Moves the calling process into the groups whose `cgroup.procs`
/// descriptors are `fds` (from [`Join::fds`]), by writing "0" to each.
///
/// For the child between fork and exec: it only calls write(2), which is
/// async-signal-safe, and allocates nothing. The kernel checks the rights
/// of whoever opened the descriptors, so it works after the child has
/// dropped to an unprivileged user.
pub fn enter(fds: &[RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: write(2) of a one-byte static buffer to a descriptor the
        // parent opened and keeps open until the child has exec'd.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io("open", path))?;
    f.write_all(value.as_bytes()).map_err(io("write", path))
}

/// Reads `key N` from a flat-keyed cgroup file.
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl GroupDir {
    /// What a directory found again by path is: v2 if it has
    /// `cgroup.controllers`, else v1 with the controllers whose files it has.
    fn found(path: &Path) -> GroupDir {
        if path.join("cgroup.controllers").exists() {
            let list = words(&path.join("cgroup.controllers"));
            let mut controllers: Vec<Controller> = Controller::LIMITS
                .into_iter()
                .filter(|c| list.iter().any(|w| w == c.name()))
                .collect();
            if controllers.is_empty() {
                // A leaf's cgroup.controllers lists what its parent enabled.
                controllers = Controller::LIMITS
                    .into_iter()
                    .filter(|c| path.join(format!("{}.max", c.name())).exists())
                    .collect();
            }
            return GroupDir {
                path: path.to_path_buf(),
                version: Version::V2,
                controllers,
                base: None,
            };
        }
        let marks = [
            (Controller::Cpu, "cpu.cfs_quota_us"),
            (Controller::Memory, "memory.limit_in_bytes"),
            (Controller::Pids, "pids.max"),
            (Controller::Cpuacct, "cpuacct.usage"),
        ];
        GroupDir {
            path: path.to_path_buf(),
            version: Version::V1,
            controllers: marks
                .iter()
                .filter(|(_, f)| path.join(f).exists())
                .map(|(c, _)| *c)
                .collect(),
            base: None,
        }
    }

    fn has(&self, c: Controller) -> bool {
        self.controllers.contains(&c)
    }

    /// Makes the directory and those between it and its base (v2: each
    /// parent first hands the controllers down).
    fn create(&self) -> Result<(), CgroupError> {
        let base = self
            .base
            .as_deref()
            .unwrap_or_else(|| self.path.parent().expect("a group directory has a parent"));
        let rel = self.path.strip_prefix(base).unwrap_or(Path::new(""));
        let mut dir = base.to_path_buf();
        for part in rel.components() {
            if self.version == Version::V2 {
                self.delegate_from(&dir)?;
            }
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create the control group", &dir)(e)),
            }
        }
        Ok(())
    }

    /// v2: enables our controllers in `dir`'s `cgroup.subtree_control`.
    fn delegate_from(&self, dir: &Path) -> Result<(), CgroupError> {
        let file = dir.join("cgroup.subtree_control");
        let on = words(&file);
        let missing: Vec<String> = self
            .controllers
            .iter()
            .filter(|c| {
                **c != Controller::Cpuacct
                    && !on.iter().any(|w| w.trim_start_matches('+') == c.name())
            })
            .map(|c| format!("+{}", c.name()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        write_file(&file, &missing.join(" "))
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let p = |f: &str| self.path.join(f);
        match self.version {
            Version::V1 => {
                if self.has(Controller::Cpu) {
                    write_file(&p("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    let quota = limits
                        .cpu_millis
                        .map(|m| (u64::from(m) * CPU_PERIOD_US / 1000).to_string())
                        .unwrap_or_else(|| "-1".into());
                    write_file(&p("cpu.cfs_quota_us"), &quota)?;
                    let shares = u64::from(limits.cpu_weight.unwrap_or(100)) * 1024 / 100;
                    write_file(&p("cpu.shares"), &shares.clamp(2, 262_144).to_string())?;
                }
                if self.has(Controller::Memory) {
                    let value = limits
                        .memory_bytes
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| "-1".into());
                    let limit = p("memory.limit_in_bytes");
                    let memsw = p("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        // memsw (memory and swap) may never be below the
                        // memory limit: a rising limit goes after it, a
                        // falling one before.
                        if write_file(&limit, &value).is_ok() {
                            write_file(&memsw, &value)?;
                        } else {
                            write_file(&memsw, &value)?;
                            write_file(&limit, &value)?;
                        }
                    } else {
                        write_file(&limit, &value)?;
                    }
                }
                if self.has(Controller::Pids) {
                    let value = limits
                        .pids
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "max".into());
                    write_file(&p("pids.max"), &value)?;
                }
            }
            Version::V2 => {
                if self.has(Controller::Cpu) {
                    let quota = limits
                        .cpu_millis
                        .map(|m| (u64::from(m) * CPU_PERIOD_US / 1000).to_string())
                        .unwrap_or_else(|| "max".into());
                    write_file(&p("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                    let weight = limits.cpu_weight.unwrap_or(100).clamp(1, 10_000);
                    write_file(&p("cpu.weight"), &weight.to_string())?;
                }
                if self.has(Controller::Memory) {
                    let value = limits
                        .memory_bytes
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| "max".into());
                    write_file(&p("memory.max"), &value)?;
                    if p("memory.swap.max").exists() {
                        let swap = if limits.memory_bytes.is_some() {
                            "0"
                        } else {
                            "max"
                        };
                        write_file(&p("memory.swap.max"), swap)?;
                    }
                    // Out of memory, the whole server goes, as on v1 where
                    // the branch's postmaster then stops (restart_after_crash).
                    if p("memory.oom.group").exists() {
                        let group = if limits.memory_bytes.is_some() {
                            "1"
                        } else {
                            "0"
                        };
                        write_file(&p("memory.oom.group"), group)?;
                    }
                }
                if self.has(Controller::Pids) {
                    let value = limits
                        .pids
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "max".into());
                    write_file(&p("pids.max"), &value)?;
                }
            }
        }
        Ok(())
    }

    fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Group {
    /// The group whose directories are `paths` (as recorded when it was
    /// made), looked at again: which hierarchy each is in is read from
    /// the files it has.
    pub fn at(paths: &[PathBuf]) -> Group {
        Group {
            dirs: paths.iter().map(|p| GroupDir::found(p)).collect(),
        }
    }

    /// Its directories.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// Whether any directory carries `controller`.
    pub fn has(&self, controller: Controller) -> bool {
        self.dirs.iter().any(|d| d.has(controller))
    }

    /// Makes the group (what exists already is kept) and sets `limits`
    /// (a limit left `None` is set to unlimited).
    pub fn create(&self, limits: &Limits) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            dir.create()?;
            dir.apply(limits)?;
        }
        Ok(())
    }

    /// Opens every directory's `cgroup.procs` for [`enter`].
    pub fn join(&self) -> Result<Join, CgroupError> {
        let files = self
            .dirs
            .iter()
            .map(|d| {
                let path = d.path.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io("open", &path))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Join { files })
    }

    /// The processes in it (in any of its directories).
    pub fn procs(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self.dirs.iter().flat_map(GroupDir::procs).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// What it has used.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for d in &self.dirs {
            let p = |f: &str| d.path.join(f);
            match d.version {
                Version::V1 => {
                    if d.has(Controller::Memory) {
                        u.memory_bytes = number(&p("memory.usage_in_bytes"));
                        u.memory_peak_bytes = number(&p("memory.max_usage_in_bytes"));
                        u.oom_kills = keyed(&p("memory.oom_control"), "oom_kill");
                    }
                    if d.has(Controller::Cpuacct) {
                        u.cpu_usec = number(&p("cpuacct.usage")).map(|ns| ns / 1000);
                    }
                    if d.has(Controller::Cpu) {
                        u.nr_throttled = keyed(&p("cpu.stat"), "nr_throttled");
                    }
                    if d.has(Controller::Pids) {
                        u.pids = number(&p("pids.current"));
                    }
                }
                Version::V2 => {
                    if d.has(Controller::Memory) {
                        u.memory_bytes = number(&p("memory.current"));
                        u.memory_peak_bytes = number(&p("memory.peak"));
                        u.oom_kills = keyed(&p("memory.events"), "oom_kill");
                    }
                    // cpu.stat's usage is there without the cpu controller.
                    u.cpu_usec = keyed(&p("cpu.stat"), "usage_usec").or(u.cpu_usec);
                    if d.has(Controller::Cpu) {
                        u.nr_throttled = keyed(&p("cpu.stat"), "nr_throttled");
                    }
                    if d.has(Controller::Pids) {
                        u.pids = number(&p("pids.current"));
                    }
                }
            }
        }
        u
    }

    /// Removes the group's directories. A directory already gone is fine;
    /// one that still holds processes after a short wait (the kernel lets
    /// go of an exiting process's group a moment after it is reaped) is
    /// [`CgroupError::Busy`].
    pub fn remove(&self) -> Result<(), CgroupError> {
        for d in &self.dirs {
            remove_dir(&d.path)?;
        }
        Ok(())
    }
}

/// Whether `path` lies in a cgroup hierarchy mounted where this process
/// sees it. A recorded group that does not exist is gone only if its
/// hierarchy is visible: a pgfork in a mount namespace without the cgroup
/// filesystems (a container) must not forget the groups it cannot see.
pub fn visible(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&mountinfo)
        .iter()
        .any(|m| path.starts_with(&m.point) && m.point.is_dir())
}

/// Removes one group directory (with none below it), waiting up to two
/// seconds for its last processes to be released.
pub fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let pids = GroupDir::found(path).procs();
                if pids.is_empty() {
                    return Err(io("remove the control group", path)(e));
                }
                return Err(CgroupError::Busy {
                    path: path.to_path_buf(),
                    pids,
                });
            }
            Err(e) => return Err(io("remove the control group", path)(e)),
        }
    }
}

/// Removes `dir` and every group below it, deepest first. Stops at the
/// first that cannot go (processes in it) and says which.
pub fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("list the control group", dir)(e)),
    };
    for entry in entries.flatten() {
        // Control files are files; groups are directories. No link is
        // followed: cgroup filesystems have none, and a link is not ours.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    remove_dir(dir)
}

/// Removes `from` and its parents up to (not including) `stop`, each only
/// while it has no group below it; stops quietly at the first that is in
/// use. For tidying the parents of a removed group.
pub fn remove_empty_parents(from: &Path, stop: &Path) {
    let mut dir = from.to_path_buf();
    while dir.starts_with(stop) && dir != stop {
        if std::fs::remove_dir(&dir).is_err() && dir.exists() {
            return;
        }
        if !dir.pop() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 25 0:25 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
31 25 0:28 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";

    #[test]
    fn mountinfo_is_read_with_escapes_and_options() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 6, "tmpfs is not a cgroup mount");
        assert_eq!(mounts[0].version, Version::V2);
        assert_eq!(mounts[1].controllers, vec!["cpu"]);
        assert!(
            mounts[5].controllers.is_empty(),
            "name=systemd has none of ours"
        );
        let odd = parse_mountinfo(
            "40 25 0:30 / /tmp/a\\040b ro,relatime - cgroup cgroup rw,cpu,cpuacct\n",
        );
        assert_eq!(odd[0].point, PathBuf::from("/tmp/a b"));
        assert!(odd[0].read_only);
        assert_eq!(odd[0].controllers, vec!["cpu", "cpuacct"]);
    }

    #[test]
    fn own_groups_are_read_per_hierarchy() {
        let own = parse_self_cgroup("4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice\n");
        assert_eq!(
            own[0],
            (vec!["memory".to_string()], "/process_api/abc".into())
        );
        assert_eq!(own[1].0, vec!["cpu", "cpuacct"]);
        assert_eq!(own[2], (vec![], "/user.slice".into()));
        assert_eq!(
            own_dir(Path::new("/m"), Path::new("/"), Path::new("/a/b")),
            Some("/m/a/b".into())
        );
        assert_eq!(
            own_dir(Path::new("/m"), Path::new("/a"), Path::new("/a/b")),
            Some("/m/b".into())
        );
        assert_eq!(
            own_dir(Path::new("/m"), Path::new("/x"), Path::new("/a/b")),
            None
        );
    }

    /// A fake cgroup tree in a temporary directory: v1 hierarchies with
    /// the files the kernel would show, or a v2 one. The kernel makes a
    /// new group's control files when the directory is made; a temporary
    /// directory does not, so each test makes the group's directory and
    /// files first, as the kernel would, and pgfork's own mkdir finds it
    /// there. (This machine has only v1 controllers, so the v2 path can be
    /// tested nowhere else than here.)
    fn touch(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
    }

    const V1_CPU: &[(&str, &str)] = &[
        ("cgroup.procs", ""),
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "-1"),
        ("cpu.shares", "1024"),
        (
            "cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 5\n",
        ),
    ];
    const V1_MEMORY: &[(&str, &str)] = &[
        ("cgroup.procs", ""),
        ("memory.limit_in_bytes", "9223372036854771712"),
        ("memory.usage_in_bytes", "1048576"),
        ("memory.max_usage_in_bytes", "2097152"),
        (
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ),
    ];
    const V1_PIDS: &[(&str, &str)] = &[
        ("cgroup.procs", ""),
        ("pids.max", "max"),
        ("pids.current", "3"),
    ];

    #[test]
    fn v1_hierarchies_are_found_under_the_own_group_and_limits_land() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mountinfo = format!(
            "27 25 0:24 / {r}/cpu rw - cgroup cgroup rw,cpu\n\
             29 25 0:26 / {r}/memory rw - cgroup cgroup rw,memory\n\
             30 25 0:27 / {r}/pids rw - cgroup cgroup rw,pids\n\
             26 25 0:23 / {r}/unified rw - cgroup2 cgroup2 rw\n",
            r = root.display()
        );
        touch(&root.join("cpu"), V1_CPU);
        touch(&root.join("memory/job/7"), V1_MEMORY);
        touch(&root.join("pids"), V1_PIDS);
        touch(&root.join("unified"), &[("cgroup.controllers", "")]);
        let cg = Cgroups::detect_from(&mountinfo, "8:pids:/\n4:memory:/job/7\n1:cpu:/\n0::/\n");
        assert!(cg.unusable.is_empty(), "{:?}", cg.unusable);
        assert_eq!(cg.hierarchies.len(), 3);
        let memory = cg.hierarchy_of(Controller::Memory).unwrap();
        assert_eq!(memory.base, root.join("memory/job/7"));
        assert_eq!(memory.version, Version::V1);

        let rel = Path::new("pgfork-ab/branches/b1");
        let group = cg.group(rel);
        touch(&root.join("cpu").join(rel), V1_CPU);
        touch(&root.join("memory/job/7").join(rel), V1_MEMORY);
        touch(&root.join("pids").join(rel), V1_PIDS);
        let limits = Limits {
            cpu_millis: Some(250),
            memory_bytes: Some(256 << 20),
            pids: Some(64),
            cpu_weight: Some(400),
        };
        group.create(&limits).unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(root.join("cpu").join(rel).join("cpu.cfs_quota_us")),
            "25000"
        );
        assert_eq!(read(root.join("cpu").join(rel).join("cpu.shares")), "4096");
        assert_eq!(
            read(
                root.join("memory/job/7")
                    .join(rel)
                    .join("memory.limit_in_bytes")
            ),
            (256u64 << 20).to_string()
        );
        assert_eq!(read(root.join("pids").join(rel).join("pids.max")), "64");

        let again = Group::at(&group.paths());
        assert_eq!(again.dirs.len(), 3);
        assert!(again.has(Controller::Cpu) && again.has(Controller::Memory));
        let usage = again.usage();
        assert_eq!(usage.oom_kills, Some(2));
        assert_eq!(usage.nr_throttled, Some(4));
        assert_eq!(usage.memory_bytes, Some(1 << 20));
        assert_eq!(usage.pids, Some(3));
        assert!(again.join().unwrap().fds().len() == 3);
    }

    #[test]
    fn v2_root_group_hands_controllers_down_and_limits_land() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cg2");
        let mountinfo = format!(
            "26 25 0:23 / {} rw,nosuid - cgroup2 cgroup2 rw\n",
            root.display()
        );
        touch(
            &root,
            &[
                ("cgroup.controllers", "cpuset cpu io memory pids"),
                ("cgroup.subtree_control", ""),
                ("cgroup.procs", "1\n"),
            ],
        );
        let cg = Cgroups::detect_from(&mountinfo, "0::/\n");
        assert!(cg.unusable.is_empty(), "{:?}", cg.unusable);
        assert_eq!(cg.hierarchies.len(), 1);
        assert_eq!(cg.hierarchies[0].version, Version::V2);
        assert_eq!(
            cg.hierarchies[0].controllers,
            vec![Controller::Cpu, Controller::Memory, Controller::Pids]
        );
        let rel = Path::new("pgfork-ab/branches/b1");
        let v2_files: &[(&str, &str)] = &[
            ("cgroup.controllers", "cpu memory pids"),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", ""),
            ("cpu.max", "max 100000"),
            ("cpu.weight", "100"),
            ("cpu.stat", "usage_usec 1500\nnr_throttled 9\n"),
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("memory.oom.group", "0"),
            ("memory.current", "4096"),
            ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            ("pids.max", "max"),
            ("pids.current", "5"),
        ];
        touch(&root.join("pgfork-ab"), v2_files);
        touch(&root.join("pgfork-ab/branches"), v2_files);
        touch(&root.join(rel), v2_files);
        let group = cg.group(rel);
        group
            .create(&Limits {
                cpu_millis: Some(500),
                memory_bytes: Some(512 << 20),
                pids: Some(100),
                cpu_weight: None,
            })
            .unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        // Every inner group hands the controllers down to the next.
        for inner in [
            root.clone(),
            root.join("pgfork-ab"),
            root.join("pgfork-ab/branches"),
        ] {
            assert_eq!(
                read(inner.join("cgroup.subtree_control")),
                "+cpu +memory +pids",
                "{}",
                inner.display()
            );
        }
        let leaf = root.join(rel);
        assert_eq!(read(leaf.join("cpu.max")), "50000 100000");
        assert_eq!(read(leaf.join("cpu.weight")), "100");
        assert_eq!(read(leaf.join("memory.max")), (512u64 << 20).to_string());
        assert_eq!(read(leaf.join("memory.swap.max")), "0");
        assert_eq!(read(leaf.join("memory.oom.group")), "1");
        assert_eq!(read(leaf.join("pids.max")), "100");

        let again = Group::at(std::slice::from_ref(&leaf));
        assert_eq!(again.dirs[0].version, Version::V2);
        let usage = again.usage();
        assert_eq!(usage.cpu_usec, Some(1500));
        assert_eq!(usage.nr_throttled, Some(9));
        assert_eq!(usage.oom_kills, Some(1));
        assert_eq!(usage.memory_bytes, Some(4096));

        // Unlimited again: the values the kernel reads as "no limit".
        group.create(&Limits::default()).unwrap();
        assert_eq!(read(leaf.join("cpu.max")), "max 100000");
        assert_eq!(read(leaf.join("memory.max")), "max");
        assert_eq!(read(leaf.join("memory.oom.group")), "0");
    }

    #[test]
    fn v2_group_with_processes_and_no_delegation_is_refused_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cg2");
        let mountinfo = format!("26 25 0:23 / {} rw - cgroup2 cgroup2 rw\n", root.display());
        touch(
            &root,
            &[
                ("cgroup.controllers", "cpu memory pids"),
                ("cgroup.subtree_control", "cpu memory pids"),
            ],
        );
        touch(
            &root.join("user.slice/session-1.scope"),
            &[
                ("cgroup.controllers", "cpu memory pids"),
                ("cgroup.subtree_control", ""),
                ("cgroup.procs", "42\n"),
            ],
        );
        let cg = Cgroups::detect_from(&mountinfo, "0::/user.slice/session-1.scope\n");
        assert!(cg.hierarchies.is_empty());
        let why = cg.why_unusable(Controller::Memory).unwrap();
        assert!(why.contains("no internal processes"), "{why}");
        assert!(why.contains("Delegate=yes"), "{why}");
    }

    #[test]
    fn nothing_mounted_says_so_per_controller() {
        let cg = Cgroups::detect_from("", "");
        assert!(cg.hierarchies.is_empty());
        for c in Controller::LIMITS {
            assert!(
                cg.why_unusable(c)
                    .unwrap()
                    .contains("no mounted cgroup hierarchy"),
                "{c}"
            );
        }
    }

    #[test]
    fn enter_writes_zero_to_each_descriptor() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let join = Join {
            files: vec![
                OpenOptions::new().write(true).open(&a).unwrap(),
                OpenOptions::new().write(true).open(&b).unwrap(),
            ],
        };
        enter(&join.fds()).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "0");
    }

    #[test]
    fn trees_are_removed_deepest_first_and_parents_only_when_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("pgfork-ab");
        std::fs::create_dir_all(top.join("branches/b1")).unwrap();
        std::fs::create_dir_all(top.join("branches/b2")).unwrap();
        std::fs::create_dir_all(top.join("sources/s")).unwrap();
        std::fs::remove_dir(top.join("branches/b1")).unwrap();
        remove_empty_parents(&top.join("branches"), tmp.path());
        assert!(top.join("branches/b2").is_dir(), "a parent in use stays");
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        remove_tree(&top).unwrap();
    }
}
