#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout:
//! - [`schema`]: generated table definitions.
//! - [`Db`]: one connection, SQLite or PostgreSQL, chosen by URL; [`Db::migrate`].
//! - [`das`]: rows and queries of registered device applications; [`das::Write`] batches any write.
//! - [`graphs`]: rows of graphs and functions.
//! - [`users`]: controller users (name, role, Argon2id password hash).
//! - [`ccm`]: the configuration manager's documents (features, models, functions, projects).
//!
//! Every call here blocks: callers run them on a blocking thread, never on the async runtime.

use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub mod ccm;
pub mod das;
pub mod graphs;
pub mod keys;
pub mod schema;
pub mod users;

/// The migrations in `sql/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("sql");

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database url `{0}`: use sqlite://PATH or postgres://...")]
    Url(String),
    #[error("cannot create the database directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database at {url}: {source}")]
    Connect {
        url: String,
        source: diesel::ConnectionError,
    },
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A connection to either backend. Queries written against it run on both.
#[allow(missing_debug_implementations)]
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

/// The database handle: one connection, owned by whoever does the blocking calls.
pub struct Db {
    conn: AnyConnection,
    url: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("url", &redact(&self.url))
            .finish()
    }
}

/// Where a `sqlite://` URL points, with `~` expanded; `None` for other schemes.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(expand_home(rest))
}

/// Expands a leading `~` to `$HOME`.
pub fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~") {
        Some(rest) => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(rest.trim_start_matches('/'))
        }
        None => PathBuf::from(p),
    }
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Db {
    /// Opens the database named by `url` (creating an SQLite file and its directory if needed).
    pub fn connect(url: &str) -> Result<Self, DbError> {
        let conn = if let Some(path) = sqlite_path(url) {
            let target = if path.as_os_str() == ":memory:" {
                ":memory:".to_owned()
            } else {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| DbError::Dir {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                path.to_string_lossy().into_owned()
            };
            let mut c =
                SqliteConnection::establish(&target).map_err(|source| DbError::Connect {
                    url: redact(url),
                    source,
                })?;
            // WAL: readers do not block the writer; NORMAL sync is durable across process crashes.
            c.batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
            )?;
            AnyConnection::Sqlite(c)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            AnyConnection::Pg(
                PgConnection::establish(url).map_err(|source| DbError::Connect {
                    url: redact(url),
                    source,
                })?,
            )
        } else {
            return Err(DbError::Url(redact(url)));
        };
        Ok(Self {
            conn,
            url: url.to_owned(),
        })
    }

    /// Applies pending migrations; returns how many ran.
    pub fn migrate(&mut self) -> Result<usize, DbError> {
        let applied = match &mut self.conn {
            AnyConnection::Sqlite(c) => c.run_pending_migrations(MIGRATIONS).map(|v| v.len()),
            AnyConnection::Pg(c) => c.run_pending_migrations(MIGRATIONS).map(|v| v.len()),
        }
        .map_err(|e| DbError::Migrate(e.to_string()))?;
        if applied > 0 {
            tracing::info!(db.migrations = applied, "database migrated");
        }
        Ok(applied)
    }

    /// Whether migrations are pending (the database was not initialised or is older).
    pub fn has_pending_migrations(&mut self) -> Result<bool, DbError> {
        match &mut self.conn {
            AnyConnection::Sqlite(c) => c.has_pending_migration(MIGRATIONS),
            AnyConnection::Pg(c) => c.has_pending_migration(MIGRATIONS),
        }
        .map_err(|e| DbError::Migrate(e.to_string()))
    }

    pub fn backend(&self) -> &'static str {
        match self.conn {
            AnyConnection::Sqlite(_) => "sqlite",
            AnyConnection::Pg(_) => "postgresql",
        }
    }

    /// The raw connection, for queries.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db"),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert!(sqlite_path("postgres://x").is_none());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert!(matches!(Db::connect("mysql://x"), Err(DbError::Url(_))));
    }

    #[test]
    fn migrations_apply_once() {
        let mut db = Db::connect("sqlite://:memory:").unwrap();
        assert!(db.has_pending_migrations().unwrap());
        assert!(db.migrate().unwrap() > 0);
        assert_eq!(db.migrate().unwrap(), 0);
    }
}
