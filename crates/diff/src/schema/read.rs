//! Reading every user object of a database from its catalogs.
//!
//! One read-only, repeatable-read transaction, with `search_path` empty so
//! that `format_type`, `pg_get_viewdef`, `pg_get_expr` and friends qualify
//! every name outside `pg_catalog`: definitions then mean the same thing
//! whatever the search path of whoever applies the SQL, and they compare
//! equal between databases exactly when they are the same.
//!
//! Objects are first collected family by family, each recording the
//! catalog addresses (`classid, objid, objsubid`) it answers for; then
//! `pg_depend` is read once and translated into dependencies between
//! identities; grants and comments, which hang off any object, come last.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use postgres::{IsolationLevel, Row, Transaction};

use super::id::{ObjectId, ObjectKind};
use super::model::{Object, Schema};
use super::{
    collations, comments, constraints, namespaces, routines, security, sequences, tables, types,
    views,
};
use crate::DiffError;

// Catalog OIDs are fixed at PostgreSQL's bootstrap and have never changed.
pub(crate) const PG_CLASS: u32 = 1259;
pub(crate) const PG_TYPE: u32 = 1247;
pub(crate) const PG_PROC: u32 = 1255;
pub(crate) const PG_CONSTRAINT: u32 = 2606;
pub(crate) const PG_NAMESPACE: u32 = 2615;
pub(crate) const PG_EXTENSION: u32 = 3079;
pub(crate) const PG_REWRITE: u32 = 2618;
pub(crate) const PG_ATTRDEF: u32 = 2604;
pub(crate) const PG_TRIGGER: u32 = 2620;
pub(crate) const PG_POLICY: u32 = 3256;
pub(crate) const PG_COLLATION: u32 = 3456;

/// A catalog address: class OID, object OID, sub-object (column) number.
pub(crate) type Addr = (u32, u32, i32);

/// SQL condition: namespace alias `n` is a user schema.
pub(crate) const USER_NS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname !~ '^pg_(toast|temp_)'";

/// SQL condition: object `oid` of catalog `class` is not an extension's.
pub(crate) fn not_extension_member(class: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = '{class}'::regclass \
         AND e.objid = {oid} AND e.deptype = 'e')"
    )
}

/// SQL expression: the qualified, quoted name of `name` in namespace `n`.
pub(crate) fn qualified(name: &str) -> String {
    format!("quote_ident(n.nspname) || '.' || quote_ident({name})")
}

/// SQL expression: the qualified name of collation `oid`, or NULL when
/// `oid` is `default_oid` (the type's own collation) or 0.
pub(crate) fn collation_name(oid: &str, default_oid: &str) -> String {
    format!(
        "CASE WHEN {oid} <> 0 AND {oid} <> {default_oid} THEN \
         (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname) \
         FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace \
         WHERE co.oid = {oid}) END"
    )
}

/// Collects objects while the families read their catalogs.
pub(crate) struct Reader<'a> {
    tx: Transaction<'a>,
    pub(crate) objects: BTreeMap<ObjectId, Object>,
    /// Addresses of the objects themselves (what grants and comments are on).
    own: HashMap<Addr, ObjectId>,
    /// Addresses that stand for an object without being it: an index for
    /// its constraint, a view's rewrite rule, a table's row type, an
    /// extension's members.
    alias: HashMap<Addr, ObjectId>,
    pub(crate) unsupported: BTreeSet<String>,
    /// See [`Schema::attached_indexes`].
    pub(crate) attached_indexes: BTreeMap<String, String>,
    /// See [`Schema::inherited`].
    pub(crate) inherited: BTreeMap<ObjectId, Object>,
}

impl<'a> Reader<'a> {
    /// Runs a catalog query.
    pub(crate) fn query(&mut self, what: &str, sql: &str) -> Result<Vec<Row>, DiffError> {
        self.tx
            .query(sql, &[])
            .map_err(DiffError::sql(format!("reading {what}")))
    }

    /// Records an object and its own catalog address.
    pub(crate) fn add(&mut self, id: ObjectId, object: Object, addr: Option<Addr>) {
        if let Some(addr) = addr {
            self.own.insert(addr, id.clone());
        }
        self.objects.insert(id, object);
    }

    /// Records that `addr` stands for `id` in dependencies.
    pub(crate) fn alias(&mut self, addr: Addr, id: ObjectId) {
        self.alias.insert(addr, id);
    }

    /// The object at exactly this address (for grants and comments).
    pub(crate) fn own(&self, addr: Addr) -> Option<&ObjectId> {
        self.own.get(&addr)
    }

    /// The object an address belongs to, for dependencies: itself, what it
    /// stands for, or the whole relation when a column is not an object of
    /// its own (a view's output column).
    fn resolve(&self, (class, oid, sub): Addr) -> Option<&ObjectId> {
        let exact = (class, oid, sub);
        let whole = (class, oid, 0);
        self.own
            .get(&exact)
            .or_else(|| self.alias.get(&exact))
            .or_else(|| self.own.get(&whole))
            .or_else(|| self.alias.get(&whole))
    }

    /// Extension members: every object an extension made stands for the
    /// extension, so that a column of type `citext` depends on extension
    /// `citext`.
    fn read_extension_members(&mut self) -> Result<(), DiffError> {
        let rows = self.query(
            "extension members",
            "SELECT d.classid, d.objid, d.refobjid FROM pg_depend d \
             WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' \
             UNION ALL \
             SELECT 'pg_type'::regclass::oid, t.typarray, d.refobjid FROM pg_depend d \
             JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid \
             WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' \
             AND t.typarray <> 0",
        )?;
        for row in rows {
            let ext: u32 = row.get(2);
            if let Some(id) = self.own.get(&(PG_EXTENSION, ext, 0)).cloned() {
                self.alias.insert((row.get(0), row.get(1), 0), id);
            }
        }
        Ok(())
    }

    /// Translates `pg_depend` into dependencies between identities.
    fn read_dependencies(&mut self) -> Result<(), DiffError> {
        self.read_extension_members()?;
        // Normal and automatic dependencies say what must exist first;
        // internal ones tie parts to their whole (an index to its
        // constraint), which the aliases already express. Objects made at
        // bootstrap (OIDs below 16384) depend on nothing of ours.
        let rows = self.query(
            "dependencies",
            "SELECT classid, objid, objsubid, refclassid, refobjid, refobjsubid, deptype::text \
             FROM pg_depend WHERE deptype IN ('n', 'a') AND objid >= 16384",
        )?;
        for row in rows {
            let from: Addr = (row.get(0), row.get(1), row.get(2));
            let to: Addr = (row.get(3), row.get(4), row.get(5));
            let deptype: String = row.get(6);
            let (Some(dependent), Some(referenced)) = (self.resolve(from), self.resolve(to)) else {
                continue;
            };
            if dependent == referenced {
                continue;
            }
            // A sequence OWNED BY a column depends on it automatically, yet
            // must exist before the column's default can call it: ownership
            // is a property of the sequence set in a late phase instead.
            if deptype == "a"
                && dependent.kind == ObjectKind::Sequence
                && referenced.kind == ObjectKind::Column
            {
                continue;
            }
            let (dependent, referenced) = (dependent.clone(), referenced.clone());
            if let Some(obj) = self.objects.get_mut(&dependent)
                && obj.parent.as_ref() != Some(&referenced)
            {
                obj.deps.insert(referenced);
            }
        }
        Ok(())
    }

    /// Objects the schema diff does not cover, by description, so that a
    /// difference in them is reported rather than missed.
    fn read_unsupported(&mut self) -> Result<(), DiffError> {
        let mut parts = vec![
            format!(
                "SELECT pg_describe_object('pg_proc'::regclass, p.oid, 0) FROM pg_proc p \
                 JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.prokind = 'a' AND {USER_NS} AND {}",
                not_extension_member("pg_proc", "p.oid")
            ),
            format!(
                "SELECT pg_describe_object('pg_rewrite'::regclass, r.oid, 0) FROM pg_rewrite r \
                 JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE r.rulename <> '_RETURN' AND {USER_NS} AND {}",
                not_extension_member("pg_class", "c.oid")
            ),
            format!(
                "SELECT pg_describe_object('pg_class'::regclass, c.oid, 0) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'f' AND {USER_NS} AND {}",
                not_extension_member("pg_class", "c.oid")
            ),
            // Range and base types; array types come with their element.
            format!(
                "SELECT pg_describe_object('pg_type'::regclass, t.oid, 0) FROM pg_type t \
                 JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE (t.typtype = 'r' OR (t.typtype = 'b' AND NOT EXISTS \
                 (SELECT FROM pg_type e WHERE e.typarray = t.oid))) AND {USER_NS} AND {}",
                not_extension_member("pg_type", "t.oid")
            ),
        ];
        for (catalog, ns) in [
            ("pg_statistic_ext", "stxnamespace"),
            ("pg_operator", "oprnamespace"),
            ("pg_opclass", "opcnamespace"),
            ("pg_opfamily", "opfnamespace"),
            ("pg_conversion", "connamespace"),
            ("pg_ts_config", "cfgnamespace"),
            ("pg_ts_dict", "dictnamespace"),
            ("pg_ts_parser", "prsnamespace"),
            ("pg_ts_template", "tmplnamespace"),
        ] {
            parts.push(format!(
                "SELECT pg_describe_object('{catalog}'::regclass, x.oid, 0) FROM {catalog} x \
                 JOIN pg_namespace n ON n.oid = x.{ns} WHERE {USER_NS} AND {}",
                not_extension_member(catalog, "x.oid")
            ));
        }
        for catalog in [
            "pg_cast",
            "pg_event_trigger",
            "pg_publication",
            "pg_foreign_data_wrapper",
            "pg_foreign_server",
            "pg_default_acl",
            "pg_language",
            "pg_transform",
        ] {
            // Objects internal to another (the casts of a range type to its
            // multirange) come and go with it.
            parts.push(format!(
                "SELECT pg_describe_object('{catalog}'::regclass, x.oid, 0) FROM {catalog} x \
                 WHERE x.oid >= 16384 AND {} AND NOT EXISTS (SELECT FROM pg_depend d \
                 WHERE d.classid = '{catalog}'::regclass AND d.objid = x.oid AND d.deptype = 'i')",
                not_extension_member(catalog, "x.oid")
            ));
        }
        let rows = self.query(
            "objects the diff does not cover",
            &parts.join(" UNION ALL "),
        )?;
        for row in rows {
            let described: Option<String> = row.get(0);
            if let Some(text) = described {
                self.unsupported.insert(text);
            }
        }
        Ok(())
    }
}

/// Reads every user object of the connected database.
///
/// Skips `pg_catalog`, `information_schema`, `pg_toast` and temporary
/// schemas, and every object that belongs to an extension (the extension
/// itself is listed). Runs in one read-only repeatable-read transaction,
/// so the reading is consistent even while others write.
pub fn read_schema(client: &mut postgres::Client) -> Result<Schema, DiffError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(DiffError::sql("starting the schema reading transaction"))?;
    tx.batch_execute("SET LOCAL search_path = ''")
        .map_err(DiffError::sql("emptying search_path"))?;
    let mut r = Reader {
        tx,
        objects: BTreeMap::new(),
        own: HashMap::new(),
        alias: HashMap::new(),
        unsupported: BTreeSet::new(),
        attached_indexes: BTreeMap::new(),
        inherited: BTreeMap::new(),
    };
    namespaces::read(&mut r)?;
    collations::read(&mut r)?;
    types::read(&mut r)?;
    sequences::read(&mut r)?;
    tables::read(&mut r)?;
    constraints::read(&mut r)?;
    views::read(&mut r)?;
    routines::read(&mut r)?;
    security::read_policies(&mut r)?;
    r.read_dependencies()?;
    security::read_grants(&mut r)?;
    comments::read(&mut r)?;
    r.read_unsupported()?;
    let Reader {
        tx,
        objects,
        unsupported,
        attached_indexes,
        inherited,
        ..
    } = r;
    tx.commit()
        .map_err(DiffError::sql("ending the schema reading transaction"))?;
    Ok(Schema {
        objects,
        unsupported,
        attached_indexes,
        inherited,
    })
}
