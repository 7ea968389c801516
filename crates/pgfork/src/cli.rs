//! Command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Instant, isolated, copy-on-write branches of real PostgreSQL databases.
///
/// A source is a database pgfork runs (load your data into it); a snapshot
/// is a sealed, immutable image of it; a branch is a writable clone of a
/// snapshot with its own server, port, password and TTL.
#[derive(Debug, Parser)]
#[command(
    name = "pgfork",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Home directory [default: $PGFORK_HOME, /var/lib/pgfork as root, ~/.local/share/pgfork]
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print JSON for programs and agents (no progress, no colour).
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update a home: probe the pool's clone driver, find PostgreSQL, create meta.db.
    Init(InitArgs),
    /// Show what pgfork found: binaries, driver, pool, free space, problems.
    Doctor,
    /// Delete expired branches that are not protected.
    Gc,
    /// Show what a branch changed (schema and rows) against its base, or between two branches/snapshots.
    Diff(DiffArgs),
    /// Apply what a branch changed to its source, in one transaction, refusing on conflict.
    Promote(PromoteArgs),
    /// Try a migration file on a branch made for it: per statement, whether it applies, its locks
    /// and how long they were held, rewrites, rows, squawk's lints; then the schema diff and a
    /// verdict (exit 0 applies, 1 a statement fails, 2 a finding passes a threshold).
    Rehearse(RehearseArgs),
    /// Run scheduled work that is due (logical refreshes, scheduled snapshots); for a timer.
    Tick,
    /// Databases that branches are made from.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Sealed, immutable images of a source or branch.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Writable copy-on-write clones, each a real PostgreSQL server.
    #[command(subcommand)]
    Branch(BranchCommand),
    /// Measure branch creation against cp -a, CREATE DATABASE TEMPLATE and pg_dump | pg_restore.
    Bench(BenchCommand),
    /// The daemon: HTTP API, web dashboard at /, MCP at /mcp, Prometheus /metrics, the reaper and scheduled work.
    Serve(ServeArgs),
    /// An MCP server on stdin/stdout, for agent clients that launch a command.
    Mcp(McpArgs),
    /// API bearer tokens of admins (agents get theirs from `agent create`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Credentials of the policy proxy: each with a source and a policy (read-only, dry-run, branch).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// The proxy's audit log: every statement of every agent, hash-chained.
    Audit(AuditArgs),
    /// Run the policy proxy alone (`pgfork serve` runs it too).
    Proxy(ProxyArgs),
    /// Promotion requests of agents: list, show, approve (which promotes) or reject.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
}

/// `pgfork agent ...`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent and print its proxy connection string and API token (shown only now).
    Create(Box<AgentCreateArgs>),
    /// List agents.
    List,
    /// Show one agent.
    Info {
        /// Agent name.
        name: String,
    },
    /// Give an agent a new secret and print its connection string; the old secret stops working.
    Rotate {
        /// Agent name.
        name: String,
    },
    /// Revoke an agent: no new logins, and a running proxy ends its sessions at once.
    Revoke {
        /// Agent name.
        name: String,
    },
}

/// Agent policies.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    /// Read the source; every write or attempt to leave read-only mode fails (SQLSTATE 25006).
    ReadOnly,
    /// Run on the source for real; every transaction is rolled back.
    DryRun,
    /// Work on a branch of the source of its own (or a named, shared one).
    Branch,
}

/// `pgfork agent create`.
#[derive(Debug, Args)]
pub struct AgentCreateArgs {
    /// Agent name (the user name of its connection string; at most 40 characters).
    pub name: String,
    /// The source it works on.
    #[arg(long)]
    pub source: String,
    /// What it may do.
    #[arg(long, value_enum)]
    pub policy: PolicyArg,
    /// Use this branch (made on first use; several agents may share it) [default: agent-NAME].
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// Give each connection its own branch, deleted at disconnect.
    #[arg(long)]
    pub per_session: bool,
    /// Keep per-session branches after their session.
    #[arg(long, requires = "per_session")]
    pub keep: bool,
    /// Make branches from a new snapshot of the source instead of its latest.
    #[arg(long)]
    pub fresh: bool,
    /// Time to live of branches made for the agent.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Most rows one statement may affect; beyond, it is rolled back with an error.
    #[arg(long, value_name = "N")]
    pub max_rows: Option<u64>,
    /// Statement timeout (e.g. 30s); the agent cannot raise it.
    #[arg(long, value_name = "DURATION")]
    pub statement_timeout: Option<String>,
    /// Most storage its branch may stop sharing with the snapshot (e.g. 1G); beyond, writes are refused.
    #[arg(long, value_name = "SIZE")]
    pub max_storage: Option<String>,
    /// Stop its branch after this long without a session (0: never); the next connection wakes it.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub idle_stop: String,
    /// Also record statement parameters in the audit log.
    #[arg(long)]
    pub audit_params: bool,
    /// Most proxy sessions it holds at once (1-1000); more are refused with SQLSTATE 53300. Also the
    /// CONNECTION LIMIT of its own role on the source (read-only, dry-run).
    #[arg(long, value_name = "N", default_value_t = pgfork_engine::agents::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: u32,
    /// Most branches it may hold through the API and MCP (default: no limit).
    #[arg(long, value_name = "N")]
    pub max_branches: Option<u32>,
    /// Longest TTL it may give a branch through the API and MCP; a longer one is refused, and a
    /// branch without one gets this.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub max_ttl: String,
    /// The orchestrator agent it works for: that agent sees, uses, resets and deletes the branches
    /// this one makes (`branch list --agent THIS` lists them).
    #[arg(long, value_name = "AGENT")]
    pub parent: Option<String>,
}

/// `pgfork audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this agent's statements.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only statements from this long ago on (e.g. 1h).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// At most this many records (the newest).
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// Recompute the hash chain and report the first broken link (exit code 1 if any).
    #[arg(long)]
    pub verify: bool,
}

/// `pgfork proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address and port to listen on (loopback only: the proxy speaks no TLS).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:6432")]
    pub listen: String,
    /// Most client connections at once; more get "too many clients".
    #[arg(long, default_value_t = 2000)]
    pub max_connections: usize,
    /// Largest protocol message accepted.
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    pub max_message_size: String,
    /// How long a read-only or dry-run transaction may stay open before
    /// the proxy rolls it back (the locks it holds on the source stall the
    /// application meanwhile).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub transaction_limit: String,
}

/// `pgfork token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new token for an admin token NAME (default: `admin`, the one `init` printed) and print
    /// it once; the old one stops working at once.
    Rotate {
        /// The admin token to replace.
        #[arg(default_value = pgfork_engine::identity::FIRST_ADMIN)]
        name: String,
    },
    /// Make another admin token and print it once (several may exist; each is revoked alone).
    Create {
        /// Its name.
        name: String,
        /// An admin token: it may do everything (agents' tokens come from `pgfork agent create`).
        #[arg(long, required = true)]
        admin: bool,
    },
    /// The admin tokens: names and creation times (never the tokens).
    List,
    /// Revoke admin token NAME: a running `pgfork serve` refuses it within a second.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// `pgfork mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// Act as agent NAME, whose API token must be in PGFORK_TOKEN: the agent's scope, not the admin's.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
}

/// `pgfork serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "The web dashboard is at http://ADDR:PORT/: sign in with an API token (an admin's, or an \
                  agent's, which sees only that agent's things). The token is exchanged for a session cookie."
)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7432")]
    pub listen: String,
    /// Allow a non-loopback --listen address (the API hands out database passwords: put TLS in front).
    #[arg(long)]
    pub allow_remote: bool,
    /// Stop a running branch after this long without a client session (0: never).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub idle_stop: String,
    /// Delete an unprotected branch after this long without a client session (0: never).
    #[arg(long, value_name = "DURATION", default_value = "0")]
    pub idle_delete: String,
    /// How often the reaper runs (TTL expiry, idle stop and delete, scheduled work).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub reap_every: String,
    /// Refuse a new branch of a source that has N branches already (stored like `init --max-branches-per-source`).
    #[arg(long, value_name = "N")]
    pub max_branches_per_source: Option<u32>,
    /// Refuse work that writes to the pool (branches, snapshots, sources, refreshes) below SIZE free in it (stored like `init --min-free`).
    #[arg(long, value_name = "SIZE")]
    pub min_free: Option<String>,
    /// Address of the policy proxy that serve also runs (off: none).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:6432")]
    pub proxy_listen: String,
    /// POST a JSON event ({"event": "promotion_requested", "request": {...}}) to URL for each new
    /// promotion request, retried with backoff, so a person hears one is waiting.
    #[arg(long, value_name = "URL")]
    pub notify_url: Option<String>,
    /// How long a read-only or dry-run transaction through the proxy may
    /// stay open before it is rolled back (as `pgfork proxy --transaction-limit`).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub proxy_transaction_limit: String,
}

/// Filesystems for pool images.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FsArg {
    /// XFS with reflink=1 (reflink driver).
    Xfs,
    /// btrfs (btrfs driver).
    Btrfs,
}

/// Clone drivers.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DriverArg {
    /// btrfs subvolume snapshots: constant time, atomic.
    Btrfs,
    /// FICLONE per file: XFS (reflink=1), btrfs, bcachefs.
    Reflink,
    /// Plain copy: always works, cost grows with size.
    Copy,
}

/// `pgfork init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// As root: create a sparse pool image of SIZE (e.g. 20G) in the home, format it and loop-mount it.
    #[arg(long, value_name = "SIZE")]
    pub pool_image: Option<String>,
    /// Filesystem of the pool image.
    #[arg(long, value_enum, default_value = "xfs", requires = "pool_image")]
    pub fs: FsArg,
    /// Force a clone driver instead of the best one the pool supports.
    #[arg(long, value_enum)]
    pub driver: Option<DriverArg>,
    /// Directory holding initdb and postgres [default: pg_config --bindir, /usr/lib/postgresql/*/bin, PATH].
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// OS user that owns data and runs servers when pgfork runs as root [default: postgres].
    #[arg(long, value_name = "NAME")]
    pub os_user: Option<String>,
    /// TCP port range for sources and branches [default: 15432-16431].
    #[arg(long, value_name = "MIN-MAX")]
    pub ports: Option<String>,
    /// Refuse a new branch of a source that has N branches already (0: no quota).
    #[arg(long, value_name = "N")]
    pub max_branches_per_source: Option<u32>,
    /// Refuse work that writes to the pool (branches, snapshots, sources, refreshes) while it has less than SIZE free (e.g. 2G; 0: no floor).
    #[arg(long, value_name = "SIZE")]
    pub min_free: Option<String>,
    /// As root: OS uids for sandboxed servers, one per branch (each branch's server runs as a
    /// uid of its own, with no passwd entry) [default: 16384 uids from 1900000000 up, picked by
    /// the home's path].
    #[arg(long, value_name = "FIRST-LAST")]
    pub branch_uids: Option<String>,
    /// On a btrfs pool, as root: how much of the pool all branches together may take, as a size
    /// (6G) or a percentage (75%); the rest is kept for sources, standbys and snapshots [default:
    /// leave 20% of the pool, and at least 2G unless that is over half of it].
    #[arg(long, value_name = "SIZE|PERCENT")]
    pub branch_space: Option<String>,
}

/// `pgfork source ...`.
#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Create a local source: a new cluster in the pool, started, with a database and role named NAME.
    Create {
        /// Name (lowercase letters, digits, - and _); also the database and role name.
        name: String,
    },
    /// Add a source copied from a remote database: a streaming standby (physical) or an import (logical).
    Add(SourceAddArgs),
    /// Re-import a logical source now; branches made before keep working.
    Refresh {
        /// Source name.
        name: String,
    },
    /// Set the masking rules applied to every snapshot of a source (TOML: [schema.table] column = "transform").
    Mask(SourceMaskArgs),
    /// List sources.
    List,
    /// Show one source (mode, lag of a physical source, last refresh of a logical one).
    Info {
        /// Source name.
        name: String,
    },
    /// Print the connection string of the source's application role (a secret).
    Dsn {
        /// Source name.
        name: String,
        /// Print a superuser connection over the unix socket instead (admin tasks only).
        #[arg(long)]
        superuser: bool,
    },
    /// Start a stopped source.
    Start {
        /// Source name.
        name: String,
    },
    /// Stop a source (fast shutdown); data and snapshots stay.
    Stop {
        /// Source name.
        name: String,
    },
    /// Delete a source and its snapshots.
    Delete {
        /// Source name.
        name: String,
        /// Also delete every branch made from it.
        #[arg(long)]
        force: bool,
    },
    /// Show or set the limits each new branch of a source gets (branch create's flags override them).
    Limits(SourceLimitsArgs),
    /// Show or set the promotion gates every promote to a source must pass, from any interface:
    /// assertion files and bounds on how many rows and tables one promote may change.
    Gates(SourceGatesArgs),
}

/// `pgfork source gates`.
#[derive(Debug, Args)]
pub struct SourceGatesArgs {
    /// Source name.
    pub name: String,
    /// An assertion file: SQL queries (SELECT, VALUES, WITH ... SELECT), separated by semicolons,
    /// each of which must return no rows, or a single true, for a promote to go ahead. They run on
    /// the branch before anything is applied, and on the source after the patch, inside the
    /// promote's transaction, as the application role with search_path = pg_catalog (write
    /// tables with their schema: public.orders). Repeatable; replaces the stored files.
    #[arg(long = "assert", value_name = "FILE")]
    pub assert: Vec<PathBuf>,
    /// Most rows one promote may change (inserted, updated, deleted, and those of tables it drops);
    /// `none` removes the bound.
    #[arg(long, value_name = "N|none")]
    pub max_rows: Option<String>,
    /// Most tables whose rows one promote may change (dropped tables included); `none` removes
    /// the bound.
    #[arg(long, value_name = "N|none")]
    pub max_tables: Option<String>,
    /// Remove every gate of the source first (then set what the other options give).
    #[arg(long)]
    pub clear: bool,
}

/// `pgfork source limits`.
#[derive(Debug, Args)]
pub struct SourceLimitsArgs {
    /// Source name.
    pub name: String,
    /// CPUs each new branch's server may use (0.5: half a CPU), through cgroups; `none` removes it.
    #[arg(long, value_name = "CPUS|none")]
    pub branch_cpu: Option<String>,
    /// Memory each new branch's server may use (e.g. 512M); over it the branch is killed (crashed)
    /// and comes back with `branch start`; `none` removes it.
    #[arg(long, value_name = "SIZE|none")]
    pub branch_memory: Option<String>,
    /// Most processes each new branch's server may run; `none` removes it.
    #[arg(long, value_name = "N|none")]
    pub branch_pids: Option<String>,
    /// Most bytes each new branch may write of its own (e.g. 1G), enforced by the filesystem
    /// (btrfs pools; see `branch create --max-size`); `none` removes it.
    #[arg(long, value_name = "SIZE|none")]
    pub branch_max_size: Option<String>,
}

/// `pgfork snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a consistent, sealed snapshot of a source or branch.
    Create {
        /// Source or branch name.
        of: String,
        /// Allow an unmasked snapshot of a remote source that has no masking rules.
        #[arg(long)]
        unmasked: bool,
    },
    /// Take snapshots of a source on a schedule (run by `pgfork tick` or the daemon).
    Schedule {
        /// Source name.
        source: String,
        /// Interval (15m, 1h, 1d).
        #[arg(long, value_name = "DURATION", required_unless_present = "off")]
        every: Option<String>,
        /// Scheduled snapshots to keep; older ones without branches are deleted.
        #[arg(long, default_value_t = 8)]
        keep: u32,
        /// Remove the schedule.
        #[arg(long, conflicts_with = "every")]
        off: bool,
    },
    /// List snapshots.
    List {
        /// Only snapshots of this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// Show one snapshot.
    Info {
        /// Snapshot id (e.g. shop@3).
        id: String,
    },
    /// Delete a snapshot.
    Delete {
        /// Snapshot id (e.g. shop@3).
        id: String,
        /// Also delete the branches made from it.
        #[arg(long)]
        force: bool,
    },
}

/// `pgfork branch ...`.
#[derive(Debug, Subcommand)]
pub enum BranchCommand {
    /// Create a branch and print its connection string (a secret).
    Create(BranchCreateArgs),
    /// List branches.
    List {
        /// Only branches with this label (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        label: Vec<String>,
        /// Only branches agent NAME made (through the API, MCP or the proxy).
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
    },
    /// Show one branch.
    Info {
        /// Branch name.
        name: String,
        /// Include the password in the connection string.
        #[arg(long)]
        show_password: bool,
    },
    /// Print the branch's connection string (a secret).
    Dsn {
        /// Branch name.
        name: String,
    },
    /// Start a stopped (or crashed) branch; data is kept.
    Start {
        /// Branch name.
        name: String,
    },
    /// Stop a branch; data is kept.
    Stop {
        /// Branch name.
        name: String,
    },
    /// Discard the branch's changes: back to its base snapshot (same port and password).
    Reset {
        /// Branch name.
        name: String,
    },
    /// Share a branch with another agent: it sees the branch and gets a DSN of its own (a role of its
    /// own on the branch: as the branch's role, or read-only).
    Share {
        /// Branch name.
        name: String,
        /// The agent to share it with.
        #[arg(long)]
        agent: String,
        /// The member may only read.
        #[arg(long)]
        read_only: bool,
    },
    /// Stop sharing a branch with an agent: its role is dropped and its sessions end at once.
    Unshare {
        /// Branch name.
        name: String,
        /// The member agent.
        #[arg(long)]
        agent: String,
    },
    /// The agents a branch is shared with.
    Members {
        /// Branch name.
        name: String,
    },
    /// Delete a branch.
    Delete {
        /// Branch name.
        name: String,
        /// Also delete branches made from it.
        #[arg(long)]
        force: bool,
    },
    /// Change a branch's TTL, protection or labels.
    Set(BranchSetArgs),
    /// Write a pg_dump of a branch to stdout (or --file).
    Dump {
        /// Branch name.
        name: String,
        /// Write here instead of stdout.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
        /// custom (for pg_restore) or plain (SQL).
        #[arg(long, value_enum, default_value = "custom")]
        format: DumpFormatArg,
    },
}

/// Dump formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DumpFormatArg {
    /// pg_dump -Fc, for pg_restore.
    Custom,
    /// pg_dump -Fp, SQL text.
    Plain,
}

/// Remote source modes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Streaming standby in the pool: always fresh; needs REPLICATION and the same major version.
    Physical,
    /// Parallel pg_dump/pg_restore import, refreshed on a schedule: works with managed services.
    Logical,
}

/// `pgfork source add`.
#[derive(Debug, Args)]
pub struct SourceAddArgs {
    /// Name (lowercase letters, digits, - and _).
    pub name: String,
    /// The remote database: postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=...] (or PGPASSWORD, ~/.pgpass).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// physical (standby) or logical (dump import).
    #[arg(long, value_enum)]
    pub mode: ModeArg,
    /// Logical: re-import this often (run by `pgfork tick` or the daemon).
    #[arg(long, value_name = "DURATION")]
    pub refresh_every: Option<String>,
    /// Role that branch DSNs log in as [default: the database's owner]; never a superuser.
    #[arg(long)]
    pub role: Option<String>,
    /// Store the password in meta.db so scheduled refreshes can log in.
    #[arg(long)]
    pub save_password: bool,
}

/// `pgfork source mask`.
#[derive(Debug, Args)]
pub struct SourceMaskArgs {
    /// Source name.
    pub name: String,
    /// Rules file (TOML). Transforms: hash, email, name, phone, null, const:VALUE, sql:EXPRESSION, keep.
    #[arg(long, value_name = "FILE", required_unless_present = "clear")]
    pub rules: Option<PathBuf>,
    /// Remove the rules.
    #[arg(long, conflicts_with = "rules")]
    pub clear: bool,
    /// With --clear: record the choice to let unmasked data reach branches.
    #[arg(long, requires = "clear")]
    pub allow_unmasked: bool,
}

/// `pgfork branch create`.
#[derive(Debug, Args)]
pub struct BranchCreateArgs {
    /// Branch name (lowercase letters, digits, - and _).
    pub name: String,
    /// A source (its latest snapshot; one is taken if none exists), a snapshot id (shop@3), or a branch.
    #[arg(long, value_name = "SOURCE|SNAPSHOT|BRANCH")]
    pub from: String,
    /// Time to live (30m, 2h, 7d); `pgfork gc` deletes the branch after it.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Label (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Never delete this branch in `gc`.
    #[arg(long)]
    pub protect: bool,
    /// Run with fsync on: survives a host crash, slower writes.
    #[arg(long)]
    pub durable: bool,
    /// Take a new snapshot of the source first (a physical source first replays all its primary committed).
    #[arg(long)]
    pub fresh: bool,
    /// Schema without rows (every table emptied), for query validation.
    #[arg(long)]
    pub schema_only: bool,
    /// Allow an unmasked snapshot of a remote source that has no masking rules.
    #[arg(long)]
    pub unmasked: bool,
    /// Most bytes the branch may write of its own (e.g. 512M), enforced by the filesystem (btrfs
    /// pools): past it, the statement gets PostgreSQL's "could not extend file" error [default:
    /// the source's, see `pgfork source limits`].
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// CPUs its server may use (0.5: half a CPU), enforced through cgroups [default: the source's,
    /// see `source limits`; `none`: no limit].
    #[arg(long, value_name = "CPUS|none")]
    pub cpu: Option<String>,
    /// Memory its server may use (e.g. 512M); over it the branch is killed and shows as crashed
    /// until `branch start` [default: the source's; `none`: no limit].
    #[arg(long, value_name = "SIZE|none")]
    pub memory: Option<String>,
    /// Most processes its server may run [default: the source's; `none`: no limit].
    #[arg(long, value_name = "N|none")]
    pub pids: Option<String>,
}

/// `pgfork branch set`.
#[derive(Debug, Args)]
pub struct BranchSetArgs {
    /// Branch name.
    pub name: String,
    /// New TTL from now.
    #[arg(long, value_name = "DURATION", conflicts_with = "no_ttl")]
    pub ttl: Option<String>,
    /// Remove the TTL.
    #[arg(long)]
    pub no_ttl: bool,
    /// Protect from `gc`.
    #[arg(long, conflicts_with = "unprotect")]
    pub protect: bool,
    /// Remove protection.
    #[arg(long)]
    pub unprotect: bool,
    /// Add or change a label (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Remove a label (repeatable).
    #[arg(long, value_name = "KEY")]
    pub unlabel: Vec<String>,
    /// CPUs its server may use (0.5: half a CPU); `none` removes the limit. A running server gets it at once.
    #[arg(long, value_name = "CPUS")]
    pub cpu: Option<String>,
    /// Memory its server may use (512M); `none` removes the limit.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Most processes its server may run; `none` removes the limit.
    #[arg(long, value_name = "N")]
    pub pids: Option<String>,
}

/// `pgfork bench [WHAT]`: branch creation unless another benchmark is named.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCommand {
    /// Which benchmark (default: branches).
    #[command(subcommand)]
    pub what: Option<BenchWhat>,
    /// Options of the branch benchmark, when no other is named.
    #[command(flatten)]
    pub branches: BenchArgs,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Branch creation against cp -a, CREATE DATABASE TEMPLATE and pg_dump | pg_restore (the default).
    Branches(BenchArgs),
    /// Diff time against the size of the change, and against a full comparison.
    Diff(DiffBenchArgs),
    /// Sources from a real database: replication lag, --fresh, logical import, masking.
    Sources(SourcesBenchArgs),
    /// Branch creation over the HTTP API against the CLI (same run, same snapshot), then concurrent creates.
    Api(BenchApiArgs),
    /// Noisy neighbours: the source's pgbench TPS alone and beside a CPU-bound branch, without cgroups,
    /// with them, and with the branch held to --cpu; and what cgroups cost branch create.
    Neighbours(NeighboursArgs),
    /// What `pgfork rehearse` costs over a branch and `psql -f` of the same migration.
    Rehearse(RehearseBenchArgs),
    /// What the dashboard's pages cost to serve, against the API's JSON for the same branches.
    Dashboard(DashboardBenchArgs),
}

/// `pgfork bench dashboard`.
#[derive(Debug, Args)]
pub struct DashboardBenchArgs {
    /// Branches listed on the page (made for the run, deleted after).
    #[arg(long, default_value_t = 30)]
    pub branches: usize,
    /// Requests per page (interleaved).
    #[arg(long, default_value_t = 50)]
    pub rounds: usize,
    /// The admin API token (printed by `pgfork init`).
    #[arg(long, env = "PGFORK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `pgfork bench rehearse`.
#[derive(Debug, Args)]
pub struct RehearseBenchArgs {
    /// pgbench scale of the source (bench-s{SCALE}, reused if it exists).
    #[arg(long, default_value_t = 10)]
    pub scale: u32,
    /// The migration to time (default: a built-in one on pgbench's tables: a column, an index,
    /// a retype, an update).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Rounds of each way, interleaved (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Keep the bench source this run made.
    #[arg(long)]
    pub keep_source: bool,
}

/// `pgfork bench neighbours`.
#[derive(Debug, Args)]
pub struct NeighboursArgs {
    /// pgbench scale of the source (bench-s{SCALE}, reused if it exists).
    #[arg(long, default_value_t = 10)]
    pub scale: u32,
    /// Seconds of each pgbench run.
    #[arg(long, default_value_t = 20)]
    pub seconds: u32,
    /// Rounds of every setting (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The busy branch's limit in the limited setting.
    #[arg(long, default_value = "0.25")]
    pub cpu: String,
    /// Sessions of the CPU-bound query on the busy branch.
    #[arg(long, default_value_t = 2)]
    pub hog_sessions: usize,
    /// branch creates per variant (no cgroups, cgroups, cgroups with limits).
    #[arg(long, default_value_t = 20)]
    pub creates: usize,
    /// Keep the bench source this run loads.
    #[arg(long)]
    pub keep_source: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// `pgfork bench sources`.
#[derive(Debug, Args)]
pub struct SourcesBenchArgs {
    /// pgbench scale of the production stand-in (68 is about 1 GB).
    #[arg(long, default_value_t = 68)]
    pub scale: u32,
    /// Rows of fake personal data (masked in the masking figure).
    #[arg(long, default_value_t = 2_000_000)]
    pub people: u32,
    /// Seconds of pgbench on production while lag is sampled.
    #[arg(long, default_value_t = 30)]
    pub seconds: u32,
    /// At most this many --fresh branches during the load.
    #[arg(long, default_value_t = 10)]
    pub fresh: usize,
}

/// `pgfork bench diff`.
#[derive(Debug, Args)]
pub struct DiffBenchArgs {
    /// pgbench scale of the source (330 is about 5 GB).
    #[arg(long, default_value_t = 330)]
    pub scale: u32,
    /// Rows changed in pgbench_accounts before each diff.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub changes: Vec<u32>,
    /// Skip the full comparison baseline.
    #[arg(long)]
    pub skip_full: bool,
    /// Keep the source afterwards (a re-run skips pgbench -i).
    #[arg(long)]
    pub keep_source: bool,
}

/// `pgfork bench branches`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// pgbench scale factors of the sources to build (10 is about 150 MB, 500 about 7 GB).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub scales: Vec<u32>,
    /// Branches to create per source.
    #[arg(long, default_value_t = 20)]
    pub branches: usize,
    /// Then create branches until this many are alive at once (0: skip).
    #[arg(long, default_value_t = 50)]
    pub max_live: usize,
    /// Skip the pg_dump | pg_restore baseline (slow on large scales).
    #[arg(long)]
    pub skip_dump: bool,
    /// Seconds of pgbench on a branch and on its source to compare TPS (0: skip).
    #[arg(long, default_value_t = 10)]
    pub tps_seconds: u32,
    /// Keep the bench-s{SCALE} sources this run loads, so the next run (or
    /// another driver's) skips pgbench -i; a source that existed is always kept.
    #[arg(long)]
    pub keep_sources: bool,
    /// Also write the JSON report to FILE (the human report still goes to stdout).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// Output formats of `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// A summary for people.
    Text,
    /// Everything, as JSON.
    Json,
    /// A SQL patch that turns the old side into the new one (one transaction).
    Sql,
}

/// `pgfork diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Branch (or snapshot id) whose changes to show.
    pub target: String,
    /// Compare against this branch or snapshot of the same source [default: the branch's base snapshot].
    #[arg(long, value_name = "BRANCH|SNAPSHOT")]
    pub against: Option<String>,
    /// Output format (--json is the same as --format json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    /// Compare the schema only.
    #[arg(long, conflicts_with = "data_only")]
    pub schema_only: bool,
    /// Compare the data only.
    #[arg(long)]
    pub data_only: bool,
    /// Changed rows listed per table (counts are always complete).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Compare every table whole instead of only changed blocks (slow; for checking).
    #[arg(long)]
    pub full: bool,
}

/// Conflict strategies.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    /// The branch's version wins.
    Ours,
    /// The source's current version stays.
    Theirs,
}

/// `pgfork promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Branch whose changes are applied to its source.
    pub branch: String,
    /// Show what would be applied, and the conflicts; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Resolve conflicts (rows or objects changed on both sides since the snapshot) this way.
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Apply to a remote source (or --replace) without asking.
    #[arg(long)]
    pub yes: bool,
    /// Apply a patch that cannot carry every change (it has warnings): the rest is applied, and the
    /// source is left different from the branch where the warnings say.
    #[arg(long)]
    pub allow_partial: bool,
    /// Replace the whole data of the (local) source with the branch's instead of applying its rows:
    /// both servers shut down cleanly, the branch's data directory is cloned and swapped in
    /// atomically, and the source's old data is kept as a snapshot (SOURCE@N, printed) until you
    /// delete it. Logins stay the source's. Asks first on a terminal, else needs --yes.
    #[arg(long, conflicts_with_all = ["strategy", "allow_partial"])]
    pub replace: bool,
    /// An assertion file to pass besides the source's stored gates (`pgfork source gates`): SQL
    /// queries, each of which must return no rows, or a single true. They run on the branch before
    /// anything is applied (also with --dry-run), then on the source after the patch inside the
    /// promote's transaction, which a failure rolls back. Repeatable. Not with --replace.
    #[arg(long = "assert", value_name = "FILE", conflicts_with = "replace")]
    pub assert: Vec<PathBuf>,
    /// Ask for the promote instead of doing it: a request (with what the branch changed) that an
    /// admin approves or rejects (`pgfork approvals`); the only promote an agent may do. The
    /// branch does not expire while the request is open; the source's stored gates run when it is
    /// approved.
    #[arg(long, conflicts_with_all = ["strategy", "allow_partial", "replace", "dry_run", "assert"])]
    pub request: bool,
    /// What the request is for, for whoever decides it.
    #[arg(long, requires = "request", value_name = "TEXT")]
    pub note: Option<String>,
    /// The migration that made the branch's changes: pgfork rehearses it on a new branch of the
    /// same base snapshot and keeps the report (per statement: locks, rewrites, errors; lints)
    /// with the request.
    #[arg(long, requires = "request", value_name = "FILE")]
    pub rehearse: Option<PathBuf>,
}

/// `pgfork approvals ...`.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Promotion requests, newest first.
    List {
        /// Only requests in this state: open, approved, rejected, withdrawn.
        #[arg(long)]
        status: Option<String>,
    },
    /// One request: what the branch changed when asked, who asked, the decision.
    Show {
        /// Request number.
        id: i64,
    },
    /// Promote the request's branch now (every check of `promote` runs against the source as it
    /// is); if it cannot be applied the request stays open and the error says why.
    Approve {
        /// Request number.
        id: i64,
    },
    /// Close the request without promoting.
    Reject {
        /// Request number.
        id: i64,
        /// Why (the asker reads it).
        #[arg(long)]
        reason: String,
    },
}

/// Output of `pgfork rehearse`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RehearseFormat {
    /// For people.
    Text,
    /// The whole report (as `--json`).
    Json,
}

/// How severe a lint finding must be to block.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SeverityArg {
    /// Every finding blocks.
    Warning,
    /// Only findings that mean locks, rewrites or lost data in production.
    Error,
}

/// `pgfork rehearse`.
#[derive(Debug, Args)]
pub struct RehearseArgs {
    /// A source (its newest snapshot), a snapshot id or a branch to try the migration on a copy of.
    pub from: String,
    /// The migration: SQL statements, run one by one as the application role (`-` reads stdin).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// Snapshot the source first, so the rehearsal sees its current data.
    #[arg(long)]
    pub fresh: bool,
    /// Keep the branch afterwards (its DSN is printed) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Output format (`--json` is the same as `--format json`).
    #[arg(long, value_enum, default_value_t = RehearseFormat::Text)]
    pub format: RehearseFormat,
    /// Exit 2 when a lint finding is at least this severe.
    #[arg(long, value_enum, default_value_t = SeverityArg::Error)]
    pub fail_on: SeverityArg,
    /// Exit 2 when a statement holds a lock that blocks writes (or reads) on an existing table
    /// for longer than N milliseconds.
    #[arg(long, value_name = "N")]
    pub max_lock_ms: Option<u64>,
}

/// `pgfork bench api`.
#[derive(Debug, Args)]
pub struct BenchApiArgs {
    /// Creates per way (CLI and HTTP, interleaved).
    #[arg(long, default_value_t = 30)]
    pub creates: usize,
    /// Creates sent at once over HTTP.
    #[arg(long, default_value_t = 100)]
    pub concurrent: usize,
    /// The API token (printed by `pgfork init`).
    #[arg(long, env = "PGFORK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Keep the bench-api source this run made.
    #[arg(long)]
    pub keep_source: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}
