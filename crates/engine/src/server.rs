//! Starting and stopping the servers of sources and branches, and the
//! per-object operation claims that keep two pgfork processes apart.

use std::path::Path;
use std::time::Duration;

use pgfork_os::{ProcessId, RunAs};
use pgfork_pg::conf::{Profile, ServerConf};
use pgfork_pg::server::{self, StartSpec};
use pgfork_pg::{PgError, Postmaster, StopMode};
use pgfork_pool::meta::{BranchRow, Op, OpKind, RunState, SourceRow};

use crate::{Engine, EngineError, Result, ServerKind, ports};

/// How long a postmaster may take to accept its first connection.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before escalating.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(30);
/// How long an immediate shutdown may take before SIGKILL.
pub(crate) const QUIT_GRACE: Duration = Duration::from_secs(5);

/// A source or branch, for operations common to both.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    Source(&'a str),
    Branch(&'a str),
}

impl Target<'_> {
    fn describe(&self) -> String {
        match self {
            Target::Source(n) => format!("source '{n}'"),
            Target::Branch(n) => format!("branch '{n}'"),
        }
    }
}

impl Engine {
    /// Ends this process's operation on `target`, first recording where
    /// its server now stands, if the operation got that far: the state and
    /// postmaster of a start (`Running` with its pid, or `Stopped` if it
    /// did not come up) or of a completed stop.
    pub(crate) fn settle(
        &mut self,
        target: Target,
        server: Option<(RunState, Option<ProcessId>)>,
    ) -> Result<()> {
        self.meta.write(|c| {
            if let Some((state, pm)) = server {
                match target {
                    Target::Source(n) => SourceRow::set_state(c, n, state, pm)?,
                    Target::Branch(n) => BranchRow::set_state(c, n, state, pm)?,
                }
            }
            match target {
                Target::Source(n) => SourceRow::set_op(c, n, None),
                Target::Branch(n) => BranchRow::set_op(c, n, None),
            }
        })?;
        Ok(())
    }

    /// Marks `target` as being worked on by this process. Fails if another
    /// live pgfork process is on it; an interrupted op is reconciled first.
    pub(crate) fn claim(&mut self, target: Target, kind: OpKind) -> Result<()> {
        for attempt in 0..2 {
            let stale = self.meta.write(|c| {
                let op = match target {
                    Target::Source(n) => {
                        SourceRow::get(c, n)?
                            .ok_or_else(|| EngineError::UnknownSource(n.into()))?
                            .op
                    }
                    Target::Branch(n) => {
                        BranchRow::get(c, n)?
                            .ok_or_else(|| EngineError::UnknownBranch(n.into()))?
                            .op
                    }
                };
                if let Some(op) = op {
                    if op.owner == ProcessId::current_thread() {
                        // Nested step of our own operation (a cascade).
                    } else if op.owner.is_alive() {
                        return Err(EngineError::Busy {
                            what: target.describe(),
                            op: op.kind.as_str(),
                            pid: op.owner.pid,
                        });
                    } else {
                        return Ok(true);
                    }
                }
                let op = Some(Op::mine(kind));
                match target {
                    Target::Source(n) => SourceRow::set_op(c, n, op)?,
                    Target::Branch(n) => BranchRow::set_op(c, n, op)?,
                }
                Ok(false)
            })?;
            if !stale {
                return Ok(());
            }
            if attempt == 0 {
                self.reconciled = self.reconcile()?;
            }
        }
        Err(EngineError::WrongState(format!(
            "{} was left half-done by an interrupted pgfork process; run the command again",
            target.describe()
        )))
    }

    /// Writes `pgfork.conf` and starts the server as `owner`, waiting for
    /// it by connecting. If its port was taken meanwhile (another program,
    /// or a pgfork of another home), picks a new one, records it, retries.
    /// The server starts in its control group, if it gets one (see
    /// [`crate::compute`]); its other, empty groups are removed after.
    pub(crate) fn start_server(
        &mut self,
        target: Target,
        datadir: &Path,
        owner: &RunAs,
        profile: Profile,
        extra: &[(String, String)],
        port: u16,
    ) -> Result<(Postmaster, u16)> {
        let joined = self.server_group(target)?;
        let mut extra = extra.to_vec();
        if joined.as_ref().is_some_and(|j| j.limits.memory.is_some()) {
            // Out of memory, the branch stops and shows as crashed rather
            // than re-initialising (see crate::compute).
            extra.push(("restart_after_crash".into(), "off".into()));
        }
        let started = self.start_in_group(
            target,
            datadir,
            owner,
            profile,
            &extra,
            port,
            joined.as_ref().map(|j| &j.join),
        );
        drop(joined);
        self.tidy_groups(Some(target));
        started
    }

    #[allow(clippy::too_many_arguments)]
    fn start_in_group(
        &mut self,
        target: Target,
        datadir: &Path,
        owner: &RunAs,
        profile: Profile,
        extra: &[(String, String)],
        mut port: u16,
        cgroup: Option<&pgfork_os::cgroup::Join>,
    ) -> Result<(Postmaster, u16)> {
        let (kind, name) = match target {
            Target::Source(n) => (ServerKind::Source, n),
            Target::Branch(n) => (ServerKind::Branch, n),
        };
        let socket_dir = self.socket_dir(kind, name);
        let log = self.log_path(kind, name);
        let mut tried = Vec::new();
        loop {
            let mut conf = ServerConf::new(port, &socket_dir, profile);
            conf.extra = extra.to_vec();
            conf.write(datadir, owner)?;
            let spec = StartSpec {
                bins: &self.config.bins,
                datadir,
                log: &log,
                run_as: owner,
                socket_dir: &socket_dir,
                port,
                overrides: &[],
                timeout: START_TIMEOUT,
                cgroup,
            };
            match server::start(&spec) {
                Ok(pm) => return Ok((pm, port)),
                Err(PgError::PortInUse { .. }) if tried.len() < 8 => {
                    tried.push(port);
                    let range = self.config.ports;
                    port = self.meta.write(|c| {
                        let p = ports::allocate(c, range, &tried)?;
                        match target {
                            Target::Source(n) => SourceRow::set_port(c, n, p)?,
                            Target::Branch(n) => BranchRow::set_port(c, n, p)?,
                        }
                        Ok::<_, EngineError>(p)
                    })?;
                    tracing::info!(name, port, "port was taken; retrying on another");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The state a start leaves: running with its postmaster, or stopped.
pub(crate) fn after_start(pm: Option<ProcessId>) -> Option<(RunState, Option<ProcessId>)> {
    Some((
        if pm.is_some() {
            RunState::Running
        } else {
            RunState::Stopped
        },
        pm,
    ))
}

/// Stops whatever postmaster serves `datadir`: the recorded one if it
/// still runs, else the one in `postmaster.pid`. Then kills leftovers.
pub(crate) fn stop_server(
    recorded: Option<ProcessId>,
    datadir: &Path,
    mode: StopMode,
) -> Result<()> {
    let grace = if mode == StopMode::Fast {
        STOP_GRACE
    } else {
        QUIT_GRACE
    };
    let pid = recorded
        .filter(ProcessId::is_alive)
        .or_else(|| server::running_postmaster(datadir));
    if let Some(pid) = pid {
        server::stop(pid, mode, grace)?;
    }
    server::kill_leftovers(datadir);
    Ok(())
}
