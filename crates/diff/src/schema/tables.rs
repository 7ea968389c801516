//! Tables, their columns, and their row-level security switches.

use std::collections::HashMap;

use super::id::{ObjectId, ObjectKind};
use super::model::{
    ColumnDef, Definition, IdentityDef, Object, OwnDefault, PartitionOf, RowSecurityDef, TableDef,
};
use super::namespaces::owner_sql;
use super::plan::{Alteration, Changes, Fragment, Phase};
use super::read::{
    PG_ATTRDEF, PG_CLASS, PG_TYPE, Reader, USER_NS, collation_name, not_extension_member, qualified,
};
use super::sql::{option_changes, with_options};
use crate::DiffError;

/// SQL condition: `c` is a user table.
fn user_table() -> String {
    format!(
        "c.relkind IN ('r', 'p') AND {USER_NS} AND {}",
        not_extension_member("pg_class", "c.oid")
    )
}

/// SQL expression: the qualified name of relation `oid`.
fn relation_name(oid: &str) -> String {
    format!(
        "(SELECT quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) \
         FROM pg_class pc JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE pc.oid = {oid})"
    )
}

pub(crate) fn read(r: &mut Reader) -> Result<(), DiffError> {
    let sql = format!(
        "SELECT c.oid, {}, quote_ident(pg_get_userbyid(c.relowner)), c.relpersistence = 'u', \
         pg_get_partkeydef(c.oid), \
         (SELECT {} FROM pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition), \
         pg_get_expr(c.relpartbound, c.oid), \
         ARRAY(SELECT {} FROM pg_inherits i WHERE i.inhrelid = c.oid AND NOT c.relispartition \
               ORDER BY i.inhseqno), \
         coalesce(c.reloptions, '{{}}'), c.relrowsecurity, c.relforcerowsecurity, \
         CASE c.relreplident WHEN 'd' THEN 'DEFAULT' WHEN 'f' THEN 'FULL' \
              WHEN 'n' THEN 'NOTHING' ELSE 'USING INDEX ' || \
              (SELECT quote_ident(ic.relname) FROM pg_index i JOIN pg_class ic \
               ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid AND i.indisreplident) END, \
         (SELECT coalesce( \
              (SELECT 'constraint ' || {} || '.' || quote_ident(co.conname) \
               FROM pg_constraint co WHERE co.conindid = i.indexrelid \
               AND co.conrelid = c.oid AND co.contype IN ('p', 'u', 'x')), \
              'index ' || quote_ident(n.nspname) || '.' || quote_ident(ic.relname)) \
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
          WHERE i.indrelid = c.oid AND i.indisreplident AND c.relreplident = 'i'), \
         c.reltype, (SELECT t.typarray FROM pg_type t WHERE t.oid = c.reltype), \
         ARRAY(SELECT quote_ident(a.attname) FROM pg_attribute a \
               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
               AND NOT a.attislocal AND a.attnotnull \
               AND NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_attribute pa \
                               ON pa.attrelid = i.inhparent AND pa.attname = a.attname \
                               WHERE i.inhrelid = c.oid AND pa.attnotnull) \
               ORDER BY a.attnum) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {}",
        qualified("c.relname"),
        relation_name("i.inhparent"),
        relation_name("i.inhparent"),
        qualified("c.relname"),
        user_table()
    );
    for row in r.query("tables", &sql)? {
        let oid: u32 = row.get(0);
        let name: String = row.get(1);
        let id = ObjectId::new(ObjectKind::Table, name.clone());
        let parent: Option<String> = row.get(5);
        let bound: Option<String> = row.get(6);
        let replica_index: Option<String> = row.get(12);
        let def = TableDef {
            name: name.clone(),
            owner: row.get(2),
            unlogged: row.get(3),
            partition_key: row.get(4),
            partition_of: parent.map(|parent| PartitionOf {
                parent,
                bound: bound.unwrap_or_default(),
            }),
            inherits: row.get(7),
            options: row.get(8),
            replica_identity: row.get(11),
            replica_index: replica_index.and_then(|s| s.parse().ok()),
            own_not_null: row.get(15),
            own_defaults: Vec::new(),
            parent_defaults: Default::default(),
        };
        let (rls, forced): (bool, bool) = (row.get(9), row.get(10));
        if rls || forced {
            r.add(
                ObjectId::new(ObjectKind::RowSecurity, name.clone()),
                Object::new(
                    Definition::RowSecurity(RowSecurityDef {
                        table: name.clone(),
                        enabled: rls,
                        forced,
                    }),
                    Some(id.clone()),
                ),
                None,
            );
        }
        // The table's row type (and its array) stand for the table: a
        // function returning `SETOF public.orders` depends on it.
        r.alias((PG_TYPE, row.get(13), 0), id.clone());
        if let Some(array) = row.get::<_, Option<u32>>(14) {
            r.alias((PG_TYPE, array, 0), id.clone());
        }
        r.add(
            id,
            Object::new(Definition::Table(def), None),
            Some((PG_CLASS, oid, 0)),
        );
    }

    // Columns only inherited from a parent (every column of a partition)
    // are not objects of their own: they follow the parent's (and are kept
    // aside, for when the table is detached).
    let sql = format!(
        "SELECT a.attrelid, a.attnum::int, {} || '.' || quote_ident(a.attname), {}, \
         quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), {}, a.attnotnull, \
         pg_get_expr(ad.adbin, ad.adrelid), a.attidentity::text, a.attgenerated::text, \
         CASE WHEN a.attstattarget >= 0 THEN a.attstattarget::int END, \
         {storage}, {type_storage}, \
         CASE a.attcompression WHEN 'p' THEN 'pglz' WHEN 'l' THEN 'lz4' END, a.attislocal, \
         ad.oid, seq.name, seq.seqstart, seq.seqincrement, seq.seqmin, seq.seqmax, \
         seq.seqcache, seq.seqcycle \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
         LEFT JOIN LATERAL ( \
             SELECT quote_ident(sn.nspname) || '.' || quote_ident(sc.relname) AS name, s.* \
             FROM pg_depend d JOIN pg_class sc ON sc.oid = d.objid \
             JOIN pg_namespace sn ON sn.oid = sc.relnamespace \
             JOIN pg_sequence s ON s.seqrelid = sc.oid \
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
             AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum AND d.deptype = 'i' \
         ) seq ON a.attidentity <> '' \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND {}",
        qualified("c.relname"),
        qualified("c.relname"),
        collation_name("a.attcollation", "t.typcollation"),
        user_table(),
        storage = storage_keyword("a.attstorage"),
        type_storage = storage_keyword("t.typstorage"),
    );
    let mut local: HashMap<(u32, String), ObjectId> = HashMap::new();
    for row in r.query("columns", &sql)? {
        let relid: u32 = row.get(0);
        let attnum: i32 = row.get(1);
        let table = ObjectId::new(ObjectKind::Table, row.get::<_, String>(3));
        let id = ObjectId::new(ObjectKind::Column, row.get::<_, String>(2));
        let identity: String = row.get(9);
        let generated: String = row.get(10);
        let expr: Option<String> = row.get(8);
        let storage: String = row.get(12);
        let type_storage: String = row.get(13);
        let def = ColumnDef {
            table: table.name.clone(),
            name: row.get(4),
            data_type: row.get(5),
            collation: row.get(6),
            not_null: row.get(7),
            default: if generated.is_empty() {
                expr.clone()
            } else {
                None
            },
            generated: if generated.is_empty() { None } else { expr },
            identity: if identity.is_empty() {
                None
            } else {
                Some(IdentityDef {
                    always: identity == "a",
                    sequence: row.get(17),
                    start: row.get(18),
                    increment: row.get(19),
                    min: row.get(20),
                    max: row.get(21),
                    cache: row.get(22),
                    cycle: row.get(23),
                })
            },
            statistics: row.get(11),
            storage: (storage != type_storage).then_some(storage),
            type_storage,
            compression: row.get(14),
            local: row.get(15),
        };
        if let Some(attrdef) = row.get::<_, Option<u32>>(16) {
            r.alias((PG_ATTRDEF, attrdef, 0), id.clone());
        }
        let mut obj = Object::new(Definition::Column(def), Some(table));
        obj.position = attnum;
        if !row.get::<_, bool>(15) {
            r.inherited.insert(id, obj);
            continue;
        }
        local.insert((relid, row.get::<_, String>(4)), id.clone());
        r.add(id, obj, Some((PG_CLASS, relid, attnum)));
    }
    alias_inherited_columns(r, &local)?;
    read_inherited_defaults(r)
}

/// The defaults of columns a table only inherits, against its first
/// parent's: a partition's column starts with its parent's default and
/// follows the parent's `SET DEFAULT`, but can be given its own.
fn read_inherited_defaults(r: &mut Reader) -> Result<(), DiffError> {
    let sql = format!(
        "SELECT {}, quote_ident(a.attname), pg_get_expr(ad.adbin, ad.adrelid), pd.def \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
         CROSS JOIN LATERAL ( \
             SELECT pg_get_expr(pad.adbin, pad.adrelid) AS def \
             FROM pg_inherits i JOIN pg_attribute pa \
               ON pa.attrelid = i.inhparent AND pa.attname = a.attname \
             LEFT JOIN pg_attrdef pad ON pad.adrelid = pa.attrelid AND pad.adnum = pa.attnum \
             WHERE i.inhrelid = a.attrelid ORDER BY i.inhseqno LIMIT 1) pd \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND NOT a.attislocal \
           AND a.attgenerated = '' AND {} ORDER BY a.attrelid, a.attnum",
        qualified("c.relname"),
        user_table()
    );
    for row in r.query("defaults of inherited columns", &sql)? {
        let table = ObjectId::new(ObjectKind::Table, row.get::<_, String>(0));
        let (column, default, parent): (String, Option<String>, Option<String>) =
            (row.get(1), row.get(2), row.get(3));
        let Some(Object {
            def: Definition::Table(def),
            ..
        }) = r.objects.get_mut(&table)
        else {
            continue;
        };
        if default != parent {
            def.own_defaults.push(OwnDefault {
                column: column.clone(),
                default,
                parent: parent.clone(),
            });
        }
        def.parent_defaults.0.insert(column, parent);
    }
    Ok(())
}

/// A column a table only inherits stands, in dependencies, for the
/// column of the nearest ancestor that declares it: changing that one
/// (its type, say) changes the inherited copies with it.
fn alias_inherited_columns(
    r: &mut Reader,
    local: &HashMap<(u32, String), ObjectId>,
) -> Result<(), DiffError> {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    let rows = r.query(
        "inheritance",
        "SELECT inhrelid, inhparent FROM pg_inherits ORDER BY inhrelid, inhseqno",
    )?;
    for row in rows {
        parents.entry(row.get(0)).or_default().push(row.get(1));
    }
    let sql = format!(
        "SELECT a.attrelid, a.attnum::int, quote_ident(a.attname) \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND NOT a.attislocal AND {}",
        user_table()
    );
    for row in r.query("inherited columns", &sql)? {
        let (relid, attnum, name): (u32, i32, String) = (row.get(0), row.get(1), row.get(2));
        // Breadth-first up the inheritance tree; the bound only guards
        // against a catalog that is being changed under us.
        let mut queue: Vec<u32> = parents.get(&relid).cloned().unwrap_or_default();
        let mut found = None;
        for _ in 0..64 {
            let Some(ancestor) = queue.first().copied() else {
                break;
            };
            queue.remove(0);
            if let Some(id) = local.get(&(ancestor, name.clone())) {
                found = Some(id.clone());
                break;
            }
            queue.extend(parents.get(&ancestor).cloned().unwrap_or_default());
        }
        if let Some(id) = found {
            r.alias((PG_CLASS, relid, attnum), id);
        }
    }
    Ok(())
}

/// SQL expression: the `SET STORAGE` keyword of a storage letter.
fn storage_keyword(letter: &str) -> String {
    format!(
        "CASE {letter} WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL' \
         WHEN 'm' THEN 'MAIN' ELSE 'EXTENDED' END"
    )
}

impl TableDef {
    /// `CREATE TABLE` with its local columns, then what the statement
    /// cannot say (column statistics and storage, owner), and the replica
    /// identity once its index exists.
    pub(crate) fn create(&self, columns: &[&ColumnDef]) -> Vec<Fragment> {
        let unlogged = if self.unlogged { "UNLOGGED " } else { "" };
        let mut head = match &self.partition_of {
            Some(p) => format!(
                "CREATE {unlogged}TABLE {} PARTITION OF {} {}",
                self.name, p.parent, p.bound
            ),
            None => {
                let cols: Vec<String> = columns
                    .iter()
                    .map(|c| format!("    {}", c.column_sql()))
                    .collect();
                let mut s = format!("CREATE {unlogged}TABLE {} (", self.name);
                if !cols.is_empty() {
                    s.push('\n');
                    s.push_str(&cols.join(",\n"));
                    s.push('\n');
                }
                s.push(')');
                if !self.inherits.is_empty() {
                    s.push_str(&format!(" INHERITS ({})", self.inherits.join(", ")));
                }
                s
            }
        };
        if let Some(key) = &self.partition_key {
            head.push_str(&format!(" PARTITION BY {key}"));
        }
        head.push_str(&with_options(&self.options));
        let mut sql = vec![head];
        for c in columns {
            sql.extend(c.extras(None));
        }
        sql.push(owner_sql("TABLE", &self.name, &self.owner));
        let mut out = vec![Fragment::new(Phase::Table, sql)];
        out.extend(self.not_null_fragment(&[]));
        out.extend(self.defaults_fragment(&[]));
        if self.replica_identity != "DEFAULT" {
            out.push(self.replica_identity_fragment());
        }
        out
    }

    /// `SET NOT NULL` / `DROP NOT NULL` on inherited columns, from the set
    /// `from` to this table's: after the parents' column changes, which
    /// recurse to their partitions.
    fn not_null_fragment(&self, from: &[String]) -> Option<Fragment> {
        let set = self
            .own_not_null
            .iter()
            .filter(|c| !from.contains(c))
            .map(|c| format!("ALTER TABLE {} ALTER COLUMN {c} SET NOT NULL", self.name));
        let dropped = from
            .iter()
            .filter(|c| !self.own_not_null.contains(c))
            .map(|c| format!("ALTER TABLE {} ALTER COLUMN {c} DROP NOT NULL", self.name));
        let sql: Vec<String> = dropped.chain(set).collect();
        (!sql.is_empty()).then(|| Fragment::new(Phase::Constraint, sql))
    }

    /// `SET DEFAULT` / `DROP DEFAULT` on inherited columns, from the own
    /// defaults `from` to this table's: after the parents' column changes,
    /// whose `SET DEFAULT` reaches their partitions too.
    fn defaults_fragment(&self, from: &[OwnDefault]) -> Option<Fragment> {
        let set = |column: &str, default: Option<&str>| match default {
            Some(expr) => format!(
                "ALTER TABLE {} ALTER COLUMN {column} SET DEFAULT {expr}",
                self.name
            ),
            None => format!(
                "ALTER TABLE {} ALTER COLUMN {column} DROP DEFAULT",
                self.name
            ),
        };
        let mut sql: Vec<String> = self
            .own_defaults
            .iter()
            .filter(|d| !from.contains(d))
            .map(|d| set(&d.column, d.default.as_deref()))
            .collect();
        // An own default that goes: back to the parent's. A column that is
        // no longer inherited (a detached partition's) is its own object,
        // and its default goes with it.
        for gone in from
            .iter()
            .filter(|d| !self.own_defaults.iter().any(|o| o.column == d.column))
        {
            if let Some(parent) = self.parent_defaults.0.get(&gone.column) {
                sql.push(set(&gone.column, parent.as_deref()));
            }
        }
        (!sql.is_empty()).then(|| Fragment::new(Phase::Constraint, sql))
    }

    fn replica_identity_fragment(&self) -> Fragment {
        Fragment {
            phase: Phase::ReplicaIdentity,
            sql: vec![format!(
                "ALTER TABLE {} REPLICA IDENTITY {}",
                self.name, self.replica_identity
            )],
            needs: self.replica_index.iter().cloned().collect(),
        }
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP TABLE {}", self.name)
    }

    pub(crate) fn alter(&self, to: &TableDef) -> Alteration {
        // A partition is detached (its inherited columns, cloned
        // constraints and attached indexes become its own, as the planner
        // knows), attached (a plain table keeps its columns, constraints and
        // indexes; the parent's indexes attach to matching ones or are
        // made), or both, for a new bound or parent. A new partition key, or
        // a table turned partitioned or plain, rebuilds the table and moves
        // its rows: that is a hand-written migration.
        if self.partition_key != to.partition_key || self.inherits != to.inherits {
            return Alteration::Unsupported(format!(
                "table {}: its partition key or inheritance changed (or it became partitioned, or \
                 plain); that rebuilds the table and moves its rows, which is left to a hand-written \
                 migration",
                to.name
            ));
        }
        let (detach, attach) = if self.partition_of == to.partition_of {
            (None, None)
        } else {
            (self.partition_of.as_ref(), to.partition_of.as_ref())
        };
        let name = &to.name;
        let mut sql = Vec::new();
        if let Some(p) = detach {
            sql.push(format!("ALTER TABLE {} DETACH PARTITION {name}", p.parent));
        }
        if self.unlogged != to.unlogged {
            let mode = if to.unlogged { "UNLOGGED" } else { "LOGGED" };
            sql.push(format!("ALTER TABLE {name} SET {mode}"));
        }
        for clause in option_changes(&self.options, &to.options) {
            sql.push(format!("ALTER TABLE {name} {clause}"));
        }
        if self.owner != to.owner {
            sql.push(owner_sql("TABLE", name, &to.owner));
        }
        let mut fragments = vec![Fragment::new(Phase::Table, sql)];
        if let Some(p) = attach {
            // Once its columns and constraints are the branch's, which
            // ATTACH checks against the parent's.
            fragments.push(Fragment {
                phase: Phase::Constraint,
                sql: vec![format!(
                    "ALTER TABLE {} ATTACH PARTITION {name} {}",
                    p.parent, p.bound
                )],
                needs: vec![ObjectId::new(ObjectKind::Table, p.parent.clone())],
            });
        }
        fragments.extend(to.not_null_fragment(&self.own_not_null));
        fragments.extend(to.defaults_fragment(&self.own_defaults));
        if self.replica_identity != to.replica_identity {
            fragments.push(to.replica_identity_fragment());
        }
        Alteration::in_place(fragments)
    }

    pub(crate) fn describe(&self, to: &TableDef) -> String {
        let mut c = Changes::default();
        c.field("unlogged", &self.unlogged, &to.unlogged);
        c.field("partition key", &self.partition_key, &to.partition_key);
        c.field(
            "partition of",
            &self
                .partition_of
                .as_ref()
                .map(|p| format!("{} {}", p.parent, p.bound)),
            &to.partition_of
                .as_ref()
                .map(|p| format!("{} {}", p.parent, p.bound)),
        );
        c.field("inherits", &self.inherits, &to.inherits);
        c.field(
            "NOT NULL of its own on inherited columns",
            &self.own_not_null,
            &to.own_not_null,
        );
        c.field(
            "defaults of its own on inherited columns",
            &self.own_defaults,
            &to.own_defaults,
        );
        c.field("options", &self.options, &to.options);
        c.field(
            "replica identity",
            &self.replica_identity,
            &to.replica_identity,
        );
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}

impl IdentityDef {
    fn options(&self) -> String {
        format!(
            "START WITH {} INCREMENT BY {} MINVALUE {} MAXVALUE {} CACHE {} {}",
            self.start,
            self.increment,
            self.min,
            self.max,
            self.cache,
            if self.cycle { "CYCLE" } else { "NO CYCLE" }
        )
    }

    fn generation(&self) -> &'static str {
        if self.always { "ALWAYS" } else { "BY DEFAULT" }
    }

    /// `GENERATED ... AS IDENTITY (SEQUENCE NAME ... )`: the sequence is
    /// named, so it gets the same name as on the side it came from.
    fn clause(&self) -> String {
        format!(
            "GENERATED {} AS IDENTITY (SEQUENCE NAME {} {})",
            self.generation(),
            self.sequence,
            self.options()
        )
    }
}

impl ColumnDef {
    fn at(&self) -> String {
        format!("ALTER TABLE {} ALTER COLUMN {}", self.table, self.name)
    }

    /// The column as `CREATE TABLE` and `ADD COLUMN` write it.
    pub(crate) fn column_sql(&self) -> String {
        let mut s = format!("{} {}", self.name, self.data_type);
        if let Some(c) = &self.compression {
            s.push_str(&format!(" COMPRESSION {c}"));
        }
        if let Some(c) = &self.collation {
            s.push_str(&format!(" COLLATE {c}"));
        }
        if let Some(g) = &self.generated {
            s.push_str(&format!(" GENERATED ALWAYS AS ({g}) STORED"));
        }
        if let Some(d) = &self.default {
            s.push_str(&format!(" DEFAULT {d}"));
        }
        if self.not_null {
            s.push_str(" NOT NULL");
        }
        if let Some(i) = &self.identity {
            s.push(' ');
            s.push_str(&i.clause());
        }
        s
    }

    /// `SET STATISTICS` and `SET STORAGE`, which no column clause says,
    /// relative to `from` (or to a fresh column).
    fn extras(&self, from: Option<&ColumnDef>) -> Vec<String> {
        let mut sql = Vec::new();
        let old_stats = from.and_then(|f| f.statistics);
        if self.statistics != old_stats {
            sql.push(format!(
                "{} SET STATISTICS {}",
                self.at(),
                self.statistics.unwrap_or(-1)
            ));
        }
        // A fresh column, or one whose type just changed, has its type's
        // default storage.
        let fresh = from.is_none_or(|f| f.data_type != self.data_type);
        let old_storage = if fresh {
            None
        } else {
            from.and_then(|f| f.storage.clone())
        };
        if self.storage != old_storage {
            let keyword = self.storage.as_deref().unwrap_or(&self.type_storage);
            sql.push(format!("{} SET STORAGE {keyword}", self.at()));
        }
        sql
    }

    /// The same column without its default, for when the default must go
    /// before something it uses is dropped.
    pub(crate) fn without_default(&self) -> ColumnDef {
        ColumnDef {
            default: None,
            ..self.clone()
        }
    }

    pub(crate) fn create(&self) -> Vec<Fragment> {
        let mut sql = vec![format!(
            "ALTER TABLE {} ADD COLUMN {}",
            self.table,
            self.column_sql()
        )];
        sql.extend(self.extras(None));
        vec![Fragment::new(Phase::Column, sql)]
    }

    pub(crate) fn drop(&self) -> String {
        format!("ALTER TABLE {} DROP COLUMN {}", self.table, self.name)
    }

    /// `ALTER COLUMN ... DROP DEFAULT`.
    pub(crate) fn drop_default(&self) -> String {
        format!("{} DROP DEFAULT", self.at())
    }

    pub(crate) fn alter(&self, to: &ColumnDef) -> Alteration {
        if self.local != to.local {
            return Alteration::Unsupported(format!(
                "column {}.{}: inheritance changed",
                to.table, to.name
            ));
        }
        match (&self.generated, &to.generated) {
            (Some(a), Some(b)) if a != b => return Alteration::Recreate,
            // PostgreSQL 15 cannot make an existing column generated.
            (None, Some(_)) => return Alteration::Recreate,
            _ => {}
        }
        let at = to.at();
        let retype = self.data_type != to.data_type || self.collation != to.collation;
        let mut sql = Vec::new();
        let mut default = self.default.clone();
        if retype && default.is_some() {
            // The old default may not cast to the new type.
            sql.push(format!("{at} DROP DEFAULT"));
            default = None;
        }
        if self.generated.is_some() && to.generated.is_none() {
            sql.push(format!("{at} DROP EXPRESSION"));
        }
        let same_sequence = matches!((&self.identity, &to.identity),
            (Some(a), Some(b)) if a.sequence == b.sequence);
        if self.identity.is_some() && !same_sequence {
            sql.push(format!("{at} DROP IDENTITY"));
        }
        if retype {
            let collate = to
                .collation
                .as_ref()
                .map(|c| format!(" COLLATE {c}"))
                .unwrap_or_default();
            // A generated column is computed again; USING is refused there.
            let using = if to.generated.is_some() {
                String::new()
            } else {
                format!(" USING {}::{}", to.name, to.data_type)
            };
            sql.push(format!("{at} TYPE {}{collate}{using}", to.data_type));
        }
        if default != to.default {
            sql.push(match &to.default {
                Some(d) => format!("{at} SET DEFAULT {d}"),
                None => format!("{at} DROP DEFAULT"),
            });
        }
        if self.not_null != to.not_null {
            let verb = if to.not_null { "SET" } else { "DROP" };
            sql.push(format!("{at} {verb} NOT NULL"));
        }
        match (&self.identity, &to.identity) {
            (Some(a), Some(b)) if same_sequence => {
                let mut clauses = Vec::new();
                if a.always != b.always {
                    clauses.push(format!("SET GENERATED {}", b.generation()));
                }
                if a.options() != b.options() {
                    clauses.push(format!(
                        "SET START WITH {} SET INCREMENT BY {} SET MINVALUE {} \
                         SET MAXVALUE {} SET CACHE {} SET {}",
                        b.start,
                        b.increment,
                        b.min,
                        b.max,
                        b.cache,
                        if b.cycle { "CYCLE" } else { "NO CYCLE" }
                    ));
                }
                if !clauses.is_empty() {
                    sql.push(format!("{at} {}", clauses.join(" ")));
                }
            }
            (_, Some(b)) => sql.push(format!("{at} ADD {}", b.clause())),
            _ => {}
        }
        if self.compression != to.compression {
            sql.push(format!(
                "{at} SET COMPRESSION {}",
                to.compression.as_deref().unwrap_or("default")
            ));
        }
        sql.extend(to.extras(Some(self)));
        Alteration::InPlace {
            fragments: vec![Fragment::new(Phase::Column, sql)],
            retypes: retype,
        }
    }

    pub(crate) fn describe(&self, to: &ColumnDef) -> String {
        let mut c = Changes::default();
        c.field("type", &self.data_type, &to.data_type);
        c.field("collation", &self.collation, &to.collation);
        c.field("default", &self.default, &to.default);
        c.field("not null", &self.not_null, &to.not_null);
        c.field("generated", &self.generated, &to.generated);
        c.field(
            "identity",
            &self.identity.as_ref().map(|i| i.clause()),
            &to.identity.as_ref().map(|i| i.clause()),
        );
        c.field("statistics", &self.statistics, &to.statistics);
        c.field("storage", &self.storage, &to.storage);
        c.field("compression", &self.compression, &to.compression);
        c.finish()
    }
}

impl RowSecurityDef {
    fn statements(&self, from: &RowSecurityDef) -> Vec<String> {
        let mut sql = Vec::new();
        if self.enabled != from.enabled {
            let verb = if self.enabled { "ENABLE" } else { "DISABLE" };
            sql.push(format!(
                "ALTER TABLE {} {verb} ROW LEVEL SECURITY",
                self.table
            ));
        }
        if self.forced != from.forced {
            let verb = if self.forced { "FORCE" } else { "NO FORCE" };
            sql.push(format!(
                "ALTER TABLE {} {verb} ROW LEVEL SECURITY",
                self.table
            ));
        }
        sql
    }

    fn off(&self) -> RowSecurityDef {
        RowSecurityDef {
            table: self.table.clone(),
            enabled: false,
            forced: false,
        }
    }

    pub(crate) fn create(&self) -> Vec<Fragment> {
        vec![Fragment::new(
            Phase::RowSecurity,
            self.statements(&self.off()),
        )]
    }

    /// Back to PostgreSQL's default: off, not forced.
    pub(crate) fn reset(&self) -> Vec<Fragment> {
        vec![Fragment::new(
            Phase::RowSecurity,
            self.off().statements(self),
        )]
    }

    pub(crate) fn alter(&self, to: &RowSecurityDef) -> Alteration {
        Alteration::in_place(vec![Fragment::new(Phase::RowSecurity, to.statements(self))])
    }

    pub(crate) fn describe(&self, to: &RowSecurityDef) -> String {
        let mut c = Changes::default();
        c.field("enabled", &self.enabled, &to.enabled);
        c.field("forced", &self.forced, &to.forced);
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column() -> ColumnDef {
        ColumnDef {
            table: "public.t".into(),
            name: "c".into(),
            data_type: "integer".into(),
            collation: None,
            not_null: false,
            default: Some("0".into()),
            generated: None,
            identity: None,
            statistics: None,
            storage: None,
            type_storage: "PLAIN".into(),
            compression: None,
            local: true,
        }
    }

    fn in_place(a: Alteration) -> (Vec<String>, bool) {
        match a {
            Alteration::InPlace { fragments, retypes } => {
                (fragments.into_iter().flat_map(|f| f.sql).collect(), retypes)
            }
            other => panic!("expected in place, got {other:?}"),
        }
    }

    #[test]
    fn retyping_a_column_drops_its_default_around_the_cast() {
        let from = column();
        let to = ColumnDef {
            data_type: "bigint".into(),
            default: Some("1".into()),
            not_null: true,
            ..column()
        };
        let (sql, retypes) = in_place(from.alter(&to));
        assert!(retypes);
        assert_eq!(
            sql,
            vec![
                "ALTER TABLE public.t ALTER COLUMN c DROP DEFAULT",
                "ALTER TABLE public.t ALTER COLUMN c TYPE bigint USING c::bigint",
                "ALTER TABLE public.t ALTER COLUMN c SET DEFAULT 1",
                "ALTER TABLE public.t ALTER COLUMN c SET NOT NULL",
            ]
        );
    }

    #[test]
    fn identity_is_added_after_not_null_and_named() {
        let from = ColumnDef {
            default: None,
            ..column()
        };
        let to = ColumnDef {
            default: None,
            not_null: true,
            identity: Some(IdentityDef {
                always: true,
                sequence: "public.t_c_seq".into(),
                start: 1,
                increment: 1,
                min: 1,
                max: 2147483647,
                cache: 1,
                cycle: false,
            }),
            ..column()
        };
        let (sql, retypes) = in_place(from.alter(&to));
        assert!(!retypes);
        assert_eq!(
            sql,
            vec![
                "ALTER TABLE public.t ALTER COLUMN c SET NOT NULL",
                "ALTER TABLE public.t ALTER COLUMN c ADD GENERATED ALWAYS AS IDENTITY \
                 (SEQUENCE NAME public.t_c_seq START WITH 1 INCREMENT BY 1 MINVALUE 1 \
                 MAXVALUE 2147483647 CACHE 1 NO CYCLE)",
            ]
        );
        let (back, _) = in_place(to.alter(&from));
        assert_eq!(
            back,
            vec![
                "ALTER TABLE public.t ALTER COLUMN c DROP IDENTITY",
                "ALTER TABLE public.t ALTER COLUMN c DROP NOT NULL",
            ]
        );
    }

    #[test]
    fn generated_expressions_cannot_change_in_place() {
        let from = ColumnDef {
            default: None,
            generated: Some("a + 1".into()),
            ..column()
        };
        let to = ColumnDef {
            generated: Some("a + 2".into()),
            ..from.clone()
        };
        assert_eq!(from.alter(&to), Alteration::Recreate);
        let plain = ColumnDef {
            generated: None,
            ..from.clone()
        };
        let (sql, _) = in_place(from.alter(&plain));
        assert_eq!(
            sql,
            vec!["ALTER TABLE public.t ALTER COLUMN c DROP EXPRESSION"]
        );
    }

    #[test]
    fn columns_are_written_in_clause_order() {
        let c = ColumnDef {
            collation: Some("pg_catalog.\"C\"".into()),
            data_type: "text".into(),
            default: Some("'x'::text".into()),
            not_null: true,
            ..column()
        };
        assert_eq!(
            c.column_sql(),
            "c text COLLATE pg_catalog.\"C\" DEFAULT 'x'::text NOT NULL"
        );
    }
}
