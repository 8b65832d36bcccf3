//! The native broker core: our own MQTT connection and session layer, `broker.core =
//! "native"`, the default (`rmqtt`, `embedded/`, is the other choice; docs/broker-native.md
//! lists what is served and what is not yet).
//!
//! Why it exists (docs/broker-upstream.md, reports 4, 8 and 9): rmqtt's connection layer
//! holds two 8 KiB codec buffers per idle connection and its session layer can lose QoS 1/2
//! messages across a take-over; neither is reachable through its API. Here a session owns
//! every message from routing to acknowledgement, whichever connection is attached, and an
//! idle TCP connection holds no I/O buffer.
//!
//! Layout: this file ([`NativeBroker`], [`Broker`] for it, the expiry loop); `listen` (the
//! TCP, WebSocket, TLS and WSS listeners and their accept loops); `io` (a connection's
//! transport: TCP by readiness, or a TLS/WebSocket byte stream); `core` (sessions,
//! subscription tree, retained store, routing); `connect` (a CONNECT: credentials, will,
//! take-over); `conn` (a connection's task and its buffers); `packets` (each packet after
//! the CONNECT); `alias` (MQTT 5 topic aliases); `session` (a session's state machine);
//! `tree` (the topic trees); `wire` (rmqtt-codec's MQTT 3.1.1 and 5 codecs behind one type).

mod alias;
mod conn;
mod connect;
mod core;
mod io;
mod listen;
mod packets;
mod session;
mod tree;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytestring::ByteString;
use rmqtt_codec::types::Publish;
use rmqtt_codec::v5::PublishProperties;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::core::{from_codec_qos, to_codec_qos, Core, Limits};
use self::listen::{Addrs, Listeners, Live};
use self::session::Routed;
use crate::embedded::config::Checked;
use crate::local::{check_host_publish, levels, LocalRouter};
use crate::{Broker, BrokerError, BrokerStats, EmbeddedConfig, Message, Security, Subscription};

/// How long shutdown waits for connections to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// How often expired offline sessions are removed.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// The embedded broker on the native core. A cheap handle: clones share one server.
#[derive(Clone)]
pub struct NativeBroker {
    core: Arc<Core>,
    addrs: Addrs,
}

impl NativeBroker {
    /// Binds `cfg.listen` and serves until `shutdown` is cancelled; the returned task ends once
    /// the listener is closed and every connection has ended (at most 5 s). The same contract
    /// as [`EmbeddedBroker::start_secured`](crate::EmbeddedBroker::start_secured).
    pub async fn start(
        cfg: &EmbeddedConfig,
        security: Security,
        shutdown: CancellationToken,
    ) -> Result<(NativeBroker, JoinHandle<()>), BrokerError> {
        let checked = cfg.checked()?;
        let limits = limits(cfg, &checked);
        let listeners = Listeners::bind(cfg, &checked)?;
        let addrs = listeners.addrs;
        let local = LocalRouter::new(Duration::from_millis(cfg.host_send_timeout_ms));
        let core = Arc::new(Core::new(limits, security, local));
        let broker = NativeBroker { core, addrs };
        tracing::info!(mqtt.addr = %addrs.mqtt, ws.addr = ?addrs.ws, tls.addr = ?addrs.tls, wss.addr = ?addrs.wss, "embedded MQTT broker (native core) listening");
        if let Some(every) = checked.sys_interval {
            let version = format!("iotctl {} (native core)", env!("CARGO_PKG_VERSION"));
            let core = broker.core.clone();
            let figures = move || core.figures();
            crate::sys::spawn(broker.clone(), version, figures, every, shutdown.clone());
        }
        let task = tokio::spawn(serve(broker.core.clone(), listeners, shutdown));
        Ok((broker, task))
    }

    /// The bound MQTT/TCP address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.addrs.mqtt
    }

    /// The bound MQTT/WebSocket address (`broker.ws_listen`), if enabled. Any path works;
    /// clients must offer the `mqtt` subprotocol.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.addrs.ws
    }

    /// The bound MQTT-over-TLS address (`broker.tls_listen`), if enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.addrs.tls
    }

    /// The bound MQTT-over-WebSocket-over-TLS address (`broker.wss_listen`), if enabled.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.addrs.wss
    }
}

/// The core's limits from the checked settings.
fn limits(cfg: &EmbeddedConfig, checked: &Checked) -> Limits {
    Limits {
        max_packet: checked.max_packet_bytes,
        max_payload: cfg.max_payload_bytes,
        inflight: checked.inflight.get(),
        max_queue: cfg.max_mqueue_len,
        max_sessions: cfg.max_sessions,
        max_levels: checked.max_topic_levels,
        session_expiry: checked.session_expiry,
        handshake: Duration::from_millis(cfg.handshake_timeout_ms.max(1)),
        allow_anonymous: cfg.allow_anonymous,
        max_aliases: cfg.max_topic_aliases,
    }
}

/// Accepts connections until shutdown, expires offline sessions, then waits for the
/// connections to end.
async fn serve(core: Arc<Core>, listeners: Listeners, shutdown: CancellationToken) {
    let live = Arc::new(Live::default());
    let accepting = listeners.spawn(&core, &live, &shutdown);
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = expire.tick() => {
                core.expire(Instant::now());
            }
        }
    }
    // The accept loops end with their listeners closed.
    for task in accepting {
        let _ = task.await;
    }
    if tokio::time::timeout(SHUTDOWN_WAIT, live.drained())
        .await
        .is_err()
    {
        tracing::warn!("some MQTT clients were not disconnected within the shutdown timeout");
    }
    tracing::info!("embedded MQTT broker (native core) stopped");
}

/// Whether `topic` is within `broker.max_topic_levels`.
pub(crate) fn limits_ok(core: &Core, topic: &str) -> bool {
    levels(topic) <= core.limits.max_levels
}

#[async_trait]
impl Broker for NativeBroker {
    async fn publish(&self, msg: Message) -> Result<(), BrokerError> {
        let limits = &self.core.limits;
        check_host_publish(&msg, limits.max_payload, limits.max_levels)?;
        let properties = (msg.response_topic.is_some() || msg.correlation.is_some()).then(|| {
            PublishProperties {
                response_topic: msg.response_topic.map(ByteString::from),
                correlation_data: msg.correlation,
                ..PublishProperties::default()
            }
        });
        let routed = Routed {
            publish: Publish {
                dup: false,
                retain: msg.retain,
                qos: to_codec_qos(msg.qos),
                topic: ByteString::from(msg.topic),
                packet_id: None,
                payload: msg.payload,
                properties,
            },
            from: None,
        };
        self.core.route(Arc::new(routed), None).await;
        Ok(())
    }

    async fn subscribe(&self, filter: &str, capacity: usize) -> Result<Subscription, BrokerError> {
        let (rx, guard) = self.core.local.subscribe(filter, capacity)?;
        Ok(Subscription::new(filter.to_owned(), rx, Box::new(guard)))
    }

    async fn retained(&self, filter: &str) -> Result<Vec<Message>, BrokerError> {
        if !iot_proto::topics::valid_filter(filter) {
            return Err(BrokerError::Filter(filter.to_owned()));
        }
        Ok(self
            .core
            .retained_matching(filter)
            .into_iter()
            .map(|r| {
                let p = r.publish;
                let mut m =
                    Message::new(p.topic.to_string(), p.payload, from_codec_qos(p.qos), true);
                if let Some(props) = p.properties {
                    m.response_topic = props.response_topic.map(|t| t.to_string());
                    m.correlation = props.correlation_data;
                }
                m
            })
            .collect())
    }

    fn stats(&self) -> BrokerStats {
        let c = &self.core.counts;
        BrokerStats {
            sessions: c.connected.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            host_dropped: self.core.local.host_dropped(),
            acl_denied_publish: c.acl_publish.load(Ordering::Relaxed),
            acl_denied_subscribe: c.acl_subscribe.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for NativeBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeBroker")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}
