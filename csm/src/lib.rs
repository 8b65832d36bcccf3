#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout (imports point down this list, never up):
//! - [`http`]: the axum router of the registration API and the operator endpoints; asks the
//!   actor through [`CsmHandle`].
//! - [`actor`]: the one task that owns the state and carries out its effects; [`checks`]:
//!   the `add_funcs` compilations it runs beside itself.
//! - [`coordinator`]: the state, registry and graph store together, and what concerns both.
//! - [`registry`]: the protocol rules of DAs (registration, presence, links, device and
//!   ODF-write APIs) as a state machine returning effects; knows nothing of graphs.
//! - [`graphs`]: the graph API ops on the graph store, one file per op; knows nothing of the
//!   registry (it asks through `graphs::Links`).
//! - [`engine`]: one task per graph routing data through its functions, following its
//!   [`plan`]; never touches the state.
//! - [`funcs`]: Rhai in-process, Python in worker processes.
//! - [`effect`], [`plan`]: what the state machines hand to the actor and to the engine.
//! - [`acl`]: the topic ACL (who may publish and subscribe where) and the DAs' link grants.
//! - [`store`]: the database writer thread. [`credentials`]: per-DA broker credentials.
//!   [`rate`]: the per-address registration rate limit.
//!   [`metrics`]: `/metrics` and `/varz`. [`error`]: the error types and their HTTP mapping.
//!   [`serve`]: the HTTP(S) server loop (`csm.tls`, `csm.header_timeout_ms`).

pub mod acl;
pub mod actor;
pub mod checks;
pub mod coordinator;
pub mod credentials;
pub mod effect;
pub mod engine;
pub mod error;
pub mod funcs;
pub mod graphs;
pub mod http;
pub mod metrics;
pub mod plan;
pub mod rate;
pub mod registry;
pub mod serve;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use iot_auth::logz::LogRing;
use iot_auth::{Refusals, Users};
use iot_broker::BrokerHandle;
use iot_migrations::Db;
use iot_proto::topics;
use iot_proto::wire::{BrokerUrl, DaRecord, RegisterRequest};
use iot_proto::{DaId, Rev};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use zeroize::Zeroizing;

pub use actor::{Counters, Status};
use coordinator::Coordinator;
pub use credentials::Credentials;
pub use error::{ApiError, CsmError};
pub use funcs::FunctionsConfig;
use funcs::Runtimes;
use registry::{PresenceState, Registered, RegistryConfig};

pub use registry::now_epoch;

/// `[csm]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CsmConfig {
    /// HTTP listen address of the registration API.
    pub listen: String,
    /// Seconds a DA may stay offline (or never come online after PUT) before it is
    /// deregistered. 0 disables expiry.
    pub offline_expiry_seconds: u64,
    /// Largest accepted HTTP request body.
    pub max_body_bytes: usize,
    /// Serve the API under this path (e.g. "/csm" behind a reverse proxy); "" for the root.
    pub path_prefix: String,
    /// Issue a broker username/password per DA in the registration reply, checked by the
    /// embedded broker (off with an external broker, which does its own authentication).
    pub da_credentials: bool,
    /// Outputs held per ODF while its DA is not subscribed (reconnecting, offline, or not yet
    /// acknowledged CONNECT), delivered in order when it is. 0: publish at once (and lose
    /// what nobody is subscribed to, like IoTtalk v2).
    pub odf_hold_max: usize,
    /// Most payload bytes held per ODF.
    pub odf_hold_max_bytes: usize,
    /// Held outputs older than this are dropped instead of delivered.
    pub odf_hold_seconds: u64,
    /// How long an ODF's outputs wait for its DA's reply to CONNECT before they go out
    /// anyway (IoTtalk v2 ignored replies; a DA that never sends one still gets its data).
    /// 0: wait for the reply however long it takes.
    pub odf_ack_wait_ms: u64,
    /// Registrations (PUT) accepted per source address, as `COUNT/PERIOD` (e.g. "200/1s");
    /// more are answered 429 with `Retry-After`. "" for no limit.
    pub registration_rate: String,
    /// How long a client may take to send a request's headers before its connection is
    /// dropped (slow clients holding connections open).
    pub header_timeout_ms: u64,
    /// Serve the API over HTTPS on `listen` (with the certificate the caller gives in
    /// [`Wiring::tls`]).
    pub tls: bool,
}

impl Default for CsmConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9992".into(),
            offline_expiry_seconds: 300,
            max_body_bytes: 1024 * 1024,
            path_prefix: String::new(),
            da_credentials: true,
            odf_hold_max: 1000,
            odf_hold_max_bytes: 1024 * 1024,
            odf_hold_seconds: 60,
            odf_ack_wait_ms: 3000,
            registration_rate: "10000/1s".into(),
            header_timeout_ms: 30_000,
            tls: false,
        }
    }
}

/// Largest reply of the device and graph APIs when the caller does not say
/// ([`Wiring::max_reply_bytes`]): the embedded broker's default `broker.max_payload_bytes`.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Capacity of the host subscriptions of the CSM (uplinks, device API).
const SUBSCRIPTION_CAPACITY: usize = 8192;

/// A clonable handle to a running CSM.
#[derive(Debug, Clone)]
pub struct CsmHandle {
    tx: mpsc::Sender<actor::Request>,
    /// The broker address sent to DAs in registration replies.
    pub broker_url: BrokerUrl,
    pub max_body_bytes: usize,
    pub credentials: Credentials,
    pub counters: Arc<Counters>,
    /// Per-graph routing counters.
    pub engine_stats: Arc<engine::EngineStats>,
    /// The Python worker pool, when Python functions are enabled.
    pub python: Option<funcs::PythonPool>,
    /// The broker, for its stats.
    pub broker: BrokerHandle,
    /// The controller users when authentication is on (operator endpoints need an admin).
    pub users: Option<Users>,
    /// Refusal counters (shared with the broker's CONNECT gate).
    pub refusals: Refusals,
    /// The registration rate limit, unless `csm.registration_rate` is "".
    pub limiter: Option<Arc<rate::Limiter>>,
    /// The recent log lines (`/logz`).
    pub logz: Arc<LogRing>,
}

impl CsmHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> actor::Request,
    ) -> Result<T, CsmError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| CsmError::ShuttingDown)?;
        rx.await.map_err(|_| CsmError::ShuttingDown)
    }

    /// Registers (or re-registers) a DA; returns once it is stored. Re-registering a DA that
    /// is online needs `password`, the broker password of its current registration.
    pub async fn register(
        &self,
        id: DaId,
        req: RegisterRequest,
        password: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Registered, CsmError> {
        let (reg, persisted) = self
            .ask(|reply| actor::Request::Register {
                id,
                req,
                password,
                reply,
            })
            .await??;
        stored(persisted).await?;
        Ok(reg)
    }

    /// The record of a DA and its presence.
    pub async fn get(&self, id: DaId) -> Result<Option<(DaRecord, PresenceState)>, CsmError> {
        self.ask(|reply| actor::Request::Get { id, reply }).await
    }

    /// Deregisters a DA whose current rev is `rev`.
    pub async fn deregister(&self, id: DaId, rev: Rev) -> Result<(), CsmError> {
        let persisted = self
            .ask(|reply| actor::Request::Deregister { id, rev, reply })
            .await??;
        stored(persisted).await
    }

    pub async fn status(&self) -> Result<Status, CsmError> {
        self.ask(|reply| actor::Request::Status { reply }).await
    }
}

async fn stored(p: store::Persisted) -> Result<(), CsmError> {
    match p.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CsmError::Store(e)),
        Err(_) => Err(CsmError::WriterStopped),
    }
}

/// Why the CSM could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] iot_migrations::DbError),
    #[error("the database loader stopped: {0}")]
    Task(String),
    #[error("stored state: {0}")]
    Restore(#[from] coordinator::RestoreError),
    #[error("broker: {0}")]
    Broker(#[from] iot_broker::BrokerError),
    #[error("`csm.registration_rate`: {0}")]
    Rate(#[from] rate::RateError),
}

/// What the CSM runs on, made by its caller: the bound HTTP listener, the broker, the database,
/// the broker address DAs are told, and the credential store the embedded broker checks
/// (created before the broker starts; the CSM fills it with the restored DAs and every new
/// registration).
#[derive(Debug)]
pub struct Wiring {
    pub listener: tokio::net::TcpListener,
    pub broker: BrokerHandle,
    pub db: Db,
    pub broker_url: BrokerUrl,
    pub credentials: Credentials,
    /// The controller users when authentication is on; `None` when it is off.
    pub users: Option<Users>,
    /// Refusal counters, shared with the broker's CONNECT gate.
    pub refusals: Refusals,
    /// The DAs' data-topic grants the broker's topic ACL reads; the CSM keeps them in step
    /// with the links (an unshared default when no ACL is enforced).
    pub grants: acl::DaGrants,
    /// Serve HTTPS with this configuration instead of HTTP (`csm.tls`).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// The recent log lines `GET /logz` shows.
    pub logz: Arc<LogRing>,
    /// The largest payload the broker carries (`broker.max_payload_bytes`): longer device-API
    /// replies go out in pages, and any other reply that would not fit becomes an error reply
    /// that says so.
    pub max_reply_bytes: usize,
}

/// Starts the CSM: loads registrations, functions and graphs from the database (migrating it
/// first), subscribes to the control channels, the device, ODF-write and graph APIs on the
/// broker, starts a routing task per graph, and serves HTTP on the listener until `shutdown`
/// is cancelled. Returns the handle and the task to await for a clean stop.
pub async fn start(
    cfg: &CsmConfig,
    functions: &FunctionsConfig,
    wiring: Wiring,
    shutdown: CancellationToken,
) -> Result<(CsmHandle, tokio::task::JoinHandle<()>), StartError> {
    let Wiring {
        listener,
        broker,
        db,
        broker_url,
        credentials,
        users,
        refusals,
        grants,
        tls,
        max_reply_bytes,
        logz,
    } = wiring;
    let limiter = match cfg.registration_rate.trim() {
        "" => None,
        r => Some(Arc::new(rate::Limiter::new(r.parse()?))),
    };
    let (db, rows, funcs, graphs) = tokio::task::spawn_blocking(move || {
        let mut db = db;
        db.migrate()?;
        let rows = db.load_das()?;
        let funcs = db.load_functions()?;
        let graphs = db.load_graphs()?;
        Ok::<_, iot_migrations::DbError>((db, rows, funcs, graphs))
    })
    .await
    .map_err(|e| StartError::Task(e.to_string()))??;
    let runtimes = Runtimes::new(functions);
    let mut state = Coordinator::new(
        RegistryConfig {
            credentials: cfg.da_credentials,
            hide_rev: users.is_some(),
            max_reply_bytes,
        },
        runtimes,
    );
    let mut initial = state.restore(
        rows,
        funcs.into_iter().map(|f| (f.digest, f.code)).collect(),
        graphs.into_iter().map(|g| (g.gid, g.doc)).collect(),
    )?;
    grants.rebuild(&state.registry);
    tracing::info!(
        das.restored = state.registry.len(),
        graphs.restored = state.graphs.len(),
        "state loaded"
    );

    let uplinks = broker
        .subscribe(topics::CTRL_I_FILTER, SUBSCRIPTION_CAPACITY)
        .await?;
    let apis = actor::ApiSubscriptions {
        device: broker.subscribe(topics::DEVICE_REQ_FILTER, 1024).await?,
        odf: broker.subscribe(topics::ODF_REQ_FILTER, 1024).await?,
        graph: broker.subscribe(topics::GRAPH_REQ_FILTER, 1024).await?,
    };

    // Subscriptions deliver live messages only: uplinks retained before we subscribed (DAs
    // that stayed connected to an external broker across a restart) are read once here.
    for m in broker.retained(topics::CTRL_I_FILTER).await? {
        state
            .registry
            .uplink(&m.topic, &m.payload, true, now_epoch(), &mut initial);
    }

    let counters = Arc::new(Counters::default());
    let hold = engine::Hold {
        max: cfg.odf_hold_max,
        max_bytes: cfg.odf_hold_max_bytes,
        ttl: Duration::from_secs(cfg.odf_hold_seconds),
    };
    let engine = engine::Engine::new(broker.clone(), shutdown.clone(), hold);
    let (tx, rx) = mpsc::channel(1024);
    let handle = CsmHandle {
        tx,
        broker_url,
        max_body_bytes: cfg.max_body_bytes,
        credentials: credentials.clone(),
        counters: counters.clone(),
        engine_stats: engine.stats.clone(),
        python: state.graphs.runtimes().python.clone(),
        broker: broker.clone(),
        users,
        refusals,
        limiter,
        logz,
    };
    let actor = actor::Actor {
        state,
        broker,
        store: store::Store::spawn(db),
        credentials,
        grants,
        counters,
        offline_expiry: (cfg.offline_expiry_seconds > 0)
            .then(|| Duration::from_secs(cfg.offline_expiry_seconds)),
        odf_ack_wait: (cfg.odf_ack_wait_ms > 0).then(|| Duration::from_millis(cfg.odf_ack_wait_ms)),
        timers: DelayQueue::new(),
        expiry_keys: HashMap::new(),
        engine,
        checks: checks::Checks::default(),
    };
    let actor_task = tokio::spawn(actor.run(rx, uplinks, apis, initial, shutdown.clone()));

    let app = http::router(handle.clone(), &cfg.path_prefix);
    let header_timeout = Duration::from_millis(cfg.header_timeout_ms.max(1));
    let http_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        serve::serve(listener, tls, header_timeout, app, http_shutdown).await;
        let _ = actor_task.await;
    });
    Ok((handle, task))
}
