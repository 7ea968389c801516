//! Compute limits per server through cgroups (issue 12): which control
//! group each source and branch server runs in, with what limits and CPU
//! weight; the checks that refuse a limit that cannot be enforced; and the
//! removal of groups no server uses any more. The mechanics (v1 and v2,
//! joining between fork and exec) are in [`pgfork_os::cgroup`].
//!
//! # Layout
//!
//! In each hierarchy that carries a controller pgfork uses, under the
//! calling process's own group there (its "base", see `pgfork_os::cgroup`):
//!
//! ```text
//! BASE/pgfork-HOMEID-sources/NAME     a source, or the standby of a physical one
//! BASE/pgfork-HOMEID-branches/NAME    a branch, with its --cpu, --memory, --pids
//! ```
//!
//! HOMEID is the first 8 hex digits of the SHA-256 of the home's canonical
//! path: two homes never share a group. The sources' group weighs four
//! times the branches' (cpu.weight 400 against 100; cpu.shares 4096
//! against 1024 on v1): against each other and against the machine's other
//! processes (100 each), all sources together weigh as four busy
//! processes (about what a source with four busy sessions weighed before
//! it had a group) and all branches together as one, however many run; a
//! branch's `--cpu` caps it outright.
//!
//! The two are not under one parent on purpose: a parent's share is
//! shared out to its busy children only, so a source waiting on its
//! clients (as a source mostly does) would hand its share to the branches,
//! and a busy branch would then weigh as five processes against the
//! source's own clients. (The first layout did that; BENCHMARKS.md shows
//! what it cost.)
//!
//! # Finding groups again
//!
//! Another pgfork process may sit in another group (a CLI call and the
//! daemon do on many machines, and so do two calls on this one), so the
//! path is never derived again from where the caller sits: every group
//! directory is recorded in meta.db (table `cgroups`, absolute path and
//! owner) *before* it is made, and forgotten only once it is removed. A
//! server's groups are removed when it stops or is deleted; the reconcile
//! every command runs removes every recorded group that is empty and not
//! being worked on (a crashed branch's, one whose removal failed), and any
//! unrecorded one under this process's own `pgfork-HOMEID-*`. So no group
//! outlives its server for longer than the next pgfork command.
//!
//! # Out of memory
//!
//! A branch with `--memory` runs with `restart_after_crash = off`: when
//! the kernel kills one of its processes for going over the limit, its
//! postmaster stops the others and exits, instead of re-initialising in a
//! loop the same query may drive it into again. The branch is then
//! `crashed` (meta.db says running, its postmaster is gone), `branch info`
//! says it was out of memory, and `pgfork branch start` (or the proxy's
//! next session) brings it back. On v2 `memory.oom.group` makes the kernel
//! take the whole group at once, to the same end. Sources have no memory
//! limit: a branch's limit is its own, so the kernel never picks a
//! source's process for it.

use std::path::{Path, PathBuf};

use pgfork_os::cgroup::{self, CgroupError, Cgroups, Controller, Group, Join, Limits, Usage};
use pgfork_pool::meta::compute::{self as meta_compute, CgroupRow, ComputeLimits};
use pgfork_pool::meta::{BranchRow, SourceRow};
use serde::Serialize;

use crate::server::Target;
use crate::{Engine, EngineError, Result};

/// Smallest `--cpu`: 0.01 CPU (the kernel's smallest quota is 1 ms per
/// 100 ms period).
pub const MIN_CPU_MILLIS: u32 = 10;
/// Largest `--cpu`: 1024 CPUs.
pub const MAX_CPU_MILLIS: u32 = 1024 * 1000;
/// Smallest `--memory`: below it a branch's server (16 MB of shared
/// buffers, a dozen processes) cannot even start.
pub const MIN_MEMORY: u64 = 64 << 20;
/// Largest `--memory`: 16 TiB.
pub const MAX_MEMORY: u64 = 16 << 40;
/// Smallest `--pids`: a postmaster and its background processes take 7.
pub const MIN_PIDS: u32 = 16;
/// Largest `--pids`: the kernel's own most (`pid_max` limit).
pub const MAX_PIDS: u32 = 4_194_304;
/// CPU weight of the sources group (v2 units; 100 is the default).
pub const SOURCES_WEIGHT: u32 = 400;
/// CPU weight of the branches group.
pub const BRANCHES_WEIGHT: u32 = 100;

/// Limits a request asks for: for each, `None` keeps what applies
/// otherwise (the source's default for a new branch, the stored value for
/// a change), `Some(None)` removes the limit, `Some(Some(v))` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComputeRequest {
    /// Thousandths of a CPU.
    pub cpu_millis: Option<Option<u32>>,
    /// Bytes.
    pub memory: Option<Option<u64>>,
    /// Processes.
    pub pids: Option<Option<u32>>,
}

impl ComputeRequest {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none() && self.memory.is_none() && self.pids.is_none()
    }

    /// `base` with this request's changes.
    pub fn over(&self, base: ComputeLimits) -> ComputeLimits {
        ComputeLimits {
            cpu_millis: self.cpu_millis.unwrap_or(base.cpu_millis),
            memory: self.memory.unwrap_or(base.memory),
            pids: self.pids.unwrap_or(base.pids),
        }
    }
}

/// Limits as shown: CPUs as a number (0.25), memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LimitsView {
    /// CPUs it may use (0.5: half of one); `null`: no limit.
    pub cpu: Option<f64>,
    /// Bytes of memory; `null`: no limit.
    pub memory: Option<u64>,
    /// Most processes; `null`: no limit.
    pub pids: Option<u32>,
}

impl From<ComputeLimits> for LimitsView {
    fn from(l: ComputeLimits) -> Self {
        LimitsView {
            cpu: l.cpu_millis.map(|m| f64::from(m) / 1000.0),
            memory: l.memory,
            pids: l.pids,
        }
    }
}

/// A branch's compute limits and what its server uses, for `branch info`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ComputeInfo {
    /// Its limits.
    #[serde(flatten)]
    pub limits: LimitsView,
    /// The control group directories its server runs in (one per
    /// hierarchy); empty while it is stopped, or where cgroups are not
    /// usable (`pgfork doctor` says why).
    pub cgroups: Vec<PathBuf>,
    /// What its group has used (`branch info` only, while it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Processes of it the kernel killed for going over its memory limit,
    /// over its whole life.
    pub oom_kills: u64,
}

/// The defaults a source gives new branches (`pgfork source limits`).
#[derive(Debug, Clone, Serialize)]
pub struct SourceLimits {
    /// The source.
    pub source: String,
    /// Limits of each new branch of it, unless `branch create` says otherwise.
    pub branch: LimitsView,
}

fn invalid(message: String) -> EngineError {
    EngineError::InvalidArgument(message)
}

fn is_none_word(text: &str) -> bool {
    matches!(text.trim(), "none" | "unlimited")
}

/// Parses a number of CPUs (`0.5`, `2`, at most three decimals) into
/// thousandths; `none` (or `unlimited`) is no limit.
pub fn parse_cpu(field: &str, text: &str) -> Result<Option<u32>> {
    if is_none_word(text) {
        return Ok(None);
    }
    let bad = || {
        invalid(format!(
            "{field} '{text}' is not a number of CPUs from 0.01 to 1024 with at most three \
             decimals (0.5 is half a CPU, 2 is two), or `none`"
        ))
    };
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || frac.len() > 3 {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    let millis = whole.checked_mul(1000).and_then(|w| w.checked_add(frac));
    match millis {
        Some(m) if (u64::from(MIN_CPU_MILLIS)..=u64::from(MAX_CPU_MILLIS)).contains(&m) => {
            Ok(Some(m as u32))
        }
        _ => Err(bad()),
    }
}

/// Parses a memory size (`512M`, `2G`) into bytes; `none` is no limit.
pub fn parse_memory(field: &str, text: &str) -> Result<Option<u64>> {
    if is_none_word(text) {
        return Ok(None);
    }
    let bytes = pgfork_pool::space::parse_size(text).ok_or_else(|| {
        invalid(format!(
            "{field} '{text}' is not a size like 512M or 2G, or `none`"
        ))
    })?;
    check_memory(field, bytes)?;
    Ok(Some(bytes))
}

fn check_memory(field: &str, bytes: u64) -> Result<()> {
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&bytes) {
        return Err(invalid(format!(
            "{field} {} is out of bounds: from {} (below it a branch's server cannot start) to {}",
            pgfork_pool::space::human_bytes(bytes),
            pgfork_pool::space::human_bytes(MIN_MEMORY),
            pgfork_pool::space::human_bytes(MAX_MEMORY)
        )));
    }
    Ok(())
}

/// Parses a number of processes; `none` is no limit.
pub fn parse_pids(field: &str, text: &str) -> Result<Option<u32>> {
    if is_none_word(text) {
        return Ok(None);
    }
    let n: u32 = text.trim().parse().map_err(|_| {
        invalid(format!(
            "{field} '{text}' is not a number of processes from {MIN_PIDS} to {MAX_PIDS}, or `none`"
        ))
    })?;
    check_pids(field, n)?;
    Ok(Some(n))
}

fn check_pids(field: &str, n: u32) -> Result<()> {
    if !(MIN_PIDS..=MAX_PIDS).contains(&n) {
        return Err(invalid(format!(
            "{field} {n} is out of bounds: from {MIN_PIDS} (a server's own processes) to {MAX_PIDS}"
        )));
    }
    Ok(())
}

/// Checks every value of `limits` against its bounds (whichever way it
/// came in: CLI, API, a stored default).
pub fn check_limits(prefix: &str, limits: &ComputeLimits) -> Result<()> {
    if let Some(m) = limits.cpu_millis
        && !(MIN_CPU_MILLIS..=MAX_CPU_MILLIS).contains(&m)
    {
        return Err(invalid(format!(
            "{prefix}cpu {} is out of bounds: from 0.01 to 1024 CPUs",
            f64::from(m) / 1000.0
        )));
    }
    if let Some(b) = limits.memory {
        check_memory(&format!("{prefix}memory"), b)?;
    }
    if let Some(n) = limits.pids {
        check_pids(&format!("{prefix}pids"), n)?;
    }
    Ok(())
}

/// The controllers `limits` need.
fn needed(limits: &ComputeLimits) -> Vec<(Controller, &'static str)> {
    let mut out = Vec::new();
    if limits.cpu_millis.is_some() {
        out.push((Controller::Cpu, "--cpu"));
    }
    if limits.memory.is_some() {
        out.push((Controller::Memory, "--memory"));
    }
    if limits.pids.is_some() {
        out.push((Controller::Pids, "--pids"));
    }
    out
}

/// What is refused when a limit cannot be enforced, and what to do then.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// A new branch is not made.
    Create,
    /// An existing server is not started.
    Start,
    /// A source's defaults are not stored.
    Defaults,
    /// A branch's limits are not changed.
    Change,
}

/// Refuses `limits` that this machine cannot enforce for this process,
/// saying why and what to do; `what` names whose limits they are.
pub(crate) fn require(
    cg: &Cgroups,
    limits: &ComputeLimits,
    what: &str,
    refusal: Refusal,
) -> Result<()> {
    let missing: Vec<String> = needed(limits)
        .into_iter()
        .filter_map(|(c, flag)| {
            cg.why_unusable(c)
                .map(|why| format!("{flag} needs the {c} controller, which is not usable: {why}"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let (outcome, otherwise) = match refusal {
        Refusal::Create => (
            "it is not made",
            "or ask for no such limit (`none` removes a source's default)",
        ),
        Refusal::Start => (
            "it is not started",
            "or start it where pgfork can use them (as root, with the cgroup filesystems mounted)",
        ),
        Refusal::Defaults => ("they are not stored", "or set no such default"),
        Refusal::Change => ("they are not changed", "or ask for no such limit"),
    };
    Err(EngineError::ComputeUnavailable(format!(
        "{what} cannot be held to its limits here, so {outcome}: {}. pgfork never runs a server \
         without a limit it was given: make cgroups usable (`pgfork doctor` shows what pgfork \
         found), {otherwise}",
        missing.join("; ")
    )))
}

/// `("source" | "branch", name)` of a server.
fn owner<'a>(target: Target<'a>) -> (&'static str, &'a str) {
    match target {
        Target::Source(n) => ("source", n),
        Target::Branch(n) => ("branch", n),
    }
}

/// The group a server is about to start in: the descriptors that put it
/// there, and its limits.
pub(crate) struct Joined {
    /// `cgroup.procs` of each of its directories.
    pub join: Join,
    /// Its limits.
    pub limits: ComputeLimits,
}

/// The base of a recorded group (`BASE/pgfork-HOMEID-KIND/NAME`): where
/// tidying its parents stops.
fn base_of(path: &Path) -> Option<&Path> {
    path.parent()?.parent()
}

impl Engine {
    /// The name of this home's top group: `pgfork-` and 8 hex digits of
    /// the SHA-256 of the home's canonical path.
    pub(crate) fn cgroup_root_name(&self) -> String {
        use sha2::Digest;
        let root = std::fs::canonicalize(self.home.root())
            .unwrap_or_else(|_| self.home.root().to_path_buf());
        let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("pgfork-{hex}")
    }

    /// The source a `--from` would take its data from, if it names one
    /// (read only; `branch create` says what is wrong with a bad one).
    pub(crate) fn origin_source(&self, from: &str) -> Result<Option<String>> {
        if from.contains('@') || from.chars().all(|c| c.is_ascii_digit()) {
            return Ok(self.resolve_snapshot(from).ok().map(|s| s.source));
        }
        let conn = self.meta.conn();
        if SourceRow::get(conn, from)?.is_some() {
            return Ok(Some(from.to_string()));
        }
        Ok(BranchRow::get(conn, from)?.map(|b| b.source))
    }

    /// The limits a new branch of `source` gets for `req`: the source's
    /// defaults changed by the request, bounded, and refused if this
    /// machine cannot enforce them.
    pub(crate) fn new_branch_limits(
        &self,
        name: &str,
        source: Option<&str>,
        req: &ComputeRequest,
    ) -> Result<ComputeLimits> {
        let defaults = match source {
            Some(s) => meta_compute::source_branch_defaults(self.meta.conn(), s)?,
            None => ComputeLimits::default(),
        };
        let limits = req.over(defaults);
        check_limits("--", &limits)?;
        let what = if !defaults.is_empty() && req.over(ComputeLimits::default()) != limits {
            format!(
                "branch '{name}' (with the defaults of source '{}', see `pgfork source limits`)",
                source.unwrap_or_default()
            )
        } else {
            format!("branch '{name}'")
        };
        require(&Cgroups::detect(), &limits, &what, Refusal::Create)?;
        Ok(limits)
    }

    /// Shows or changes the limits `source` gives the branches made from
    /// it afterwards (branches made before keep theirs). A limit this
    /// machine cannot enforce is refused now rather than at every create.
    pub fn source_limits(&mut self, source: &str, req: &ComputeRequest) -> Result<SourceLimits> {
        self.admin_only("change source limits")?;
        self.source_row(source)?;
        let current = meta_compute::source_branch_defaults(self.meta.conn(), source)?;
        let limits = req.over(current);
        if !req.is_empty() {
            check_limits("--branch-", &limits)?;
            require(
                &Cgroups::detect(),
                &limits,
                &format!("every new branch of source '{source}'"),
                Refusal::Defaults,
            )?;
            self.meta
                .write(|c| meta_compute::set_source_branch_defaults(c, source, &limits))?;
        }
        Ok(SourceLimits {
            source: source.to_string(),
            branch: limits.into(),
        })
    }

    /// Changes a branch's compute limits (admins only: an agent's budget is
    /// not its own to raise). They are recorded, and a running server's
    /// group gets them at once; a stopped one gets them when it starts. A
    /// limit the group refuses (memory below what the server holds now)
    /// leaves the old ones in force and recorded.
    pub fn branch_set_limits(&mut self, name: &str, req: &ComputeRequest) -> Result<()> {
        self.admin_only("change a branch's compute limits")?;
        self.branch_row(name)?;
        if req.is_empty() {
            return Ok(());
        }
        let before = meta_compute::branch_limits(self.meta.conn(), name)?;
        let limits = req.over(before);
        check_limits("--", &limits)?;
        require(
            &Cgroups::detect(),
            &limits,
            &format!("branch '{name}'"),
            Refusal::Change,
        )?;
        let own = |l: &ComputeLimits| Limits {
            cpu_millis: l.cpu_millis,
            memory_bytes: l.memory,
            pids: l.pids,
            cpu_weight: None,
        };
        let group = Group::at(&CgroupRow::of(self.meta.conn(), "branch", name)?);
        if !group.procs().is_empty()
            && let Err(e) = group.create(&own(&limits))
        {
            // Half-written limits are worse than the old ones.
            let _ = group.create(&own(&before));
            return Err(EngineError::InvalidArgument(format!(
                "branch '{name}' could not be held to the new limits, so they are not changed: {e} \
                 (memory below what its server holds now cannot be set while it runs: stop it, \
                 change the limit, start it)"
            )));
        }
        self.meta
            .write(|c| meta_compute::set_branch_limits(c, name, &limits))?;
        Ok(())
    }

    /// The limits new branches of `source` get.
    pub fn source_branch_limits(&self, source: &str) -> Result<LimitsView> {
        Ok(meta_compute::source_branch_defaults(self.meta.conn(), source)?.into())
    }

    /// A branch's limits, groups and out-of-memory kills; with `usage`,
    /// also what its group uses now (a few file reads per hierarchy).
    pub(crate) fn compute_info(&self, branch: &str, usage: bool) -> Result<ComputeInfo> {
        let conn = self.meta.conn();
        let limits = meta_compute::branch_limits(conn, branch)?;
        let paths = CgroupRow::of(conn, "branch", branch)?;
        let group = Group::at(&paths);
        // The group in use is the one with processes; others are empty
        // leftovers the next reconcile removes.
        let live: Vec<PathBuf> = group
            .dirs
            .iter()
            .filter(|d| !Group::at(std::slice::from_ref(&d.path)).procs().is_empty())
            .map(|d| d.path.clone())
            .collect();
        let current = Group::at(&live);
        let now = current.usage();
        Ok(ComputeInfo {
            limits: limits.into(),
            oom_kills: meta_compute::branch_oom_kills(conn, branch)?
                + group.usage().oom_kills.unwrap_or(0),
            usage: (usage && !live.is_empty()).then_some(now),
            cgroups: live,
        })
    }

    /// Makes the group `target`'s server is to start in, records it, sets
    /// its limits and opens it for joining. `None`: no group (cgroups are
    /// not usable here and it has no limits, or making it failed and it
    /// has none: a warning says so). A branch's limits that cannot be
    /// enforced are an error, never skipped.
    pub(crate) fn server_group(&mut self, target: Target) -> Result<Option<Joined>> {
        let (kind, name) = owner(target);
        let limits = match target {
            Target::Branch(n) => meta_compute::branch_limits(self.meta.conn(), n)?,
            Target::Source(_) => ComputeLimits::default(),
        };
        let cg = Cgroups::detect();
        require(&cg, &limits, &format!("{kind} '{name}'"), Refusal::Start)?;
        if cg.hierarchies.is_empty() {
            return Ok(None);
        }
        let parent_rel = PathBuf::from(format!(
            "{}-{}",
            self.cgroup_root_name(),
            match target {
                Target::Source(_) => "sources",
                Target::Branch(_) => "branches",
            }
        ));
        let rel = parent_rel.join(name);
        let group = cg.group(&rel);
        let parent = cg.group(&parent_rel);
        self.meta.write(|c| {
            for path in group.paths() {
                CgroupRow::record(c, &path, kind, name)?;
            }
            Ok::<_, EngineError>(())
        })?;
        let parent_limits = Limits {
            cpu_weight: Some(match target {
                Target::Source(_) => SOURCES_WEIGHT,
                Target::Branch(_) => BRANCHES_WEIGHT,
            }),
            ..Limits::default()
        };
        let own = Limits {
            cpu_millis: limits.cpu_millis,
            memory_bytes: limits.memory,
            pids: limits.pids,
            cpu_weight: None,
        };
        let ancestors = [(&parent, &parent_limits)];
        let made = make(&ancestors, &group, &own).and_then(|()| group.join());
        match made {
            Ok(join) => Ok(Some(Joined { join, limits })),
            Err(e) => {
                self.tidy_groups(Some(target));
                if limits.is_empty() {
                    self.progress.warn(&format!(
                        "{kind} '{name}' runs without a control group: {e}"
                    ));
                    Ok(None)
                } else {
                    Err(EngineError::ComputeUnavailable(format!(
                        "{kind} '{name}' cannot be held to its limits, so it is not started: {e}"
                    )))
                }
            }
        }
    }

    /// Removes the recorded groups that no process uses: those of
    /// `target` (its caller is working on it), or, with `None`, those of
    /// every server nobody is working on, then any unrecorded group under
    /// this process's own `pgfork-HOMEID-*`. A removed branch group's
    /// out-of-memory kills are added to the branch's count. Returns the
    /// orphans it removed (groups of servers that no longer exist, or that
    /// no row records), for the reconcile's report: removing the empty
    /// group of a stopped or crashed server is routine, and not reported.
    pub(crate) fn tidy_groups(&mut self, target: Option<Target>) -> Vec<String> {
        let mut removed = Vec::new();
        let Ok(rows) = CgroupRow::list(self.meta.conn()) else {
            return removed;
        };
        let busy = |engine: &Engine, kind: &str, name: &str| -> bool {
            let conn = engine.meta.conn();
            let op = match kind {
                "source" => SourceRow::get(conn, name).ok().flatten().and_then(|r| r.op),
                _ => BranchRow::get(conn, name).ok().flatten().and_then(|r| r.op),
            };
            op.is_some_and(|o| o.owner.is_alive())
        };
        let mut known: Vec<PathBuf> = Vec::new();
        for row in rows {
            known.push(row.path.clone());
            match target {
                Some(t) => {
                    if owner(t) != (row.kind.as_str(), row.name.as_str()) {
                        continue;
                    }
                }
                None => {
                    if busy(self, &row.kind, &row.name) {
                        continue;
                    }
                }
            }
            let group = Group::at(std::slice::from_ref(&row.path));
            if row.path.exists() {
                if !group.procs().is_empty() {
                    continue;
                }
            } else if !cgroup::visible(&row.path) {
                // Not gone: out of this process's sight (a mount namespace
                // without cgroups). Whoever sees it removes it.
                continue;
            }
            let kills = group.usage().oom_kills.unwrap_or(0);
            match cgroup::remove_dir(&row.path) {
                Ok(()) => {
                    let forgot = self.meta.write(|c| {
                        if CgroupRow::forget(c, &row.path)? && row.kind == "branch" {
                            meta_compute::add_branch_oom_kills(c, &row.name, kills)?;
                        }
                        Ok::<_, EngineError>(())
                    });
                    if let Err(e) = forgot {
                        tracing::warn!("forgetting control group {}: {e}", row.path.display());
                    }
                    if let (Some(parent), Some(base)) = (row.path.parent(), base_of(&row.path)) {
                        cgroup::remove_empty_parents(parent, base);
                    }
                    let conn = self.meta.conn();
                    let orphan = match row.kind.as_str() {
                        "source" => SourceRow::get(conn, &row.name).ok().flatten().is_none(),
                        _ => BranchRow::get(conn, &row.name).ok().flatten().is_none(),
                    };
                    if orphan {
                        removed.push(format!("{}", row.path.display()));
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        if target.is_none() {
            removed.extend(self.tidy_unrecorded(&known));
        }
        removed
    }

    /// Removes groups under this process's own `pgfork-HOMEID-*` that no
    /// row records (made by hand, or by a pgfork older than the records)
    /// and that hold no process.
    fn tidy_unrecorded(&mut self, known: &[PathBuf]) -> Vec<String> {
        let mut removed = Vec::new();
        let root = self.cgroup_root_name();
        for h in Cgroups::detect().hierarchies {
            for kind in ["sources", "branches"] {
                let dir = h.base.join(format!("{root}-{kind}"));
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let entries: Vec<_> = entries.flatten().collect();
                // A group is recorded before it is made, so one listed here
                // that was made after `known` was read is in the rows now:
                // read them again after the listing, never before it.
                let recorded: Vec<PathBuf> = CgroupRow::list(self.meta.conn())
                    .map(|rows| rows.into_iter().map(|r| r.path).collect())
                    .unwrap_or_default();
                for entry in entries {
                    let path = entry.path();
                    if !entry.file_type().is_ok_and(|t| t.is_dir())
                        || known.contains(&path)
                        || recorded.contains(&path)
                    {
                        continue;
                    }
                    if Group::at(std::slice::from_ref(&path)).procs().is_empty()
                        && cgroup::remove_tree(&path).is_ok()
                    {
                        removed.push(format!("{}", path.display()));
                    }
                }
                cgroup::remove_empty_parents(&dir, &h.base);
            }
        }
        removed
    }
}

/// Makes `group` below its `ancestors` (outermost first, each with its
/// weight), retrying if a concurrent tidy removed an (empty) ancestor in
/// between: the group's mkdir then finds no parent.
fn make(ancestors: &[(&Group, &Limits)], group: &Group, own: &Limits) -> Result<(), CgroupError> {
    let mut attempt = 0;
    loop {
        // The ancestors' weights again after: one removed and made again by
        // the group's own walk in between would have the default.
        let ancestors_made = || {
            ancestors
                .iter()
                .try_for_each(|(g, limits)| g.create(limits))
        };
        let made = ancestors_made()
            .and_then(|()| group.create(own))
            .and_then(|()| ancestors_made());
        match made {
            Err(CgroupError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && attempt < 3 =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `doctor`'s findings on cgroups, given what was detected and meta.db.
pub(crate) fn compute_checks(
    cg: &Cgroups,
    conn: &pgfork_pool::meta::Connection,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let places: Vec<String> = cg
        .hierarchies
        .iter()
        .map(|h| {
            let names: Vec<&str> = h.controllers.iter().map(|c| c.name()).collect();
            format!(
                "{} ({}, under {})",
                names.join(","),
                match h.version {
                    cgroup::Version::V1 => "v1",
                    cgroup::Version::V2 => "v2",
                },
                h.base.display()
            )
        })
        .collect();
    let limit_controllers = Controller::LIMITS.iter().filter(|c| cg.usable(**c)).count();
    if limit_controllers == Controller::LIMITS.len() {
        out.push((
            "compute limits",
            format!(
                "branches can get --cpu, --memory and --pids; servers run in control groups: {}",
                places.join("; ")
            ),
        ));
    } else {
        let why: Vec<String> = cg
            .unusable
            .iter()
            .map(|(c, r)| format!("{c}: {r}"))
            .collect();
        let effect = if limit_controllers == 0 {
            "branches run without compute limits, and asking for one (--cpu, --memory, --pids) \
             is refused"
                .to_string()
        } else {
            format!(
                "only what the usable controllers allow can be asked for ({})",
                places.join("; ")
            )
        };
        out.push(("compute limits", format!("{effect}: {}", why.join("; "))));
    }
    let rows = CgroupRow::list(conn).unwrap_or_default();
    let stray: Vec<String> = rows
        .iter()
        .filter(|r| {
            let running = match r.kind.as_str() {
                "source" => SourceRow::get(conn, &r.name)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.postmaster.is_some_and(|p| p.is_alive()) || s.op.is_some()),
                _ => BranchRow::get(conn, &r.name)
                    .ok()
                    .flatten()
                    .is_some_and(|b| b.postmaster.is_some_and(|p| p.is_alive()) || b.op.is_some()),
            };
            !running
        })
        .map(|r| {
            let procs = Group::at(std::slice::from_ref(&r.path)).procs();
            if procs.is_empty() {
                format!("{} (empty)", r.path.display())
            } else {
                format!(
                    "{} (processes {procs:?} of no running server)",
                    r.path.display()
                )
            }
        })
        .collect();
    if !stray.is_empty() {
        out.push((
            "control groups",
            format!(
                "groups of servers that no longer run: {}; any pgfork command removes the empty \
                 ones; stop the processes of the others",
                stray.join(", ")
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_parse_to_thousandths_within_bounds() {
        assert_eq!(parse_cpu("--cpu", "0.25").unwrap(), Some(250));
        assert_eq!(parse_cpu("--cpu", "2").unwrap(), Some(2000));
        assert_eq!(parse_cpu("--cpu", ".5").unwrap(), Some(500));
        assert_eq!(parse_cpu("--cpu", "1.125").unwrap(), Some(1125));
        assert_eq!(parse_cpu("--cpu", "none").unwrap(), None);
        for bad in [
            "0", "0.0", "0.001", "abc", "", ".", "-1", "1e3", "0.1234", "1025", "NaN", "inf", "1,5",
        ] {
            let e = parse_cpu("--cpu", bad).unwrap_err().to_string();
            assert!(
                e.contains("--cpu") && e.contains("0.01 to 1024"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn memory_and_pids_have_sane_floors() {
        assert_eq!(parse_memory("--memory", "512M").unwrap(), Some(512 << 20));
        assert_eq!(parse_memory("--memory", "none").unwrap(), None);
        let e = parse_memory("--memory", "1K").unwrap_err().to_string();
        assert!(e.contains("64.0 MiB"), "{e}");
        assert!(parse_memory("--memory", "lots").is_err());
        assert!(parse_memory("--memory", "17T").is_err());
        assert_eq!(parse_pids("--pids", "100").unwrap(), Some(100));
        assert!(parse_pids("--pids", "3").is_err());
        assert!(parse_pids("--pids", "-3").is_err());
    }

    #[test]
    fn requests_change_defaults_field_by_field() {
        let defaults = ComputeLimits {
            cpu_millis: Some(500),
            memory: Some(512 << 20),
            pids: None,
        };
        let req = ComputeRequest {
            cpu_millis: Some(Some(250)),
            memory: Some(None),
            pids: None,
        };
        assert_eq!(
            req.over(defaults),
            ComputeLimits {
                cpu_millis: Some(250),
                memory: None,
                pids: None
            }
        );
        assert_eq!(ComputeRequest::default().over(defaults), defaults);
    }

    #[test]
    fn limits_without_controllers_are_refused_with_the_reason() {
        let cg = Cgroups::detect_from("", "");
        let limits = ComputeLimits {
            memory: Some(256 << 20),
            ..ComputeLimits::default()
        };
        let e = require(&cg, &limits, "branch 'b'", Refusal::Create).unwrap_err();
        assert_eq!(e.code(), "compute_unavailable");
        let text = e.to_string();
        assert!(
            text.contains("--memory needs the memory controller"),
            "{text}"
        );
        assert!(text.contains("pgfork doctor"), "{text}");
        require(&cg, &ComputeLimits::default(), "branch 'b'", Refusal::Start).unwrap();
    }
}
