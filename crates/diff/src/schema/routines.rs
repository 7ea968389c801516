//! Functions, procedures and triggers.

use super::id::{ObjectId, ObjectKind};
use super::model::{Definition, Object, RoutineDef, TriggerDef};
use super::namespaces::owner_sql;
use super::plan::{Alteration, Changes, Fragment, Phase};
use super::read::{PG_PROC, PG_TRIGGER, Reader, USER_NS, not_extension_member, qualified};
use crate::DiffError;

pub(crate) fn read(r: &mut Reader) -> Result<(), DiffError> {
    // Identity: name and input argument types, which is what PostgreSQL
    // keeps unique. Aggregates have no pg_get_functiondef and are listed
    // as not covered instead. Functions internal to another object (the
    // constructors of a range type) come and go with it.
    let sql = format!(
        "SELECT p.oid, {name} || '(' || oidvectortypes(p.proargtypes) || ')', \
         p.prokind = 'p', {name} || '(' || pg_get_function_identity_arguments(p.oid) || ')', \
         pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), \
         pg_get_functiondef(p.oid), quote_ident(pg_get_userbyid(p.proowner)) \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.prokind IN ('f', 'p', 'w') AND {USER_NS} AND {} \
         AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass \
                         AND d.objid = p.oid AND d.deptype = 'i')",
        not_extension_member("pg_proc", "p.oid"),
        name = qualified("p.proname"),
    );
    for row in r.query("functions", &sql)? {
        let procedure: bool = row.get(2);
        let kind = if procedure {
            ObjectKind::Procedure
        } else {
            ObjectKind::Function
        };
        let def = RoutineDef {
            procedure,
            signature: row.get(3),
            arguments: row.get(4),
            result: row.get(5),
            definition: row.get::<_, String>(6).trim_end().to_string(),
            owner: row.get(7),
        };
        r.add(
            ObjectId::new(kind, row.get::<_, String>(1)),
            Object::new(Definition::Routine(def), None),
            Some((PG_PROC, row.get(0), 0)),
        );
    }

    // Internal triggers (those of foreign keys) belong to their constraint;
    // triggers cloned onto partitions follow the partitioned table's.
    let sql = format!(
        "SELECT t.oid, {}, quote_ident(t.tgname), pg_get_triggerdef(t.oid), \
         CASE t.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA' \
              WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'ENABLE' END, c.relkind::text \
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND c.relkind IN ('r', 'p', 'v') \
         AND {USER_NS} AND {}",
        qualified("c.relname"),
        not_extension_member("pg_class", "c.oid")
    );
    for row in r.query("triggers", &sql)? {
        let table: String = row.get(1);
        let name: String = row.get(2);
        let parent_kind = if row.get::<_, String>(5) == "v" {
            ObjectKind::View
        } else {
            ObjectKind::Table
        };
        let def = TriggerDef {
            table: table.clone(),
            name: name.clone(),
            definition: row.get(3),
            enabled: row.get(4),
        };
        r.add(
            ObjectId::new(ObjectKind::Trigger, format!("{table}.{name}")),
            Object::new(
                Definition::Trigger(def),
                Some(ObjectId::new(parent_kind, table)),
            ),
            Some((PG_TRIGGER, row.get(0), 0)),
        );
    }
    Ok(())
}

impl RoutineDef {
    /// `FUNCTION` or `PROCEDURE`.
    pub(crate) fn keyword(&self) -> &'static str {
        if self.procedure {
            "PROCEDURE"
        } else {
            "FUNCTION"
        }
    }

    pub(crate) fn create(&self) -> Vec<Fragment> {
        vec![Fragment::new(
            Phase::Function,
            vec![
                self.definition.clone(),
                owner_sql(self.keyword(), &self.signature, &self.owner),
            ],
        )]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP {} {}", self.keyword(), self.signature)
    }

    pub(crate) fn alter(&self, to: &RoutineDef) -> Alteration {
        // CREATE OR REPLACE cannot change the result type, rename
        // arguments or remove their defaults, nor turn a function into a
        // procedure: then only dropping and creating it again will do.
        if self.procedure != to.procedure
            || self.arguments != to.arguments
            || self.result != to.result
        {
            return Alteration::Recreate;
        }
        let mut sql = Vec::new();
        if self.definition != to.definition {
            sql.push(to.definition.clone());
        }
        if self.owner != to.owner {
            sql.push(owner_sql(to.keyword(), &to.signature, &to.owner));
        }
        Alteration::in_place(vec![Fragment::new(Phase::Function, sql)])
    }

    pub(crate) fn describe(&self, to: &RoutineDef) -> String {
        let mut c = Changes::default();
        c.field("arguments", &self.arguments, &to.arguments);
        c.field("returns", &self.result, &to.result);
        if self.arguments == to.arguments && self.result == to.result {
            c.changed("definition", &self.definition, &to.definition);
        }
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}

impl TriggerDef {
    fn enable_sql(&self) -> String {
        format!(
            "ALTER TABLE {} {} TRIGGER {}",
            self.table, self.enabled, self.name
        )
    }

    pub(crate) fn create(&self) -> Vec<Fragment> {
        let mut sql = vec![self.definition.clone()];
        if self.enabled != "ENABLE" {
            sql.push(self.enable_sql());
        }
        vec![Fragment::new(Phase::Trigger, sql)]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP TRIGGER {} ON {}", self.name, self.table)
    }

    pub(crate) fn alter(&self, to: &TriggerDef) -> Alteration {
        if self.definition != to.definition {
            return Alteration::Recreate;
        }
        Alteration::in_place(vec![Fragment::one(Phase::Trigger, to.enable_sql())])
    }

    pub(crate) fn describe(&self, to: &TriggerDef) -> String {
        let mut c = Changes::default();
        c.field("definition", &self.definition, &to.definition);
        c.field("enabled", &self.enabled, &to.enabled);
        c.finish()
    }
}
