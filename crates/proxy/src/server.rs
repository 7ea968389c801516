//! The listener: accepts clients up to a limit, logs them in, finds (or
//! makes, or wakes) what their agent's policy routes them to, and runs the
//! session. Around it: sessions counted per agent and per source (each
//! agent's limit, and slots kept free on a source for its application),
//! cancel requests routed to the right server process, revoked agents'
//! sessions ended, idle branches stopped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgfork_engine::agents::{MAX_CONNECTIONS, Policy, SourceSlots, Wake};
use pgfork_engine::{Engine, Quiet};
use pgfork_pool::Home;
use pgfork_pool::meta::AgentRow;
use rand::RngExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::audit::AuditSink;
use crate::login::{self, First};
use crate::policy::Rules;
use crate::session::{self, Limits, SessionInfo};
use crate::upstream::{self, Address, Login, UpstreamError};
use crate::wire::FrameReader;
use crate::wire::backend::{backend_key_data, ready_for_query};

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most client connections at once; more get "too many connections".
    pub max_connections: usize,
    /// Largest message accepted, in bytes.
    pub max_message: usize,
    /// Time a client has to send its startup packet and log in.
    pub login_timeout: Duration,
    /// How long a read-only or dry-run transaction may stay open.
    pub transaction_limit: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            max_connections: 2000,
            max_message: 64 << 20,
            login_timeout: Duration::from_secs(15),
            transaction_limit: session::limits::TRANSACTION_LIMIT,
        }
    }
}

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Listening failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A non-loopback address.
    #[error(
        "{0} is not a loopback address: the proxy speaks no TLS, so it listens on 127.0.0.1 (or ::1) only"
    )]
    NotLoopback(SocketAddr),
}

struct CancelTarget {
    address: Address,
    key: (i32, Vec<u8>),
}

#[derive(Default)]
struct BranchUse {
    sessions: usize,
    last: Option<Instant>,
    idle_stop: Option<Duration>,
    max_storage: Option<u64>,
    over_storage: Arc<AtomicBool>,
}

/// State shared by all sessions of one proxy.
pub struct Shared {
    home: Home,
    opts: ProxyOptions,
    audit: AuditSink,
    slots: Arc<Semaphore>,
    mock_secret: [u8; 32],
    cancels: Mutex<HashMap<(i32, i32), CancelTarget>>,
    /// Kill switches of live sessions, by agent.
    sessions: Mutex<HashMap<String, Vec<watch::Sender<bool>>>>,
    branches: Mutex<HashMap<String, BranchUse>>,
    /// Server parameters last reported per kind of session, for idle clients.
    hellos: Mutex<HashMap<String, Vec<bytes::Bytes>>>,
    counts: Mutex<Counts>,
    shutdown: watch::Sender<bool>,
}

/// Connection slots of a source that the proxy always leaves to others
/// (the application), beyond those reserved for superusers.
pub const APP_RESERVE: u32 = 10;

/// How long a session waits for a slot under its role's CONNECTION LIMIT:
/// pgfork's own check session (as that role) may take a moment to end.
const ROLE_SLOT_WAIT: Duration = Duration::from_secs(2);

/// The most sessions the proxy opens on a source with `max_connections`
/// slots, `reserved` of which only superusers may use: [`APP_RESERVE`]
/// slots stay free for everyone else.
pub fn source_cap(max_connections: u32, reserved: u32) -> usize {
    max_connections
        .saturating_sub(reserved)
        .saturating_sub(APP_RESERVE) as usize
}

/// Live sessions (from login to disconnect, whether or not their server
/// session is open yet) per agent and per source, and each source's cap.
#[derive(Default)]
struct Counts {
    agents: HashMap<String, usize>,
    sources: HashMap<String, usize>,
    /// Per source: the postmaster its slots were read from, and its slots.
    caps: HashMap<String, ((i32, u64), SourceSlots)>,
}

/// A session's place in the counts, given back when it is dropped.
struct Seat {
    shared: Arc<Shared>,
    agent: String,
    source: Option<String>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut counts = lock(&self.shared.counts);
        release(&mut counts.agents, &self.agent);
        if let Some(source) = &self.source {
            release(&mut counts.sources, source);
        }
    }
}

fn release(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Takes one of the agent's sessions, or says why not.
fn agent_seat(shared: &Arc<Shared>, agent: &AgentRow) -> Result<Seat, String> {
    let limit = agent.max_connections.clamp(1, i64::from(MAX_CONNECTIONS)) as usize;
    let mut counts = lock(&shared.counts);
    let n = counts.agents.entry(agent.name.clone()).or_default();
    if *n >= limit {
        return Err(format!(
            "too many connections for agent \"{}\": it holds {n} proxy sessions, its limit \
             (agent create --max-connections {limit}); close one and retry, or use an agent made \
             with a higher --max-connections",
            agent.name
        ));
    }
    *n += 1;
    Ok(Seat {
        shared: shared.clone(),
        agent: agent.name.clone(),
        source: None,
    })
}

/// Takes one of the proxy's sessions on a source (whose postmaster is
/// `run`), within [`source_cap`] of its slots, read once per postmaster.
async fn source_seat(
    shared: &Arc<Shared>,
    seat: &mut Seat,
    source: &str,
    run: (i32, u64),
) -> Result<(), (&'static str, String)> {
    let known = lock(&shared.counts)
        .caps
        .get(source)
        .filter(|(r, _)| *r == run)
        .map(|(_, slots)| *slots);
    let slots = match known {
        Some(slots) => slots,
        None => {
            let home = shared.home.clone();
            let name = source.to_string();
            let slots = tokio::task::spawn_blocking(move || {
                pgfork_engine::agents::source_slots(&home, &name)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| {
                let msg = format!(
                    "pgfork: cannot read the connection settings of source \"{source}\": {e}"
                );
                ("08006", msg)
            })?;
            lock(&shared.counts)
                .caps
                .insert(source.to_string(), (run, slots));
            slots
        }
    };
    let cap = source_cap(slots.max_connections, slots.reserved);
    let mut counts = lock(&shared.counts);
    let n = counts.sources.entry(source.to_string()).or_default();
    if *n >= cap {
        return Err(("53300", source_full(source, *n, slots)));
    }
    *n += 1;
    seat.source = Some(source.to_string());
    Ok(())
}

/// Why a session on a full source is refused, and what to do.
fn source_full(source: &str, sessions: usize, slots: SourceSlots) -> String {
    format!(
        "pgfork proxy: {sessions} sessions on source \"{source}\" already, the most it opens there: \
         of its max_connections = {}, {} are reserved for superusers and {APP_RESERVE} stay free for \
         the application; close a session and retry, or raise max_connections \
         (psql \"$(pgfork source dsn {source} --superuser)\" -c 'ALTER SYSTEM SET max_connections = 200', \
         then pgfork source stop {source} and pgfork source start {source})",
        slots.max_connections, slots.reserved
    )
}

/// Runs the proxy until `stop` resolves. Binds first, so that a port in
/// use is an error at once; `ready` is called once it listens.
pub async fn run(
    home: Home,
    opts: ProxyOptions,
    stop: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ProxyError> {
    if !opts.listen.ip().is_loopback() {
        return Err(ProxyError::NotLoopback(opts.listen));
    }
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ProxyError::Listen {
            addr: opts.listen,
            source,
        })?;
    ready(listener.local_addr().unwrap_or(opts.listen));
    let (audit, _writer) = crate::audit::start(home.clone());
    let mut mock_secret = [0u8; 32];
    rand::rng().fill(&mut mock_secret[..]);
    let shared = Arc::new(Shared {
        home,
        slots: Arc::new(Semaphore::new(opts.max_connections)),
        opts,
        audit,
        mock_secret,
        cancels: Mutex::default(),
        sessions: Mutex::default(),
        branches: Mutex::default(),
        hellos: Mutex::default(),
        counts: Mutex::default(),
        shutdown: watch::channel(false).0,
    });
    let watcher = tokio::spawn(watch_agents(shared.clone()));
    let idler = tokio::spawn(watch_branches(shared.clone()));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((conn, peer)) => {
                    let s = shared.clone();
                    tokio::spawn(async move { connection(s, conn, peer).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("proxy: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = shared.shutdown.send(true);
    watcher.abort();
    idler.abort();
    // Give sessions a moment to tell their clients, then make sure their
    // statements are in the audit log before the process ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let audit = shared.audit.clone();
    let _ = tokio::task::spawn_blocking(move || audit.flush(Duration::from_secs(10))).await;
    Ok(())
}

async fn connection(shared: Arc<Shared>, conn: TcpStream, peer: SocketAddr) {
    let _ = conn.set_nodelay(true);
    let (r, mut w) = conn.into_split();
    let mut reader = FrameReader::new(r, shared.opts.max_message);
    let first =
        tokio::time::timeout(shared.opts.login_timeout, login::hello(&mut reader, &mut w)).await;
    let hello = match first {
        Ok(First::Session(h)) => h,
        Ok(First::Cancel(pid, key)) => {
            cancel(&shared, pid, key).await;
            return;
        }
        Ok(First::Refused(_) | First::Gone) => return,
        Err(_) => {
            session::fatal(&mut w, "08P01", "timeout waiting for the startup packet").await;
            return;
        }
    };
    let Ok(_slot) = shared.slots.clone().try_acquire_owned() else {
        session::fatal(
            &mut w,
            "53300",
            "sorry, too many clients already (the pgfork proxy's --max-connections)",
        )
        .await;
        return;
    };
    let home = shared.home.clone();
    let user = hello.user.clone();
    let agent =
        tokio::task::spawn_blocking(move || pgfork_engine::agents::lookup_agent(&home, &user))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
    let authed = tokio::time::timeout(
        shared.opts.login_timeout,
        login::authenticate(
            &mut reader,
            &mut w,
            &hello.user,
            agent.as_ref(),
            &shared.mock_secret,
        ),
    )
    .await
    .unwrap_or(false);
    let Some(agent) = agent.filter(|_| authed) else {
        return;
    };
    let mut seat = match agent_seat(&shared, &agent) {
        Ok(seat) => seat,
        Err(msg) => {
            session::fatal(&mut w, "53300", &msg).await;
            return;
        }
    };
    let session_id = format!("{:08x}", rand::rng().random::<u32>());
    let opened = open_session(
        &shared,
        &agent,
        &hello,
        &session_id,
        peer,
        &mut seat,
        reader,
        w,
    )
    .await;
    match opened {
        Ok(()) => {}
        Err(e) => tracing::info!("proxy: session {session_id} of agent {}: {e}", agent.name),
    }
}

/// Resolves the target, connects, tells the client it is in, runs the
/// session, cleans up.
#[allow(clippy::too_many_arguments)]
async fn open_session(
    shared: &Arc<Shared>,
    agent: &AgentRow,
    hello: &login::Hello,
    session_id: &str,
    peer: SocketAddr,
    seat: &mut Seat,
    reader: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    mut w: tokio::net::tcp::OwnedWriteHalf,
) -> Result<(), String> {
    let policy = Policy::parse(&agent.policy).map_err(|e| e.to_string())?;
    let per_session = (policy == Policy::Branch && agent.per_session).then(|| {
        let n: u32 = rand::rng().random();
        format!("{}-s{:06x}", agent.name, n & 0xff_ffff)
    });
    let target = match resolve(shared, agent, per_session.clone()).await {
        Ok(t) => t,
        Err(e) => {
            session::fatal(
                &mut w,
                "08006",
                &format!("pgfork: the agent's database is not available: {e}"),
            )
            .await;
            return Err(e);
        }
    };
    if target.database != hello.database {
        let msg = format!(
            "database \"{}\" is not the database of agent \"{}\" (connect to \"{}\")",
            hello.database, agent.name, target.database
        );
        session::fatal(&mut w, "3D000", &msg).await;
        cleanup_branch(shared, agent, per_session.as_deref()).await;
        return Err(msg);
    }
    if let Some(run) = target.run
        && let Err((code, msg)) = source_seat(shared, seat, &target.name, run).await
    {
        session::fatal(&mut w, code, &msg).await;
        return Err(msg);
    }
    let mut params = hello.params.clone();
    params.push(("options".into(), server_options(agent, policy)));
    let (pid, key): (i32, i32) = {
        let mut rng = rand::rng();
        (rng.random_range(1..i32::MAX), rng.random())
    };
    let hello_key = format!("{:?}|{:?}", target.login, params);
    let cached = lock(&shared.hellos).get(&hello_key).cloned();
    let mut reader = reader;
    let upstream = if let Some(frames) = cached {
        // An idle client costs no server session: it is answered with what
        // the last session of the same kind was told, and the server
        // session is opened when its first message arrives.
        if w.write_all(&welcome(&frames, pid, key)).await.is_err() {
            cleanup_branch(shared, agent, per_session.as_deref()).await;
            return Ok(());
        }
        let mut stop = shared.shutdown.subscribe();
        let first = tokio::select! {
            r = reader.wait_for_data() => r.unwrap_or(false),
            _ = stop.wait_for(|k| *k) => false,
        };
        // A client that only says goodbye needs no server session.
        if !first || reader.peek_tag() == Some(b'X') {
            cleanup_branch(shared, agent, per_session.as_deref()).await;
            return Ok(());
        }
        let home = shared.home.clone();
        let name = agent.name.clone();
        let active =
            tokio::task::spawn_blocking(move || pgfork_engine::agents::lookup_agent(&home, &name))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .is_some_and(|a| a.revoked_at.is_none());
        if !active {
            session::fatal(
                &mut w,
                "57P01",
                "terminating connection: pgfork revoked this agent",
            )
            .await;
            return Ok(());
        }
        // Its branch may have been stopped while the client sat idle.
        let login = match resolve(shared, agent, per_session.clone()).await {
            Ok(t) => t.login,
            Err(e) => {
                session::fatal(
                    &mut w,
                    "08006",
                    &format!("pgfork: the agent's database is not available: {e}"),
                )
                .await;
                return Err(e);
            }
        };
        match connect_upstream(shared, agent, policy, &login, &params).await {
            Ok(u) => u,
            Err(msg) => {
                session::fatal(
                    &mut w,
                    "08006",
                    &format!("pgfork: cannot open a session on {}: {msg}", target.name),
                )
                .await;
                cleanup_branch(shared, agent, per_session.as_deref()).await;
                return Err(msg);
            }
        }
    } else {
        let u = match connect_upstream(shared, agent, policy, &target.login, &params).await {
            Ok(u) => u,
            Err(msg) => {
                session::fatal(
                    &mut w,
                    "08006",
                    &format!("pgfork: cannot open a session on {}: {msg}", target.name),
                )
                .await;
                cleanup_branch(shared, agent, per_session.as_deref()).await;
                return Err(msg);
            }
        };
        lock(&shared.hellos).insert(hello_key, u.parameters.clone());
        if w.write_all(&welcome(&u.parameters, pid, key))
            .await
            .is_err()
        {
            cleanup_branch(shared, agent, per_session.as_deref()).await;
            return Ok(());
        }
        u
    };
    lock(&shared.cancels).insert(
        (pid, key),
        CancelTarget {
            address: target.login.address.clone(),
            key: upstream.key.clone(),
        },
    );
    let (kill_tx, kill_rx) = watch::channel(*shared.shutdown.borrow());
    lock(&shared.sessions)
        .entry(agent.name.clone())
        .or_default()
        .push(kill_tx);
    let mut shutdown = shared.shutdown.subscribe();
    let over_storage = if policy == Policy::Branch {
        let mut b = lock(&shared.branches);
        let u = b.entry(target.name.clone()).or_default();
        u.sessions += 1;
        u.last = Some(Instant::now());
        touch(shared, &target.name);
        u.idle_stop = agent
            .idle_stop
            .map(|s| Duration::from_secs(s.max(1) as u64));
        u.max_storage = agent.max_storage.map(|m| m as u64);
        u.over_storage.clone()
    } else {
        Arc::new(AtomicBool::new(false))
    };
    let info = Arc::new(SessionInfo {
        agent: agent.name.clone(),
        session: session_id.to_string(),
        client: peer.to_string(),
        target: target.name.clone(),
        policy: agent.policy.clone(),
        audit: shared.audit.clone(),
        last_status: Arc::new(AtomicU8::new(b'I')),
        busy: Arc::new(AtomicBool::new(false)),
    });
    let rules = Rules {
        policy,
        has_timeout: agent.statement_timeout_ms.is_some(),
    };
    let limits = Limits::for_agent(
        policy,
        agent.statement_timeout_ms,
        shared.opts.transaction_limit,
        agent.max_rows,
        agent.audit_params,
        over_storage,
        agent.max_storage,
    );
    // A shutdown of the proxy ends the session like a revocation.
    let (kill_all_tx, kill_all_rx) = watch::channel(false);
    let mut agent_kill = kill_rx;
    let forward_kill = tokio::spawn(async move {
        tokio::select! {
            _ = agent_kill.wait_for(|k| *k) => {}
            _ = shutdown.wait_for(|k| *k) => {}
        }
        let _ = kill_all_tx.send(true);
    });
    let ended = session::run(
        reader,
        w,
        upstream,
        target.login.address.clone(),
        info,
        rules,
        limits,
        kill_all_rx,
        shared.opts.max_message,
    )
    .await;
    forward_kill.abort();
    tracing::debug!("proxy: session {session_id} ended: {ended:?}");
    lock(&shared.cancels).remove(&(pid, key));
    if let Some(list) = lock(&shared.sessions).get_mut(&agent.name) {
        list.retain(|k| !k.is_closed() && k.receiver_count() > 0);
    }
    if policy == Policy::Branch
        && let Some(u) = lock(&shared.branches).get_mut(&target.name)
    {
        u.sessions = u.sessions.saturating_sub(1);
        u.last = Some(Instant::now());
        touch(shared, &target.name);
    }
    cleanup_branch(shared, agent, per_session.as_deref()).await;
    Ok(())
}

/// What a client is told once it is in: server parameters, its cancel key, ready.
fn welcome(parameters: &[bytes::Bytes], pid: i32, key: i32) -> BytesMut {
    let mut out = BytesMut::new();
    for p in parameters {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&backend_key_data(pid, key));
    out.extend_from_slice(&ready_for_query(b'I'));
    out
}

/// Opens the server session. A read-only or dry-run agent's own role is
/// checked first, as that role, and made or repaired if needed (see
/// `prepare_agent_role`); if the server still refuses it at login (a
/// logical source refreshed into a new cluster meanwhile), it is made
/// again, once.
async fn connect_upstream(
    shared: &Arc<Shared>,
    agent: &AgentRow,
    policy: Policy,
    login: &Login,
    params: &[(String, String)],
) -> Result<upstream::Upstream, String> {
    let own_role = policy != Policy::Branch;
    if own_role {
        role_work(shared, agent, false).await?;
    }
    let mut remade = false;
    let deadline = Instant::now() + ROLE_SLOT_WAIT;
    loop {
        match upstream::connect(login, params, shared.opts.max_message).await {
            Err(UpstreamError::Refused(e)) if own_role && e.code == "28000" && !remade => {
                remade = true;
                role_work(shared, agent, true).await?;
            }
            // The check's session counts under the role's CONNECTION LIMIT
            // until the server has seen it end.
            Err(UpstreamError::Refused(e))
                if own_role && e.code == "53300" && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => {
                return other.map_err(|e| match e {
                    UpstreamError::Refused(f) => f.message,
                    other => other.to_string(),
                });
            }
        }
    }
}

/// Checks (and if needed makes or repairs) an agent's role on its source;
/// `remake`: makes it again without checking.
async fn role_work(shared: &Arc<Shared>, agent: &AgentRow, remake: bool) -> Result<(), String> {
    let home = shared.home.clone();
    let name = agent.name.clone();
    let done = tokio::task::spawn_blocking(move || {
        if remake {
            pgfork_engine::agents::repair_agent_role(&home, &name).map(|()| true)
        } else {
            pgfork_engine::agents::prepare_agent_role(&home, &name)
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    match done {
        Ok(repaired) => {
            if repaired {
                tracing::info!("proxy: made or repaired the role of agent {}", agent.name);
            }
            Ok(())
        }
        Err(e) => Err(format!("the agent's role on its source is not ready: {e}")),
    }
}

/// Deletes a per-session branch at the end of its session (unless kept).
async fn cleanup_branch(shared: &Arc<Shared>, agent: &AgentRow, per_session: Option<&str>) {
    let Some(name) = per_session else { return };
    lock(&shared.branches).remove(name);
    if agent.keep {
        return;
    }
    let home = shared.home.clone();
    let name = name.to_string();
    let result = tokio::task::spawn_blocking(move || {
        let mut e = Engine::open(home, Arc::new(Quiet))?;
        match e.branch_delete(&name, false) {
            Err(err) if err.is_not_found() => Ok(Vec::new()),
            other => other,
        }
    })
    .await;
    if let Ok(Err(e)) = result {
        tracing::warn!("proxy: deleting a per-session branch: {e}");
    }
}

/// Settings the server session starts with: the proxy's, not the client's.
fn server_options(agent: &AgentRow, policy: Policy) -> String {
    // The proxy reads strings as the server does only with standard
    // strings; and a backend whose proxy connection closed stops at once,
    // whatever its SQL does with cancels.
    let mut o = vec![
        "-c standard_conforming_strings=on".to_string(),
        "-c client_connection_check_interval=1000".to_string(),
    ];
    match policy {
        Policy::ReadOnly => o.push("-c default_transaction_read_only=on".to_string()),
        Policy::DryRun => {
            // A dry run must not stall the source: short waits for locks,
            // and no transaction left open.
            o.push("-c lock_timeout=2s".into());
            o.push("-c idle_in_transaction_session_timeout=60s".into());
        }
        Policy::Branch => {}
    }
    let timeout = agent
        .statement_timeout_ms
        .or((policy == Policy::DryRun).then_some(30_000));
    if let Some(ms) = timeout {
        o.push(format!("-c statement_timeout={ms}"));
    }
    o.join(" ")
}

struct Target {
    name: String,
    database: String,
    login: Login,
    /// A source's postmaster; `None` for a branch.
    run: Option<(i32, u64)>,
}

async fn resolve(
    shared: &Arc<Shared>,
    agent: &AgentRow,
    per_session: Option<String>,
) -> Result<Target, String> {
    let home = shared.home.clone();
    let agent = agent.clone();
    tokio::task::spawn_blocking(move || -> Result<Target, pgfork_engine::EngineError> {
        let mut engine = Engine::open(home, Arc::new(Quiet))?;
        if agent.policy == "branch" {
            let (dsn, wake) = engine.agent_branch_ready(&agent, per_session.as_deref())?;
            if wake != Wake::Running {
                tracing::info!("proxy: branch for agent {} was {wake:?}", agent.name);
            }
            let name = per_session.unwrap_or_else(|| pgfork_engine::agents::agent_branch(&agent));
            // The branch's own application role and password, as in its
            // DSN; over its unix socket rather than TCP, which saves a
            // loopback TCP hop per message (the socket directory is
            // pgfork's alone; the role is never a superuser).
            let socket_dir = engine.branch_info(&name)?.socket_dir;
            return Ok(Target {
                name,
                run: None,
                database: dsn.database.clone(),
                login: Login {
                    address: Address::Unix(socket_dir, dsn.port),
                    user: dsn.user.clone(),
                    password: Some(dsn.password.clone()),
                    database: dsn.database.clone(),
                },
            });
        }
        let ep = engine.source_endpoint(&agent)?;
        if !ep.running {
            return Err(pgfork_engine::EngineError::WrongState(format!(
                "source '{}' is not running: `pgfork source start {}`",
                ep.source, ep.source
            )));
        }
        Ok(Target {
            name: ep.source.clone(),
            run: ep.run,
            database: ep.database.clone(),
            login: Login {
                address: Address::Unix(ep.socket_dir.clone(), ep.port),
                user: ep.role.clone(),
                password: None,
                database: ep.database.clone(),
            },
        })
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

async fn cancel(shared: &Arc<Shared>, pid: i32, key: i32) {
    let target = lock(&shared.cancels)
        .get(&(pid, key))
        .map(|t| (t.address.clone(), t.key.clone()));
    // An unknown key gets no answer, as from PostgreSQL.
    if let Some((address, key)) = target {
        let _ = upstream::cancel(&address, key.0, &key.1).await;
    }
}

/// Ends the sessions of revoked (or deleted) agents, twice a second.
async fn watch_agents(shared: Arc<Shared>) {
    let mut timer = tokio::time::interval(Duration::from_millis(500));
    loop {
        timer.tick().await;
        if lock(&shared.sessions).is_empty() {
            continue;
        }
        let home = shared.home.clone();
        let Ok(Ok(rows)) =
            tokio::task::spawn_blocking(move || pgfork_engine::agents::agent_rows(&home)).await
        else {
            continue;
        };
        let active: std::collections::HashSet<String> = rows
            .into_iter()
            .filter(|a| a.revoked_at.is_none())
            .map(|a| a.name)
            .collect();
        let mut sessions = lock(&shared.sessions);
        sessions.retain(|agent, kills| {
            kills.retain(|k| !k.is_closed());
            if active.contains(agent) {
                return !kills.is_empty();
            }
            for k in kills.iter() {
                let _ = k.send(true);
            }
            false
        });
    }
}

/// A branch to check against its storage budget, and its flag.
type StorageCheck = (String, u64, Arc<AtomicBool>);

/// Records a use of branch `name` (throttled by the engine), without
/// waiting for it.
fn touch(shared: &Shared, name: &str) {
    let (home, name) = (shared.home.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = pgfork_engine::activity::touch(&home, &name) {
            tracing::warn!("proxy: recording activity of branch {name}: {e}");
        }
    });
}

/// A branch whose last session here ended its idle-stop ago, and that idle-stop.
type IdleCheck = (String, Duration);

/// Stops branches idle past their agent's idle-stop, records the use of
/// branches with open sessions, and checks storage budgets.
async fn watch_branches(shared: Arc<Shared>) {
    // Often enough that a branch in use here never looks idle elsewhere
    // for longer than this.
    let mut timer = tokio::time::interval(Duration::from_secs(2));
    let mut storage_checked = Instant::now() - Duration::from_secs(60);
    loop {
        timer.tick().await;
        let (idle, storage): (Vec<IdleCheck>, Vec<StorageCheck>) = {
            let b = lock(&shared.branches);
            for (name, _) in b.iter().filter(|(_, u)| u.sessions > 0) {
                touch(&shared, name);
            }
            let idle = b
                .iter()
                .filter(|(_, u)| u.sessions == 0)
                .filter_map(|(n, u)| {
                    let (limit, last) = u.idle_stop.zip(u.last)?;
                    (last.elapsed() >= limit).then(|| (n.clone(), limit))
                })
                .collect();
            let storage = b
                .iter()
                .filter(|(_, u)| u.sessions > 0)
                .filter_map(|(n, u)| {
                    u.max_storage
                        .map(|m| (n.clone(), m, u.over_storage.clone()))
                })
                .collect();
            (idle, storage)
        };
        for (name, limit) in idle {
            let home = shared.home.clone();
            let n = name.clone();
            let r = tokio::task::spawn_blocking(move || stop_if_idle(home, &n, limit)).await;
            match r {
                Ok(Ok(IdleStop::InUse(idle))) => {
                    // Used elsewhere: look again when that use is as old.
                    if let Some(u) = lock(&shared.branches).get_mut(&name) {
                        u.last = Some(
                            Instant::now()
                                .checked_sub(idle)
                                .unwrap_or_else(Instant::now),
                        );
                    }
                }
                Ok(Ok(IdleStop::Stopped(idle))) => {
                    lock(&shared.branches).remove(&name);
                    tracing::info!(
                        "proxy: stopped idle branch {name} (idle {}s)",
                        idle.as_secs()
                    );
                }
                Ok(Ok(IdleStop::NotRunning)) => {
                    lock(&shared.branches).remove(&name);
                }
                Ok(Err(e)) => {
                    lock(&shared.branches).remove(&name);
                    tracing::info!("proxy: could not stop idle branch {name}: {e}");
                }
                Err(_) => {}
            }
        }
        if storage_checked.elapsed() >= Duration::from_secs(10) && !storage.is_empty() {
            storage_checked = Instant::now();
            let home = shared.home.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let engine = Engine::open(home, Arc::new(Quiet))?;
                for (name, max, flag) in storage {
                    if let Ok(bytes) = engine.branch_unshared_bytes(&name) {
                        flag.store(bytes > max, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Ok::<_, pgfork_engine::EngineError>(())
            })
            .await;
        }
    }
}

/// What [`stop_if_idle`] found.
enum IdleStop {
    /// Stopped, idle this long.
    Stopped(Duration),
    /// In use: a client is on it, or it was used this long ago (by anyone).
    InUse(Duration),
    /// Not running.
    NotRunning,
}

/// Stops a running branch if no client (of the proxy or not) is on it and
/// nobody recorded a use of it for `limit`.
fn stop_if_idle(
    home: Home,
    name: &str,
    limit: Duration,
) -> Result<IdleStop, pgfork_engine::EngineError> {
    let mut engine = Engine::open(home, Arc::new(Quiet))?;
    if engine.branch_info(name)?.status != "running" {
        return Ok(IdleStop::NotRunning);
    }
    match engine.branch_idle(name)? {
        None => Ok(IdleStop::InUse(Duration::ZERO)),
        Some(idle) if idle < limit => Ok(IdleStop::InUse(idle)),
        Some(idle) => {
            engine.branch_stop(name)?;
            Ok(IdleStop::Stopped(idle))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_leaves_slots_to_the_application() {
        // PostgreSQL's defaults: 100 slots, 3 for superusers.
        assert_eq!(source_cap(100, 3), 87);
        assert_eq!(source_cap(20, 3), 7);
        // Nothing left once the reserve is taken, however small the server.
        assert_eq!(source_cap(13, 3), 0);
        assert_eq!(source_cap(5, 3), 0);
        assert_eq!(source_cap(0, 10), 0);
    }
}
