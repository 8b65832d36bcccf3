//! Rows of the `users` table: controller users managed with `iotctl user`. The password is
//! stored only as an Argon2id PHC string, hashed and checked by the `iot-auth` crate.

use diesel::prelude::*;

use crate::schema::users;
use crate::{Db, DbError};

#[derive(Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub name: String,
    /// `admin` or `app` (see `iot_proto::auth::Role`).
    pub role: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Seconds since the Unix epoch.
    pub created_time: f64,
}

// Not derived: the hash stays out of logs and error messages.
impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Every user, by name.
    pub fn load_users(&mut self) -> Result<Vec<UserRow>, DbError> {
        Ok(users::table
            .select(UserRow::as_select())
            .order(users::name)
            .load(self.conn())?)
    }

    /// Adds a user; `Ok(false)` when one of that name exists (nothing is changed).
    pub fn insert_user(&mut self, row: &UserRow) -> Result<bool, DbError> {
        let exists = users::table
            .find(&row.name)
            .count()
            .get_result::<i64>(self.conn())?
            > 0;
        if exists {
            return Ok(false);
        }
        diesel::insert_into(users::table)
            .values(row)
            .execute(self.conn())?;
        Ok(true)
    }

    /// Removes a user; `Ok(false)` when there is none of that name.
    pub fn delete_user(&mut self, name: &str) -> Result<bool, DbError> {
        Ok(diesel::delete(users::table.find(name)).execute(self.conn())? > 0)
    }

    /// Replaces a user's password hash; `Ok(false)` when there is no user of that name.
    pub fn set_user_password(&mut self, name: &str, password_hash: &str) -> Result<bool, DbError> {
        Ok(diesel::update(users::table.find(name))
            .set(users::password_hash.eq(password_hash))
            .execute(self.conn())?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> UserRow {
        UserRow {
            name: name.into(),
            role: "admin".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            created_time: 1.5,
        }
    }

    #[test]
    fn users_are_added_once_changed_and_removed() {
        let mut db = Db::connect("sqlite://:memory:").unwrap();
        db.migrate().unwrap();
        assert!(db.insert_user(&row("bob")).unwrap());
        assert!(!db.insert_user(&row("bob")).unwrap(), "a second bob");
        assert!(db.insert_user(&row("alice")).unwrap());
        let names: Vec<_> = db
            .load_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(db.set_user_password("bob", "x").unwrap());
        assert!(!db.set_user_password("carol", "x").unwrap());
        assert!(db.delete_user("bob").unwrap());
        assert!(!db.delete_user("bob").unwrap());
        assert_eq!(db.load_users().unwrap().len(), 1);
        assert!(
            !format!("{:?}", row("x")).contains("argon2"),
            "hash in Debug"
        );
    }
}
