//! TCP ports: chosen inside the meta.db write transaction, so two pgfork
//! processes never pick the same one, and checked free on 127.0.0.1.

use pgfork_pool::meta::Connection;

use crate::{EngineError, Result};

/// The lowest port in `range` that no source or branch holds, that is not
/// in `avoid`, and that nothing else on the machine listens on now.
pub(crate) fn allocate(conn: &Connection, range: (u16, u16), avoid: &[u16]) -> Result<u16> {
    let used = pgfork_pool::meta::used_ports(conn)?;
    (range.0..=range.1)
        .filter(|p| !used.contains(p) && !avoid.contains(p))
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or(EngineError::NoFreePort {
            min: range.0,
            max: range.1,
        })
}
