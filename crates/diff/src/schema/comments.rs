//! Comments on objects.

use super::id::ObjectId;
use super::model::{CommentDef, Definition, Object};
use super::plan::{Alteration, Fragment, Phase};
use super::read::{PG_CLASS, PG_NAMESPACE, Reader};
use super::sql::literal;
use crate::DiffError;

pub(crate) fn read(r: &mut Reader) -> Result<(), DiffError> {
    // Schemas made at bootstrap (public) have OIDs below 16384 and may
    // carry a comment; every other object of ours is above.
    let rows = r.query(
        "comments",
        &format!(
            "SELECT classoid, objoid, objsubid, description FROM pg_description \
             WHERE objoid >= 16384 OR classoid = {PG_NAMESPACE}"
        ),
    )?;
    for row in rows {
        let (class, oid, sub): (u32, u32, i32) = (row.get(0), row.get(1), row.get(2));
        let text: String = row.get(3);
        let Some(target) = r.own((class, oid, sub)).cloned() else {
            // A column of a view has no identity of its own: say it is there.
            if class == PG_CLASS
                && sub > 0
                && let Some(relation) = r.own((PG_CLASS, oid, 0))
            {
                let note = format!("comment on column {sub} of {relation}: {text}");
                r.unsupported.insert(note);
            }
            continue;
        };
        let Some(on) = r.objects.get(&target).and_then(|o| o.def.comment_target()) else {
            continue;
        };
        r.add(
            ObjectId::comment(&target),
            Object::new(Definition::Comment(CommentDef { on, text }), Some(target)),
            None,
        );
    }
    Ok(())
}

impl CommentDef {
    pub(crate) fn create(&self) -> Vec<Fragment> {
        vec![Fragment::one(
            Phase::Comment,
            format!("COMMENT ON {} IS {}", self.on, literal(&self.text)),
        )]
    }

    /// `IS NULL`: the object stays, without a comment.
    pub(crate) fn reset(&self) -> Vec<Fragment> {
        vec![Fragment::one(
            Phase::Comment,
            format!("COMMENT ON {} IS NULL", self.on),
        )]
    }

    pub(crate) fn alter(&self, to: &CommentDef) -> Alteration {
        Alteration::in_place(to.create())
    }

    pub(crate) fn describe(&self, to: &CommentDef) -> String {
        format!("{:?} → {:?}", self.text, to.text)
    }
}
