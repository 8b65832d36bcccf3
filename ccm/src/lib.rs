#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout:
//! - [`model`]: the stored entities (features, models, functions, projects) and their checks.
//! - [`state`]: [`State`], all of them in memory, and every change as a checked method.
//! - [`transfer`]: a project exported as one JSON document, and imported back.
//! - [`apply`]: drives the CSM over MQTT (graph API, device API) so that it runs what the
//!   projects that are on say; [`apply::Live`] is the run-time view (devices, status, monitor).
//! - [`api`]: the REST API under `/api/`, its OpenAPI document, logins, event streams.
//! - [`assets`]: the web GUI's files, embedded in the binary.
//! - [`error`]: [`CcmError`], every refusal with its HTTP status.
//! - [`keys`]: the keymanager, an MQTT topic handler on `iottalk/km/req/<client>`
//!   (docs/keymanager.md), administered through `/api/keys` from the same machine.
//! - [`home`]: home scenes, an MQTT topic handler on `iottalk/home/cmd/<target>` (docs/home.md).
//!
//! [`Ccm`] is the handle shared by all of them: the state behind one lock, written through
//! to the database on every change ([`Ccm::mutate`]), and a kick to the applier.

pub mod api;
pub mod apply;
pub mod assets;
pub mod error;
pub mod home;
pub mod keys;
pub mod model;
pub mod state;
pub mod transfer;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use iot_auth::{Refusals, Users};
use iot_broker::BrokerHandle;
use iot_migrations::ccm::CcmDocRow;
use iot_migrations::Db;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use apply::Live;
pub use error::CcmError;
pub use state::State;

/// `[ccm]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CcmConfig {
    /// Where the REST API and the GUI listen.
    pub listen: String,
    /// The `<client>` level of the graph- and device-API topics the CCM uses.
    pub api_client: String,
    /// Largest request body, in bytes (an import, a function's code).
    pub max_body_bytes: usize,
    /// How long a GUI login lasts without use, in seconds.
    pub session_idle_seconds: u64,
}

impl Default for CcmConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7788".into(),
            api_client: "ccm".into(),
            max_body_bytes: 4 * 1024 * 1024,
            session_idle_seconds: 8 * 3600,
        }
    }
}

/// What the CCM is started with.
#[derive(Debug)]
pub struct Wiring {
    pub listener: tokio::net::TcpListener,
    /// The broker the CSM is on (embedded in this process, or a connection to it).
    pub broker: BrokerHandle,
    pub db: Db,
    /// Controller users when authentication is on: the API then needs an admin.
    pub users: Option<Users>,
    /// Refusal counters shared with the CSM's `/metrics`.
    pub refusals: Refusals,
    /// The home scenes handler's settings (`[home]`).
    pub home: home::HomeConfig,
    /// The keymanager's settings (`[keymanager]`).
    pub keys: keys::KeysConfig,
    /// The recent log lines `GET /logz` shows.
    pub logz: Arc<iot_auth::logz::LogRing>,
}

/// The shared handle.
#[derive(Debug, Clone)]
pub struct Ccm {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: CcmConfig,
    state: Mutex<State>,
    /// Held by [`Ccm::mutate`] from a change until it is stored.
    writer: tokio::sync::Mutex<()>,
    db: Arc<Mutex<Db>>,
    live: Arc<Live>,
    kick: Notify,
    users: Option<Users>,
    refusals: Refusals,
    sessions: api::session::Sessions,
    /// Counts stored changes; watched by the home handler (its retained catalog).
    changed: watch::Sender<u64>,
    home: OnceLock<Arc<home::service::Home>>,
    home_metrics: home::metrics::HomeMetrics,
    keys: OnceLock<Arc<keys::service::Keys>>,
    key_metrics: Arc<keys::metrics::KeyMetrics>,
    logz: OnceLock<Arc<iot_auth::logz::LogRing>>,
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Ccm {
    /// Loads the stored documents (after applying pending migrations).
    pub async fn open(
        cfg: CcmConfig,
        db: Db,
        users: Option<Users>,
        refusals: Refusals,
    ) -> Result<Ccm, CcmError> {
        let db = Arc::new(Mutex::new(db));
        let d = db.clone();
        let rows = tokio::task::spawn_blocking(move || {
            let mut db = d.lock().unwrap_or_else(PoisonError::into_inner);
            db.migrate()?;
            db.load_ccm_docs()
        })
        .await
        .map_err(|e| CcmError::Internal(format!("loading the CCM data: {e}")))??;
        let mut state = State::default();
        for r in &rows {
            state
                .load(&r.kind, &r.name, &r.doc)
                .map_err(CcmError::Internal)?;
        }
        state.take_touched();
        tracing::info!(
            ccm.projects = state.projects.len(),
            ccm.models = state.models.len(),
            ccm.functions = state.functions.len(),
            "CCM data loaded"
        );
        Ok(Ccm {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(state),
                writer: tokio::sync::Mutex::new(()),
                db,
                live: Arc::new(Live::default()),
                kick: Notify::new(),
                users,
                refusals,
                sessions: Default::default(),
                changed: watch::Sender::new(0),
                home: OnceLock::new(),
                home_metrics: Default::default(),
                keys: OnceLock::new(),
                key_metrics: Default::default(),
                logz: OnceLock::new(),
            }),
        })
    }

    pub fn config(&self) -> &CcmConfig {
        &self.inner.cfg
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.inner.live
    }

    pub fn users(&self) -> Option<&Users> {
        self.inner.users.as_ref()
    }

    pub fn refusals(&self) -> &Refusals {
        &self.inner.refusals
    }

    pub fn sessions(&self) -> &api::session::Sessions {
        &self.inner.sessions
    }

    /// The home handler, once started.
    pub fn home(&self) -> Option<&Arc<home::service::Home>> {
        self.inner.home.get()
    }

    pub fn home_metrics(&self) -> &home::metrics::HomeMetrics {
        &self.inner.home_metrics
    }

    /// The keymanager, once started.
    pub fn keys(&self) -> Option<&Arc<keys::service::Keys>> {
        self.inner.keys.get()
    }

    pub fn key_metrics(&self) -> &keys::metrics::KeyMetrics {
        &self.inner.key_metrics
    }

    /// The recent log lines, when started with them.
    pub fn logz(&self) -> Option<&Arc<iot_auth::logz::LogRing>> {
        self.inner.logz.get()
    }

    /// Changes whenever a change is stored.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Reads the state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Changes the state with `f`, writes the documents it touched, and tells the applier.
    /// When `f` refuses or the database write fails, nothing changes.
    pub async fn mutate<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, CcmError>,
    ) -> Result<T, CcmError> {
        // One writer at a time, from the change until it is stored: changes are stored in
        // the order they were made, and a failed write restores exactly the state before it.
        let _writer = self.inner.writer.lock().await;
        let (out, rows, deletes, backup) = {
            let mut s = self
                .inner
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let backup = s.clone();
            let out = match f(&mut s) {
                Ok(out) => out,
                Err(e) => {
                    *s = backup;
                    return Err(e);
                }
            };
            let now = now();
            let mut rows = Vec::new();
            let mut deletes = Vec::new();
            for (kind, name) in s.take_touched() {
                match s.doc(kind, &name) {
                    Some(doc) => rows.push(CcmDocRow {
                        kind: kind.as_str().into(),
                        name,
                        doc,
                        updated_time: now,
                    }),
                    None => deletes.push((kind.as_str().to_owned(), name)),
                }
            }
            (out, rows, deletes, backup)
        };
        let db = self.inner.db.clone();
        let written = tokio::task::spawn_blocking(move || {
            db.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write_ccm_docs(&rows, &deletes)
        })
        .await;
        match written {
            Ok(Ok(())) => {
                self.inner.kick.notify_one();
                self.inner.changed.send_modify(|n| *n += 1);
                Ok(out)
            }
            Ok(Err(e)) => {
                *self
                    .inner
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = backup;
                Err(e.into())
            }
            Err(e) => {
                *self
                    .inner
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = backup;
                Err(CcmError::Internal(format!("storing the change: {e}")))
            }
        }
    }

    /// Asks the applier to reconcile soon.
    pub fn kick(&self) {
        self.inner.kick.notify_one();
    }

    /// Waits for the next [`kick`](Self::kick) (the applier's loop).
    pub async fn kicked(&self) {
        self.inner.kick.notified().await;
    }
}

/// Starts the CCM: loads its data, serves the API and GUI on `wiring.listener`, and drives
/// the CSM through `wiring.broker` until `shutdown`.
pub async fn start(
    cfg: &CcmConfig,
    wiring: Wiring,
    shutdown: CancellationToken,
) -> Result<(Ccm, JoinHandle<()>), CcmError> {
    let ccm = Ccm::open(cfg.clone(), wiring.db, wiring.users, wiring.refusals).await?;
    let drivers = home::drivers::Drivers::connect(wiring.broker.clone(), &cfg.api_client)
        .await
        .map_err(CcmError::Internal)?;
    let handler = Arc::new(
        home::service::Home::new(wiring.home, ccm.clone(), drivers).map_err(CcmError::Invalid)?,
    );
    let _ = ccm.inner.home.set(handler.clone());
    let _ = ccm.inner.logz.set(wiring.logz.clone());
    let km = keys::service::Keys::start(
        &wiring.keys,
        ccm.inner.db.clone(),
        ccm.inner.key_metrics.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(CcmError::Invalid)?;
    let _ = ccm.inner.keys.set(km.clone());
    let key_requests = tokio::spawn(keys::service::serve(
        km,
        wiring.broker.clone(),
        shutdown.clone(),
    ));
    let homes = tokio::spawn(home::service::serve(
        handler,
        wiring.broker.clone(),
        shutdown.clone(),
    ));
    let applier = tokio::spawn(apply::run(ccm.clone(), wiring.broker, shutdown.clone()));
    let server = api::serve(ccm.clone(), wiring.listener, shutdown.clone());
    let task = tokio::spawn(async move {
        server.await;
        let _ = applier.await;
        let _ = homes.await;
        let _ = key_requests.await;
    });
    Ok((ccm, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(url: &str) -> Ccm {
        let db = Db::connect(url).unwrap();
        Ccm::open(CcmConfig::default(), db, None, Refusals::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_refused_change_leaves_nothing_and_a_stored_one_is_there_after_a_reopen() {
        let dir = std::env::temp_dir().join(format!("ccm-test-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/ccm.db", dir.display());
        let ccm = open(&url).await;
        let p = ccm.mutate(|s| s.create_project("a", true)).await.unwrap();
        // A change that fails half-way: the project it renamed first is back as it was.
        let err = ccm
            .mutate(move |s| {
                s.update_project(p.id, Some("b"), None, None)?;
                s.add_object(p.id, "no such model")
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid");
        assert_eq!(ccm.read(|s| s.project(p.id).unwrap().name.clone()), "a");
        drop(ccm);
        let again = open(&url).await;
        let names: Vec<String> =
            again.read(|s| s.projects.values().map(|p| p.name.clone()).collect());
        assert_eq!(names, ["a"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
