//! The embedded broker: rmqtt 0.24 running in this process, with a TCP and a WebSocket listener.
//!
//! [`EmbeddedBroker::start`] binds both listeners, builds an rmqtt server context with the
//! settings ordinary clients need (see the crate README for each one and why), registers the
//! retainer and shared-subscription plugins and our hooks, and runs until the shutdown token is
//! cancelled. Host publishes enter rmqtt like its HTTP API's publishes do; host subscriptions are
//! fed by a `MessagePublish` hook through [`LocalRouter`]. Not here: the ACL rules themselves
//! (a [`TopicAcl`] given in [`Security`]), TLS, clustering.
//!
//! Layout: this file (the server and [`Broker`] for it), [`config`] ([`EmbeddedConfig`] and its
//! validation), `hooks` (host subscriptions, drop counting, authentication), `limits` (the
//! topic-level limit on publishes and wills), `acl_hooks` (the [`TopicAcl`] enforced), `tls`
//! (the MQTT-over-TLS and WebSocket-over-TLS listeners).

mod acl_hooks;
pub mod config;
mod disconnect;
mod hooks;
mod inflight;
mod limits;
mod sys;
mod takeover;
mod tls;
mod ws;

pub use config::EmbeddedConfig;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::codec::v5::PublishProperties;
use rmqtt::context::ServerContext;
use rmqtt::net::{Builder, Listener};
use rmqtt::server::MqttServer;
use rmqtt::session::SessionState;
use rmqtt::types::{ClientId, CodecPublish, From, Id, Publish, TopicFilter, TopicName, UserName};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::acl::TopicAcl;
use crate::local::LocalRouter;
use crate::{Broker, BrokerError, BrokerStats, Message, QoS, Subscription};

/// rmqtt's listeners take our listen backlog (`crate::net`): its own 512 overflows when a few
/// thousand devices reconnect at once, and an overflowed SYN is retried only after 1 s.
const LISTEN_BACKLOG: i32 = crate::net::LISTEN_BACKLOG as i32;
/// How long shutdown waits for connected clients to be disconnected.
const SHUTDOWN_KICK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest client id accepted (MQTT requires 23; SDKs use about 50).
const MAX_CLIENT_ID_BYTES: usize = 256;
/// The client id host publishes carry.
const HOST_CLIENT_ID: &str = "iotctl";

/// Decides whether a client's username and password are good. Called on the connection's task
/// for every CONNECT with a username (and, when anonymous clients are not allowed, without
/// one): keep it fast (no blocking I/O). Given to [`EmbeddedBroker::start`], so it is in place
/// before the first client connects.
#[async_trait]
pub trait Authenticator: Send + Sync + fmt::Debug {
    async fn check(&self, username: &str, password: &[u8]) -> bool;

    /// A CONNECT without a username was refused (anonymous clients not allowed): for counting.
    fn refused_anonymous(&self) {}

    /// A CONNECT with good credentials was refused because its client id has a session of
    /// another username: for counting.
    fn refused_client_id(&self) {}
}

/// Who may connect and what they may do, enforced from the first connection on.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Checks every CONNECT with a username (see [`Authenticator`]); `None`: any accepted.
    pub auth: Option<Arc<dyn Authenticator>>,
    /// Checks every client PUBLISH, SUBSCRIBE filter and will (see [`TopicAcl`]); `None`: all
    /// allowed.
    pub acl: Option<Arc<dyn TopicAcl>>,
}

/// The embedded broker. A cheap handle: clones share one server.
#[derive(Clone)]
pub struct EmbeddedBroker {
    inner: Arc<Inner>,
}

struct Inner {
    scx: ServerContext,
    local: LocalRouter,
    dropped: Arc<AtomicU64>,
    acl_denied: Arc<acl_hooks::AclCounts>,
    max_payload_bytes: usize,
    max_topic_levels: usize,
    mqtt_addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    secure: tls::SecureAddrs,
    host: From,
}

impl EmbeddedBroker {
    /// Binds the listeners of `cfg` and runs the broker until `shutdown` is cancelled; the
    /// returned task ends once the listeners are closed and clients disconnected.
    /// Port 0 binds a free port: see [`mqtt_addr`](Self::mqtt_addr) and [`ws_addr`](Self::ws_addr).
    ///
    /// With `auth`, every CONNECT with a username is checked by it from the first connection
    /// on (see [`Authenticator`]); without, any username and password are accepted.
    /// Fails on an invalid `cfg` (see [`EmbeddedConfig::validate`]) before binding anything.
    pub async fn start(
        cfg: &EmbeddedConfig,
        auth: Option<Arc<dyn Authenticator>>,
        shutdown: CancellationToken,
    ) -> Result<(EmbeddedBroker, JoinHandle<()>), BrokerError> {
        Self::start_secured(cfg, Security { auth, acl: None }, shutdown).await
    }

    /// [`start`](Self::start) with a topic ACL as well as an authenticator, both in place
    /// before the first client connects.
    pub async fn start_secured(
        cfg: &EmbeddedConfig,
        security: Security,
        shutdown: CancellationToken,
    ) -> Result<(EmbeddedBroker, JoinHandle<()>), BrokerError> {
        let Security { auth, acl } = security;
        let checked = cfg.checked()?;

        let builder = Builder::new()
            .reuseaddr(Some(true))
            .backlog(LISTEN_BACKLOG)
            .nodelay(true)
            .max_packet_size(checked.max_packet_bytes)
            .max_inflight(checked.inflight)
            .max_mqueue_len(cfg.max_mqueue_len)
            // Every CONNECT goes through our authentication hook, which applies
            // `allow_anonymous` itself (rmqtt would skip the hooks for anonymous clients).
            .allow_anonymous(false)
            .allow_zero_keepalive(true)
            // rmqtt's default is 65,535 bytes per client id; ids end up in logs and maps.
            .max_clientid_len(MAX_CLIENT_ID_BYTES)
            // A client that connects and sends no (or half a) CONNECT is closed after this.
            .handshake_timeout(Duration::from_millis(cfg.handshake_timeout_ms.max(1)))
            // Deeper SUBSCRIBE filters get SUBACK failure; publishes are checked in `limits`.
            .max_topic_levels(checked.max_topic_levels)
            // rmqtt gives a message without a Message Expiry Interval one of 5 min: it dropped
            // QoS 1/2 messages queued for an offline persistent session after 5 min and added
            // `MessageExpiryInterval: 300` to every PUBLISH sent to an MQTT 5 client. Zero means
            // none: such messages never expire (MQTT 5, 3.3.2.3.3; Mosquitto's behaviour).
            // Messages published with an expiry interval still expire.
            .message_expiry_interval(Duration::ZERO)
            // rmqtt resent every unacknowledged QoS 1/2 PUBLISH on the open connection every 20 s
            // (with DUP), which MQTT 5 forbids (4.4: only on reconnect) and Mosquitto does not do:
            // a subscriber that takes 20 s to ack got duplicates. Zero: resent on reconnect only.
            .message_retry_interval(Duration::ZERO)
            // MQTT 3.1.1 persistent sessions: rmqtt keeps them 2 h offline unless told.
            .session_expiry_interval(checked.session_expiry)
            // ...and the most an MQTT 5 client may ask for (0: no limit), so that a session
            // nobody resumes does not hold its client id for ever.
            .max_session_expiry_interval(checked.session_expiry)
            // MQTT 5 topic aliases, both ways (rmqtt's default 0 announced none and ignored
            // the aliases clients sent anyway; `limits.rs` answers an invalid one with 0x94).
            .max_topic_aliases(cfg.max_topic_aliases);
        let tcp = bind(
            builder.clone().name("iotctl/tcp").laddr(checked.listen),
            "MQTT over TCP",
            "broker.listen",
        )?;
        let mqtt_addr = local_addr(&tcp, "MQTT over TCP", "broker.listen")?;
        let mut secure = tls::bind_secure(&builder, cfg, &checked)?;
        let secure_addrs = secure.addrs();
        // WebSocket (and over TLS): our listeners, bridged to an rmqtt listener on loopback.
        let mut fronts = ws::Fronts::bind(builder, cfg, &checked, secure.take_wss())?;
        let tcp = tcp.tcp().map_err(setup("the TCP listener"))?;

        let scx = ServerContext::new()
            // The busy check refuses CONNECTs while the host's CPU is above 90%, e.g. during a build.
            .busy_check_enable(false)
            .mqtt_max_sessions(isize::try_from(cfg.max_sessions).unwrap_or(isize::MAX))
            .plugins_config_map_add("rmqtt-retainer", retainer_config(cfg.max_payload_bytes))
            .plugins_config_map_add(
                "rmqtt-shared-subscription",
                "strategy = \"round_robin\"\nsticky_cache_size = 1024\n",
            )
            .build()
            .await;
        rmqtt_retainer::register(&scx, true, false)
            .await
            .map_err(setup("the retainer plugin"))?;
        rmqtt_shared_subscription::register(&scx, true, false)
            .await
            .map_err(setup("the shared-subscription plugin"))?;

        let local = LocalRouter::new(Duration::from_millis(cfg.host_send_timeout_ms));
        let dropped = Arc::new(AtomicU64::new(0));
        // The listeners are bound, but no connection is accepted before `server.run()` below:
        // the authenticator is in place for the very first CONNECT.
        let acl_denied = Arc::new(acl_hooks::AclCounts::default());
        let will_check = acl.clone().map(|acl| (acl, acl_denied.clone()));
        let login = hooks::Login {
            auth,
            will_check,
            allow_anonymous: cfg.allow_anonymous,
        };
        hooks::register_hooks(&scx, &local, &dropped, login).await;
        limits::register(&scx, &checked, cfg).await;
        inflight::register(&scx).await;
        let sys_counts = Arc::new(sys::Counts::default());
        if checked.sys_interval.is_some() {
            sys::register(&scx, sys_counts.clone()).await;
        }
        if let Some(acl) = acl {
            acl_hooks::register(&scx, acl, acl_denied.clone()).await;
        }

        let mut server = MqttServer::new(scx.clone()).listener_by_id(tcp, mqtt_addr.port());
        let ws_addr = fronts.ws_addr;
        server = fronts.add_to(server);
        let server = secure.add_to(server).build();

        let host = From::from_admin(Id::new(
            scx.node.id(),
            mqtt_addr.port(),
            Some(mqtt_addr),
            None,
            ClientId::from(HOST_CLIENT_ID),
            Some(UserName::from(HOST_CLIENT_ID)),
        ));
        let broker = EmbeddedBroker {
            inner: Arc::new(Inner {
                scx: scx.clone(),
                local,
                dropped,
                acl_denied,
                max_payload_bytes: cfg.max_payload_bytes,
                max_topic_levels: checked.max_topic_levels,
                mqtt_addr,
                ws_addr,
                secure: secure_addrs,
                host,
            }),
        };
        tracing::info!(mqtt.addr = %mqtt_addr, ws.addr = ?ws_addr, tls.addr = ?secure_addrs.tls, wss.addr = ?secure_addrs.wss, "embedded MQTT broker listening");

        if let Some(every) = checked.sys_interval {
            sys::spawn(broker.clone(), sys_counts, every, shutdown.clone());
        }
        disconnect::spawn(scx.clone(), shutdown.clone());
        // WebSocket: the accept loops stop with the server, their connections once the
        // broker has disconnected its clients.
        let (ws_stop, ws_close) = (shutdown.child_token(), CancellationToken::new());
        let ws_tasks = fronts.spawn(&ws_stop, &ws_close);
        let task = tokio::spawn(async move {
            tokio::select! {
                res = server.run() => {
                    if let Err(e) = res {
                        tracing::error!(error = %e, "embedded MQTT broker stopped");
                    }
                }
                () = shutdown.cancelled() => {}
            }
            // The server future, and with it its listeners, is dropped here; the WebSocket
            // listeners close as their accept loops end.
            ws_stop.cancel();
            for t in ws_tasks {
                let _ = t.await;
            }
            disconnect_all(&scx).await;
            ws_close.cancel();
            tracing::info!("embedded MQTT broker stopped");
        });
        Ok((broker, task))
    }

    /// The bound MQTT/TCP address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.inner.mqtt_addr
    }

    /// The bound MQTT/WebSocket address, if that listener is enabled. Any path works
    /// (`ws://host:port/mqtt` is the usual); clients must offer the `mqtt` subprotocol.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.inner.ws_addr
    }
}

fn bind(builder: Builder, what: &'static str, key: &'static str) -> Result<Listener, BrokerError> {
    let addr = builder.laddr;
    builder.bind().map_err(|e| BrokerError::Bind {
        what,
        key,
        addr: addr.to_string(),
        source: match e.downcast::<std::io::Error>() {
            Ok(io) => io,
            Err(e) => std::io::Error::other(e.to_string()),
        },
    })
}

fn local_addr(
    l: &Listener,
    what: &'static str,
    key: &'static str,
) -> Result<SocketAddr, BrokerError> {
    l.local_addr().map_err(|e| BrokerError::Bind {
        what,
        key,
        addr: l.cfg.laddr.to_string(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Maps an rmqtt setup error (an `anyhow::Error`) to [`BrokerError::Setup`] for `what`.
fn setup<E: fmt::Display>(what: &'static str) -> impl FnOnce(E) -> BrokerError {
    move |e| BrokerError::Setup {
        what,
        reason: e.to_string(),
    }
}

/// The rmqtt-retainer settings: in memory, no TTL (its default follows the 5 min message expiry),
/// payloads as large as the broker accepts.
fn retainer_config(max_payload_bytes: usize) -> String {
    format!(
        "retained_message_ttl = \"0m\"\nmax_retained_messages = 0\nmax_payload_size = \"{max_payload_bytes}B\"\n\n[storage]\ntype = \"ram\"\n"
    )
}

/// Disconnects every client (best effort, bounded), so they reconnect to whatever comes next.
async fn disconnect_all(scx: &ServerContext) {
    let shared = scx.extends.shared().await;
    let ids: Vec<Id> = shared.iter().map(|e| e.id()).collect();
    let kicks = ids.into_iter().map(|id| {
        let mut entry = shared.entry(id);
        async move {
            if entry.session().is_some() {
                let _ = entry.kick(true, true, true).await;
            }
        }
    });
    if tokio::time::timeout(SHUTDOWN_KICK_TIMEOUT, futures::future::join_all(kicks))
        .await
        .is_err()
    {
        tracing::warn!("some MQTT clients were not disconnected within the shutdown timeout");
    }
}

/// Our [`QoS`] as rmqtt's, and back: the only conversions of this module.
fn to_rmqtt_qos(q: QoS) -> rmqtt::codec::types::QoS {
    match q {
        QoS::AtMostOnce => rmqtt::codec::types::QoS::AtMostOnce,
        QoS::AtLeastOnce => rmqtt::codec::types::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rmqtt::codec::types::QoS::ExactlyOnce,
    }
}

fn from_rmqtt_qos(q: rmqtt::codec::types::QoS) -> QoS {
    match q {
        rmqtt::codec::types::QoS::AtMostOnce => QoS::AtMostOnce,
        rmqtt::codec::types::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rmqtt::codec::types::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    async fn publish(&self, msg: Message) -> Result<(), BrokerError> {
        let (payload, levels) = (self.inner.max_payload_bytes, self.inner.max_topic_levels);
        crate::local::check_host_publish(&msg, payload, levels)?;
        let scx = &self.inner.scx;
        let from = self.inner.host.clone();
        let topic = msg.topic.clone();
        let p = CodecPublish {
            dup: false,
            retain: msg.retain,
            qos: to_rmqtt_qos(msg.qos),
            topic: TopicName::from(msg.topic),
            packet_id: None,
            payload: msg.payload,
            // Sent to MQTT 5 subscribers as they are; MQTT 3.1.1 ones get the payload only.
            properties: Some(PublishProperties {
                response_topic: msg.response_topic.map(TopicName::from),
                correlation_data: msg.correlation,
                ..PublishProperties::default()
            }),
        };
        let p = Publish::from(p).create_time(rmqtt::utils::timestamp_millis());
        // Like rmqtt-http-api: hooks first (ours feeds host subscriptions), then routing; a
        // retained publish is stored by `forwards` (an empty payload clears the topic).
        let p = scx
            .extends
            .hook_mgr()
            .message_publish(None, from.clone(), &p)
            .await
            .unwrap_or(p);
        SessionState::forwards(scx, from, p, false, None)
            .await
            .map_err(|e| BrokerError::Publish {
                topic,
                reason: e.to_string(),
            })
    }

    async fn subscribe(&self, filter: &str, capacity: usize) -> Result<Subscription, BrokerError> {
        let (rx, guard) = self.inner.local.subscribe(filter, capacity)?;
        Ok(Subscription::new(filter.to_owned(), rx, Box::new(guard)))
    }

    async fn retained(&self, filter: &str) -> Result<Vec<Message>, BrokerError> {
        if !iot_proto::topics::valid_filter(filter) {
            return Err(BrokerError::Filter(filter.to_owned()));
        }
        let found = self
            .inner
            .scx
            .extends
            .retain()
            .await
            .get(&TopicFilter::from(filter))
            .await
            .map_err(|e| BrokerError::Retained {
                filter: filter.to_owned(),
                reason: e.to_string(),
            })?;
        let by_topic: BTreeMap<String, Message> = found
            .into_iter()
            .map(|(topic, r)| {
                let mut m = Message::new(
                    topic.to_string(),
                    r.publish.payload.clone(),
                    from_rmqtt_qos(r.publish.qos),
                    true,
                );
                hooks::set_properties(&mut m, r.publish.properties.as_ref());
                (m.topic.clone(), m)
            })
            .collect();
        Ok(by_topic.into_values().collect())
    }

    fn stats(&self) -> BrokerStats {
        BrokerStats {
            sessions: u64::try_from(self.inner.scx.connections.count()).unwrap_or(0),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            host_dropped: self.inner.local.host_dropped(),
            acl_denied_publish: self.inner.acl_denied.publish.load(Ordering::Relaxed),
            acl_denied_subscribe: self.inner.acl_denied.subscribe.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("mqtt_addr", &self.inner.mqtt_addr)
            .field("ws_addr", &self.inner.ws_addr)
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The retainer plugin reads the settings we give it: no TTL, payloads up to our maximum.
    #[tokio::test]
    async fn retainer_gets_our_settings() {
        let cfg = EmbeddedConfig {
            listen: "127.0.0.1:0".into(),
            ws_listen: String::new(),
            max_payload_bytes: 2 << 20,
            ..EmbeddedConfig::default()
        };
        let shutdown = CancellationToken::new();
        let (b, task) = EmbeddedBroker::start(&cfg, None, shutdown.clone())
            .await
            .unwrap();
        let retainer = b
            .inner
            .scx
            .plugins
            .get_config("rmqtt-retainer")
            .await
            .unwrap();
        assert_eq!(retainer["retained_message_ttl"]["secs"], 0, "{retainer}");
        assert_eq!(retainer["storage"], "Ram", "{retainer}");

        // Larger than the retainer's own 1 MiB default.
        let big = Message::new("big", vec![7u8; 3 << 19], QoS::AtLeastOnce, true);
        b.publish(big.clone()).await.unwrap();
        assert_eq!(b.retained("big").await.unwrap(), vec![big]);
        assert!(b.ws_addr().is_none());
        shutdown.cancel();
        task.await.unwrap();
    }

    /// Client sessions get our listener settings: no expiry for messages published without a
    /// Message Expiry Interval, and no resending of unacknowledged messages on an open
    /// connection (rmqtt's defaults: 5 min and 20 s). The effect of the first is checked end to
    /// end in tests/it; the second would need a 20 s wait there.
    #[tokio::test]
    async fn sessions_get_no_message_expiry_and_no_retry() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cfg = EmbeddedConfig {
            listen: "127.0.0.1:0".into(),
            ws_listen: String::new(),
            ..EmbeddedConfig::default()
        };
        let shutdown = CancellationToken::new();
        let (b, task) = EmbeddedBroker::start(&cfg, None, shutdown.clone())
            .await
            .unwrap();
        let mut s = tokio::net::TcpStream::connect(b.mqtt_addr()).await.unwrap();
        // CONNECT, MQTT 3.1.1, clean session, keepalive 30, client id "cfg"
        s.write_all(b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x1e\x00\x03cfg")
            .await
            .unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        let shared = b.inner.scx.extends.shared().await;
        let session = shared
            .iter()
            .find_map(|e| e.session())
            .expect("a client session");
        let lc = session.listen_cfg();
        assert_eq!(lc.message_expiry_interval, Duration::ZERO);
        assert_eq!(lc.message_retry_interval, Duration::ZERO);
        drop(shared);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn config_validation() {
        let zero = EmbeddedConfig {
            max_inflight: 0,
            ..EmbeddedConfig::default()
        };
        assert!(zero.inflight().is_err());
        let huge = EmbeddedConfig {
            max_payload_bytes: usize::MAX,
            ..EmbeddedConfig::default()
        };
        assert!(huge.max_packet_bytes().is_err());
        assert_eq!(
            EmbeddedConfig::default().max_packet_bytes().unwrap(),
            (1 << 20) + (64 << 10)
        );
        use crate::local::valid_topic;
        assert!(valid_topic("a/b") && !valid_topic("a/+") && !valid_topic("") && !valid_topic("#"));
    }
}
