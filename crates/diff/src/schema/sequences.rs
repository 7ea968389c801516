//! Sequences (those of identity columns belong to the column instead).

use super::id::{ObjectId, ObjectKind};
use super::model::{Definition, Object, SequenceDef};
use super::namespaces::owner_sql;
use super::plan::{Alteration, Changes, Fragment, Phase};
use super::read::{PG_CLASS, Reader, USER_NS, not_extension_member, qualified};
use crate::DiffError;

pub(crate) fn read(r: &mut Reader) -> Result<(), DiffError> {
    let sql = format!(
        "SELECT c.oid, {}, quote_ident(pg_get_userbyid(c.relowner)), \
         format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, \
         s.seqcache, s.seqcycle, c.relpersistence = 'u', \
         (SELECT quote_ident(tn.nspname) || '.' || quote_ident(tc.relname) || '.' || \
                 quote_ident(a.attname) \
          FROM pg_depend d JOIN pg_class tc ON tc.oid = d.refobjid \
          JOIN pg_namespace tn ON tn.oid = tc.relnamespace \
          JOIN pg_attribute a ON a.attrelid = tc.oid AND a.attnum = d.refobjsubid \
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid \
          AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype = 'a') \
         FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND {USER_NS} AND {} \
         AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                         AND d.objid = c.oid AND d.deptype = 'i')",
        qualified("c.relname"),
        not_extension_member("pg_class", "c.oid")
    );
    for row in r.query("sequences", &sql)? {
        let name: String = row.get(1);
        let owned_by: Option<String> = row.get(11);
        let def = SequenceDef {
            name: name.clone(),
            owner: row.get(2),
            data_type: row.get(3),
            start: row.get(4),
            increment: row.get(5),
            min: row.get(6),
            max: row.get(7),
            cache: row.get(8),
            cycle: row.get(9),
            unlogged: row.get(10),
            owned_by: owned_by.map(|c| ObjectId::new(ObjectKind::Column, c)),
        };
        r.add(
            ObjectId::new(ObjectKind::Sequence, name),
            Object::new(Definition::Sequence(def), None),
            Some((PG_CLASS, row.get(0), 0)),
        );
    }
    Ok(())
}

impl SequenceDef {
    /// `AS ... CYCLE`: every option, so the result does not depend on the
    /// defaults of the server applying it.
    fn options(&self) -> String {
        format!(
            "AS {} START WITH {} INCREMENT BY {} MINVALUE {} MAXVALUE {} CACHE {} {}",
            self.data_type,
            self.start,
            self.increment,
            self.min,
            self.max,
            self.cache,
            if self.cycle { "CYCLE" } else { "NO CYCLE" }
        )
    }

    fn owned_by_fragment(&self) -> Fragment {
        match &self.owned_by {
            Some(column) => Fragment {
                phase: Phase::SequenceOwner,
                sql: vec![format!(
                    "ALTER SEQUENCE {} OWNED BY {}",
                    self.name, column.name
                )],
                needs: vec![column.clone()],
            },
            None => Fragment::one(
                Phase::SequenceOwner,
                format!("ALTER SEQUENCE {} OWNED BY NONE", self.name),
            ),
        }
    }

    pub(crate) fn create(&self) -> Vec<Fragment> {
        let unlogged = if self.unlogged { "UNLOGGED " } else { "" };
        let mut out = vec![Fragment::new(
            Phase::Sequence,
            vec![
                format!("CREATE {unlogged}SEQUENCE {} {}", self.name, self.options()),
                owner_sql("SEQUENCE", &self.name, &self.owner),
            ],
        )];
        if self.owned_by.is_some() {
            out.push(self.owned_by_fragment());
        }
        out
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP SEQUENCE {}", self.name)
    }

    pub(crate) fn alter(&self, to: &SequenceDef) -> Alteration {
        let mut sql = Vec::new();
        if self.options() != to.options() {
            sql.push(format!("ALTER SEQUENCE {} {}", to.name, to.options()));
        }
        if self.unlogged != to.unlogged {
            let mode = if to.unlogged { "UNLOGGED" } else { "LOGGED" };
            sql.push(format!("ALTER SEQUENCE {} SET {mode}", to.name));
        }
        // A sequence owned by a column always has its table's owner and
        // follows it: ALTER TABLE ... OWNER TO changes both, and PostgreSQL
        // refuses to change the sequence's alone.
        if self.owner != to.owner && to.owned_by.is_none() {
            sql.push(owner_sql("SEQUENCE", &to.name, &to.owner));
        }
        let mut fragments = vec![Fragment::new(Phase::Sequence, sql)];
        if self.owned_by != to.owned_by {
            fragments.push(to.owned_by_fragment());
        }
        Alteration::in_place(fragments)
    }

    pub(crate) fn describe(&self, to: &SequenceDef) -> String {
        let mut c = Changes::default();
        c.field("type", &self.data_type, &to.data_type);
        c.field("start", &self.start, &to.start);
        c.field("increment", &self.increment, &to.increment);
        c.field("min", &self.min, &to.min);
        c.field("max", &self.max, &to.max);
        c.field("cache", &self.cache, &to.cache);
        c.field("cycle", &self.cycle, &to.cycle);
        c.field("unlogged", &self.unlogged, &to.unlogged);
        c.field(
            "owned by",
            &self.owned_by.as_ref().map(|c| c.name.clone()),
            &to.owned_by.as_ref().map(|c| c.name.clone()),
        );
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}
