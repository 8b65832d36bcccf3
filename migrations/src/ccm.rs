//! Rows of the `ccm_docs` table: the configuration manager's features, models, functions and
//! projects, one JSON document per entity (see the `iot-ccm` crate for their shape).

use diesel::prelude::*;

use crate::schema::ccm_docs;
use crate::{Db, DbError};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = ccm_docs)]
pub struct CcmDocRow {
    /// `feature`, `model`, `function` or `project`.
    pub kind: String,
    pub name: String,
    pub doc: String,
    /// Seconds since the Unix epoch.
    pub updated_time: f64,
}

impl Db {
    /// Every document of every kind.
    pub fn load_ccm_docs(&mut self) -> Result<Vec<CcmDocRow>, DbError> {
        Ok(ccm_docs::table
            .select(CcmDocRow::as_select())
            .order((ccm_docs::kind, ccm_docs::name))
            .load(self.conn())?)
    }

    /// Writes some documents and deletes others (`(kind, name)`), in one transaction.
    pub fn write_ccm_docs(
        &mut self,
        upserts: &[CcmDocRow],
        deletes: &[(String, String)],
    ) -> Result<(), DbError> {
        self.conn().transaction::<_, DbError, _>(|c| {
            for row in upserts {
                let n = diesel::update(ccm_docs::table.find((&row.kind, &row.name)))
                    .set(row)
                    .execute(c)?;
                if n == 0 {
                    diesel::insert_into(ccm_docs::table)
                        .values(row)
                        .execute(c)?;
                }
            }
            for (kind, name) in deletes {
                diesel::delete(ccm_docs::table.find((kind, name))).execute(c)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_written_replaced_and_deleted() {
        let mut db = Db::connect("sqlite://:memory:").unwrap();
        db.migrate().unwrap();
        let row = |name: &str, doc: &str| CcmDocRow {
            kind: "model".into(),
            name: name.into(),
            doc: doc.into(),
            updated_time: 1.0,
        };
        db.write_ccm_docs(&[row("a", "{}"), row("b", "{}")], &[])
            .unwrap();
        db.write_ccm_docs(&[row("a", "{\"x\":1}")], &[("model".into(), "b".into())])
            .unwrap();
        let all = db.load_ccm_docs().unwrap();
        assert_eq!(all, vec![row("a", "{\"x\":1}")]);
    }
}
