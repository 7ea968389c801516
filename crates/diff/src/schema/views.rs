//! Views and materialized views.

use super::id::{ObjectId, ObjectKind};
use super::model::{Definition, MatViewDef, Object, ViewDef};
use super::namespaces::owner_sql;
use super::plan::{Alteration, Changes, Fragment, Phase};
use super::read::{
    PG_CLASS, PG_REWRITE, PG_TYPE, Reader, USER_NS, not_extension_member, qualified,
};
use super::sql::{trim_statement, with_options};
use crate::DiffError;

pub(crate) fn read(r: &mut Reader) -> Result<(), DiffError> {
    let sql = format!(
        "SELECT c.oid, {}, quote_ident(pg_get_userbyid(c.relowner)), c.relkind::text, \
         pg_get_viewdef(c.oid), coalesce(c.reloptions, '{{}}'), c.relispopulated, \
         ARRAY(SELECT quote_ident(a.attname) FROM pg_attribute a WHERE a.attrelid = c.oid \
               AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum), \
         ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
               ORDER BY a.attnum), \
         (SELECT w.oid FROM pg_rewrite w WHERE w.ev_class = c.oid AND w.rulename = '_RETURN'), \
         c.reltype, (SELECT t.typarray FROM pg_type t WHERE t.oid = c.reltype) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('v', 'm') AND {USER_NS} AND {}",
        qualified("c.relname"),
        not_extension_member("pg_class", "c.oid")
    );
    for row in r.query("views", &sql)? {
        let name: String = row.get(1);
        let owner: String = row.get(2);
        let relkind: String = row.get(3);
        let definition = trim_statement(&row.get::<_, String>(4));
        let options: Vec<String> = row.get(5);
        let (id, def) = if relkind == "m" {
            (
                ObjectId::new(ObjectKind::MaterializedView, name.clone()),
                Definition::MaterializedView(MatViewDef {
                    name,
                    owner,
                    definition,
                    options,
                    populated: row.get(6),
                }),
            )
        } else {
            let names: Vec<String> = row.get(7);
            let types: Vec<String> = row.get(8);
            (
                ObjectId::new(ObjectKind::View, name.clone()),
                Definition::View(ViewDef {
                    name,
                    owner,
                    definition,
                    columns: names.into_iter().zip(types).collect(),
                    options,
                }),
            )
        };
        // What a view depends on is recorded against its rewrite rule.
        if let Some(rule) = row.get::<_, Option<u32>>(9) {
            r.alias((PG_REWRITE, rule, 0), id.clone());
        }
        r.alias((PG_TYPE, row.get(10), 0), id.clone());
        if let Some(array) = row.get::<_, Option<u32>>(11) {
            r.alias((PG_TYPE, array, 0), id.clone());
        }
        r.add(id, Object::new(def, None), Some((PG_CLASS, row.get(0), 0)));
    }
    Ok(())
}

impl ViewDef {
    fn statement(&self, verb: &str) -> String {
        format!(
            "{verb} VIEW {}{} AS\n{}",
            self.name,
            with_options(&self.options),
            self.definition
        )
    }

    pub(crate) fn create(&self) -> Vec<Fragment> {
        vec![Fragment::new(
            Phase::View,
            vec![
                self.statement("CREATE"),
                owner_sql("VIEW", &self.name, &self.owner),
            ],
        )]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP VIEW {}", self.name)
    }

    pub(crate) fn alter(&self, to: &ViewDef) -> Alteration {
        // CREATE OR REPLACE VIEW keeps the existing columns (same names and
        // types, same order) and may only add new ones after them. It
        // replaces the options with the ones it is given.
        let keeps_columns = to.columns.len() >= self.columns.len()
            && to.columns[..self.columns.len()] == self.columns[..];
        if !keeps_columns {
            return Alteration::Recreate;
        }
        let mut sql = Vec::new();
        if self.definition != to.definition
            || self.columns != to.columns
            || self.options != to.options
        {
            sql.push(to.statement("CREATE OR REPLACE"));
        }
        if self.owner != to.owner {
            sql.push(owner_sql("VIEW", &to.name, &to.owner));
        }
        Alteration::in_place(vec![Fragment::new(Phase::View, sql)])
    }

    pub(crate) fn describe(&self, to: &ViewDef) -> String {
        let mut c = Changes::default();
        let cols = |v: &ViewDef| {
            v.columns
                .iter()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.columns != to.columns {
            c.note(format!("columns ({}) → ({})", cols(self), cols(to)));
        }
        c.changed("query", &self.definition, &to.definition);
        c.field("options", &self.options, &to.options);
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}

impl MatViewDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        let data = if self.populated {
            "WITH DATA"
        } else {
            "WITH NO DATA"
        };
        vec![Fragment::new(
            Phase::MaterializedView,
            vec![
                format!(
                    "CREATE MATERIALIZED VIEW {}{} AS\n{}\n{data}",
                    self.name,
                    with_options(&self.options),
                    self.definition
                ),
                owner_sql("MATERIALIZED VIEW", &self.name, &self.owner),
            ],
        )]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP MATERIALIZED VIEW {}", self.name)
    }

    pub(crate) fn alter(&self, to: &MatViewDef) -> Alteration {
        if self.definition != to.definition || self.options != to.options {
            return Alteration::Recreate;
        }
        let mut sql = Vec::new();
        if self.populated != to.populated {
            let data = if to.populated { "" } else { " WITH NO DATA" };
            sql.push(format!("REFRESH MATERIALIZED VIEW {}{data}", to.name));
        }
        if self.owner != to.owner {
            sql.push(owner_sql("MATERIALIZED VIEW", &to.name, &to.owner));
        }
        Alteration::in_place(vec![Fragment::new(Phase::MaterializedView, sql)])
    }

    pub(crate) fn describe(&self, to: &MatViewDef) -> String {
        let mut c = Changes::default();
        c.changed("query", &self.definition, &to.definition);
        c.field("options", &self.options, &to.options);
        c.field("populated", &self.populated, &to.populated);
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}
