//! [`Users`]: the controller users in memory, as the broker and HTTP handlers see them. A std
//! `RwLock` because lookups happen on broker connection tasks and never `.await` while holding
//! it; the slow part (an Argon2 verification) runs with the lock released.
//!
//! The store is a copy of the `users` table, reloaded every few seconds by
//! [`Users::load_and_reload`], so `iotctl user add/rm/passwd` in another process takes effect in a
//! running controller without a restart.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use iot_migrations::users::UserRow;
use iot_migrations::Db;
use iot_proto::auth::{Role, Roles};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::password;
use iot_proto::log::Escaped;

/// How often a running controller re-reads the `users` table.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Entry {
    role: Role,
    phc: String,
    /// sha256 of the last password that verified against `phc`: a client reconnecting with
    /// the same password is checked in microseconds instead of an Argon2 run.
    verified: Option<[u8; 32]>,
}

/// How many Argon2 verifications run at once (each takes tens of milliseconds of one core
/// and 19 MiB): a flood of wrong passwords waits here instead of taking every core.
const ARGON2_AT_ONCE: usize = 2;

/// The controller users, by name. Cheap to clone: clones share one table.
#[derive(Clone)]
pub struct Users {
    table: Arc<RwLock<HashMap<String, Entry>>>,
    /// Permits for Argon2 runs from async code ([`Users::check_async`]).
    argon2: Arc<Semaphore>,
}

impl Default for Users {
    fn default() -> Self {
        Self {
            table: Arc::default(),
            argon2: Arc::new(Semaphore::new(ARGON2_AT_ONCE)),
        }
    }
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("len", &self.len()).finish()
    }
}

impl Users {
    /// Replaces the table with `rows`; rows with an unknown role are skipped (and logged).
    /// Verification memos of users whose hash did not change are kept.
    pub fn replace(&self, rows: Vec<UserRow>) {
        let mut map = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::with_capacity(rows.len());
        for row in rows {
            let Ok(role) = row.role.parse::<Role>() else {
                tracing::warn!(user = ?row.name, role = ?row.role, "user with an unknown role ignored");
                continue;
            };
            let verified = map
                .get(&row.name)
                .filter(|e| e.phc == row.password_hash)
                .and_then(|e| e.verified);
            next.insert(
                row.name,
                Entry {
                    role,
                    phc: row.password_hash,
                    verified,
                },
            );
        }
        *map = next;
    }

    pub fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a user of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(name)
    }

    /// The role of `name` if `password` is theirs. Blocks for one Argon2 verification (tens
    /// of milliseconds) unless the same password verified before.
    pub fn check(&self, name: &str, password: &[u8]) -> Option<Role> {
        let digest: [u8; 32] = Sha256::digest(password).into();
        let entry = self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()?;
        if let Some(v) = entry.verified {
            if bool::from(v.ct_eq(&digest)) {
                return Some(entry.role);
            }
        }
        if !password::verify(&entry.phc, password) {
            return None;
        }
        let mut map = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(name).filter(|e| e.phc == entry.phc) {
            e.verified = Some(digest);
        }
        Some(entry.role)
    }

    /// [`Users::check`] from async code: a memoised password answers at once; an Argon2 run
    /// waits for one of a few permits and runs on a blocking thread, never on the async
    /// threads that route messages.
    pub async fn check_async(&self, name: &str, password: Vec<u8>) -> Option<Role> {
        let password = zeroize::Zeroizing::new(password);
        if let Some(role) = self.memoised(name, &password) {
            return Some(role);
        }
        let _permit = self.argon2.acquire().await.ok()?;
        let (users, name) = (self.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || users.check(&name, &password))
            .await
            .ok()
            .flatten()
    }

    /// The role of `name` if `password` is the one that last verified for it.
    fn memoised(&self, name: &str, password: &[u8]) -> Option<Role> {
        let digest: [u8; 32] = Sha256::digest(password).into();
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let entry = table.get(name)?;
        let v = entry.verified?;
        bool::from(v.ct_eq(&digest)).then_some(entry.role)
    }

    /// Loads the table from the database at `url` now, then every [`RELOAD_EVERY`] until
    /// `shutdown`. A failed reload keeps the users loaded before (and is logged once until
    /// it works again).
    pub async fn load_and_reload(
        &self,
        url: String,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, iot_migrations::DbError> {
        let (db, rows) = tokio::task::spawn_blocking(move || {
            let mut db = Db::connect(&url)?;
            db.migrate()?;
            let rows = db.load_users()?;
            Ok::<_, iot_migrations::DbError>((db, rows))
        })
        .await
        .map_err(|e| iot_migrations::DbError::Corrupt(format!("user loader: {e}")))??;
        self.replace(rows);
        let users = self.clone();
        Ok(tokio::spawn(users.reload_loop(db, shutdown)))
    }

    async fn reload_loop(self, db: Db, shutdown: CancellationToken) {
        let mut db = Some(db);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            let Some(mut conn) = db.take() else { return };
            let joined = tokio::task::spawn_blocking(move || {
                let rows = conn.load_users();
                (conn, rows)
            })
            .await;
            let Ok((conn, rows)) = joined else { return };
            db = Some(conn);
            match rows {
                Ok(rows) => {
                    failing = false;
                    self.replace(rows);
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %Escaped(&e), "cannot reload users; keeping the ones loaded before");
                }
                Err(_) => {}
            }
        }
    }
}

impl Roles for Users {
    fn role(&self, username: &str) -> Option<Role> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(username)
            .map(|e| e.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, role: &str, password: &[u8]) -> UserRow {
        UserRow {
            name: name.into(),
            role: role.into(),
            password_hash: password::hash(password).unwrap(),
            created_time: 0.0,
        }
    }

    #[test]
    fn check_gives_the_role_for_the_right_password_only() {
        let users = Users::default();
        users.replace(vec![
            row("ops", "admin", b"pw-ops"),
            row("app1", "app", b"pw-app"),
            row("odd", "root", b"x"),
        ]);
        assert_eq!(users.len(), 2, "unknown role skipped");
        assert_eq!(users.check("ops", b"pw-ops"), Some(Role::Admin));
        // Second time from the memo, same answer; a wrong password still fails after it.
        assert_eq!(users.check("ops", b"pw-ops"), Some(Role::Admin));
        assert_eq!(users.check("ops", b"pw-app"), None);
        assert_eq!(users.check("app1", b"pw-app"), Some(Role::App));
        assert_eq!(users.check("nobody", b"pw-app"), None);
        assert_eq!(users.role("app1"), Some(Role::App));
        assert_eq!(users.role("odd"), None);
    }

    #[test]
    fn a_changed_password_forgets_the_old_one() {
        let users = Users::default();
        users.replace(vec![row("ops", "admin", b"old")]);
        assert!(users.check("ops", b"old").is_some());
        users.replace(vec![row("ops", "admin", b"new")]);
        assert_eq!(
            users.check("ops", b"old"),
            None,
            "memo of the old hash kept"
        );
        assert!(users.check("ops", b"new").is_some());
        users.replace(vec![]);
        assert_eq!(
            users.check("ops", b"new"),
            None,
            "removed user still accepted"
        );
    }

    #[tokio::test]
    async fn a_running_store_sees_users_added_in_the_database() {
        let dir = std::env::temp_dir().join(format!("iot-auth-{}", std::process::id()));
        let url = format!("sqlite://{}/u.db", dir.display());
        let users = Users::default();
        let stop = CancellationToken::new();
        let task = users
            .load_and_reload(url.clone(), stop.clone())
            .await
            .unwrap();
        assert!(users.is_empty());
        let mut db = Db::connect(&url).unwrap();
        assert!(db.insert_user(&row("late", "app", b"pw")).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !users.contains("late") {
            assert!(std::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        task.await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
