//! The keymanager's service on a real SQLite database: persistence, a failed write undone
//! with the key, the audit trail, and audit records cut to their columns.

use diesel::RunQueryDsl;

use super::*;

fn db_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}/km.db", dir.display())
}

async fn open(url: &str, cfg: &KeysConfig) -> Arc<Keys> {
    let mut db = Db::connect(url).unwrap();
    db.migrate().unwrap();
    Keys::start(
        cfg,
        Arc::new(Mutex::new(db)),
        Arc::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

fn pw(s: &str) -> Zeroizing<String> {
    Zeroizing::new(s.to_owned())
}

fn value(k: &Keys, name: &str) -> Result<Vec<u8>, StoreError> {
    lock(&k.store).value(name).map(|v| v.to_vec())
}

#[tokio::test]
async fn the_store_survives_a_reopen_sealed_and_a_failed_write_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("km-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = db_url(&dir);
    let cfg = KeysConfig::default();
    let k = open(&url, &cfg).await;
    k.init(pw("first"), "test").await.unwrap();
    k.put("db", Zeroizing::new(b"hunter2".to_vec()), "test")
        .await
        .unwrap();
    drop(k);

    let k = open(&url, &cfg).await;
    assert!(k.status().sealed && k.status().initialised);
    assert_eq!(value(&k, "db"), Err(StoreError::Sealed));
    assert_eq!(
        k.unseal(pw("wrong"), "test").await,
        Err(KeyError::Store(StoreError::WrongPassword))
    );
    k.unseal(pw("first"), "test").await.unwrap();
    assert_eq!(value(&k, "db").unwrap(), b"hunter2");

    // The database refuses every write from now on: a rotation is refused, and memory keeps
    // the old records with the old key (the store still opens what it holds).
    let mut other = Db::connect(&url).unwrap();
    diesel::sql_query("DROP TABLE km_store")
        .execute(other.conn())
        .unwrap();
    let rotated = k.rotate(pw("first"), pw("second"), "test").await;
    assert!(matches!(rotated, Err(KeyError::Storage(_))), "{rotated:?}");
    assert!(!k.status().sealed);
    assert_eq!(value(&k, "db").unwrap(), b"hunter2");
    let put = k.put("new", Zeroizing::new(b"v".to_vec()), "test").await;
    assert!(matches!(put, Err(KeyError::Storage(_))), "{put:?}");
    assert_eq!(value(&k, "new"), Err(StoreError::NoKey("new".into())));
    // Sealed meanwhile, a restore keeps it sealed.
    k.seal("test").await;
    let put = k.put("new", Zeroizing::new(b"v".to_vec()), "test").await;
    assert_eq!(put, Err(KeyError::Store(StoreError::Sealed)));
    assert!(k.status().sealed);

    // The audit trail has every action, newest first (written in the background).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let rows = loop {
        let rows = k.audit_trail(100, None).await.unwrap();
        if rows.len() >= 8 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.action.clone(), r.result.clone()))
        .collect();
    for want in [
        ("init", "ok"),
        ("put", "ok"),
        ("unseal", "wrong_password"),
        ("unseal", "ok"),
        ("rotate", "storage"),
        ("put", "storage"),
        ("seal", "ok"),
        ("put", "sealed"),
    ] {
        assert!(
            seen.contains(&(want.0.to_owned(), want.1.to_owned())),
            "no {want:?} in {seen:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn audit_records_fit_their_columns() {
    let long = "é".repeat(300);
    let r = record(
        "request",
        &long,
        &long,
        "already_init",
        &format!("\n{long}"),
    );
    assert_eq!(r.client.chars().count(), 64);
    assert_eq!(r.key_name.chars().count(), 64);
    assert_eq!(r.mqtt_client.chars().count(), 128);
    assert!(r.mqtt_client.starts_with("\\n"), "{}", r.mqtt_client);
    for e in [
        StoreError::NotInitialised,
        StoreError::AlreadyInitialised,
        StoreError::WrongPassword,
        StoreError::Name("x".into()),
    ] {
        assert!(error_code(&KeyError::Store(e)).len() <= 16);
    }
}
