//! Comparing two readings and writing the SQL that turns one into the other.
//!
//! 1. Classify: every identity on either side is added, removed, modified
//!    (altered in place, dropped and created again, or not expressible),
//!    or the same.
//! 2. Close over dependencies: what depends on a dropped object must go
//!    first and come back after (a view over a column whose type changes,
//!    a foreign key on a primary key made again, the comment of a view made
//!    again). Those unchanged objects are reported as rebuilt.
//! 3. Turn each object's fate into steps, link the steps by what the old
//!    side's objects need gone first and what the new side's need made
//!    first, and sort (see [`super::order`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::id::{ObjectId, ObjectKind};
use super::model::{ColumnDef, ConstraintType, Definition, Object, Schema};
use super::order::{Step, sort};
use super::plan::{Alteration, Fragment};

/// What happened to one object between the two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only on the new side.
    Added,
    /// Only on the old side.
    Removed,
    /// On both sides, with different definitions.
    Modified,
    /// The same on both sides, but dropped and created again because
    /// something it depends on is (a view over a column whose type
    /// changes). Not a change of its own: three-way checks ignore it.
    Rebuilt,
}

/// One object's change, and the statements that make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChange {
    /// The object.
    pub id: ObjectId,
    /// What happened to it.
    pub kind: ChangeKind,
    /// One line for people: what differs.
    pub detail: String,
    /// Its statements, in script order (empty when another object's
    /// statement does it: the columns of a new table, the indexes of a
    /// dropped one).
    pub sql: Vec<String>,
    /// The object it belongs to (a column's table, a comment's object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ObjectId>,
    /// The object whose statement creates or drops this one with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implied_by: Option<ObjectId>,
    /// Its definition on the old side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Definition>,
    /// Its definition on the new side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Definition>,
}

/// The differences between two schemas and the SQL that turns the first
/// into the second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDiff {
    /// Every object that differs (or is rebuilt), by kind then name.
    pub changes: Vec<ObjectChange>,
    /// The statements, in an order that applies.
    pub script: Vec<String>,
    /// What could not be expressed or checked: changes PostgreSQL cannot
    /// make in place without losing data, objects of kinds the diff does
    /// not cover, dependency cycles.
    pub warnings: Vec<String>,
}

impl SchemaDiff {
    /// The statements that turn the old side into the new one, in order.
    /// Run them in one transaction.
    pub fn sql(&self) -> Vec<String> {
        self.script.clone()
    }

    /// Whether the two sides have the same schema (as far as it is covered).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.warnings.is_empty()
    }
}

impl fmt::Display for SchemaDiff {
    /// One line per change, children of created or dropped objects
    /// folded into their parent's line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() && self.warnings.is_empty() {
            return writeln!(f, "no schema changes");
        }
        // Per parent: how many children were made and dropped with it.
        let mut implied: BTreeMap<&ObjectId, (usize, usize)> = BTreeMap::new();
        for c in &self.changes {
            if let Some(parent) = &c.implied_by {
                let counts = implied.entry(parent).or_default();
                if c.kind == ChangeKind::Removed {
                    counts.1 += 1;
                } else {
                    counts.0 += 1;
                }
            }
        }
        for c in self.changes.iter().filter(|c| c.implied_by.is_none()) {
            let sign = match c.kind {
                ChangeKind::Added => '+',
                ChangeKind::Removed => '-',
                ChangeKind::Modified => '~',
                ChangeKind::Rebuilt => '*',
            };
            write!(f, "{sign} {}", c.id)?;
            if !c.detail.is_empty() {
                write!(f, ": {}", c.detail)?;
            }
            match implied.get(&c.id) {
                Some((made, 0)) => write!(f, " ({made} more created with it)")?,
                Some((0, dropped)) => write!(f, " ({dropped} more dropped with it)")?,
                Some((made, dropped)) => {
                    write!(f, " ({made} more created, {dropped} dropped with it)")?
                }
                None => {}
            }
            writeln!(f)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        let counted = self
            .changes
            .iter()
            .filter(|c| c.kind != ChangeKind::Rebuilt);
        writeln!(
            f,
            "{} objects changed, {} statements",
            counted.count(),
            self.script.len()
        )
    }
}

/// What the script does to one object.
#[derive(Debug, Clone)]
enum Fate {
    /// Created by its own statements.
    Added,
    /// Created by its parent's statement (a column of a new table).
    AddedWith(ObjectId),
    /// Dropped by its own statement (or reset, for grants and comments).
    Removed,
    /// Dropped along with this object (its table, its column).
    RemovedWith(ObjectId),
    /// Altered in place.
    Altered {
        fragments: Vec<Fragment>,
        retypes: bool,
    },
    /// Dropped (by its own statement, or along with `dropped_with`) and
    /// created again; `modified` when its definition changed, else it is
    /// rebuilt because of `because`.
    Recreated {
        dropped_with: Option<ObjectId>,
        modified: bool,
        because: Option<ObjectId>,
    },
    /// A column whose default goes away before something the default uses
    /// is dropped, and comes back after it is made again.
    DefaultDetached { modified: bool, because: ObjectId },
    /// A column of an enum type that is made again: converted to text
    /// before the type is dropped, and back after it is made.
    ViaText { modified: bool, because: ObjectId },
    /// Modified in a way no SQL here expresses.
    Unsupported(String),
}

impl Fate {
    /// Its old-side object stops existing at some point of the script.
    fn gone(&self) -> bool {
        matches!(
            self,
            Fate::Removed | Fate::RemovedWith(_) | Fate::Recreated { .. }
        )
    }

    fn modified(&self) -> bool {
        matches!(self, Fate::Altered { .. } | Fate::Unsupported(_))
            || matches!(self, Fate::Recreated { modified: true, .. })
            || matches!(self, Fate::DefaultDetached { modified: true, .. })
            || matches!(self, Fate::ViaText { modified: true, .. })
    }
}

/// Compares two readings. The result's [`SchemaDiff::sql`] turns `from`
/// into `to`.
pub fn diff_schema(from: &Schema, to: &Schema) -> SchemaDiff {
    let mut p = Planner::new(from, to);
    p.classify();
    p.close_over_dependents();
    p.reapply_column_grants();
    p.report_unsupported_objects();
    p.plan()
}

struct Planner<'a> {
    from: &'a Schema,
    to: &'a Schema,
    fates: BTreeMap<ObjectId, Fate>,
    /// Old side: objects that list each object in their `deps`.
    dependents: BTreeMap<ObjectId, BTreeSet<ObjectId>>,
    /// Old side: objects whose parent each object is.
    children: BTreeMap<ObjectId, BTreeSet<ObjectId>>,
    warnings: Vec<String>,
}

impl<'a> Planner<'a> {
    fn new(from: &'a Schema, to: &'a Schema) -> Planner<'a> {
        let mut dependents: BTreeMap<ObjectId, BTreeSet<ObjectId>> = BTreeMap::new();
        for (id, obj) in &from.objects {
            for dep in &obj.deps {
                dependents
                    .entry(dep.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
        Planner {
            from,
            to,
            fates: BTreeMap::new(),
            dependents,
            children: from.children(),
            warnings: Vec::new(),
        }
    }

    fn classify(&mut self) {
        for (id, a) in &self.from.objects {
            match self.to.get(id) {
                None => {
                    // A partition's index attached to a new index of its
                    // parent is kept: creating the parent's index attaches
                    // it again rather than making another.
                    let attached = (id.kind == ObjectKind::Index)
                        .then(|| self.to.attached_indexes.get(&id.name))
                        .flatten();
                    let fate = match (attached, &a.parent) {
                        (Some(parent), _) => {
                            Fate::RemovedWith(ObjectId::new(ObjectKind::Index, parent.clone()))
                        }
                        // A table attached as a partition: its columns and
                        // matching constraints become the parent's (ATTACH
                        // checks they match).
                        (None, Some(table)) if self.to.inherited.contains_key(id) => {
                            Fate::RemovedWith(table.clone())
                        }
                        _ => Fate::Removed,
                    };
                    self.fates.insert(id.clone(), fate);
                }
                Some(b) if a.def != b.def => {
                    let fate = match alter(&a.def, &b.def) {
                        Alteration::InPlace { fragments, retypes } => {
                            Fate::Altered { fragments, retypes }
                        }
                        Alteration::Recreate => Fate::Recreated {
                            dropped_with: None,
                            modified: true,
                            because: None,
                        },
                        Alteration::Unsupported(reason) => {
                            self.warnings.push(reason.clone());
                            Fate::Unsupported(reason)
                        }
                    };
                    self.fates.insert(id.clone(), fate);
                }
                Some(_) => {}
            }
        }
        for (id, b) in &self.to.objects {
            if self.from.get(id).is_some() {
                continue;
            }
            // The columns of a new table are in its CREATE TABLE.
            let fate = match &b.parent {
                Some(parent)
                    if id.kind == ObjectKind::Column
                        && parent.kind == ObjectKind::Table
                        && self.from.get(parent).is_none() =>
                {
                    Fate::AddedWith(parent.clone())
                }
                // Inherited until its table was detached, which makes it
                // the table's own as it was.
                Some(parent)
                    if self.from.inherited.contains_key(id) && self.from.get(parent).is_some() =>
                {
                    let was = &self.from.inherited[id].def;
                    if same_but_local(was, &b.def) {
                        Fate::AddedWith(parent.clone())
                    } else {
                        let reason = format!(
                            "{id}: changed after its table was detached; detach first and change it in \
                             a second migration"
                        );
                        self.warnings.push(reason.clone());
                        Fate::Unsupported(reason)
                    }
                }
                _ => Fate::Added,
            };
            self.fates.insert(id.clone(), fate);
        }
    }

    /// Spreads drops to what depends on the dropped objects.
    fn close_over_dependents(&mut self) {
        let mut work: VecDeque<ObjectId> = self
            .fates
            .iter()
            .filter(|(_, f)| f.gone() || matches!(f, Fate::Altered { retypes: true, .. }))
            .map(|(id, _)| id.clone())
            .collect();
        while let Some(y) = work.pop_front() {
            let gone = self.fates.get(&y).is_some_and(Fate::gone);
            if gone {
                self.drop_children(&y, &mut work);
                self.drop_owned_sequences(&y, &mut work);
            }
            let dependents: Vec<ObjectId> = self
                .dependents
                .get(&y)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for x in dependents {
                let fate = self.fates.get(&x);
                if fate.is_some_and(Fate::gone) || self.to.get(&x).is_none() {
                    continue;
                }
                if gone {
                    // An alteration that stops using y can run before y goes.
                    if matches!(fate, Some(Fate::Altered { .. }))
                        && !self.to.get(&x).is_some_and(|o| o.deps.contains(&y))
                    {
                        continue;
                    }
                } else if !refuses_retyped_column(&x, self.from.get(&x)) {
                    // y is a column changing type: PostgreSQL rebuilds
                    // indexes and constraints itself, but refuses while a
                    // view, policy, trigger or routine uses the column.
                    continue;
                }
                self.rebuild(&x, &y, &mut work);
            }
        }
    }

    /// Objects whose parent goes go with it; those still on the new side
    /// come back.
    fn drop_children(&mut self, y: &ObjectId, work: &mut VecDeque<ObjectId>) {
        let children: Vec<ObjectId> = self
            .children
            .get(y)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for child in children {
            let new = match self.fates.get(&child) {
                Some(Fate::Removed) => Fate::RemovedWith(y.clone()),
                Some(Fate::RemovedWith(_)) => continue,
                Some(Fate::Recreated {
                    dropped_with: Some(_),
                    ..
                }) => continue,
                Some(Fate::Recreated {
                    dropped_with: None,
                    modified,
                    because,
                }) => Fate::Recreated {
                    dropped_with: Some(y.clone()),
                    modified: *modified,
                    because: because.clone(),
                },
                other => Fate::Recreated {
                    dropped_with: Some(y.clone()),
                    modified: other.is_some_and(Fate::modified),
                    because: Some(y.clone()),
                },
            };
            self.fates.insert(child.clone(), new);
            work.push_back(child);
        }
    }

    /// A sequence `OWNED BY` a dropped column is dropped with it.
    fn drop_owned_sequences(&mut self, y: &ObjectId, work: &mut VecDeque<ObjectId>) {
        if y.kind != ObjectKind::Column {
            return;
        }
        for (id, obj) in &self.from.objects {
            if let Definition::Sequence(s) = &obj.def
                && s.owned_by.as_ref() == Some(y)
                && matches!(self.fates.get(id), Some(Fate::Removed))
            {
                self.fates.insert(id.clone(), Fate::RemovedWith(y.clone()));
                work.push_back(id.clone());
            }
        }
    }

    /// Drops `x` before `y` goes and makes it again after, if its kind
    /// allows; else says why the script will fail.
    fn rebuild(&mut self, x: &ObjectId, y: &ObjectId, work: &mut VecDeque<ObjectId>) {
        let modified = self.fates.get(x).is_some_and(Fate::modified);
        let old = self.from.get(x).map(|o| &o.def);
        let new = self.to.get(x).map(|o| &o.def);
        let fate = match (x.kind, old, new) {
            (ObjectKind::Column, Some(Definition::Column(a)), Some(Definition::Column(b))) => {
                if y.kind == ObjectKind::Enum
                    && a.data_type == b.data_type
                    && text_type(&a.data_type, &y.name).is_some()
                    && a.generated.is_none()
                {
                    Fate::ViaText {
                        modified,
                        because: y.clone(),
                    }
                } else if a.generated.is_some() || b.generated.is_some() {
                    Fate::Recreated {
                        dropped_with: None,
                        modified,
                        because: Some(y.clone()),
                    }
                } else if matches!(
                    self.fates.get(x),
                    Some(Fate::ViaText { .. } | Fate::DefaultDetached { .. })
                ) {
                    // Already taken apart around something else; going
                    // through text drops and restores the default too.
                    return;
                } else if a.default.is_some() {
                    self.fates.insert(
                        x.clone(),
                        Fate::DefaultDetached {
                            modified,
                            because: y.clone(),
                        },
                    );
                    return;
                } else {
                    self.cannot_rebuild(x, y);
                    return;
                }
            }
            (
                ObjectKind::View
                | ObjectKind::MaterializedView
                | ObjectKind::Index
                | ObjectKind::Constraint
                | ObjectKind::Trigger
                | ObjectKind::Policy
                | ObjectKind::Function
                | ObjectKind::Procedure,
                _,
                _,
            ) => Fate::Recreated {
                dropped_with: None,
                modified,
                because: Some(y.clone()),
            },
            _ => {
                self.cannot_rebuild(x, y);
                return;
            }
        };
        self.fates.insert(x.clone(), fate);
        work.push_back(x.clone());
    }

    fn cannot_rebuild(&mut self, x: &ObjectId, y: &ObjectId) {
        let w = format!(
            "{x} depends on {y}, which is dropped or changes type; {x} cannot be dropped and \
             made again without losing data, so the script will fail there"
        );
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// Revoking a table privilege also revokes it on every column, so when
    /// a role's table-level grant changes, its column grants on that table
    /// are granted again after it.
    fn reapply_column_grants(&mut self) {
        let changed: Vec<(ObjectId, String)> = self
            .fates
            .iter()
            .filter(|(id, f)| {
                id.kind == ObjectKind::Grant && matches!(f, Fate::Altered { .. } | Fate::Removed)
            })
            .filter_map(|(id, _)| {
                let obj = self.from.get(id)?;
                let Definition::Grant(g) = &obj.def else {
                    return None;
                };
                if g.column.is_some() {
                    return None;
                }
                Some((obj.parent.clone()?, g.grantee.clone()))
            })
            .collect();
        for (table, grantee) in changed {
            let table_grant = ObjectId::grant(&table, &grantee);
            let again: Vec<ObjectId> = self
                .to
                .objects
                .iter()
                .filter(|(id, obj)| {
                    !self.fates.contains_key(*id)
                        && matches!(&obj.def, Definition::Grant(g) if g.grantee == grantee && g.column.is_some())
                        && obj
                            .parent
                            .as_ref()
                            .and_then(|c| self.to.get(c))
                            .and_then(|c| c.parent.as_ref())
                            == Some(&table)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in again {
                self.fates.insert(
                    id,
                    Fate::Recreated {
                        dropped_with: Some(table_grant.clone()),
                        modified: false,
                        because: Some(table_grant.clone()),
                    },
                );
            }
        }
    }

    fn report_unsupported_objects(&mut self) {
        for only in self.from.unsupported.difference(&self.to.unsupported) {
            self.warnings.push(format!(
                "{only} exists only on the old side; the schema diff does not cover it, no SQL \
                 written"
            ));
        }
        for only in self.to.unsupported.difference(&self.from.unsupported) {
            self.warnings.push(format!(
                "{only} exists only on the new side; the schema diff does not cover it, no SQL \
                 written"
            ));
        }
    }

    fn plan(self) -> SchemaDiff {
        let mut b = Builder::default();
        for (id, fate) in &self.fates {
            self.add_steps(&mut b, id, fate);
        }
        // Implicit removals take the step of what removes them (unless
        // they have one of their own).
        for (id, fate) in &self.fates {
            if b.remover.contains_key(id) {
                continue;
            }
            let mut at = fate;
            let mut seen = 0;
            while let Fate::RemovedWith(p)
            | Fate::Recreated {
                dropped_with: Some(p),
                ..
            } = at
            {
                if let Some(&d) = b.remover.get(p) {
                    b.remover.insert(id.clone(), d);
                    break;
                }
                match self.fates.get(p) {
                    Some(f) if seen < 64 => {
                        at = f;
                        seen += 1;
                    }
                    _ => break,
                }
            }
        }
        let edges = self.edges(&b);
        let (order, forced) = sort(&b.steps, &edges);
        let mut warnings = self.warnings.clone();
        for i in forced {
            warnings.push(format!(
                "dependency cycle around {}: its statements were placed where they may fail",
                b.steps[i].id
            ));
        }
        let mut script = Vec::new();
        let mut per_object: BTreeMap<ObjectId, Vec<String>> = BTreeMap::new();
        for i in &order {
            let step = &b.steps[*i];
            per_object
                .entry(step.id.clone())
                .or_default()
                .extend(step.sql.iter().cloned());
            script.extend(step.sql.iter().cloned());
        }
        if b.makes_routines {
            // As pg_dump does: a SQL function's body may use objects made
            // later in the script (a view); it is checked when it runs.
            script.insert(0, "SET check_function_bodies = false".to_string());
        }
        let changes = self
            .fates
            .iter()
            .map(|(id, fate)| self.change(id, fate, per_object.remove(id).unwrap_or_default()))
            .collect();
        SchemaDiff {
            changes,
            script,
            warnings,
        }
    }

    fn change(&self, id: &ObjectId, fate: &Fate, sql: Vec<String>) -> ObjectChange {
        let before = self.from.get(id).map(|o| o.def.clone());
        let after = self.to.get(id).map(|o| o.def.clone());
        let describe_change = || match (&before, &after) {
            (Some(a), Some(b)) if a != b => describe(a, b),
            _ => String::new(),
        };
        let (kind, detail, implied_by) = match fate {
            Fate::Added => (ChangeKind::Added, added_detail(after.as_ref()), None),
            Fate::AddedWith(p) => (
                ChangeKind::Added,
                added_detail(after.as_ref()),
                Some(p.clone()),
            ),
            Fate::Removed => (ChangeKind::Removed, String::new(), None),
            Fate::RemovedWith(p) => (ChangeKind::Removed, String::new(), Some(p.clone())),
            Fate::Altered { .. } => (ChangeKind::Modified, describe_change(), None),
            Fate::Unsupported(reason) => (
                ChangeKind::Modified,
                format!("{}; NOT APPLIED: {reason}", describe_change()),
                None,
            ),
            Fate::Recreated {
                modified, because, ..
            } => {
                let why = because
                    .as_ref()
                    .map(|b| format!("dropped and made again with {b}"))
                    .unwrap_or_else(|| "dropped and made again".to_string());
                if *modified {
                    (
                        ChangeKind::Modified,
                        format!("{} ({why})", describe_change()),
                        None,
                    )
                } else {
                    (ChangeKind::Rebuilt, why, None)
                }
            }
            Fate::ViaText { modified, because } => {
                let why = format!("converted through text while {because} is made again");
                if *modified {
                    (
                        ChangeKind::Modified,
                        format!("{} ({why})", describe_change()),
                        None,
                    )
                } else {
                    (ChangeKind::Rebuilt, why, None)
                }
            }
            Fate::DefaultDetached { modified, because } => {
                let why = format!("default set again around {because}");
                if *modified {
                    (
                        ChangeKind::Modified,
                        format!("{} ({why})", describe_change()),
                        None,
                    )
                } else {
                    (ChangeKind::Rebuilt, why, None)
                }
            }
        };
        let parent = self
            .to
            .get(id)
            .or_else(|| self.from.get(id))
            .and_then(|o| o.parent.clone());
        ObjectChange {
            id: id.clone(),
            kind,
            detail,
            sql,
            parent,
            implied_by,
            before,
            after,
        }
    }

    fn add_steps(&self, b: &mut Builder, id: &ObjectId, fate: &Fate) {
        let old = self.from.get(id);
        let new = self.to.get(id);
        match fate {
            Fate::Added => {
                let obj = new.expect("added objects are on the new side");
                let columns = self.new_columns_of(id);
                let fragments = create(&obj.def, &columns);
                let mut needs: BTreeSet<ObjectId> = self.needs(obj);
                for column in self.implied_columns(id) {
                    if let Some(c) = self.to.get(&column) {
                        needs.extend(c.deps.iter().filter(|d| *d != id).cloned());
                    }
                    b.implied.push((column, id.clone()));
                }
                b.creates(id, obj, fragments, needs);
            }
            Fate::RemovedWith(_) => {
                // A dropped table's foreign keys are dropped on their own
                // first: tables that reference each other cannot otherwise
                // be dropped one after the other.
                let obj = old.expect("removed objects are on the old side");
                if let Definition::Constraint(c) = &obj.def
                    && c.constraint_type == ConstraintType::ForeignKey
                {
                    b.drops(id, obj, drop_sql(&obj.def));
                }
            }
            Fate::AddedWith(_) | Fate::Unsupported(_) => {}
            Fate::Removed => {
                let obj = old.expect("removed objects are on the old side");
                match reset(&obj.def) {
                    Some(fragments) => {
                        let needs = self.needs(obj);
                        let first = b.steps.len();
                        b.fragments(id, obj.position, fragments, &needs);
                        b.alters
                            .insert(id.clone(), (first..b.steps.len()).collect());
                    }
                    None => b.drops(id, obj, drop_sql(&obj.def)),
                }
            }
            Fate::Altered { fragments, .. } => {
                let obj = new.expect("altered objects are on the new side");
                let needs = self.needs(obj);
                let first = b.steps.len();
                b.fragments(id, obj.position, fragments.clone(), &needs);
                // What uses the object waits for its main alteration, not
                // for later ones (a sequence's OWNED BY, which itself waits
                // for the column whose default uses the sequence).
                if fragments.first().is_some_and(|f| !f.sql.is_empty()) {
                    b.provider.insert(id.clone(), first);
                }
                b.alters
                    .insert(id.clone(), (first..b.steps.len()).collect());
            }
            Fate::Recreated { dropped_with, .. } => {
                let old = old.expect("recreated objects are on the old side");
                let new = new.expect("recreated objects are on the new side");
                if dropped_with.is_none() {
                    b.drops(id, old, drop_sql(&old.def));
                }
                let fragments = create(&new.def, &[]);
                b.creates(id, new, fragments, self.needs(new));
            }
            Fate::ViaText { because, .. } => {
                let (
                    Some(Object {
                        def: Definition::Column(a),
                        ..
                    }),
                    Some(
                        obj @ Object {
                            def: Definition::Column(c),
                            ..
                        },
                    ),
                ) = (old, new)
                else {
                    return;
                };
                let Some(text) = text_type(&a.data_type, &because.name) else {
                    return;
                };
                let mut sql = Vec::new();
                if a.default.is_some() {
                    sql.push(a.drop_default());
                }
                let as_text = ColumnDef {
                    data_type: text.to_string(),
                    collation: None,
                    default: None,
                    ..a.clone()
                };
                sql.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} TYPE {text} USING {}::{text}",
                    a.table, a.name, a.name
                ));
                let first = b.steps.len();
                b.steps.push(Step {
                    id: id.clone(),
                    drop: true,
                    rank: drop_rank(&obj.def),
                    position: obj.position,
                    sql,
                });
                b.alters.insert(id.clone(), vec![first]);
                b.detached.insert(id.clone(), first);
                let fragments = match as_text.alter(c) {
                    Alteration::InPlace { fragments, .. } => fragments,
                    _ => create(&obj.def, &[]),
                };
                let needs = self.needs(obj);
                let at = b.steps.len();
                b.fragments(id, obj.position, fragments, &needs);
                if b.steps.len() > at {
                    b.provider.insert(id.clone(), at);
                }
            }
            Fate::DefaultDetached { .. } => {
                let (
                    Some(Object {
                        def: Definition::Column(a),
                        ..
                    }),
                    Some(
                        obj @ Object {
                            def: Definition::Column(c),
                            ..
                        },
                    ),
                ) = (old, new)
                else {
                    return;
                };
                let first = b.steps.len();
                b.steps.push(Step {
                    id: id.clone(),
                    drop: true,
                    rank: drop_rank(&obj.def),
                    position: obj.position,
                    sql: vec![a.drop_default()],
                });
                b.alters.insert(id.clone(), vec![first]);
                b.detached.insert(id.clone(), first);
                let fragments = match a.without_default().alter(c) {
                    Alteration::InPlace { fragments, .. } => fragments,
                    _ => create(&obj.def, &[]),
                };
                let needs = self.needs(obj);
                let at = b.steps.len();
                b.fragments(id, obj.position, fragments, &needs);
                if b.steps.len() > at {
                    b.provider.insert(id.clone(), at);
                }
            }
        }
    }

    /// What an object needs made first: its dependencies and its parent.
    fn needs(&self, obj: &Object) -> BTreeSet<ObjectId> {
        obj.deps.iter().chain(obj.parent.iter()).cloned().collect()
    }

    fn implied_columns(&self, table: &ObjectId) -> Vec<ObjectId> {
        self.fates
            .iter()
            .filter(|(_, f)| matches!(f, Fate::AddedWith(p) if p == table))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The columns of a new table, in position order.
    fn new_columns_of(&self, table: &ObjectId) -> Vec<&ColumnDef> {
        let mut cols: Vec<(&i32, &ColumnDef)> = self
            .implied_columns(table)
            .iter()
            .filter_map(|id| self.to.objects.get_key_value(id))
            .filter_map(|(_, o)| match &o.def {
                Definition::Column(c) => Some((&o.position, c)),
                _ => None,
            })
            .collect();
        cols.sort_by_key(|(p, _)| **p);
        cols.into_iter().map(|(_, c)| c).collect()
    }

    fn edges(&self, b: &Builder) -> BTreeSet<(usize, usize)> {
        let mut edges = BTreeSet::new();
        // Who provides each implied object: its parent's step.
        let mut provider = b.provider.clone();
        for (child, parent) in &b.implied {
            if let Some(&p) = b.provider.get(parent) {
                provider.insert(child.clone(), p);
            }
        }
        // What is made must wait for what it needs.
        for (s, needs) in &b.needs {
            for n in needs {
                if let Some(&p) = provider.get(n)
                    && p != *s
                {
                    edges.insert((p, *s));
                }
            }
        }
        // What is dropped goes before what it depends on is dropped.
        let mut removed_by: BTreeMap<usize, Vec<&ObjectId>> = BTreeMap::new();
        for (id, &d) in &b.remover {
            removed_by.entry(d).or_default().push(id);
        }
        for (&d, ids) in &removed_by {
            for id in ids {
                let Some(obj) = self.from.get(id) else {
                    continue;
                };
                for dep in obj.deps.iter().chain(obj.parent.iter()) {
                    if let Some(&d2) = b.remover.get(dep)
                        && d2 != d
                    {
                        edges.insert((d, d2));
                    }
                }
            }
        }
        for (y, &d) in &b.remover {
            // What stays but stops using y is altered before y goes.
            let users = self
                .dependents
                .get(y)
                .into_iter()
                .flatten()
                .chain(self.children.get(y).into_iter().flatten());
            for x in users {
                if b.remover.contains_key(x) {
                    continue;
                }
                for &a in b.alters.get(x).into_iter().flatten() {
                    if a != d {
                        edges.insert((a, d));
                    }
                }
            }
            // A sequence that stops being owned by a dropped column must
            // be released first, or it goes with the column.
            if y.kind == ObjectKind::Column {
                for (sid, obj) in &self.from.objects {
                    if let Definition::Sequence(s) = &obj.def
                        && s.owned_by.as_ref() == Some(y)
                        && !b.remover.contains_key(sid)
                    {
                        for &a in b.alters.get(sid).into_iter().flatten() {
                            edges.insert((a, d));
                        }
                    }
                }
            }
            // Made again only after it is gone.
            if let Some(&p) = b.provider.get(y)
                && p != d
            {
                edges.insert((d, p));
            }
        }
        for (id, &d) in &b.detached {
            if let Some(&p) = b.provider.get(id)
                && p != d
            {
                edges.insert((d, p));
            }
        }
        // A column changing type waits until what depends on it and is
        // dropped has gone: PostgreSQL refuses to retype a column a view,
        // policy, trigger or routine uses. (Only there: other alterations
        // may have to run before a dependent's drop, like a sequence
        // released from a column that is dropped.)
        for (x, steps) in &b.alters {
            let retypes = matches!(
                self.fates.get(x),
                Some(Fate::Altered { retypes: true, .. } | Fate::ViaText { .. })
            );
            if !retypes {
                continue;
            }
            let users = self
                .dependents
                .get(x)
                .into_iter()
                .flatten()
                .chain(self.children.get(x).into_iter().flatten());
            for z in users {
                if let Some(&d) = b.remover.get(z) {
                    for &a in steps {
                        if a != d {
                            edges.insert((d, a));
                        }
                    }
                }
            }
        }
        // New columns of a table are added in their order.
        let mut added: BTreeMap<&ObjectId, Vec<(i32, usize)>> = BTreeMap::new();
        for (id, fate) in &self.fates {
            if id.kind == ObjectKind::Column
                && matches!(fate, Fate::Added)
                && let Some(obj) = self.to.get(id)
                && let (Some(table), Some(&s)) = (&obj.parent, b.provider.get(id))
            {
                added.entry(table).or_default().push((obj.position, s));
            }
        }
        for cols in added.values_mut() {
            cols.sort();
            for pair in cols.windows(2) {
                edges.insert((pair[0].1, pair[1].1));
            }
        }
        edges
    }
}

/// Steps being built, and who makes and removes each object.
#[derive(Default)]
struct Builder {
    steps: Vec<Step>,
    /// Step index -> what it needs made first.
    needs: BTreeMap<usize, BTreeSet<ObjectId>>,
    /// The step that makes each object (its first).
    provider: HashMap<ObjectId, usize>,
    /// The step that drops each object.
    remover: HashMap<ObjectId, usize>,
    /// The steps that alter (or reset) each object in place.
    alters: HashMap<ObjectId, Vec<usize>>,
    /// Columns whose default is dropped early: their early step.
    detached: HashMap<ObjectId, usize>,
    /// Objects made by another object's statement, and that object.
    implied: Vec<(ObjectId, ObjectId)>,
    makes_routines: bool,
}

impl Builder {
    fn drops(&mut self, id: &ObjectId, obj: &Object, sql: Option<String>) {
        let Some(sql) = sql else {
            return;
        };
        self.remover.insert(id.clone(), self.steps.len());
        self.steps.push(Step {
            id: id.clone(),
            drop: true,
            rank: drop_rank(&obj.def),
            position: obj.position,
            sql: vec![sql],
        });
    }

    fn creates(
        &mut self,
        id: &ObjectId,
        obj: &Object,
        fragments: Vec<Fragment>,
        needs: BTreeSet<ObjectId>,
    ) {
        if matches!(obj.def, Definition::Routine(_)) {
            self.makes_routines = true;
        }
        let first = self.steps.len();
        self.fragments(id, obj.position, fragments, &needs);
        if self.steps.len() > first {
            self.provider.insert(id.clone(), first);
            // Later fragments (ownership, replica identity) come after the
            // object exists.
            for s in first + 1..self.steps.len() {
                self.needs.entry(s).or_default().insert(id.clone());
            }
        }
    }

    fn fragments(
        &mut self,
        id: &ObjectId,
        position: i32,
        fragments: Vec<Fragment>,
        needs: &BTreeSet<ObjectId>,
    ) {
        for f in fragments {
            if f.sql.is_empty() {
                continue;
            }
            let index = self.steps.len();
            let mut n = needs.clone();
            n.extend(f.needs);
            n.remove(id);
            self.needs.insert(index, n);
            self.steps.push(Step {
                id: id.clone(),
                drop: false,
                rank: f.phase.rank(),
                position,
                sql: f.sql,
            });
        }
    }
}

/// `text` or `text[]`, for a column of enum `name` or of its array type.
fn text_type(data_type: &str, name: &str) -> Option<&'static str> {
    if data_type == name {
        Some("text")
    } else if data_type.strip_suffix("[]") == Some(name) {
        Some("text[]")
    } else {
        None
    }
}

/// Whether `x`, using a column whose type changes, must be dropped first.
fn refuses_retyped_column(x: &ObjectId, old: Option<&Object>) -> bool {
    match x.kind {
        ObjectKind::View
        | ObjectKind::MaterializedView
        | ObjectKind::Policy
        | ObjectKind::Trigger
        | ObjectKind::Function
        | ObjectKind::Procedure => true,
        ObjectKind::Column => {
            matches!(old, Some(Object { def: Definition::Column(c), .. }) if c.generated.is_some())
        }
        _ => false,
    }
}

/// The order drops run in when nothing else decides: dependents first.
fn drop_rank(def: &Definition) -> u8 {
    match def {
        Definition::Trigger(_) => 0,
        Definition::Policy(_) => 1,
        Definition::RowSecurity(_) => 2,
        Definition::MaterializedView(_) => 3,
        Definition::View(_) => 4,
        Definition::Routine(_) => 5,
        Definition::Index(_) => 6,
        Definition::Constraint(c) if c.constraint_type == ConstraintType::ForeignKey => 7,
        Definition::Constraint(_) => 8,
        Definition::Column(_) => 9,
        Definition::Table(_) => 10,
        Definition::Sequence(_) => 11,
        Definition::Domain(_) => 12,
        Definition::Enum(_) | Definition::Type(_) | Definition::Collation(_) => 13,
        Definition::Extension(_) => 14,
        Definition::Schema(_) => 15,
        Definition::Grant(_) | Definition::Comment(_) => 16,
    }
}

fn create(def: &Definition, columns: &[&ColumnDef]) -> Vec<Fragment> {
    match def {
        Definition::Schema(d) => d.create(),
        Definition::Extension(d) => d.create(),
        Definition::Collation(d) => d.create(),
        Definition::Enum(d) => d.create(),
        Definition::Domain(d) => d.create(),
        Definition::Type(d) => d.create(),
        Definition::Sequence(d) => d.create(),
        Definition::Table(d) => d.create(columns),
        Definition::Column(d) => d.create(),
        Definition::Constraint(d) => d.create(),
        Definition::Index(d) => d.create(),
        Definition::View(d) => d.create(),
        Definition::MaterializedView(d) => d.create(),
        Definition::Routine(d) => d.create(),
        Definition::Trigger(d) => d.create(),
        Definition::Policy(d) => d.create(),
        Definition::RowSecurity(d) => d.create(),
        Definition::Grant(d) => d.create(),
        Definition::Comment(d) => d.create(),
    }
}

/// Whether two definitions are the same but for a column being declared
/// in its table (as detaching a partition declares every column).
fn same_but_local(a: &Definition, b: &Definition) -> bool {
    match (a, b) {
        (Definition::Column(a), Definition::Column(b)) => {
            ColumnDef {
                local: b.local,
                ..a.clone()
            } == *b
        }
        _ => a == b,
    }
}

/// The `DROP` of an object; `None` for those removed by a reset instead.
fn drop_sql(def: &Definition) -> Option<String> {
    Some(match def {
        Definition::Schema(d) => d.drop(),
        Definition::Extension(d) => d.drop(),
        Definition::Collation(d) => d.drop(),
        Definition::Enum(d) => d.drop(),
        Definition::Domain(d) => d.drop(),
        Definition::Type(d) => d.drop(),
        Definition::Sequence(d) => d.drop(),
        Definition::Table(d) => d.drop(),
        Definition::Column(d) => d.drop(),
        Definition::Constraint(d) => d.drop(),
        Definition::Index(d) => d.drop(),
        Definition::View(d) => d.drop(),
        Definition::MaterializedView(d) => d.drop(),
        Definition::Routine(d) => d.drop(),
        Definition::Trigger(d) => d.drop(),
        Definition::Policy(d) => d.drop(),
        Definition::RowSecurity(_) | Definition::Grant(_) | Definition::Comment(_) => {
            return None;
        }
    })
}

/// Removing a grant, a comment or row-level security on an object that
/// stays means setting it back to PostgreSQL's default.
fn reset(def: &Definition) -> Option<Vec<Fragment>> {
    match def {
        Definition::RowSecurity(d) => Some(d.reset()),
        Definition::Grant(d) => Some(d.reset()),
        Definition::Comment(d) => Some(d.reset()),
        _ => None,
    }
}

fn alter(a: &Definition, b: &Definition) -> Alteration {
    match (a, b) {
        (Definition::Schema(a), Definition::Schema(b)) => a.alter(b),
        (Definition::Extension(a), Definition::Extension(b)) => a.alter(b),
        (Definition::Collation(a), Definition::Collation(b)) => a.alter(b),
        (Definition::Enum(a), Definition::Enum(b)) => a.alter(b),
        (Definition::Domain(a), Definition::Domain(b)) => a.alter(b),
        (Definition::Type(a), Definition::Type(b)) => a.alter(b),
        (Definition::Sequence(a), Definition::Sequence(b)) => a.alter(b),
        (Definition::Table(a), Definition::Table(b)) => a.alter(b),
        (Definition::Column(a), Definition::Column(b)) => a.alter(b),
        (Definition::Constraint(a), Definition::Constraint(b)) => a.alter(b),
        (Definition::Index(a), Definition::Index(b)) => a.alter(b),
        (Definition::View(a), Definition::View(b)) => a.alter(b),
        (Definition::MaterializedView(a), Definition::MaterializedView(b)) => a.alter(b),
        (Definition::Routine(a), Definition::Routine(b)) => a.alter(b),
        (Definition::Trigger(a), Definition::Trigger(b)) => a.alter(b),
        (Definition::Policy(a), Definition::Policy(b)) => a.alter(b),
        (Definition::RowSecurity(a), Definition::RowSecurity(b)) => a.alter(b),
        (Definition::Grant(a), Definition::Grant(b)) => a.alter(b),
        (Definition::Comment(a), Definition::Comment(b)) => a.alter(b),
        // An identity always names one family, so this is unreachable for
        // readings made by read_schema; a hand-made Schema gets a
        // drop-and-create.
        _ => Alteration::Recreate,
    }
}

fn describe(a: &Definition, b: &Definition) -> String {
    match (a, b) {
        (Definition::Schema(a), Definition::Schema(b)) => a.describe(b),
        (Definition::Extension(a), Definition::Extension(b)) => a.describe(b),
        (Definition::Collation(a), Definition::Collation(b)) => a.describe(b),
        (Definition::Enum(a), Definition::Enum(b)) => a.describe(b),
        (Definition::Domain(a), Definition::Domain(b)) => a.describe(b),
        (Definition::Type(a), Definition::Type(b)) => a.describe(b),
        (Definition::Sequence(a), Definition::Sequence(b)) => a.describe(b),
        (Definition::Table(a), Definition::Table(b)) => a.describe(b),
        (Definition::Column(a), Definition::Column(b)) => a.describe(b),
        (Definition::Constraint(a), Definition::Constraint(b)) => a.describe(b),
        (Definition::Index(a), Definition::Index(b)) => a.describe(b),
        (Definition::View(a), Definition::View(b)) => a.describe(b),
        (Definition::MaterializedView(a), Definition::MaterializedView(b)) => a.describe(b),
        (Definition::Routine(a), Definition::Routine(b)) => a.describe(b),
        (Definition::Trigger(a), Definition::Trigger(b)) => a.describe(b),
        (Definition::Policy(a), Definition::Policy(b)) => a.describe(b),
        (Definition::RowSecurity(a), Definition::RowSecurity(b)) => a.describe(b),
        (Definition::Grant(a), Definition::Grant(b)) => a.describe(b),
        (Definition::Comment(a), Definition::Comment(b)) => a.describe(b),
        _ => "changed kind".to_string(),
    }
}

/// What a new object is, in a few words.
fn added_detail(def: Option<&Definition>) -> String {
    match def {
        Some(Definition::Column(c)) => c.data_type.clone(),
        Some(Definition::Grant(g)) => g.summary(),
        Some(Definition::Comment(c)) => format!("{:?}", c.text),
        Some(Definition::Constraint(c)) => c.definition.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
