//! The keymanager at run time: the store behind a lock (sealed at start), the MQTT loop on
//! `iottalk/km/req/+` answering on `iottalk/km/res/<CLIENT>`, the admin operations the REST
//! API calls (init, unseal, seal, rotate, put, rm, clients), the store written through to the
//! database on every change, and the audit trail (every request and admin action, never a
//! value), written in batches by a task of its own.
//!
//! Locks: `store` then `guard`, never held across an `.await`; `writer` (async) orders admin
//! changes and runs one key derivation (64 MiB or more) at a time.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use iot_broker::{BrokerHandle, Message};
use iot_migrations::keys::KmAuditRow;
use iot_migrations::Db;
use iot_proto::km;
use iot_proto::log::Escaped;
use iot_proto::QoS;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::crypto::{self, KdfParams};
use super::handler;
use super::metrics::KeyMetrics;
use super::request::Guard;
use super::store::{KeyStore, StoreError, Stored};
use super::KeysConfig;

/// Audit records waiting to be written; a full queue slows the request loop down.
const AUDIT_QUEUE: usize = 4096;
/// Records written in one transaction at most.
const AUDIT_BATCH: usize = 256;

/// What `iotctl key status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub initialised: bool,
    pub sealed: bool,
    pub keys: usize,
    pub clients: usize,
}

/// Why an admin operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("storing the key store failed: {0}")]
    Storage(String),
    #[error("the key store was sealed while the password was checked: unseal again")]
    SealedMeanwhile,
}

/// The keymanager.
#[derive(Debug)]
pub struct Keys {
    params: KdfParams,
    store: Mutex<KeyStore>,
    guard: Mutex<Guard>,
    writer: tokio::sync::Mutex<()>,
    db: Arc<Mutex<Db>>,
    audit: mpsc::Sender<KmAuditRow>,
    metrics: Arc<KeyMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `s` with control characters escaped, cut to the `n` characters its column holds.
fn clip(s: &str, n: usize) -> String {
    s.escape_debug().take(n).collect()
}

/// An audit record, every field fitting its column (`km_audit`): a client name comes from a
/// topic, an MQTT client id from anyone.
fn record(action: &str, client: &str, key: &str, result: &str, from: &str) -> KmAuditRow {
    KmAuditRow {
        id: uuid::Uuid::new_v4().simple().to_string(),
        time: crate::now(),
        action: clip(action, 16),
        client: clip(client, 64),
        key_name: clip(key, 64),
        result: clip(result, 16),
        mqtt_client: clip(from, 128),
    }
}

/// The audit `result` of a refused admin operation.
fn error_code(e: &KeyError) -> &'static str {
    match e {
        KeyError::Store(s) => match s {
            StoreError::NotInitialised => "not_initialised",
            StoreError::AlreadyInitialised => "already_init",
            StoreError::Sealed => "sealed",
            StoreError::WrongPassword => "wrong_password",
            StoreError::NoKey(_) => "no_key",
            StoreError::NoClient(_) => "no_client",
            StoreError::Name(_) => "bad_name",
            StoreError::Crypto(_) => "crypto",
        },
        KeyError::Storage(_) => "storage",
        KeyError::SealedMeanwhile => "sealed_meanwhile",
    }
}

impl Keys {
    /// Loads the store (sealed) and starts the audit writer; the request loop is [`serve`].
    pub async fn start(
        cfg: &KeysConfig,
        db: Arc<Mutex<Db>>,
        metrics: Arc<KeyMetrics>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Keys>, String> {
        let limits = cfg.check()?;
        let params = cfg.kdf_params()?;
        let d = db.clone();
        let doc = tokio::task::spawn_blocking(move || lock(&d).load_km_store())
            .await
            .map_err(|e| format!("loading the key store: {e}"))?
            .map_err(|e| format!("loading the key store: {e}"))?;
        let stored: Option<Stored> = match doc {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                format!("the key store in the database cannot be read ({e}): restore a backup")
            })?),
            None => None,
        };
        metrics.state(stored.is_some(), true);
        let (audit, queue) = mpsc::channel(AUDIT_QUEUE);
        tokio::spawn(write_audit(queue, db.clone(), metrics.clone(), shutdown));
        Ok(Arc::new(Keys {
            params,
            store: Mutex::new(KeyStore::loaded(stored)),
            // Requests made before this start are refused (`replay`): the replay memory of
            // the process before is gone.
            guard: Mutex::new(Guard::new(limits).not_before(crate::now() as i64)),
            writer: tokio::sync::Mutex::new(()),
            db,
            audit,
            metrics,
        }))
    }

    pub fn status(&self) -> Status {
        let s = lock(&self.store);
        Status {
            initialised: s.stored().is_some(),
            sealed: s.is_sealed(),
            keys: s.stored().map_or(0, |st| st.secrets.len()),
            clients: s.stored().map_or(0, |st| st.clients.len()),
        }
    }

    /// Key names and when each changed.
    pub fn names(&self) -> Vec<(String, f64)> {
        lock(&self.store).names()
    }

    /// Clients, the keys each may read, when each changed.
    pub fn clients(&self) -> Vec<(String, BTreeSet<String>, f64)> {
        lock(&self.store).clients()
    }

    fn show_state(&self) {
        let s = lock(&self.store);
        self.metrics.state(s.stored().is_some(), s.is_sealed());
    }

    async fn audit(&self, row: KmAuditRow) {
        if self.audit.send(row).await.is_err() {
            self.metrics.audit_failed(1);
        }
    }

    /// Writes the store after a change by `f`; when `f` refuses or the write fails, nothing
    /// changes. Audited as `action` either way.
    async fn change(
        &self,
        action: &str,
        (client, key, who): (&str, &str, &str),
        f: impl FnOnce(&mut KeyStore) -> Result<(), StoreError>,
    ) -> Result<(), KeyError> {
        let _writer = self.writer.lock().await;
        let result = self.change_locked(f).await;
        let code = result.as_ref().err().map_or("ok", error_code);
        self.audit(record(action, client, key, code, who)).await;
        self.show_state();
        result
    }

    async fn change_locked(
        &self,
        f: impl FnOnce(&mut KeyStore) -> Result<(), StoreError>,
    ) -> Result<(), KeyError> {
        let (backup, doc) = {
            let mut s = lock(&self.store);
            let backup = s.clone();
            f(&mut s)?;
            let doc =
                serde_json::to_string(&s.stored()).map_err(|e| KeyError::Storage(e.to_string()))?;
            (backup, doc)
        };
        let db = self.db.clone();
        let written =
            tokio::task::spawn_blocking(move || lock(&db).write_km_store(&doc, crate::now())).await;
        let failed = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(error = %failed, "keymanager: the key store could not be written");
        lock(&self.store).restore(backup);
        Err(KeyError::Storage(failed))
    }

    /// Creates the store with `password`; it is unsealed afterwards.
    pub async fn init(&self, password: Zeroizing<String>, who: &str) -> Result<(), KeyError> {
        let _writer = self.writer.lock().await;
        let result = self.init_locked(password).await;
        let code = result.as_ref().err().map_or("ok", error_code);
        self.audit(record("init", "", "", code, who)).await;
        self.show_state();
        if result.is_ok() {
            tracing::info!("keymanager: key store created (unsealed)");
        }
        result
    }

    async fn init_locked(&self, password: Zeroizing<String>) -> Result<(), KeyError> {
        if lock(&self.store).stored().is_some() {
            return Err(StoreError::AlreadyInitialised.into());
        }
        let params = self.params;
        let fresh = tokio::task::spawn_blocking(move || {
            KeyStore::fresh(password.as_bytes(), params, crate::now())
        })
        .await
        .map_err(|e| KeyError::Storage(e.to_string()))??;
        self.change_locked(move |s| s.install(fresh)).await
    }

    /// Derives the KEK of `password` for the stored salt and parameters, off the async
    /// threads.
    async fn derive(&self, password: Zeroizing<String>) -> Result<crypto::Key, KeyError> {
        let (salt, params) = lock(&self.store).kdf_input()?;
        tokio::task::spawn_blocking(move || crypto::derive_kek(password.as_bytes(), &salt, params))
            .await
            .map_err(|e| KeyError::Storage(e.to_string()))?
            .map_err(|e| KeyError::Store(e.into()))
    }

    /// Unseals with `password`; a wrong one is refused, counted and audited.
    pub async fn unseal(&self, password: Zeroizing<String>, who: &str) -> Result<(), KeyError> {
        let _writer = self.writer.lock().await;
        let seals = lock(&self.store).seals();
        let result = match self.derive(password).await {
            // Sealed while the password was checked (by an operator or panic mode): that
            // seal stands.
            Ok(kek) => {
                let mut store = lock(&self.store);
                if store.seals() == seals {
                    store.unseal_with(kek).map_err(KeyError::from)
                } else {
                    Err(KeyError::SealedMeanwhile)
                }
            }
            Err(e) => Err(e),
        };
        let code = result.as_ref().err().map_or("ok", error_code);
        if code == "wrong_password" {
            self.metrics.unseal_failed();
            tracing::warn!(keymanager.by = %Escaped(who), "keymanager: unseal refused: wrong password");
        } else if code == "ok" {
            tracing::info!(keymanager.by = %Escaped(who), "keymanager: unsealed");
        }
        self.audit(record("unseal", "", "", code, who)).await;
        self.show_state();
        result
    }

    /// Seals: the KEK is wiped from memory.
    pub async fn seal(&self, who: &str) {
        lock(&self.store).seal();
        tracing::info!(keymanager.by = %Escaped(who), "keymanager: sealed");
        self.audit(record("seal", "", "", "ok", who)).await;
        self.show_state();
    }

    /// Changes the unseal password: every record sealed again under a new KEK with a new
    /// salt. `current` must be right.
    pub async fn rotate(
        &self,
        current: Zeroizing<String>,
        next: Zeroizing<String>,
        who: &str,
    ) -> Result<(), KeyError> {
        let _writer = self.writer.lock().await;
        let result = self.rotate_locked(current, next).await;
        let code = result.as_ref().err().map_or("ok", error_code);
        if code == "wrong_password" {
            self.metrics.unseal_failed();
        }
        self.audit(record("rotate", "", "", code, who)).await;
        self.show_state();
        result
    }

    async fn rotate_locked(
        &self,
        current: Zeroizing<String>,
        next: Zeroizing<String>,
    ) -> Result<(), KeyError> {
        let old = self.derive(current).await?;
        let params = self.params;
        let salt = crypto::random::<16>().to_vec();
        let s2 = salt.clone();
        let new =
            tokio::task::spawn_blocking(move || crypto::derive_kek(next.as_bytes(), &s2, params))
                .await
                .map_err(|e| KeyError::Storage(e.to_string()))?
                .map_err(|e| KeyError::Store(e.into()))?;
        self.change_locked(move |s| s.rekey(&old, new, salt, params, crate::now()))
            .await
    }

    pub async fn put(
        &self,
        name: &str,
        value: Zeroizing<Vec<u8>>,
        who: &str,
    ) -> Result<(), KeyError> {
        self.change("put", ("", name, who), |s| {
            s.put(name, &value, crate::now())
        })
        .await
    }

    pub async fn remove(&self, name: &str, who: &str) -> Result<(), KeyError> {
        self.change("rm", ("", name, who), |s| s.remove(name)).await
    }

    pub async fn add_client(
        &self,
        name: &str,
        machine_id: &str,
        keys: BTreeSet<String>,
        password: Zeroizing<String>,
        who: &str,
    ) -> Result<(), KeyError> {
        self.change("client_add", (name, "", who), |s| {
            s.add_client(name, machine_id, keys, &password, crate::now())
        })
        .await
    }

    pub async fn remove_client(&self, name: &str, who: &str) -> Result<(), KeyError> {
        self.change("client_rm", (name, "", who), |s| s.remove_client(name))
            .await
    }

    /// The newest `limit` audit records, of `client` only when given.
    pub async fn audit_trail(
        &self,
        limit: i64,
        client: Option<String>,
    ) -> Result<Vec<KmAuditRow>, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || lock(&db).load_km_audit(limit, client.as_deref()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// One message on a request topic: the checks, the reply (published on `broker`), the
    /// audit record; panic mode seals the store.
    pub async fn handle(&self, msg: &Message, broker: &BrokerHandle) {
        let Some(client) = km::client_of_req(&msg.topic) else {
            return;
        };
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let outcome = {
            let store = lock(&self.store);
            let mut guard = lock(&self.guard);
            handler::answer(
                &msg.topic,
                &msg.payload,
                &store,
                &mut guard,
                now_unix,
                Instant::now(),
            )
        };
        let Some(o) = outcome else {
            return;
        };
        if o.panic {
            // At once, before anything that can wait.
            lock(&self.store).seal();
            self.metrics.panicked();
            self.show_state();
            tracing::error!(
                keymanager.client = %Escaped(client),
                "keymanager: panic mode: too many denied requests, the key store is sealed"
            );
        }
        // Who sent it, as the broker knows it: the user (when authentication is on) and the
        // MQTT client id.
        let from = msg.from.as_ref().map_or_else(
            || "(external)".to_owned(),
            |p| match &p.username {
                Some(u) => format!("{u}@{}", p.client_id),
                None => p.client_id.clone(),
            },
        );
        self.metrics.request(o.result);
        self.audit(record("request", client, &o.key, o.result, &from))
            .await;
        if o.panic {
            self.audit(record("panic", client, &o.key, "sealed", &from))
                .await;
        }
        if let Some(reply) = o.reply {
            let m = Message::new(km::res(client), reply.to_string(), QoS::AtLeastOnce, false);
            if let Err(e) = broker.publish(m).await {
                tracing::warn!(error = %e, "keymanager: cannot publish a reply");
            }
        }
    }
}

/// Writes audit records in batches until the queue closes or `shutdown` (then what is queued
/// is still written).
async fn write_audit(
    mut queue: mpsc::Receiver<KmAuditRow>,
    db: Arc<Mutex<Db>>,
    metrics: Arc<KeyMetrics>,
    shutdown: CancellationToken,
) {
    let mut stopping = false;
    loop {
        let first = if stopping {
            None
        } else {
            tokio::select! {
                r = queue.recv() => r,
                () = shutdown.cancelled() => { stopping = true; None }
            }
        };
        let mut batch: Vec<KmAuditRow> = first.into_iter().collect();
        while batch.len() < AUDIT_BATCH {
            match queue.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            if stopping || queue.is_closed() {
                return;
            }
            continue;
        }
        let d = db.clone();
        // A batch that fails is written again record by record: one bad record loses itself
        // only.
        let failed = tokio::task::spawn_blocking(move || {
            if lock(&d).append_km_audit(&batch).is_ok() {
                return 0;
            }
            // Record by record, the lock released in between; after a few failures in a
            // row the database is down rather than a record bad: give the rest up.
            let (mut failed, mut in_a_row) = (0u64, 0);
            for (i, one) in batch.chunks(1).enumerate() {
                if lock(&d).append_km_audit(one).is_ok() {
                    in_a_row = 0;
                    continue;
                }
                failed += 1;
                in_a_row += 1;
                if in_a_row == 3 {
                    return failed + (batch.len() - i - 1) as u64;
                }
            }
            failed
        })
        .await
        .unwrap_or(1);
        if failed > 0 {
            metrics.audit_failed(failed);
            tracing::error!("keymanager: {failed} audit records could not be written");
        }
    }
}

/// Answers key requests on `broker` until `shutdown`.
pub async fn serve(keys: Arc<Keys>, broker: BrokerHandle, shutdown: CancellationToken) {
    let mut sub = match broker.subscribe(km::REQ_FILTER, 1024).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "keymanager: cannot subscribe to requests");
            return;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            msg = sub.recv() => match msg {
                Some(m) => keys.handle(&m, &broker).await,
                None => break,
            },
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
