//! Table constraints and indexes.

use super::id::{ObjectId, ObjectKind};
use super::model::{ConstraintDef, ConstraintType, Definition, IndexDef, Object};
use super::plan::{Alteration, Changes, Fragment, Phase};
use super::read::{PG_CLASS, PG_CONSTRAINT, Reader, USER_NS, not_extension_member, qualified};
use crate::DiffError;

pub(crate) fn read(r: &mut Reader) -> Result<(), DiffError> {
    // Constraints cloned onto partitions (conparentid) and inherited ones
    // follow their parent's and are not objects of their own (they are
    // kept aside, for when the table is detached).
    let sql = format!(
        "SELECT co.oid, {}, quote_ident(co.conname), co.contype::text, \
         pg_get_constraintdef(co.oid), co.conindid, \
         coalesce((SELECT i.indisclustered FROM pg_index i WHERE i.indexrelid = co.conindid \
                   AND co.contype IN ('p', 'u', 'x')), false), \
         co.conislocal AND co.conparentid = 0 \
         FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE co.contype IN ('p', 'u', 'f', 'c', 'x') \
         AND c.relkind IN ('r', 'p') AND {USER_NS} AND {}",
        qualified("c.relname"),
        not_extension_member("pg_class", "c.oid")
    );
    for row in r.query("constraints", &sql)? {
        let table: String = row.get(1);
        let name: String = row.get(2);
        let constraint_type = match row.get::<_, String>(3).as_str() {
            "p" => ConstraintType::PrimaryKey,
            "u" => ConstraintType::Unique,
            "f" => ConstraintType::ForeignKey,
            "c" => ConstraintType::Check,
            _ => ConstraintType::Exclusion,
        };
        let id = ObjectId::new(ObjectKind::Constraint, format!("{table}.{name}"));
        let own: bool = row.get(7);
        let index: u32 = row.get(5);
        // The index of a key or exclusion constraint is the constraint as
        // far as dependencies go: a foreign key depends on the referenced
        // key's index. A foreign key's conindid is that referenced index,
        // not its own, so it is no alias.
        if own && index != 0 && constraint_type != ConstraintType::ForeignKey {
            r.alias((PG_CLASS, index, 0), id.clone());
        }
        let def = ConstraintDef {
            table: table.clone(),
            name,
            constraint_type,
            definition: row.get(4),
            clustered: row.get(6),
        };
        let obj = Object::new(
            Definition::Constraint(def),
            Some(ObjectId::new(ObjectKind::Table, table)),
        );
        if own {
            r.add(id, obj, Some((PG_CONSTRAINT, row.get(0), 0)));
        } else {
            r.inherited.insert(id, obj);
        }
    }

    // Indexes of constraints are the constraints'; the indexes of
    // partitions attached to a partitioned table's index follow it.
    let sql = format!(
        "SELECT i.indexrelid, {}, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
         c.relkind::text, pg_get_indexdef(i.indexrelid), i.indisclustered, \
         NOT EXISTS (SELECT FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) \
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = ic.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'm') AND {USER_NS} AND {} \
         AND NOT EXISTS (SELECT FROM pg_constraint co WHERE co.conindid = i.indexrelid \
                         AND co.conrelid = i.indrelid AND co.contype IN ('p', 'u', 'x'))",
        qualified("ic.relname"),
        not_extension_member("pg_class", "c.oid")
    );
    let attached = format!(
        "SELECT {}, {} FROM pg_inherits h JOIN pg_class ic ON ic.oid = h.inhrelid \
         JOIN pg_namespace n ON n.oid = ic.relnamespace \
         JOIN pg_class pc ON pc.oid = h.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
         WHERE ic.relkind IN ('i', 'I') AND {USER_NS}",
        qualified("ic.relname"),
        "quote_ident(pn.nspname) || '.' || quote_ident(pc.relname)",
    );
    for row in r.query("attached indexes", &attached)? {
        r.attached_indexes.insert(row.get(0), row.get(1));
    }
    for row in r.query("indexes", &sql)? {
        let name: String = row.get(1);
        let table: String = row.get(2);
        let relkind: String = row.get(3);
        let parent = if relkind == "m" {
            ObjectId::new(ObjectKind::MaterializedView, table.clone())
        } else {
            ObjectId::new(ObjectKind::Table, table.clone())
        };
        let definition: String = row.get(4);
        // On a partitioned table the catalog says ON ONLY (the form pg_dump
        // uses before attaching each partition's index); created without
        // ONLY, the index is made on every partition as well.
        let definition = if relkind == "p" {
            definition.replacen(" ON ONLY ", " ON ", 1)
        } else {
            definition
        };
        let def = IndexDef {
            table,
            name: name.clone(),
            definition,
            clustered: row.get(5),
        };
        let obj = Object::new(Definition::Index(def), Some(parent));
        let id = ObjectId::new(ObjectKind::Index, name);
        if row.get::<_, bool>(6) {
            r.add(id, obj, Some((PG_CLASS, row.get(0), 0)));
        } else {
            r.inherited.insert(id, obj);
        }
    }
    Ok(())
}

fn cluster_sql(table: &str, index: &str, clustered: bool) -> String {
    if clustered {
        format!("ALTER TABLE {table} CLUSTER ON {index}")
    } else {
        format!("ALTER TABLE {table} SET WITHOUT CLUSTER")
    }
}

/// The index name without its schema (`CLUSTER ON` takes it bare).
fn bare(qualified: &str) -> &str {
    // Quoted names may contain dots; quote_ident output splits cleanly on
    // the first dot outside quotes.
    let mut quoted = false;
    for (i, ch) in qualified.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '.' if !quoted => return &qualified[i + 1..],
            _ => {}
        }
    }
    qualified
}

impl ConstraintDef {
    fn phase(&self) -> Phase {
        if self.constraint_type == ConstraintType::ForeignKey {
            Phase::ForeignKey
        } else {
            Phase::Constraint
        }
    }

    pub(crate) fn create(&self) -> Vec<Fragment> {
        let mut sql = vec![format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}",
            self.table, self.name, self.definition
        )];
        if self.clustered {
            sql.push(cluster_sql(&self.table, &self.name, true));
        }
        vec![Fragment::new(self.phase(), sql)]
    }

    pub(crate) fn drop(&self) -> String {
        format!("ALTER TABLE {} DROP CONSTRAINT {}", self.table, self.name)
    }

    pub(crate) fn alter(&self, to: &ConstraintDef) -> Alteration {
        let same_but_validated = self.definition.strip_suffix(" NOT VALID") == Some(&to.definition);
        if self.definition != to.definition && !same_but_validated
            || self.constraint_type != to.constraint_type
        {
            return Alteration::Recreate;
        }
        let mut sql = Vec::new();
        if same_but_validated {
            sql.push(format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                to.table, to.name
            ));
        }
        if self.clustered != to.clustered {
            sql.push(cluster_sql(&to.table, &to.name, to.clustered));
        }
        Alteration::in_place(vec![Fragment::new(to.phase(), sql)])
    }

    pub(crate) fn describe(&self, to: &ConstraintDef) -> String {
        let mut c = Changes::default();
        c.field("definition", &self.definition, &to.definition);
        c.field("clustered", &self.clustered, &to.clustered);
        c.finish()
    }
}

impl IndexDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        let mut sql = vec![self.definition.clone()];
        if self.clustered {
            sql.push(cluster_sql(&self.table, bare(&self.name), true));
        }
        vec![Fragment::new(Phase::Index, sql)]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP INDEX {}", self.name)
    }

    pub(crate) fn alter(&self, to: &IndexDef) -> Alteration {
        if self.definition != to.definition {
            return Alteration::Recreate;
        }
        Alteration::in_place(vec![Fragment::one(
            Phase::Index,
            cluster_sql(&to.table, bare(&to.name), to.clustered),
        )])
    }

    pub(crate) fn describe(&self, to: &IndexDef) -> String {
        let mut c = Changes::default();
        c.field("definition", &self.definition, &to.definition);
        c.field("clustered", &self.clustered, &to.clustered);
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_split_outside_quotes() {
        assert_eq!(bare("public.idx"), "idx");
        assert_eq!(bare("\"a.b\".\"c.d\""), "\"c.d\"");
    }

    #[test]
    fn validating_a_constraint_is_in_place() {
        let from = ConstraintDef {
            table: "public.t".into(),
            name: "c_fk".into(),
            constraint_type: ConstraintType::ForeignKey,
            definition: "FOREIGN KEY (a) REFERENCES public.u(id) NOT VALID".into(),
            clustered: false,
        };
        let to = ConstraintDef {
            definition: "FOREIGN KEY (a) REFERENCES public.u(id)".into(),
            ..from.clone()
        };
        assert_eq!(
            from.alter(&to),
            Alteration::in_place(vec![Fragment::one(
                Phase::ForeignKey,
                "ALTER TABLE public.t VALIDATE CONSTRAINT c_fk".into()
            )])
        );
        // The other way round needs the constraint made again.
        assert_eq!(to.alter(&from), Alteration::Recreate);
    }
}
