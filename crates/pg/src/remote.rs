//! Remote databases: their URLs, and queries run through libpq's `psql`
//! so that every libpq connection option (sslmode, service files,
//! `.pgpass`) works as users expect. Passwords travel in the environment
//! (`PGPASSWORD`), never on a command line where `ps` would show them.

use std::process::{Command, Stdio};

use crate::{PgBinaries, PgError};

/// A `postgres://user:password@host:port/db?opt=val` URL, taken apart.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    /// User.
    pub user: Option<String>,
    /// Password, if the URL carried one (a secret).
    pub password: Option<String>,
    /// Host (or unix socket directory).
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Database.
    pub dbname: Option<String>,
    /// Other libpq options (sslmode, sslrootcert, ...).
    pub options: Vec<(String, String)>,
}

impl std::fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("bad %-escape in '{s}'"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape in '{s}'"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' is not UTF-8 after %-decoding"))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Quotes a libpq keyword/value: `'it\'s'`.
fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl RemoteUrl {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(text: &str) -> Result<RemoteUrl, String> {
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                "the URL must start with postgres:// (e.g. postgres://user@host:5432/db)"
                    .to_string()
            })?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)?), Some(percent_decode(p)?)),
                None => (Some(percent_decode(u)?), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h.split_once(']').ok_or("unterminated [ in host")?;
            (h.to_string(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (hostport.to_string(), ""),
            }
        };
        let port = if port.is_empty() {
            None
        } else {
            Some(
                port.parse()
                    .map_err(|_| format!("port '{port}' is not a number"))?,
            )
        };
        let mut options = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            options.push((percent_decode(k)?, percent_decode(v)?));
        }
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        Ok(RemoteUrl {
            user: user.and_then(nonempty),
            password,
            host: nonempty(percent_decode(&host)?),
            port,
            dbname: nonempty(percent_decode(path)?),
            options,
        })
    }

    /// The URL without its password: safe to show and store.
    pub fn redacted(&self) -> String {
        let mut s = String::from("postgres://");
        if let Some(u) = &self.user {
            s.push_str(&percent_encode(u));
            s.push('@');
        }
        if let Some(h) = &self.host {
            if h.contains(':') {
                s.push_str(&format!("[{h}]"))
            } else {
                s.push_str(&percent_encode(h))
            }
        }
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push('/');
        if let Some(d) = &self.dbname {
            s.push_str(&percent_encode(d));
        }
        if !self.options.is_empty() {
            s.push('?');
            let opts: Vec<String> = self
                .options
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect();
            s.push_str(&opts.join("&"));
        }
        s
    }

    /// libpq keyword/value connection string without the password, with
    /// `dbname` replaced if given (e.g. `replication=true` targets).
    pub fn conninfo(&self, dbname: Option<&str>) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host={}", conninfo_value(h)));
        }
        if let Some(p) = self.port {
            parts.push(format!("port={p}"));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user={}", conninfo_value(u)));
        }
        if let Some(d) = dbname.or(self.dbname.as_deref()) {
            parts.push(format!("dbname={}", conninfo_value(d)));
        }
        for (k, v) in &self.options {
            parts.push(format!("{k}={}", conninfo_value(v)));
        }
        parts.join(" ")
    }

    /// The database name (libpq's default is the user name).
    pub fn database(&self) -> String {
        self.dbname
            .clone()
            .or_else(|| self.user.clone())
            .unwrap_or_else(|| "postgres".into())
    }
}

/// How a remote operation failed, in the terms a user can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteFailure {
    /// Host unknown, refused, timed out.
    Unreachable,
    /// Wrong user or password, or no pg_hba entry.
    Refused,
    /// Anything else.
    Other,
}

/// Classifies libpq's message.
pub fn classify(stderr: &str) -> RemoteFailure {
    let s = stderr.to_ascii_lowercase();
    if [
        "could not translate host name",
        "connection refused",
        "timeout expired",
        "no route to host",
        "network is unreachable",
        "could not connect to server",
        "connection timed out",
    ]
    .iter()
    .any(|m| s.contains(m))
    {
        RemoteFailure::Unreachable
    } else if [
        "password authentication failed",
        "no pg_hba.conf entry",
        "authentication failed",
        "no password supplied",
        "role \"",
        "pg_hba.conf rejects",
    ]
    .iter()
    .any(|m| s.contains(m))
    {
        RemoteFailure::Refused
    } else {
        RemoteFailure::Other
    }
}

/// Turns a failed libpq program's stderr into an error that says what to do.
pub fn remote_error(url: &RemoteUrl, action: &str, stderr: &str) -> PgError {
    let detail = stderr
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("psql: ")
                .trim_start_matches("error: ")
                .trim()
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let detail = detail.trim_end_matches('.');
    let url = url.redacted();
    match classify(stderr) {
        RemoteFailure::Unreachable => PgError::Remote {
            message: format!(
                "cannot reach {url} to {action}: {detail}. Check the host, port, network and that the server runs"
            ),
        },
        RemoteFailure::Refused => PgError::Remote {
            message: format!(
                "{url} refused the login to {action}: {detail}. Check the user and password (in the URL, PGPASSWORD or ~/.pgpass) and the server's pg_hba.conf"
            ),
        },
        RemoteFailure::Other => PgError::Remote {
            message: format!("{action} on {url} failed: {detail}"),
        },
    }
}

/// Sets the libpq environment for a remote program: password (if any),
/// a connect timeout, an application name.
pub fn remote_env(cmd: &mut Command, password: Option<&str>) {
    cmd.env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "pgfork");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
}

/// Runs one query on a remote database through `psql` and returns its rows.
pub fn query(
    bins: &PgBinaries,
    url: &RemoteUrl,
    password: Option<&str>,
    sql: &str,
) -> Result<Vec<Vec<String>>, PgError> {
    let mut cmd = Command::new(bins.tool("psql"));
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-F",
        "\u{1f}",
        "-R",
        "\u{1e}",
        "-d",
    ])
    .arg(url.conninfo(None))
    .arg("-c")
    .arg(sql)
    .stdin(Stdio::null());
    remote_env(&mut cmd, password);
    let out = cmd.output().map_err(|e| PgError::Command {
        program: "psql".into(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(remote_error(
            url,
            "query it",
            &String::from_utf8_lossy(&out.stderr),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split('\u{1e}')
        .map(|r| r.trim_end_matches('\n'))
        .filter(|r| !r.is_empty())
        .map(|r| r.split('\u{1f}').map(str::to_string).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_redact() {
        let u =
            RemoteUrl::parse("postgres://rep%40x:s%3Acret@db.internal:6543/shop?sslmode=require")
                .unwrap();
        assert_eq!(u.user.as_deref(), Some("rep@x"));
        assert_eq!(u.password.as_deref(), Some("s:cret"));
        assert_eq!(u.host.as_deref(), Some("db.internal"));
        assert_eq!(u.port, Some(6543));
        assert_eq!(u.dbname.as_deref(), Some("shop"));
        assert_eq!(
            u.options,
            vec![("sslmode".to_string(), "require".to_string())]
        );
        let shown = u.redacted();
        assert!(!shown.contains("cret"), "{shown}");
        assert_eq!(
            shown,
            "postgres://rep%40x@db.internal:6543/shop?sslmode=require"
        );
        assert!(!format!("{u:?}").contains("cret"));
        let ci = u.conninfo(None);
        assert!(
            ci.contains("host='db.internal'") && ci.contains("port=6543") && !ci.contains("cret"),
            "{ci}"
        );
        assert_eq!(
            RemoteUrl::parse("postgresql://h/d").unwrap().database(),
            "d"
        );
        assert!(RemoteUrl::parse("mysql://x").is_err());
        assert!(RemoteUrl::parse("postgres://h:notaport/d").is_err());
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            classify("psql: error: could not translate host name \"nope\" to address"),
            RemoteFailure::Unreachable
        );
        assert_eq!(
            classify("FATAL:  password authentication failed for user \"x\""),
            RemoteFailure::Refused
        );
        assert_eq!(
            classify("ERROR: relation does not exist"),
            RemoteFailure::Other
        );
    }
}
