//! Enums, domains and composite types.

use std::collections::{BTreeMap, HashMap};

use super::id::{ObjectId, ObjectKind};
use super::model::{Attribute, CompositeDef, Definition, DomainDef, EnumDef, Object};
use super::namespaces::owner_sql;
use super::plan::{Alteration, Changes, Fragment, Phase};
use super::read::{
    PG_CLASS, PG_CONSTRAINT, PG_TYPE, Reader, USER_NS, collation_name, not_extension_member,
    qualified,
};
use super::sql::literal;
use crate::DiffError;

pub(crate) fn read(r: &mut Reader) -> Result<(), DiffError> {
    let sql = format!(
        "SELECT t.oid, t.typtype::text, {}, quote_ident(pg_get_userbyid(t.typowner)), \
         t.typarray, t.typrelid, format_type(t.typbasetype, t.typtypmod), {}, \
         pg_get_expr(t.typdefaultbin, 0), t.typnotnull \
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
         WHERE (t.typtype IN ('e', 'd') OR (t.typtype = 'c' AND \
         (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')) \
         AND {USER_NS} AND {}",
        qualified("t.typname"),
        collation_name(
            "t.typcollation",
            "(SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype)"
        ),
        not_extension_member("pg_type", "t.oid")
    );
    let mut by_oid: HashMap<u32, ObjectId> = HashMap::new();
    let mut by_relid: HashMap<u32, ObjectId> = HashMap::new();
    for row in r.query("types", &sql)? {
        let oid: u32 = row.get(0);
        let typtype: String = row.get(1);
        let name: String = row.get(2);
        let owner: String = row.get(3);
        let (kind, def) = match typtype.as_str() {
            "e" => (
                ObjectKind::Enum,
                Definition::Enum(EnumDef {
                    name: name.clone(),
                    owner,
                    labels: Vec::new(),
                }),
            ),
            "d" => (
                ObjectKind::Domain,
                Definition::Domain(DomainDef {
                    name: name.clone(),
                    owner,
                    base: row.get(6),
                    collation: row.get(7),
                    default: row.get(8),
                    not_null: row.get(9),
                    constraints: BTreeMap::new(),
                }),
            ),
            _ => (
                ObjectKind::Type,
                Definition::Type(CompositeDef {
                    name: name.clone(),
                    owner,
                    attributes: Vec::new(),
                }),
            ),
        };
        let id = ObjectId::new(kind, name);
        let array: u32 = row.get(4);
        let relid: u32 = row.get(5);
        if array != 0 {
            r.alias((PG_TYPE, array, 0), id.clone());
        }
        if relid != 0 {
            r.alias((PG_CLASS, relid, 0), id.clone());
            by_relid.insert(relid, id.clone());
        }
        by_oid.insert(oid, id.clone());
        r.add(id, Object::new(def, None), Some((PG_TYPE, oid, 0)));
    }

    let rows = r.query(
        "enum labels",
        "SELECT enumtypid, enumlabel::text FROM pg_enum ORDER BY enumtypid, enumsortorder",
    )?;
    for row in rows {
        if let Some(id) = by_oid.get(&row.get::<_, u32>(0))
            && let Some(Definition::Enum(e)) = r.objects.get_mut(id).map(|o| &mut o.def)
        {
            e.labels.push(row.get(1));
        }
    }

    let rows = r.query(
        "domain constraints",
        "SELECT oid, contypid, quote_ident(conname), pg_get_constraintdef(oid) \
         FROM pg_constraint WHERE contypid <> 0",
    )?;
    for row in rows {
        let Some(id) = by_oid.get(&row.get::<_, u32>(1)).cloned() else {
            continue;
        };
        r.alias((PG_CONSTRAINT, row.get(0), 0), id.clone());
        if let Some(Definition::Domain(d)) = r.objects.get_mut(&id).map(|o| &mut o.def) {
            d.constraints.insert(row.get(2), row.get(3));
        }
    }

    let sql = format!(
        "SELECT a.attrelid, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), {} \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         WHERE c.relkind = 'c' AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attrelid, a.attnum",
        collation_name(
            "a.attcollation",
            "(SELECT t.typcollation FROM pg_type t WHERE t.oid = a.atttypid)"
        )
    );
    for row in r.query("composite type attributes", &sql)? {
        if let Some(id) = by_relid.get(&row.get::<_, u32>(0))
            && let Some(Definition::Type(t)) = r.objects.get_mut(id).map(|o| &mut o.def)
        {
            t.attributes.push(Attribute {
                name: row.get(1),
                data_type: row.get(2),
                collation: row.get(3),
            });
        }
    }
    Ok(())
}

fn collate(collation: &Option<String>) -> String {
    collation
        .as_ref()
        .map(|c| format!(" COLLATE {c}"))
        .unwrap_or_default()
}

impl EnumDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        let labels: Vec<String> = self.labels.iter().map(|l| literal(l)).collect();
        vec![Fragment::new(
            Phase::Type,
            vec![
                format!("CREATE TYPE {} AS ENUM ({})", self.name, labels.join(", ")),
                owner_sql("TYPE", &self.name, &self.owner),
            ],
        )]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP TYPE {}", self.name)
    }

    pub(crate) fn alter(&self, to: &EnumDef) -> Alteration {
        if let Some(renames) = renamed_labels(&self.labels, &to.labels) {
            let mut sql: Vec<String> = renames
                .into_iter()
                .map(|(old, new)| {
                    format!(
                        "ALTER TYPE {} RENAME VALUE {} TO {}",
                        to.name,
                        literal(old),
                        literal(new)
                    )
                })
                .collect();
            if self.owner != to.owner {
                sql.push(owner_sql("TYPE", &to.name, &to.owner));
            }
            return Alteration::in_place(vec![Fragment::new(Phase::Type, sql)]);
        }
        let Some(adds) = added_labels(&self.labels, &to.labels) else {
            // PostgreSQL can only add labels. The type is made again, and
            // the planner converts the columns of this type to text and
            // back around it, which fails (and so rolls back) if a row
            // holds a label that is gone.
            return Alteration::Recreate;
        };
        let mut sql: Vec<String> = adds
            .into_iter()
            .map(|(label, position)| {
                format!(
                    "ALTER TYPE {} ADD VALUE {}{position}",
                    to.name,
                    literal(&label)
                )
            })
            .collect();
        if self.owner != to.owner {
            sql.push(owner_sql("TYPE", &to.name, &to.owner));
        }
        Alteration::in_place(vec![Fragment::new(Phase::Type, sql)])
    }

    pub(crate) fn describe(&self, to: &EnumDef) -> String {
        let mut c = Changes::default();
        if self.labels != to.labels {
            c.note(format!(
                "labels ({}) → ({})",
                self.labels.join(", "),
                to.labels.join(", ")
            ));
        }
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}

/// The labels renamed in place (old, new), when `to` is `from` with some
/// labels replaced by ones `from` does not have, at the same positions:
/// what `RENAME VALUE` does, which rows follow without being rewritten.
pub(crate) fn renamed_labels<'a>(
    from: &'a [String],
    to: &'a [String],
) -> Option<Vec<(&'a String, &'a String)>> {
    if from.len() != to.len() {
        return None;
    }
    let renames: Vec<(&String, &String)> = from.iter().zip(to).filter(|(a, b)| a != b).collect();
    let fresh = renames
        .iter()
        .all(|(old, new)| !to.contains(old) && !from.contains(new));
    (!renames.is_empty() && fresh).then_some(renames)
}

/// The `ADD VALUE` steps (label and ` BEFORE 'x'` / ` AFTER 'x'`) that turn
/// label list `from` into `to`, or `None` when `to` does not keep every
/// label of `from` in the same order (PostgreSQL cannot remove or move one).
pub(crate) fn added_labels(from: &[String], to: &[String]) -> Option<Vec<(String, String)>> {
    let kept: Vec<&String> = to.iter().filter(|l| from.contains(l)).collect();
    if kept.len() != from.len() || kept.iter().zip(from).any(|(a, b)| *a != b) {
        return None;
    }
    let mut out = Vec::new();
    let Some(first_kept) = to.iter().position(|l| from.contains(l)) else {
        // No old label left (the enum was empty): append in order.
        return Some(to.iter().map(|l| (l.clone(), String::new())).collect());
    };
    // Labels before the first old one: each goes before its successor,
    // added from the last one backwards so the successor already exists.
    for i in (0..first_kept).rev() {
        out.push((to[i].clone(), format!(" BEFORE {}", literal(&to[i + 1]))));
    }
    // The rest: each goes after its predecessor, which exists by then.
    for i in first_kept + 1..to.len() {
        if !from.contains(&to[i]) {
            out.push((to[i].clone(), format!(" AFTER {}", literal(&to[i - 1]))));
        }
    }
    Some(out)
}

impl DomainDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        let mut head = format!("CREATE DOMAIN {} AS {}", self.name, self.base);
        head.push_str(&collate(&self.collation));
        if let Some(d) = &self.default {
            head.push_str(&format!(" DEFAULT {d}"));
        }
        if self.not_null {
            head.push_str(" NOT NULL");
        }
        let mut sql = vec![head];
        for (name, def) in &self.constraints {
            sql.push(format!(
                "ALTER DOMAIN {} ADD CONSTRAINT {name} {def}",
                self.name
            ));
        }
        sql.push(owner_sql("DOMAIN", &self.name, &self.owner));
        vec![Fragment::new(Phase::Domain, sql)]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP DOMAIN {}", self.name)
    }

    pub(crate) fn alter(&self, to: &DomainDef) -> Alteration {
        if self.base != to.base || self.collation != to.collation {
            return Alteration::Recreate;
        }
        let name = &to.name;
        let mut sql = Vec::new();
        for (cname, def) in &self.constraints {
            if to.constraints.get(cname) != Some(def) {
                sql.push(format!("ALTER DOMAIN {name} DROP CONSTRAINT {cname}"));
            }
        }
        if self.default != to.default {
            sql.push(match &to.default {
                Some(d) => format!("ALTER DOMAIN {name} SET DEFAULT {d}"),
                None => format!("ALTER DOMAIN {name} DROP DEFAULT"),
            });
        }
        if self.not_null != to.not_null {
            let verb = if to.not_null { "SET" } else { "DROP" };
            sql.push(format!("ALTER DOMAIN {name} {verb} NOT NULL"));
        }
        for (cname, def) in &to.constraints {
            if self.constraints.get(cname) != Some(def) {
                sql.push(format!("ALTER DOMAIN {name} ADD CONSTRAINT {cname} {def}"));
            }
        }
        if self.owner != to.owner {
            sql.push(owner_sql("DOMAIN", name, &to.owner));
        }
        Alteration::in_place(vec![Fragment::new(Phase::Domain, sql)])
    }

    pub(crate) fn describe(&self, to: &DomainDef) -> String {
        let mut c = Changes::default();
        c.field("base type", &self.base, &to.base);
        c.field("collation", &self.collation, &to.collation);
        c.field("default", &self.default, &to.default);
        c.field("not null", &self.not_null, &to.not_null);
        for (name, def) in &self.constraints {
            match to.constraints.get(name) {
                None => c.note(format!("constraint {name} dropped")),
                Some(d) if d != def => c.note(format!("constraint {name}: {def} → {d}")),
                _ => {}
            }
        }
        for name in to.constraints.keys() {
            if !self.constraints.contains_key(name) {
                c.note(format!("constraint {name} added"));
            }
        }
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}

impl CompositeDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        let attrs: Vec<String> = self
            .attributes
            .iter()
            .map(|a| format!("{} {}{}", a.name, a.data_type, collate(&a.collation)))
            .collect();
        vec![Fragment::new(
            Phase::Type,
            vec![
                format!("CREATE TYPE {} AS ({})", self.name, attrs.join(", ")),
                owner_sql("TYPE", &self.name, &self.owner),
            ],
        )]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP TYPE {}", self.name)
    }

    pub(crate) fn alter(&self, to: &CompositeDef) -> Alteration {
        // ALTER TYPE can drop attributes, change their type and append new
        // ones; it cannot insert one between others. So the attributes kept
        // must come first, in their old order, and the new ones after.
        let kept_old: Vec<&str> = self
            .attributes
            .iter()
            .map(|a| a.name.as_str())
            .filter(|n| to.attributes.iter().any(|b| b.name == *n))
            .collect();
        let kept_new: Vec<&str> = to
            .attributes
            .iter()
            .take(kept_old.len())
            .map(|a| a.name.as_str())
            .collect();
        if kept_old != kept_new {
            return Alteration::Recreate;
        }
        let mut actions = Vec::new();
        for a in &self.attributes {
            match to.attributes.iter().find(|b| b.name == a.name) {
                None => actions.push(format!("DROP ATTRIBUTE {}", a.name)),
                Some(b) if b != a => actions.push(format!(
                    "ALTER ATTRIBUTE {} SET DATA TYPE {}{}",
                    b.name,
                    b.data_type,
                    collate(&b.collation)
                )),
                _ => {}
            }
        }
        for b in &to.attributes[kept_old.len()..] {
            actions.push(format!(
                "ADD ATTRIBUTE {} {}{}",
                b.name,
                b.data_type,
                collate(&b.collation)
            ));
        }
        let mut sql = Vec::new();
        if !actions.is_empty() {
            sql.push(format!("ALTER TYPE {} {}", to.name, actions.join(", ")));
        }
        if self.owner != to.owner {
            sql.push(owner_sql("TYPE", &to.name, &to.owner));
        }
        Alteration::in_place(vec![Fragment::new(Phase::Type, sql)])
    }

    pub(crate) fn describe(&self, to: &CompositeDef) -> String {
        let mut c = Changes::default();
        let show = |d: &CompositeDef| {
            d.attributes
                .iter()
                .map(|a| format!("{} {}", a.name, a.data_type))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.attributes != to.attributes {
            c.note(format!("attributes ({}) → ({})", show(self), show(to)));
        }
        c.field("owner", &self.owner, &to.owner);
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn enum_labels_are_added_around_the_old_ones() {
        let adds = added_labels(
            &labels(&["b", "d"]),
            &labels(&["a0", "a", "b", "c", "d", "e"]),
        )
        .unwrap();
        assert_eq!(
            adds,
            vec![
                ("a".to_string(), " BEFORE 'b'".to_string()),
                ("a0".to_string(), " BEFORE 'a'".to_string()),
                ("c".to_string(), " AFTER 'b'".to_string()),
                ("e".to_string(), " AFTER 'd'".to_string()),
            ]
        );
        assert_eq!(
            added_labels(&[], &labels(&["x", "y"])).unwrap(),
            vec![
                ("x".to_string(), String::new()),
                ("y".to_string(), String::new())
            ]
        );
        // Removing or reordering cannot be done with ADD VALUE.
        assert!(added_labels(&labels(&["a", "b"]), &labels(&["a"])).is_none());
        assert!(added_labels(&labels(&["a", "b"]), &labels(&["b", "a"])).is_none());
    }

    #[test]
    fn enum_labels_replaced_in_place_are_renames() {
        let (a, b) = (labels(&["todo", "done"]), labels(&["open", "done"]));
        let renames = renamed_labels(&a, &b).unwrap();
        assert_eq!(renames, vec![(&a[0], &b[0])]);
        // A swap, a move or a new label is no rename.
        assert!(renamed_labels(&a, &labels(&["done", "todo"])).is_none());
        assert!(renamed_labels(&a, &labels(&["todo", "done", "x"])).is_none());
        assert!(renamed_labels(&a, &a).is_none());
    }

    #[test]
    fn composite_types_alter_only_when_order_allows() {
        let attr = |n: &str, t: &str| Attribute {
            name: n.into(),
            data_type: t.into(),
            collation: None,
        };
        let from = CompositeDef {
            name: "public.c".into(),
            owner: "o".into(),
            attributes: vec![attr("a", "integer"), attr("b", "text"), attr("c", "text")],
        };
        let to = CompositeDef {
            attributes: vec![attr("a", "bigint"), attr("c", "text"), attr("d", "date")],
            ..from.clone()
        };
        let Alteration::InPlace { fragments, .. } = from.alter(&to) else {
            panic!("expected ALTER TYPE");
        };
        assert_eq!(
            fragments[0].sql,
            vec![
                "ALTER TYPE public.c ALTER ATTRIBUTE a SET DATA TYPE bigint, DROP ATTRIBUTE b, \
                 ADD ATTRIBUTE d date"
            ]
        );
        let reordered = CompositeDef {
            attributes: vec![attr("d", "date"), attr("a", "integer")],
            ..from.clone()
        };
        assert_eq!(from.alter(&reordered), Alteration::Recreate);
    }
}
