//! Row-level security policies and privileges.

use std::collections::{BTreeMap, BTreeSet};

use super::id::{ObjectId, ObjectKind};
use super::model::{Definition, GrantDef, Object, PolicyDef, Privilege};
use super::plan::{Alteration, Changes, Fragment, Phase};
use super::read::{Addr, PG_POLICY, Reader, USER_NS, not_extension_member, qualified};
use crate::DiffError;

pub(crate) fn read_policies(r: &mut Reader) -> Result<(), DiffError> {
    let sql = format!(
        "SELECT p.oid, {}, quote_ident(p.polname), p.polpermissive, \
         CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' \
              WHEN 'd' THEN 'DELETE' ELSE 'ALL' END, \
         ARRAY(SELECT CASE WHEN o = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(o)) END \
               FROM unnest(p.polroles) o ORDER BY 1), \
         pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) \
         FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_NS} AND {}",
        qualified("c.relname"),
        not_extension_member("pg_class", "c.oid")
    );
    for row in r.query("policies", &sql)? {
        let table: String = row.get(1);
        let name: String = row.get(2);
        let def = PolicyDef {
            table: table.clone(),
            name: name.clone(),
            permissive: row.get(3),
            command: row.get(4),
            roles: row.get(5),
            using: row.get(6),
            with_check: row.get(7),
        };
        r.add(
            ObjectId::new(ObjectKind::Policy, format!("{table}.{name}")),
            Object::new(
                Definition::Policy(def),
                Some(ObjectId::new(ObjectKind::Table, table)),
            ),
            Some((PG_POLICY, row.get(0), 0)),
        );
    }
    Ok(())
}

/// Reads privileges that differ from PostgreSQL's built-in defaults
/// (`acldefault`): a NULL ACL means the defaults, and a role whose
/// privileges equal its default ones has no grant object. Grants on
/// objects that are not ours (extension members) are skipped.
pub(crate) fn read_grants(r: &mut Reader) -> Result<(), DiffError> {
    let sql = format!(
        "WITH objects(classid, objid, subid, acl, dflt) AS ( \
           SELECT 'pg_class'::regclass::oid, c.oid, 0, c.relacl, \
                  acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND c.relacl IS NOT NULL AND {USER_NS} \
           UNION ALL \
           SELECT 'pg_class'::regclass::oid, a.attrelid, a.attnum::int, a.attacl, NULL::aclitem[] \
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped AND {USER_NS} \
           UNION ALL \
           SELECT 'pg_proc'::regclass::oid, p.oid, 0, p.proacl, acldefault('f', p.proowner) \
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
           WHERE p.proacl IS NOT NULL AND {USER_NS} \
           UNION ALL \
           SELECT 'pg_namespace'::regclass::oid, n.oid, 0, n.nspacl, acldefault('n', n.nspowner) \
           FROM pg_namespace n WHERE n.nspacl IS NOT NULL AND {USER_NS} \
           UNION ALL \
           SELECT 'pg_type'::regclass::oid, t.oid, 0, t.typacl, acldefault('T', t.typowner) \
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
           WHERE t.typacl IS NOT NULL AND t.typtype IN ('e', 'd', 'c') AND {USER_NS} \
         ) \
         SELECT o.classid, o.objid, o.subid, d.is_default, \
                CASE WHEN d.grantee = 0 THEN 'PUBLIC' \
                     ELSE quote_ident(pg_get_userbyid(d.grantee)) END, \
                d.privilege_type, d.is_grantable \
         FROM objects o CROSS JOIN LATERAL ( \
             SELECT false AS is_default, a.* FROM aclexplode(o.acl) a \
             UNION ALL \
             SELECT true, a.* FROM aclexplode(o.dflt) a WHERE o.dflt IS NOT NULL \
         ) d"
    );
    // (object, grantee) -> (held, default)
    type Held = (BTreeSet<Privilege>, BTreeSet<Privilege>);
    let mut grants: BTreeMap<(ObjectId, String), Held> = BTreeMap::new();
    let mut seen: BTreeSet<ObjectId> = BTreeSet::new();
    for row in r.query("privileges", &sql)? {
        let addr: Addr = (row.get(0), row.get(1), row.get(2));
        let Some(target) = r.own(addr).cloned() else {
            continue;
        };
        seen.insert(target.clone());
        let privilege = Privilege {
            name: row.get(5),
            grantable: row.get(6),
        };
        let entry = grants.entry((target, row.get(4))).or_default();
        if row.get::<_, bool>(3) {
            entry.1.insert(privilege);
        } else {
            entry.0.insert(privilege);
        }
    }
    for ((target, grantee), (held, default)) in grants {
        if held == default {
            continue;
        }
        let Some((on, column)) = r.objects.get(&target).and_then(|o| o.def.grant_target()) else {
            continue;
        };
        let def = GrantDef {
            on,
            column,
            grantee: grantee.clone(),
            privileges: held.into_iter().collect(),
            defaults: default.into_iter().collect(),
        };
        r.add(
            ObjectId::grant(&target, &grantee),
            Object::new(Definition::Grant(def), Some(target)),
            None,
        );
    }
    Ok(())
}

impl PolicyDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        let mut sql = format!(
            "CREATE POLICY {} ON {} AS {} FOR {} TO {}",
            self.name,
            self.table,
            if self.permissive {
                "PERMISSIVE"
            } else {
                "RESTRICTIVE"
            },
            self.command,
            self.roles.join(", ")
        );
        if let Some(e) = &self.using {
            sql.push_str(&format!(" USING ({e})"));
        }
        if let Some(e) = &self.with_check {
            sql.push_str(&format!(" WITH CHECK ({e})"));
        }
        vec![Fragment::one(Phase::Policy, sql)]
    }

    pub(crate) fn drop(&self) -> String {
        format!("DROP POLICY {} ON {}", self.name, self.table)
    }

    pub(crate) fn alter(&self, _to: &PolicyDef) -> Alteration {
        // ALTER POLICY cannot change the command or permissiveness, nor
        // remove a USING clause; nothing depends on a policy, so making it
        // again is always right and never loses anything.
        Alteration::Recreate
    }

    pub(crate) fn describe(&self, to: &PolicyDef) -> String {
        let mut c = Changes::default();
        c.field("permissive", &self.permissive, &to.permissive);
        c.field("command", &self.command, &to.command);
        c.field("roles", &self.roles, &to.roles);
        c.field("using", &self.using, &to.using);
        c.field("with check", &self.with_check, &to.with_check);
        c.finish()
    }
}

impl GrantDef {
    fn phase(&self) -> Phase {
        if self.column.is_some() {
            Phase::ColumnGrant
        } else {
            Phase::Grant
        }
    }

    fn list(&self, privileges: &[&Privilege]) -> String {
        privileges
            .iter()
            .map(|p| match &self.column {
                Some(c) => format!("{} ({c})", p.name),
                None => p.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `REVOKE` and `GRANT` statements that take this role from holding
    /// `from` to holding `to` on the object.
    pub(crate) fn transition(&self, from: &[Privilege], to: &[Privilege]) -> Vec<String> {
        let find = |set: &[Privilege], name: &str| set.iter().find(|p| p.name == name).cloned();
        let revoke: Vec<&Privilege> = from
            .iter()
            .filter(|p| find(to, &p.name).is_none())
            .collect();
        let revoke_option: Vec<&Privilege> = from
            .iter()
            .filter(|p| p.grantable && find(to, &p.name).is_some_and(|q| !q.grantable))
            .collect();
        let grant: Vec<&Privilege> = to
            .iter()
            .filter(|p| !p.grantable && find(from, &p.name).is_none())
            .collect();
        let grant_option: Vec<&Privilege> = to
            .iter()
            .filter(|p| p.grantable && find(from, &p.name).is_none_or(|q| !q.grantable))
            .collect();
        let (on, who) = (&self.on, &self.grantee);
        let mut sql = Vec::new();
        if !revoke.is_empty() {
            sql.push(format!("REVOKE {} ON {on} FROM {who}", self.list(&revoke)));
        }
        if !revoke_option.is_empty() {
            sql.push(format!(
                "REVOKE GRANT OPTION FOR {} ON {on} FROM {who}",
                self.list(&revoke_option)
            ));
        }
        if !grant.is_empty() {
            sql.push(format!("GRANT {} ON {on} TO {who}", self.list(&grant)));
        }
        if !grant_option.is_empty() {
            sql.push(format!(
                "GRANT {} ON {on} TO {who} WITH GRANT OPTION",
                self.list(&grant_option)
            ));
        }
        sql
    }

    pub(crate) fn create(&self) -> Vec<Fragment> {
        vec![Fragment::new(
            self.phase(),
            self.transition(&self.defaults, &self.privileges),
        )]
    }

    /// Back to the default privileges.
    pub(crate) fn reset(&self) -> Vec<Fragment> {
        vec![Fragment::new(
            self.phase(),
            self.transition(&self.privileges, &self.defaults),
        )]
    }

    pub(crate) fn alter(&self, to: &GrantDef) -> Alteration {
        Alteration::in_place(vec![Fragment::new(
            to.phase(),
            to.transition(&self.privileges, &to.privileges),
        )])
    }

    pub(crate) fn describe(&self, to: &GrantDef) -> String {
        let show = |p: &[Privilege]| {
            p.iter()
                .map(|p| {
                    if p.grantable {
                        format!("{}*", p.name)
                    } else {
                        p.name.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        format!("{} → {}", show(&self.privileges), show(&to.privileges))
    }

    /// `SELECT, INSERT*` (`*`: with grant option).
    pub(crate) fn summary(&self) -> String {
        self.privileges
            .iter()
            .map(|p| {
                if p.grantable {
                    format!("{}*", p.name)
                } else {
                    p.name.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, grantable: bool) -> Privilege {
        Privilege {
            name: name.into(),
            grantable,
        }
    }

    #[test]
    fn grants_move_by_difference() {
        let g = GrantDef {
            on: "TABLE public.t".into(),
            column: None,
            grantee: "alice".into(),
            privileges: vec![],
            defaults: vec![],
        };
        assert_eq!(
            g.transition(
                &[p("SELECT", true), p("UPDATE", false)],
                &[p("SELECT", false), p("INSERT", false), p("DELETE", true)]
            ),
            vec![
                "REVOKE UPDATE ON TABLE public.t FROM alice",
                "REVOKE GRANT OPTION FOR SELECT ON TABLE public.t FROM alice",
                "GRANT INSERT ON TABLE public.t TO alice",
                "GRANT DELETE ON TABLE public.t TO alice WITH GRANT OPTION",
            ]
        );
        let col = GrantDef {
            column: Some("c".into()),
            ..g.clone()
        };
        assert_eq!(
            col.transition(&[], &[p("SELECT", false), p("UPDATE", false)]),
            vec!["GRANT SELECT (c), UPDATE (c) ON TABLE public.t TO alice"]
        );
    }

    #[test]
    fn revoking_a_default_is_a_grant_object_that_resets() {
        // REVOKE EXECUTE ON FUNCTION ... FROM PUBLIC.
        let g = GrantDef {
            on: "FUNCTION public.f()".into(),
            column: None,
            grantee: "PUBLIC".into(),
            privileges: vec![],
            defaults: vec![p("EXECUTE", false)],
        };
        assert_eq!(
            g.create()[0].sql,
            vec!["REVOKE EXECUTE ON FUNCTION public.f() FROM PUBLIC"]
        );
        assert_eq!(
            g.reset()[0].sql,
            vec!["GRANT EXECUTE ON FUNCTION public.f() TO PUBLIC"]
        );
    }
}
