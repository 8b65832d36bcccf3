//! [`PgSchema`]: a PostgreSQL schema of a test's own on the local server ([`crate::pg_url`]),
//! so tests on PostgreSQL run in parallel without seeing each other's tables; dropped with
//! everything in it when the value is dropped.

use std::process::Command;

use crate::{new_id, pg_url};

/// A fresh schema; [`PgSchema::url`] is a database URL whose tables go into it.
#[derive(Debug)]
pub struct PgSchema {
    pub name: String,
    admin: String,
}

impl PgSchema {
    /// Creates a schema named `t_<random>` (panics, with psql's message, if it cannot).
    pub fn create() -> PgSchema {
        let schema = PgSchema {
            name: format!("t_{}", new_id().replace('-', "")),
            admin: pg_url(),
        };
        schema.psql(&format!("CREATE SCHEMA {}", schema.name));
        schema
    }

    /// The database URL of the server with this schema first on the search path.
    pub fn url(&self) -> String {
        format!("{}?options=-c%20search_path%3D{}", self.admin, self.name)
    }

    /// Runs `sql` with psql (unaligned, tuples only) and returns its output, trimmed; panics
    /// with psql's message if it fails.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([self.admin.as_str(), "-Atqc", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.admin.as_str(),
                "-qc",
                &format!("DROP SCHEMA {} CASCADE", self.name),
            ])
            .output();
    }
}
