//! Working with database content pgfork did not write.
//!
//! Everything an agent can write is hostile input to every later step, and
//! above all the contents of its branch: functions, casts, operators,
//! triggers, rules, index expressions, domains, role and database settings.
//! PostgreSQL runs such code as whoever happens to be connected: a cast
//! picked by `col::text`, an operator picked by `=`, a trigger fired by a
//! write, and even an IMMUTABLE function in a partial index predicate,
//! which the planner evaluates while planning any query on its table. So
//! the rules, kept here so that every query on content goes through them
//! (SECURITY.md states them for people):
//!
//! 1. **Content is read and written as the application role**, the very
//!    role the agent holds ([`session::as_role`]): whatever code of the
//!    agent's runs in pgfork's session gets the agent's rights and no more.
//! 2. **Superuser sessions stay out of application databases**
//!    ([`session::maintenance`] connects to `postgres`, which the
//!    application role cannot even connect to). The few operations that
//!    must write content as superuser (emptying a branch to its schema,
//!    masking) first ask [`hazards::superuser_hazards`] what code they
//!    would run, and refuse, naming it, if any of it belongs to a role
//!    that is not a superuser. They run with triggers and rules off
//!    (`session_replication_role = replica`).
//! 3. **Every session pins the settings** that change how names resolve and
//!    how values print ([`session::PINNED`]): `search_path` is
//!    `pg_catalog, pg_temp`, so no operator or function of the agent is
//!    even visible, whatever `ALTER ROLE ... SET` it made.
//! 4. **No cast of a value whose type the branch defined**: casts are
//!    found by type, not by search path, so a user `CREATE CAST` would be
//!    picked. Such values are read through their type's own output
//!    function ([`expr::text_of`]) and written as typed literals, which
//!    its input function reads ([`expr::array_literal`]); `to_jsonb` of a
//!    row is used only when every column is of a built-in type
//!    ([`expr::row_json`]).

pub mod expr;
pub mod hazards;
pub mod session;
