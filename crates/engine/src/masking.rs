//! Masking a source's personal data on its way into snapshots: rules are
//! checked when set, and applied while a snapshot is sealed, so every
//! branch of a masked snapshot sees only masked data from the start.

use std::path::Path;

use pgfork_mask::{CATALOG_QUERY, ColumnInfo, MaskRules, plan};
use pgfork_pg::untrusted::hazards::{Work, superuser_hazards};
use pgfork_pg::untrusted::session;
use pgfork_pool::meta::PolicyRow;
use rand::RngExt;
use serde::Serialize;

use crate::{Engine, EngineError, Result, ServerKind};

/// " (and N more)" for a list of findings of which the first is shown.
pub(crate) fn more(count: usize) -> String {
    if count > 1 {
        format!(" (and {} more)", count - 1)
    } else {
        String::new()
    }
}

/// A fresh per-source masking key.
pub(crate) fn new_secret() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    rand::rng().fill(&mut key[..]);
    key
}

/// What `source mask` checked.
#[derive(Debug, Clone, Serialize)]
pub struct MaskReport {
    /// The source.
    pub source: String,
    /// Columns the rules change.
    pub masked_columns: usize,
    /// Personal-looking columns without a rule.
    pub warnings: Vec<String>,
}

/// The user tables' columns, as the masking planner wants them.
pub(crate) fn catalog(client: &mut postgres::Client) -> Result<Vec<ColumnInfo>> {
    Ok(client
        .query(CATALOG_QUERY, &[])
        .map_err(EngineError::sql("read the catalog for masking"))?
        .iter()
        .map(|r| ColumnInfo {
            schema: r.get(0),
            table: r.get(1),
            column: r.get(2),
            data_type: r.get(3),
            not_null: r.get(4),
            category: r.get(5),
            type_name: r.get(6),
            max_len: r.get(7),
            generated: r.get(8),
            identity: r.get(9),
            relkind: r.get(10),
        })
        .collect())
}

/// What masking writes, for [`superuser_hazards`].
struct Masked {
    /// The tables it updates, with their partitions.
    relations: Vec<(u32, Work)>,
    /// The types of the columns it writes.
    types: Vec<u32>,
}

fn masked_objects(client: &mut postgres::Client, rules: &MaskRules) -> Result<Masked> {
    let mut relations = Vec::new();
    let mut types = Vec::new();
    for rule in &rules.columns {
        let rows = client
            .query(
                "SELECT p.relid, a.atttypid
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   -- The table, and its partitions if it has any (the tree
                   -- of a plain table is empty).
                   CROSS JOIN LATERAL (SELECT c.oid AS relid UNION
                       SELECT t.relid::pg_catalog.oid FROM pg_catalog.pg_partition_tree(c.oid) t) p
                   LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $3 AND NOT a.attisdropped
                  WHERE n.nspname = $1 AND c.relname = $2",
                &[&rule.schema, &rule.table, &rule.column],
            )
            .map_err(EngineError::sql("find the tables masking writes"))?;
        for r in rows {
            relations.push((r.get::<_, u32>(0), Work::Write));
            types.extend(r.get::<_, Option<u32>>(1));
        }
    }
    relations.sort_unstable_by_key(|(oid, _)| *oid);
    relations.dedup();
    types.sort_unstable();
    types.dedup();
    Ok(Masked { relations, types })
}

/// Applies masking rules to the database `client` is connected to (as
/// superuser, in the private server that seals a snapshot), then rewrites
/// what could still hold old values: the masked tables and their indexes,
/// and the statistics catalogs. Triggers and foreign keys are off
/// meanwhile (`session_replication_role = replica`): the transforms are
/// deterministic, so keys still match afterwards. Refused if the updates
/// would run code of a role that is not a superuser (an index expression,
/// a check constraint, a trigger enabled ALWAYS, a cast of a masked
/// column's type): that code could be an agent's, promoted earlier.
pub(crate) fn apply(
    client: &mut postgres::Client,
    rules: &MaskRules,
    secret: &[u8],
) -> Result<(usize, Vec<String>)> {
    let columns = catalog(client)?;
    let plan =
        plan(rules, &columns, secret).map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
    let masked = masked_objects(client, rules)?;
    let hazards = superuser_hazards(client, &masked.relations, &masked.types)
        .map_err(EngineError::sql("check what masking would run"))?;
    if let Some(first) = hazards.first() {
        return Err(EngineError::UnsafeContent(format!(
            "masking would run, as superuser, {first}{}: make that function's owner a superuser \
             or drop the object that calls it in the source, or mask those columns another way",
            more(hazards.len())
        )));
    }
    for sql in &plan.setup {
        client
            .batch_execute(sql)
            .map_err(EngineError::sql("set up masking functions"))?;
    }
    client
        .batch_execute("SET session_replication_role = replica")
        .map_err(EngineError::sql("disable triggers for masking"))?;
    let mut tx = client
        .transaction()
        .map_err(EngineError::sql("begin masking"))?;
    for sql in &plan.updates {
        tx.batch_execute(sql)
            .map_err(EngineError::sql(&format!("mask: {sql}")))?;
    }
    tx.commit().map_err(EngineError::sql("commit masking"))?;
    for sql in &plan.rewrite {
        client
            .batch_execute(sql)
            .map_err(EngineError::sql(&format!("mask: {sql}")))?;
    }
    client
        .batch_execute("CHECKPOINT")
        .map_err(EngineError::sql("checkpoint after masking"))?;
    Ok((plan.masked_columns, plan.warnings))
}

impl Engine {
    /// Sets a source's masking rules from a TOML file, after checking them
    /// against the source's database: unknown columns and impossible
    /// transforms are errors, unmasked personal-looking columns warnings.
    pub fn source_mask(&mut self, name: &str, rules_file: &Path) -> Result<MaskReport> {
        self.admin_only("change masking rules")?;
        let row = self.source_row(name)?;
        let text =
            std::fs::read_to_string(rules_file).map_err(EngineError::io("read", rules_file))?;
        let rules = MaskRules::parse(&rules_file.display().to_string(), &text)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        // Only the catalog is read (no user table is planned): the
        // superuser sees every table, whoever owns it.
        let mut client = session::superuser_in(
            &self.endpoint(ServerKind::Source, name, row.port),
            &row.database,
        )
        .map_err(|e| {
            EngineError::WrongState(format!(
                "source '{name}' must be running to check masking rules against it ({}): pgfork source start {name}",
                pgfork_pg::describe(&e)
            ))
        })?;
        let mut policy = PolicyRow::get(self.meta.conn(), name)?;
        let secret = policy.mask_secret.clone().unwrap_or_else(new_secret);
        let planned = plan(&rules, &catalog(&mut client)?, &secret)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        for w in &planned.warnings {
            self.progress.warn(w);
        }
        policy.mask_rules = Some(text);
        policy.mask_secret = Some(secret);
        self.meta.write(|c| policy.put(c))?;
        Ok(MaskReport {
            source: name.into(),
            masked_columns: planned.masked_columns,
            warnings: planned.warnings,
        })
    }

    /// The masking rules in force on a source (its TOML), if any.
    pub fn source_mask_rules(&self, name: &str) -> Result<Option<String>> {
        self.admin_only("read masking rules")?;
        self.source_row(name)?;
        Ok(PolicyRow::get(self.meta.conn(), name)?.mask_rules)
    }

    /// Removes a source's masking rules; with `allow_unmasked`, records that
    /// someone chose to let its unmasked data reach branches.
    pub fn source_unmask(&mut self, name: &str, allow_unmasked: bool) -> Result<()> {
        self.admin_only("change masking rules")?;
        self.source_row(name)?;
        let mut policy = PolicyRow::get(self.meta.conn(), name)?;
        policy.mask_rules = None;
        policy.unmasked_ok = allow_unmasked;
        self.meta.write(|c| policy.put(c))?;
        Ok(())
    }
}
