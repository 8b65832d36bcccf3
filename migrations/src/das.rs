//! Rows of the `das` table: one registered device application each.

use diesel::prelude::*;

use crate::schema::das;
use crate::{Db, DbError};

/// A DA as stored. JSON columns are kept as text; the CSM converts them to wire types.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = das)]
#[diesel(treat_none_as_null = true)]
pub struct DaRow {
    pub id: String,
    pub rev: String,
    pub name: String,
    pub register_time: f64,
    pub accept_protos: String,
    pub idf_list: String,
    pub odf_list: String,
    pub profile: String,
    pub username: Option<String>,
    pub password_hash: Option<String>,
}

impl Db {
    /// Every registered DA.
    pub fn load_das(&mut self) -> Result<Vec<DaRow>, DbError> {
        Ok(das::table.select(DaRow::as_select()).load(self.conn())?)
    }

    /// Inserts the DA or replaces the stored one with the same id.
    pub fn upsert_da(&mut self, row: &DaRow) -> Result<(), DbError> {
        self.conn().transaction(|c| upsert(c, row))
    }

    /// Removes a DA; returns whether it existed.
    pub fn delete_da(&mut self, id: &str) -> Result<bool, DbError> {
        Ok(diesel::delete(das::table.find(id)).execute(self.conn())? > 0)
    }

    /// Applies many writes in one transaction (one fsync), in order.
    pub fn apply_writes(&mut self, writes: &[Write]) -> Result<(), DbError> {
        self.conn().transaction(|c| {
            for w in writes {
                match w {
                    Write::Da(DaWrite::Upsert(row)) => upsert(c, row)?,
                    Write::Da(DaWrite::Delete(id)) => {
                        diesel::delete(das::table.find(id)).execute(c)?;
                    }
                    Write::GraphUpsert(row) => crate::graphs::upsert_graph(c, row)?,
                    Write::GraphDelete(gid) => crate::graphs::delete_graph(c, gid)?,
                    Write::FunctionUpsert(row) => crate::graphs::upsert_function(c, row)?,
                    Write::FunctionDelete(digest) => crate::graphs::delete_function(c, digest)?,
                }
            }
            Ok(())
        })
    }
}

fn upsert(c: &mut crate::AnyConnection, row: &DaRow) -> Result<(), DbError> {
    let updated = diesel::update(das::table.find(&row.id))
        .set(row)
        .execute(c)?;
    if updated == 0 {
        diesel::insert_into(das::table).values(row).execute(c)?;
    }
    Ok(())
}

/// One write of the DA table.
#[derive(Debug, Clone, PartialEq)]
pub enum DaWrite {
    Upsert(DaRow),
    Delete(String),
}

/// Any write, for batching several in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Da(DaWrite),
    GraphUpsert(crate::graphs::GraphRow),
    GraphDelete(String),
    FunctionUpsert(crate::graphs::FunctionRow),
    FunctionDelete(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str) -> DaRow {
        DaRow {
            id: id.into(),
            rev: "r".into(),
            name: name.into(),
            register_time: 1.5,
            accept_protos: r#"["mqtt"]"#.into(),
            idf_list: "[]".into(),
            odf_list: "[]".into(),
            profile: r#"{"model":"M"}"#.into(),
            username: None,
            password_hash: None,
        }
    }

    #[test]
    fn upsert_load_delete() {
        let mut db = Db::connect("sqlite://:memory:").unwrap();
        db.migrate().unwrap();
        db.upsert_da(&row("a", "one")).unwrap();
        db.upsert_da(&row("a", "two")).unwrap();
        db.apply_writes(&[
            Write::Da(DaWrite::Upsert(row("b", "b"))),
            Write::Da(DaWrite::Delete("a".into())),
        ])
        .unwrap();
        let all = db.load_das().unwrap();
        assert_eq!(all, vec![row("b", "b")]);
        assert!(db.delete_da("b").unwrap());
        assert!(!db.delete_da("b").unwrap());
    }
}

#[cfg(test)]
mod graph_tests {
    use super::*;
    use crate::graphs::{FunctionRow, GraphRow};

    #[test]
    fn graphs_and_functions_round_trip() {
        let mut db = Db::connect("sqlite://:memory:").unwrap();
        db.migrate().unwrap();
        let g = |doc: &str| GraphRow {
            gid: "1".into(),
            doc: doc.into(),
        };
        let f = FunctionRow {
            digest: "d".into(),
            code: "fn run(x) { x }".into(),
        };
        db.apply_writes(&[
            Write::GraphUpsert(g("{}")),
            Write::GraphUpsert(g("{\"a\":1}")),
            Write::FunctionUpsert(f.clone()),
        ])
        .unwrap();
        assert_eq!(db.load_graphs().unwrap(), vec![g("{\"a\":1}")]);
        assert_eq!(db.load_functions().unwrap(), vec![f]);
        db.apply_writes(&[
            Write::GraphDelete("1".into()),
            Write::FunctionDelete("d".into()),
        ])
        .unwrap();
        assert!(db.load_graphs().unwrap().is_empty());
        assert!(db.load_functions().unwrap().is_empty());
    }
}
