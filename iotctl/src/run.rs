//! `iotctl initdb` and `iotctl start`: wires the broker (embedded or external) and the CSM
//! together, writes the pidfile and the state file, and stops cleanly on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use iot_broker::{
    Authenticator, BrokerHandle, EmbeddedBroker, ExternalBroker, ExternalConfig, MqttUrl,
};
use iot_csm::Credentials;
use iot_migrations::Db;
use iot_proto::wire::BrokerUrl;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::Component;

/// What a running controller writes to `<data_dir>/iotctl.state.json` for `status`/`stop`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub pid: u32,
    pub components: Vec<String>,
    /// `host:port` of the MQTT listener (embedded) or the external broker in use.
    pub mqtt: Option<String>,
    pub ws: Option<String>,
    /// Base URL of the CSM HTTP API.
    pub csm: Option<String>,
    pub started: f64,
}

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

async fn external_broker(
    cfg: &Config,
    url: &str,
    shutdown: &CancellationToken,
) -> Result<(ExternalBroker, tokio::task::JoinHandle<()>)> {
    let ext = ExternalConfig {
        url: url.to_owned(),
        max_packet_bytes: cfg.broker.embedded.max_payload_bytes + 64 * 1024,
        ..ExternalConfig::default()
    };
    Ok(ExternalBroker::connect(&ext, shutdown.clone()).await?)
}

/// Runs the chosen components until SIGINT/SIGTERM.
pub async fn start(cfg: Config, component: Component) -> Result<()> {
    if matches!(component, Component::Ccm | Component::Gui) {
        bail!(
            "the CCM and its web GUI are not built yet; `iotctl start` runs the broker and the CSM"
        );
    }
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let pidfile = cfg.pidfile();
    if let Some(pid) = crate::service::running_pid(&pidfile) {
        bail!("iotctl is already running with this data dir (pid {pid}); `iotctl stop` first");
    }
    std::fs::write(&pidfile, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write pidfile {}", pidfile.display()))?;
    let result = serve(&cfg, component).await;
    let _ = std::fs::remove_file(&pidfile);
    let _ = std::fs::remove_file(cfg.statefile());
    result
}

async fn serve(cfg: &Config, component: Component) -> Result<()> {
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let mut tasks = Vec::new();
    let mut state = RunState {
        pid: std::process::id(),
        components: Vec::new(),
        mqtt: None,
        ws: None,
        csm: None,
        started: iot_csm::state::now_epoch(),
    };

    // Per-DA credentials: one store, created before the broker so that it checks them from
    // its first connection; the CSM fills it (stored DAs once loaded, then each registration).
    // Until then a DA's credentials are unknown and it is refused, and retries.
    let runs_csm = matches!(component, Component::All | Component::Csm);
    let credentials = Credentials::default();
    let auth = (runs_csm && cfg.csm.da_credentials)
        .then(|| Arc::new(credentials.clone()) as Arc<dyn Authenticator>);

    // The broker: embedded (for `all` and `broker` unless external is set) or a connection.
    let mut embedded = false;
    let (broker, url): (Option<BrokerHandle>, BrokerUrl) = if cfg.broker.external.is_empty()
        && matches!(component, Component::All | Component::Broker)
    {
        let (b, task) = EmbeddedBroker::start(&cfg.broker.embedded, auth, shutdown.clone()).await?;
        tasks.push(task);
        let mqtt = b.mqtt_addr();
        let ws = b.ws_addr();
        state.components.push("broker".into());
        state.mqtt = Some(mqtt.to_string());
        state.ws = ws.map(|a| a.to_string());
        let url = BrokerUrl {
            scheme: cfg.broker.scheme.clone(),
            host: advertised_host(cfg, &mqtt.ip().to_string()),
            port: or_bound(cfg.broker.advertise_port, mqtt.port()),
            ws_scheme: if cfg.broker.scheme == "mqtts" {
                "wss".into()
            } else {
                "ws".into()
            },
            ws_port: or_bound(
                cfg.broker.advertise_ws_port,
                ws.map(|a| a.port()).unwrap_or(0),
            ),
        };
        embedded = true;
        (Some(Arc::new(b) as BrokerHandle), url)
    } else if component == Component::Broker {
        bail!("`broker.external` is set: there is no embedded broker to start");
    } else {
        let ext_url = if cfg.broker.external.is_empty() {
            format!("mqtt://{}", cfg.broker.embedded.listen)
        } else {
            cfg.broker.external.clone()
        };
        let parsed = MqttUrl::parse(&ext_url)?;
        let (b, task) = external_broker(cfg, &ext_url, &shutdown).await?;
        tasks.push(task);
        state.mqtt = Some(parsed.authority());
        let url = BrokerUrl {
            scheme: cfg.broker.scheme.clone(),
            host: advertised_host(cfg, &parsed.host),
            port: or_bound(cfg.broker.advertise_port, parsed.port),
            ws_scheme: if cfg.broker.scheme == "mqtts" {
                "wss".into()
            } else {
                "ws".into()
            },
            ws_port: cfg.broker.advertise_ws_port,
        };
        (Some(Arc::new(b) as BrokerHandle), url)
    };

    if runs_csm {
        let Some(broker) = broker else {
            bail!("no broker")
        };
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
        if !embedded && csm_cfg.da_credentials {
            tracing::info!(
                "csm.da_credentials is off with an external broker: it does its own authentication"
            );
            csm_cfg.da_credentials = false;
        }
        let (_csm, task) = iot_csm::start(
            &csm_cfg,
            &cfg.functions,
            listener,
            broker,
            db,
            url,
            credentials,
            shutdown.clone(),
        )
        .await?;
        tasks.push(task);
        state.components.push("csm".into());
        state.csm = Some(format!("http://{addr}{}", cfg.csm.path_prefix));
    }

    let json = serde_json::to_string_pretty(&state)?;
    std::fs::write(cfg.statefile(), json)
        .with_context(|| format!("cannot write {}", cfg.statefile().display()))?;
    println!(
        "iotctl ready: pid={} mqtt={} ws={} csm={}",
        state.pid,
        state.mqtt.as_deref().unwrap_or("-"),
        state.ws.as_deref().unwrap_or("-"),
        state.csm.as_deref().unwrap_or("-"),
    );
    tracing::info!(components = ?state.components, "iotctl started");

    shutdown.cancelled().await;
    tracing::info!("stopping");
    let all = futures_join(tasks);
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        tracing::warn!("some components did not stop within 10 s");
    }
    println!("iotctl stopped");
    Ok(())
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
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
