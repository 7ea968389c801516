//! The connection the patch is applied through: never with more rights
//! than the changes need.

use pgfork_pg::remote::RemoteUrl;
use pgfork_pg::untrusted::session::{self, Access};
use pgfork_pool::meta::RemoteRow;

use crate::{Engine, EngineError, Result, ServerKind};

impl Engine {
    /// The source's database as its application role (a local source), or
    /// as the URL's role (a remote one, which must not be a superuser):
    /// never with more rights than the changes need, since the patch
    /// carries the agent's values and runs their types' and tables' code.
    pub(super) fn connect_target(
        &self,
        source: &pgfork_pool::meta::SourceRow,
    ) -> Result<postgres::Client> {
        if source.mode == "local" {
            if !source.postmaster.is_some_and(|p| p.is_alive()) {
                return Err(EngineError::WrongState(format!(
                    "source '{}' is not running: pgfork source start {}",
                    source.name, source.name
                )));
            }
            return session::as_role(
                &self.endpoint(ServerKind::Source, &source.name, source.port),
                &source.database,
                &source.role,
                Access::ReadWrite,
            )
            .map_err(EngineError::sql("connect to the source"));
        }
        let remote = RemoteRow::get(self.meta.conn(), &source.name)?.ok_or_else(|| {
            EngineError::WrongState(format!("source {} has no remote recorded", source.name))
        })?;
        let url = RemoteUrl::parse(&remote.url).map_err(EngineError::InvalidArgument)?;
        if url.options.iter().any(|(k, v)| {
            k == "sslmode" && matches!(v.as_str(), "require" | "verify-ca" | "verify-full")
        }) {
            return Err(EngineError::WrongState(format!(
                "{} requires TLS, which promote does not speak yet: apply `pgfork diff {} --format sql` with psql",
                url.redacted(),
                source.name
            )));
        }
        let mut config = postgres::Config::new();
        config
            .host(url.host.as_deref().unwrap_or("localhost"))
            .port(url.port.unwrap_or(5432))
            .dbname(&url.database())
            .options(&session::pinned_options(Access::ReadWrite));
        if let Some(u) = &url.user {
            config.user(u);
        }
        if let Some(p) = self.remote_password(&remote) {
            config.password(p);
        }
        let mut client = config
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect(postgres::NoTls)
            .map_err(|e| {
                EngineError::WrongState(format!("cannot reach {} to promote: {e}", url.redacted()))
            })?;
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user",
                &[],
            )
            .map_err(EngineError::sql("read the role promote connects as"))?
            .get(0);
        if superuser {
            return Err(EngineError::WrongState(format!(
                "{} connects as a superuser; promote writes an agent's changes, which would then run \
                 the agent's code (triggers, domain checks, casts) as superuser: give the source a URL \
                 whose role owns the application's tables and is not a superuser (pgfork source add)",
                url.redacted()
            )));
        }
        Ok(client)
    }
}
