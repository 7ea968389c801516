//! The settings pgfork owns in a data directory: `pgfork.conf` (included
//! last from postgresql.conf) and `pg_hba.conf`.

use std::io::Write;
use std::path::Path;

use pgfork_os::RunAs;

use crate::PgError;

/// File that holds the settings pgfork rewrites on every start.
pub const PGFORK_CONF: &str = "pgfork.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'pgfork.conf'\t# pgfork: keep this line last";

/// What a server is for, which decides durability and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A source: the data of record. Fully durable.
    Source,
    /// A streaming standby of a remote primary (a physical source).
    Standby,
    /// A logical source while it imports: nothing is fsynced or WAL-logged
    /// that need not be; the import is redone if the host crashes.
    Import,
    /// A branch: disposable. `fsync = off` (a crashed postmaster loses
    /// nothing, a crashed host may lose the branch), small memory.
    Branch,
    /// A branch created with `--durable`: fsync on, small memory.
    DurableBranch,
}

/// Settings for one server.
#[derive(Debug, Clone)]
pub struct ServerConf<'a> {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory for the unix socket.
    pub socket_dir: &'a Path,
    /// Durability and memory.
    pub profile: Profile,
    /// More settings, written last (they win over the profile's).
    pub extra: Vec<(String, String)>,
}

/// Quotes a setting's value for postgresql.conf.
pub fn conf_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

impl ServerConf<'_> {
    /// Settings for `port`, `socket_dir` and `profile`, no extras.
    pub fn new(port: u16, socket_dir: &Path, profile: Profile) -> ServerConf<'_> {
        ServerConf {
            port,
            socket_dir,
            profile,
            extra: Vec::new(),
        }
    }

    /// The text of `pgfork.conf`.
    pub fn render(&self) -> String {
        let socket_dir = conf_value(&self.socket_dir.display().to_string());
        let listen = if self.profile == Profile::Import {
            "''"
        } else {
            "'127.0.0.1'"
        };
        let mut settings: Vec<(&str, String)> = vec![
            ("listen_addresses", listen.into()),
            ("port", self.port.to_string()),
            ("unix_socket_directories", socket_dir),
            ("unix_socket_permissions", "0700".into()),
            ("huge_pages", "off".into()),
            ("password_encryption", "'scram-sha-256'".into()),
            ("logging_collector", "off".into()),
            ("log_destination", "'stderr'".into()),
            ("log_line_prefix", "'%m [%p] %q%u@%d '".into()),
            ("min_wal_size", "32MB".into()),
        ];
        let profile: &[(&str, &str)] = match self.profile {
            Profile::Source => &[
                ("max_connections", "100"),
                ("shared_buffers", "128MB"),
                ("fsync", "on"),
                ("synchronous_commit", "on"),
                ("full_page_writes", "on"),
                ("wal_level", "replica"),
                ("max_wal_senders", "4"),
                ("max_wal_size", "1GB"),
            ],
            Profile::Standby => &[
                ("shared_buffers", "128MB"),
                ("fsync", "on"),
                ("hot_standby", "on"),
                ("hot_standby_feedback", "off"),
                ("max_wal_size", "1GB"),
                // A standby can restart only at the primary's checkpoint
                // records; taking every one keeps the WAL that a --fresh
                // snapshot's seal replays to what the primary wrote since
                // its own last checkpoint.
                ("checkpoint_timeout", "30s"),
                ("archive_mode", "off"),
            ],
            Profile::Import => &[
                ("max_connections", "20"),
                ("shared_buffers", "256MB"),
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
                ("wal_level", "minimal"),
                ("max_wal_senders", "0"),
                ("max_wal_size", "8GB"),
                ("checkpoint_timeout", "1h"),
                ("autovacuum", "off"),
                ("maintenance_work_mem", "512MB"),
            ],
            Profile::Branch | Profile::DurableBranch => &[
                ("max_connections", "40"),
                ("shared_buffers", "16MB"),
                ("synchronous_commit", "on"),
                ("full_page_writes", "on"),
                ("wal_level", "replica"),
                ("max_wal_senders", "4"),
                ("max_wal_size", "512MB"),
            ],
        };
        settings.extend(profile.iter().map(|(k, v)| (*k, v.to_string())));
        match self.profile {
            Profile::Branch => settings.push(("fsync", "off".into())),
            Profile::DurableBranch => settings.push(("fsync", "on".into())),
            _ => {}
        }
        for (k, v) in &self.extra {
            settings.retain(|(name, _)| name != k);
            settings.push((k.as_str(), v.clone()));
        }
        let mut text = String::from(
            "# Written by pgfork on every start; edits here are lost.\n\
             # Your own settings belong in postgresql.conf, above its include line.\n",
        );
        for (k, v) in settings {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text
    }

    /// Writes `pgfork.conf` atomically, owned by the server's user.
    pub fn write(&self, datadir: &Path, owner: &RunAs) -> Result<(), PgError> {
        write_owned(&datadir.join(PGFORK_CONF), self.render().as_bytes(), owner)
    }
}

/// Makes postgresql.conf include pgfork.conf last and writes pg_hba.conf:
/// the superuser only over the unix socket, everyone else over TCP with
/// SCRAM. Run once on a fresh cluster.
pub fn install(datadir: &Path, owner: &RunAs) -> Result<(), PgError> {
    let conf_path = datadir.join("postgresql.conf");
    // A copy of a Debian-style cluster keeps its configuration in /etc,
    // so its data directory may have none.
    let conf = match std::fs::read_to_string(&conf_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(PgError::io("read", &conf_path)(e)),
    };
    if !conf.lines().any(|l| {
        l.trim_start()
            .starts_with("include_if_exists = 'pgfork.conf'")
    }) {
        let mut text = conf;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(INCLUDE_LINE);
        text.push('\n');
        write_owned(&conf_path, text.as_bytes(), owner)?;
    }
    write_hba(datadir, owner, TcpLogins::Scram)?;
    let ident = datadir.join("pg_ident.conf");
    if !ident.exists() {
        write_owned(&ident, b"# Written by pgfork: no user name maps.\n", owner)?;
    }
    Ok(())
}

/// Whom `pg_hba.conf` lets in over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpLogins {
    /// Every role but the superuser, with SCRAM.
    Scram,
    /// Nobody: a branch starts so until its application role has its own
    /// password. Until then the role carries the password of the source
    /// the snapshot was taken of.
    Refused,
}

/// Writes `pg_hba.conf`: the superuser only over the unix socket, everyone
/// else over TCP as `tcp` says.
pub fn write_hba(datadir: &Path, owner: &RunAs, tcp: TcpLogins) -> Result<(), PgError> {
    let method = match tcp {
        TcpLogins::Scram => "scram-sha-256",
        TcpLogins::Refused => "reject",
    };
    let hba = format!(
        "# Written by pgfork.\n\
         # The superuser ({su}) connects only over the unix socket, whose directory\n\
         # only the server's OS user and root can enter. Applications use TCP with SCRAM.\n\
         local   all   all                    trust\n\
         host    all   {su}   0.0.0.0/0     reject\n\
         host    all   {su}   ::/0          reject\n\
         host    all   all    127.0.0.1/32  {method}\n\
         host    all   all    ::1/128       {method}\n",
        su = crate::SUPERUSER
    );
    write_owned(&datadir.join("pg_hba.conf"), hba.as_bytes(), owner)
}

/// Writes a file by rename, so a crash never leaves half of it. The file
/// is made 0600 (a passfile among them) and never through a link: a stale
/// temporary file, or a link in its place, is removed first.
pub fn write_owned(path: &Path, content: &[u8], owner: &RunAs) -> Result<(), PgError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("pgfork-tmp");
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        owner.chown(&tmp)?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        PgError::Io {
            op: "write",
            path: path.to_path_buf(),
            source: e,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_conf_listens_on_loopback_and_quotes_paths() {
        let conf = ServerConf::new(15433, Path::new("/x/it's"), Profile::Branch).render();
        assert!(conf.contains("listen_addresses = '127.0.0.1'"));
        assert!(conf.contains("port = 15433"));
        assert!(conf.contains("unix_socket_directories = '/x/it''s'"));
        assert!(conf.contains("fsync = off"));
        assert_eq!(conf.matches("fsync").count(), 1, "{conf}");
        let source = ServerConf::new(1, Path::new("/s"), Profile::Source).render();
        assert!(source.contains("fsync = on"));
        let mut standby = ServerConf::new(1, Path::new("/s"), Profile::Standby);
        standby.extra.push(("max_connections".into(), "500".into()));
        standby.extra.push(("fsync".into(), "off".into()));
        let text = standby.render();
        assert!(
            text.contains("max_connections = 500") && text.contains("hot_standby = on"),
            "{text}"
        );
        assert_eq!(
            text.matches("fsync").count(),
            1,
            "extras replace profile settings: {text}"
        );
        let import = ServerConf::new(1, Path::new("/s"), Profile::Import).render();
        assert!(
            import.contains("listen_addresses = ''") && import.contains("wal_level = minimal"),
            "{import}"
        );
    }

    #[test]
    fn install_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.conf"), "shared_buffers = 1MB").unwrap();
        let me = RunAs::current();
        install(dir.path(), &me).unwrap();
        install(dir.path(), &me).unwrap();
        let conf = std::fs::read_to_string(dir.path().join("postgresql.conf")).unwrap();
        assert_eq!(conf.matches("include_if_exists = 'pgfork.conf'").count(), 1);
        assert!(conf.starts_with("shared_buffers = 1MB\n"));
        let hba = std::fs::read_to_string(dir.path().join("pg_hba.conf")).unwrap();
        assert!(hba.contains("host    all   postgres   0.0.0.0/0     reject"));
    }
}
