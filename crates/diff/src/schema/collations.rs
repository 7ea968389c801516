//! Collations made with `CREATE COLLATION`.

use super::id::{ObjectId, ObjectKind};
use super::model::{CollationDef, Definition, Object};
use super::namespaces::owner_sql;
use super::plan::{Alteration, Changes, Fragment, Phase};
use super::read::{PG_COLLATION, Reader, USER_NS, not_extension_member, qualified};
use super::sql::literal;
use crate::DiffError;

pub(crate) fn read(r: &mut Reader) -> Result<(), DiffError> {
    // The ICU locale's column is `colliculocale` in PostgreSQL 15 and 16,
    // `colllocale` from 17: read through jsonb, whichever this server has.
    let sql = format!(
        "SELECT co.oid, {}, quote_ident(pg_get_userbyid(co.collowner)), \
         CASE co.collprovider WHEN 'i' THEN 'icu' WHEN 'c' THEN 'libc' ELSE 'default' END, \
         co.collisdeterministic, co.collcollate, co.collctype, \
         coalesce(to_jsonb(co) ->> 'colllocale', to_jsonb(co) ->> 'colliculocale') \
         FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace \
         WHERE {USER_NS} AND {}",
        qualified("co.collname"),
        not_extension_member("pg_collation", "co.oid")
    );
    for row in r.query("collations", &sql)? {
        let name: String = row.get(1);
        let def = CollationDef {
            name: name.clone(),
            owner: row.get(2),
            provider: row.get(3),
            deterministic: row.get(4),
            lc_collate: row.get(5),
            lc_ctype: row.get(6),
            locale: row.get(7),
        };
        r.add(
            ObjectId::new(ObjectKind::Collation, name),
            Object::new(Definition::Collation(def), None),
            Some((PG_COLLATION, row.get(0), 0)),
        );
    }
    Ok(())
}

impl CollationDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        let mut options = vec![format!("provider = {}", self.provider)];
        if let Some(l) = &self.locale {
            options.push(format!("locale = {}", literal(l)));
        }
        if let Some(c) = &self.lc_collate {
            options.push(format!("lc_collate = {}", literal(c)));
        }
        if let Some(c) = &self.lc_ctype {
            options.push(format!("lc_ctype = {}", literal(c)));
        }
        if !self.deterministic {
            options.push("deterministic = false".into());
        }
        vec![Fragment::new(
            Phase::Type,
            vec![
                format!("CREATE COLLATION {} ({})", self.name, options.join(", ")),
                owner_sql("COLLATION", &self.name, &self.owner),
            ],
        )]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP COLLATION {}", self.name)
    }

    pub(crate) fn alter(&self, to: &CollationDef) -> Alteration {
        let same_but_owner = CollationDef {
            owner: to.owner.clone(),
            ..self.clone()
        };
        if same_but_owner != *to {
            // A collation cannot be changed, only made again (and what
            // uses it with it).
            return Alteration::Recreate;
        }
        Alteration::in_place(vec![Fragment::one(
            Phase::Type,
            owner_sql("COLLATION", &to.name, &to.owner),
        )])
    }

    pub(crate) fn describe(&self, to: &CollationDef) -> String {
        let mut c = Changes::default();
        c.field("provider", &self.provider, &to.provider);
        c.field("locale", &self.locale, &to.locale);
        c.field("lc_collate", &self.lc_collate, &to.lc_collate);
        c.field("lc_ctype", &self.lc_ctype, &to.lc_ctype);
        c.field("deterministic", &self.deterministic, &to.deterministic);
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}
