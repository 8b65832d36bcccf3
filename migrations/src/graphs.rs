//! Rows of the `graphs` and `functions` tables.

use diesel::prelude::*;

use crate::schema::{functions, graphs};
use crate::{AnyConnection, Db, DbError};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = graphs)]
pub struct GraphRow {
    pub gid: String,
    /// The graph as JSON (see the CSM's `graph::GraphDoc`).
    pub doc: String,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = functions)]
pub struct FunctionRow {
    pub digest: String,
    pub code: String,
}

impl Db {
    pub fn load_graphs(&mut self) -> Result<Vec<GraphRow>, DbError> {
        Ok(graphs::table
            .select(GraphRow::as_select())
            .load(self.conn())?)
    }

    pub fn load_functions(&mut self) -> Result<Vec<FunctionRow>, DbError> {
        Ok(functions::table
            .select(FunctionRow::as_select())
            .load(self.conn())?)
    }
}

pub(crate) fn upsert_graph(c: &mut AnyConnection, row: &GraphRow) -> Result<(), DbError> {
    if diesel::update(graphs::table.find(&row.gid))
        .set(row)
        .execute(c)?
        == 0
    {
        diesel::insert_into(graphs::table).values(row).execute(c)?;
    }
    Ok(())
}

pub(crate) fn delete_graph(c: &mut AnyConnection, gid: &str) -> Result<(), DbError> {
    diesel::delete(graphs::table.find(gid)).execute(c)?;
    Ok(())
}

pub(crate) fn upsert_function(c: &mut AnyConnection, row: &FunctionRow) -> Result<(), DbError> {
    if diesel::update(functions::table.find(&row.digest))
        .set(row)
        .execute(c)?
        == 0
    {
        diesel::insert_into(functions::table)
            .values(row)
            .execute(c)?;
    }
    Ok(())
}

pub(crate) fn delete_function(c: &mut AnyConnection, digest: &str) -> Result<(), DbError> {
    diesel::delete(functions::table.find(digest)).execute(c)?;
    Ok(())
}
