//! Schemas and extensions.

use super::id::{ObjectId, ObjectKind};
use super::model::{Definition, ExtensionDef, Object, SchemaDef};
use super::plan::{Alteration, Changes, Fragment, Phase};
use super::read::{PG_EXTENSION, PG_NAMESPACE, Reader, USER_NS, not_extension_member};
use super::sql::literal;
use crate::DiffError;

pub(crate) fn read(r: &mut Reader) -> Result<(), DiffError> {
    let sql = format!(
        "SELECT n.oid, quote_ident(n.nspname), quote_ident(pg_get_userbyid(n.nspowner)) \
         FROM pg_namespace n WHERE {USER_NS} AND {}",
        not_extension_member("pg_namespace", "n.oid")
    );
    for row in r.query("schemas", &sql)? {
        let name: String = row.get(1);
        let def = SchemaDef {
            name: name.clone(),
            owner: row.get(2),
        };
        r.add(
            ObjectId::new(ObjectKind::Schema, name),
            Object::new(Definition::Schema(def), None),
            Some((PG_NAMESPACE, row.get(0), 0)),
        );
    }
    let rows = r.query(
        "extensions",
        "SELECT e.oid, quote_ident(e.extname), quote_ident(n.nspname), e.extversion \
         FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace",
    )?;
    for row in rows {
        let name: String = row.get(1);
        let def = ExtensionDef {
            name: name.clone(),
            schema: row.get(2),
            version: row.get(3),
        };
        r.add(
            ObjectId::new(ObjectKind::Extension, name),
            Object::new(Definition::Extension(def), None),
            Some((PG_EXTENSION, row.get(0), 0)),
        );
    }
    Ok(())
}

/// `ALTER <keyword> <name> OWNER TO <owner>`.
pub(crate) fn owner_sql(keyword: &str, name: &str, owner: &str) -> String {
    format!("ALTER {keyword} {name} OWNER TO {owner}")
}

impl SchemaDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        vec![Fragment::new(
            Phase::Schema,
            vec![
                format!("CREATE SCHEMA {}", self.name),
                owner_sql("SCHEMA", &self.name, &self.owner),
            ],
        )]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP SCHEMA {}", self.name)
    }

    pub(crate) fn alter(&self, to: &SchemaDef) -> Alteration {
        Alteration::in_place(vec![Fragment::one(
            Phase::Schema,
            owner_sql("SCHEMA", &to.name, &to.owner),
        )])
    }

    pub(crate) fn describe(&self, to: &SchemaDef) -> String {
        let mut c = Changes::default();
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}

impl ExtensionDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        vec![Fragment::one(
            Phase::Extension,
            format!(
                "CREATE EXTENSION {} WITH SCHEMA {} VERSION {}",
                self.name,
                self.schema,
                literal(&self.version)
            ),
        )]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP EXTENSION {}", self.name)
    }

    pub(crate) fn alter(&self, to: &ExtensionDef) -> Alteration {
        let mut sql = Vec::new();
        if self.schema != to.schema {
            sql.push(format!(
                "ALTER EXTENSION {} SET SCHEMA {}",
                to.name, to.schema
            ));
        }
        if self.version != to.version {
            sql.push(format!(
                "ALTER EXTENSION {} UPDATE TO {}",
                to.name,
                literal(&to.version)
            ));
        }
        Alteration::in_place(vec![Fragment::new(Phase::Extension, sql)])
    }

    pub(crate) fn describe(&self, to: &ExtensionDef) -> String {
        let mut c = Changes::default();
        c.field("schema", &self.schema, &to.schema);
        c.field("version", &self.version, &to.version);
        c.finish()
    }
}
