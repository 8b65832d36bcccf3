//! The keymanager's tables: `km_store` (the key store as one document of ciphertexts) and
//! `km_audit` (what was asked and done, never a value).

use diesel::prelude::*;

use crate::schema::{km_audit, km_store};
use crate::{Db, DbError};

/// The one row name of `km_store`.
const STORE: &str = "store";

/// One audit record.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = km_audit)]
pub struct KmAuditRow {
    /// A random id (uuid, simple form).
    pub id: String,
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// `request`, `init`, `put`, `rm`, `client_add`, `client_rm`, `seal`, `unseal`, `rotate`,
    /// `panic`.
    pub action: String,
    /// The keymanager client (empty for an admin action on no client).
    pub client: String,
    pub key_name: String,
    /// `ok`, or the error code (`denied`, `replay`, `wrong_password`, ...).
    pub result: String,
    /// The MQTT client id or the admin user it came from.
    pub mqtt_client: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = km_store)]
struct StoreRow {
    name: String,
    doc: String,
    updated_time: f64,
}

impl Db {
    /// The stored key store document, if `iotctl key init` ran.
    pub fn load_km_store(&mut self) -> Result<Option<String>, DbError> {
        Ok(km_store::table
            .find(STORE)
            .select(km_store::doc)
            .first(self.conn())
            .optional()?)
    }

    /// Writes the key store document.
    pub fn write_km_store(&mut self, doc: &str, now: f64) -> Result<(), DbError> {
        let row = StoreRow {
            name: STORE.into(),
            doc: doc.into(),
            updated_time: now,
        };
        self.conn().transaction::<_, DbError, _>(|c| {
            let n = diesel::update(km_store::table.find(STORE))
                .set(&row)
                .execute(c)?;
            if n == 0 {
                diesel::insert_into(km_store::table)
                    .values(&row)
                    .execute(c)?;
            }
            Ok(())
        })
    }

    /// Appends records, in one transaction (one insert each: the backends share no batch
    /// insert).
    pub fn append_km_audit(&mut self, rows: &[KmAuditRow]) -> Result<(), DbError> {
        self.conn().transaction::<_, DbError, _>(|c| {
            for row in rows {
                diesel::insert_into(km_audit::table)
                    .values(row)
                    .execute(c)?;
            }
            Ok(())
        })
    }

    /// The newest `limit` records, of `client` only when given.
    pub fn load_km_audit(
        &mut self,
        limit: i64,
        client: Option<&str>,
    ) -> Result<Vec<KmAuditRow>, DbError> {
        let mut q = km_audit::table
            .select(KmAuditRow::as_select())
            .order((km_audit::time.desc(), km_audit::id.desc()))
            .limit(limit)
            .into_boxed();
        if let Some(c) = client {
            q = q.filter(km_audit::client.eq(c.to_owned()));
        }
        Ok(q.load(self.conn())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, time: f64, client: &str) -> KmAuditRow {
        KmAuditRow {
            id: id.into(),
            time,
            action: "request".into(),
            client: client.into(),
            key_name: "db".into(),
            result: "ok".into(),
            mqtt_client: "m1".into(),
        }
    }

    #[test]
    fn the_store_document_and_the_audit_trail() {
        let mut db = Db::connect("sqlite://:memory:").unwrap();
        db.migrate().unwrap();
        assert_eq!(db.load_km_store().unwrap(), None);
        db.write_km_store("{\"a\":1}", 1.0).unwrap();
        db.write_km_store("{\"a\":2}", 2.0).unwrap();
        assert_eq!(db.load_km_store().unwrap().as_deref(), Some("{\"a\":2}"));
        db.append_km_audit(&[row("1", 1.0, "a"), row("2", 2.0, "b"), row("3", 3.0, "a")])
            .unwrap();
        let newest: Vec<String> = db
            .load_km_audit(2, None)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(newest, ["3", "2"]);
        let of_a: Vec<String> = db
            .load_km_audit(10, Some("a"))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(of_a, ["3", "1"]);
    }
}
