//! The SQLite file behind the durable outbox and the device manager: its schema (one file may
//! hold both, for any number of DAs) and a helper that runs diesel calls off the async
//! threads. Every statement is built with diesel's query builder, so values are always bound
//! parameters, never text pasted into SQL.

use std::path::Path;
use std::sync::{Arc, Mutex};

use diesel::connection::SimpleConnection;
use diesel::{Connection, QueryResult, SqliteConnection};

use crate::error::Error;

diesel::table! {
    /// Undelivered pushes, oldest first (`seq` grows).
    outbox (seq) {
        seq -> BigInt,
        da_id -> Text,
        feature -> Text,
        payload -> Binary,
    }
}

diesel::table! {
    /// Devices of a gateway (see `manager.rs`).
    devices (id) {
        id -> Text,
        model -> Text,
        name -> Text,
        idf_list -> Text,
        odf_list -> Text,
        tags -> Text,
        hash -> Text,
        state -> Text,
    }
}

/// The schema, created if missing. `user_version` records its version for later migrations.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    da_id TEXT NOT NULL,
    feature TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_da ON outbox (da_id, seq);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY NOT NULL,
    model TEXT NOT NULL,
    name TEXT NOT NULL,
    idf_list TEXT NOT NULL,
    odf_list TEXT NOT NULL,
    tags TEXT NOT NULL,
    hash TEXT NOT NULL,
    state TEXT NOT NULL
);
PRAGMA user_version = 1;
";

/// A connection shared by the tasks of one process. The lock is only taken inside
/// `spawn_blocking` closures (or by blocking callers), never across an `.await`.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Mutex<SqliteConnection>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared(SqliteConnection)")
    }
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// Opens (creating if needed) the database at `path` with WAL journaling; blocks.
pub(crate) fn open_blocking(path: &Path) -> Result<Shared, Error> {
    let shown = path.display().to_string();
    let url = path
        .to_str()
        .ok_or_else(|| Error::Storage(format!("{shown} is not valid UTF-8")))?;
    let mut conn = SqliteConnection::establish(url)
        .map_err(|e| Error::Storage(format!("cannot open {shown}: {e}")))?;
    conn.batch_execute(
        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
    )
    .map_err(|e| Error::Storage(format!("{shown}: {e}")))?;
    conn.batch_execute(SCHEMA)
        .map_err(|e| Error::Storage(format!("{shown}: cannot create the schema: {e}")))?;
    Ok(Shared(Arc::new(Mutex::new(conn))))
}

/// [`open_blocking`] off the async threads.
pub(crate) async fn open(path: &Path) -> Result<Shared, Error> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || open_blocking(&path))
        .await
        .map_err(storage)?
}

/// Runs `f` on the connection on a blocking thread.
pub(crate) async fn run<T: Send + 'static>(
    conn: &Shared,
    f: impl FnOnce(&mut SqliteConnection) -> QueryResult<T> + Send + 'static,
) -> Result<T, Error> {
    let conn = conn.0.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = conn
            .lock()
            .map_err(|_| Error::Storage("the database lock is poisoned".into()))?;
        f(&mut guard).map_err(storage)
    })
    .await
    .map_err(storage)?
}

/// Like [`run`], for a blocking caller (the device manager trait is synchronous).
pub(crate) fn run_blocking<T>(
    conn: &Shared,
    f: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>,
) -> Result<T, Error> {
    let mut guard = conn
        .0
        .lock()
        .map_err(|_| Error::Storage("the database lock is poisoned".into()))?;
    f(&mut guard).map_err(storage)
}
