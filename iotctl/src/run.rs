//! `iotctl initdb` and `iotctl start`: starts the chosen components, one `start_*` function
//! each ([`start_broker`], [`start_csm`]), wires them together, writes the pidfile and the
//! state file (`runfile`), and stops cleanly on SIGINT/SIGTERM. Not here: what each component
//! does (its library crate) or `stop`/`status` (`service`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use iot_auth::logz::LogRing;
use iot_auth::{Gate, Refusals, Users};
use iot_broker::{
    Authenticator, BrokerCore, BrokerHandle, EmbeddedBroker, EmbeddedConfig, ExternalBroker,
    ExternalConfig, MqttUrl, NativeBroker, Security,
};
use iot_csm::acl::{ControllerAcl, DaGrants};
use iot_csm::Credentials;
use iot_migrations::Db;
use iot_proto::wire::BrokerUrl;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::runfile::{self, RunState};
use crate::Component;

pub async fn initdb(cfg: &Config) -> Result<()> {
    let url = cfg.database.url.clone();
    let (backend, applied) = tokio::task::spawn_blocking(move || {
        let mut db = Db::connect(&url)?;
        let n = db.migrate()?;
        Ok::<_, iot_migrations::DbError>((db.backend(), n))
    })
    .await??;
    println!(
        "database {} ({backend}) is ready: {applied} migration(s) applied",
        iot_migrations::redact(&cfg.database.url)
    );
    Ok(())
}

/// Runs the chosen components until SIGINT/SIGTERM.
pub async fn start(cfg: Config, component: Component, logz: Arc<LogRing>) -> Result<()> {
    crate::exposure::check(&cfg, component)?;
    if cfg.auth.enabled && component != Component::All {
        bail!("`auth.enabled` needs `iotctl start all`: the broker checks the DA credentials the CSM issues, in one process");
    }
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    runfile::write_pid(&cfg)?;
    let result = serve(&cfg, component, logz).await;
    runfile::remove(&cfg);
    result
}

/// What the started components leave behind: the tasks to await at shutdown and what the
/// state file says about them.
struct Running {
    tasks: Vec<JoinHandle<()>>,
    state: RunState,
}

/// The broker the other components talk to, and what DAs are told about it.
struct BrokerSide {
    handle: BrokerHandle,
    /// The address sent to DAs in registration replies.
    url: BrokerUrl,
    /// Whether it is the embedded broker of this process (which checks DA credentials).
    embedded: bool,
}

async fn serve(cfg: &Config, component: Component, logz: Arc<LogRing>) -> Result<()> {
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let mut running = Running {
        tasks: Vec::new(),
        state: RunState::starting(),
    };

    // Per-DA credentials: one store, created before the broker so that it checks them from
    // its first connection; the CSM fills it (stored DAs once loaded, then each registration).
    // Until then a DA's credentials are unknown and it is refused, and retries.
    let runs_csm = matches!(component, Component::All | Component::Csm);
    let runs_ccm = matches!(component, Component::All | Component::Ccm);
    let credentials = Credentials::default();
    let refusals = Refusals::default();
    // With authentication on, controller users too (loaded now, then reloaded every few
    // seconds so that `iotctl user` changes apply without a restart).
    let users = if cfg.auth.enabled {
        let users = Users::default();
        let task = users
            .load_and_reload(cfg.database.url.clone(), shutdown.clone())
            .await?;
        running.tasks.push(task);
        if users.is_empty() {
            tracing::warn!("authentication is on and there are no users: only DAs can connect; add an admin with `iotctl user add NAME --role admin`");
        }
        Some(users)
    } else {
        None
    };
    let grants = DaGrants::default();
    let security = match &users {
        Some(users) => Security {
            auth: Some(Arc::new(Gate {
                users: users.clone(),
                das: Arc::new(credentials.clone()),
                refusals: refusals.clone(),
            })),
            acl: Some(Arc::new(ControllerAcl {
                roles: Arc::new(users.clone()),
                grants: grants.clone(),
                // Home commands from DAs (`home.allow_das`, docs/home.md).
                home_das: cfg.home.allow_das,
            })),
        },
        None => Security {
            auth: (runs_csm && cfg.csm.da_credentials)
                .then(|| Arc::new(credentials.clone()) as Arc<dyn Authenticator>),
            acl: None,
        },
    };

    let broker = start_broker(cfg, component, security, &shutdown, &mut running).await?;
    if runs_csm {
        let access = Access {
            credentials,
            users: users.clone(),
            refusals: refusals.clone(),
            grants,
            logz: logz.clone(),
        };
        start_csm(cfg, &broker, access, &shutdown, &mut running).await?;
    }
    if runs_ccm {
        let access = CcmAccess {
            users,
            refusals,
            logz,
        };
        start_ccm(cfg, &broker, access, &shutdown, &mut running).await?;
    }

    let state = &running.state;
    runfile::write_state(cfg, state)?;
    println!(
        "iotctl ready: pid={} mqtt={} ws={} csm={} ccm={} mqtts={} wss={}",
        state.pid,
        state.mqtt.as_deref().unwrap_or("-"),
        state.ws.as_deref().unwrap_or("-"),
        state.csm.as_deref().unwrap_or("-"),
        state.ccm.as_deref().unwrap_or("-"),
        state.mqtts.as_deref().unwrap_or("-"),
        state.wss.as_deref().unwrap_or("-"),
    );
    tracing::info!(components = ?state.components, "iotctl started");

    shutdown.cancelled().await;
    tracing::info!("stopping");
    if tokio::time::timeout(Duration::from_secs(10), join_all(running.tasks))
        .await
        .is_err()
    {
        tracing::warn!("some components did not stop within 10 s");
    }
    println!("iotctl stopped");
    Ok(())
}

/// The embedded broker, started on the core `broker.core` names.
struct Served {
    handle: iot_broker::BrokerHandle,
    task: JoinHandle<()>,
    mqtt: SocketAddr,
    ws: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    wss: Option<SocketAddr>,
}

async fn serve_embedded(
    cfg: &EmbeddedConfig,
    security: Security,
    shutdown: &CancellationToken,
) -> Result<Served> {
    Ok(match cfg.core {
        BrokerCore::Rmqtt => {
            let (b, task) = EmbeddedBroker::start_secured(cfg, security, shutdown.clone()).await?;
            Served {
                mqtt: b.mqtt_addr(),
                ws: b.ws_addr(),
                tls: b.tls_addr(),
                wss: b.wss_addr(),
                handle: Arc::new(b),
                task,
            }
        }
        BrokerCore::Native => {
            let (b, task) = NativeBroker::start(cfg, security, shutdown.clone()).await?;
            Served {
                mqtt: b.mqtt_addr(),
                ws: b.ws_addr(),
                tls: b.tls_addr(),
                wss: b.wss_addr(),
                handle: Arc::new(b),
                task,
            }
        }
    })
}

/// The broker: the embedded one (for `all` and `broker`, unless `broker.external` is set,
/// checking credentials with `auth` from its first connection), else a connection to
/// `broker.external` or, for `start csm`, to the broker at `broker.listen`.
async fn start_broker(
    cfg: &Config,
    component: Component,
    security: Security,
    shutdown: &CancellationToken,
    running: &mut Running,
) -> Result<BrokerSide> {
    let embedded =
        cfg.broker.external.is_empty() && matches!(component, Component::All | Component::Broker);
    if embedded {
        let mut embedded_cfg = cfg.broker.embedded.clone();
        embedded_cfg.tls = cfg.tls_files();
        if cfg.auth.enabled {
            // Authentication on: every client names itself.
            embedded_cfg.allow_anonymous = false;
        }
        let served = serve_embedded(&embedded_cfg, security, shutdown).await?;
        running.tasks.push(served.task);
        let (mqtt, ws) = (served.mqtt, served.ws);
        let state = &mut running.state;
        state.components.push("broker".into());
        state.mqtt = Some(mqtt.to_string());
        state.ws = ws.map(|a| a.to_string());
        state.mqtts = served.tls.map(|a| a.to_string());
        state.wss = served.wss.map(|a| a.to_string());
        let url = match served.tls.filter(|_| cfg.broker.advertise_tls) {
            // `broker.advertise_tls`: the TLS listeners instead (docs/security.md, TLS).
            Some(tls) => crate::tls::secure_url(broker_url(
                cfg,
                &tls.ip().to_string(),
                tls.port(),
                or_bound(
                    cfg.broker.advertise_ws_port,
                    served.wss.map_or(0, |a| a.port()),
                ),
            )),
            None => broker_url(
                cfg,
                &mqtt.ip().to_string(),
                mqtt.port(),
                or_bound(cfg.broker.advertise_ws_port, ws.map_or(0, |a| a.port())),
            ),
        };
        return Ok(BrokerSide {
            handle: served.handle,
            url,
            embedded: true,
        });
    }
    if component == Component::Broker {
        bail!("`broker.external` is set: there is no embedded broker to start");
    }
    let ext_url = if cfg.broker.external.is_empty() {
        format!("mqtt://{}", cfg.broker.embedded.listen)
    } else {
        cfg.broker.external.clone()
    };
    let parsed = MqttUrl::parse(&ext_url)?;
    let ext = ExternalConfig {
        url: ext_url,
        max_packet_bytes: cfg.broker.embedded.max_payload_bytes + 64 * 1024,
        ..ExternalConfig::default()
    };
    let (b, task) = ExternalBroker::connect(&ext, shutdown.clone()).await?;
    running.tasks.push(task);
    running.state.mqtt = Some(parsed.authority());
    Ok(BrokerSide {
        handle: Arc::new(b),
        url: broker_url(cfg, &parsed.host, parsed.port, cfg.broker.advertise_ws_port),
        embedded: false,
    })
}

/// Who may do what, shared by the broker's CONNECT check and the CSM.
struct Access {
    /// The DAs' broker credentials, filled by the CSM.
    credentials: Credentials,
    /// The controller users, when authentication is on.
    users: Option<Users>,
    refusals: Refusals,
    /// The DAs' data-topic grants the topic ACL reads, kept by the CSM.
    grants: DaGrants,
    /// The recent log lines (`/logz`).
    logz: Arc<LogRing>,
}

/// What the CCM shares with the rest of the process.
struct CcmAccess {
    users: Option<Users>,
    refusals: Refusals,
    logz: Arc<LogRing>,
}

/// The CSM: its HTTP listener, database and routing, on `broker`; fills the DA credentials
/// the embedded broker checks.
async fn start_csm(
    cfg: &Config,
    broker: &BrokerSide,
    access: Access,
    shutdown: &CancellationToken,
    running: &mut Running,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.csm.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (`csm.listen`): is another controller running?",
                cfg.csm.listen
            )
        })?;
    let addr: SocketAddr = listener.local_addr()?;
    let db_url = cfg.database.url.clone();
    let db = tokio::task::spawn_blocking(move || Db::connect(&db_url)).await??;
    // Credentials only mean something to the embedded broker, which checks them.
    let mut csm_cfg = cfg.csm.clone();
    if !broker.embedded && csm_cfg.da_credentials {
        tracing::info!(
            "csm.da_credentials is off with an external broker: it does its own authentication"
        );
        csm_cfg.da_credentials = false;
    }
    let wiring = iot_csm::Wiring {
        listener,
        broker: broker.handle.clone(),
        db,
        broker_url: broker.url.clone(),
        credentials: access.credentials,
        users: access.users,
        refusals: access.refusals,
        grants: access.grants,
        logz: access.logz,
        tls: crate::tls::https(cfg)?,
        // Also the external connection's packet limit (`start_broker`): with an external
        // broker, set `broker.max_payload_bytes` to that broker's limit.
        max_reply_bytes: cfg.broker.embedded.max_payload_bytes,
    };
    let (_csm, task) = iot_csm::start(&csm_cfg, &cfg.functions, wiring, shutdown.clone()).await?;
    running.tasks.push(task);
    running.state.components.push("csm".into());
    let scheme = if cfg.csm.tls { "https" } else { "http" };
    running.state.csm = Some(format!("{scheme}://{addr}{}", cfg.csm.path_prefix));
    Ok(())
}

/// The CCM: its REST API and GUI on `ccm.listen`, its data in the database, driving the CSM
/// through the graph API on `broker`.
async fn start_ccm(
    cfg: &Config,
    broker: &BrokerSide,
    access: CcmAccess,
    shutdown: &CancellationToken,
    running: &mut Running,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.ccm.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (`ccm.listen`): is another controller running?",
                cfg.ccm.listen
            )
        })?;
    let addr: SocketAddr = listener.local_addr()?;
    let db_url = cfg.database.url.clone();
    let db = tokio::task::spawn_blocking(move || Db::connect(&db_url)).await??;
    let wiring = iot_ccm::Wiring {
        listener,
        broker: broker.handle.clone(),
        db,
        users: access.users,
        refusals: access.refusals,
        logz: access.logz,
        home: cfg.home.clone(),
        keys: cfg.keymanager.clone(),
    };
    let (_ccm, task) = iot_ccm::start(&cfg.ccm, wiring, shutdown.clone()).await?;
    running.tasks.push(task);
    running.state.components.push("ccm".into());
    running.state.ccm = Some(format!("http://{addr}"));
    Ok(())
}

/// What DAs are told: `broker.scheme`, `broker.advertise_*` where set, else what is bound.
fn broker_url(cfg: &Config, host: &str, port: u16, ws_port: u16) -> BrokerUrl {
    let mqtts = cfg.broker.scheme == "mqtts";
    BrokerUrl {
        scheme: cfg.broker.scheme.clone(),
        host: advertised_host(cfg, host),
        port: or_bound(cfg.broker.advertise_port, port),
        ws_scheme: if mqtts { "wss" } else { "ws" }.into(),
        ws_port,
    }
}

fn advertised_host(cfg: &Config, bound: &str) -> String {
    if !cfg.broker.advertise_host.is_empty() {
        return cfg.broker.advertise_host.clone();
    }
    match bound {
        "0.0.0.0" | "::" | "[::]" => {
            tracing::warn!("broker listens on all interfaces but broker.advertise_host is empty: DAs are told 127.0.0.1");
            "127.0.0.1".into()
        }
        h => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
    }
}

fn or_bound(configured: u16, bound: u16) -> u16 {
    if configured != 0 {
        configured
    } else {
        bound
    }
}

async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        shutdown.cancel();
    });
}
