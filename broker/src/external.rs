//! A connection to an external MQTT broker (Mosquitto, EMQX, ...) over rumqttc, MQTT 3.1.1.
//!
//! One connection carries host publishes and host subscriptions. Its event-loop task only polls
//! and hands incoming publishes to [`LocalRouter::try_dispatch`] (never waiting: a rumqttc event
//! loop that blocks deadlocks its own clients). After every CONNACK it subscribes again to every
//! filter in use (the session is clean), and it waits a jittered, growing delay between
//! reconnect attempts. [`Broker::retained`] uses a short-lived second connection.
//! Not here: TLS, WebSocket transport, persistent sessions, MQTT 5 properties (received
//! messages have no `from`, `response_topic` or `correlation`; publishes drop the last two).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Packet,
    SubscribeFilter,
};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::local::{valid_topic, LocalGuard, LocalRouter};
use crate::{locks, Broker, BrokerError, BrokerStats, Message, MqttUrl, QoS, Subscription};

/// How long `subscribe` waits for the broker's SUBACK before returning anyway (the filter stays
/// registered and is subscribed again after a reconnect). Generous: returning before the
/// subscription is active breaks the promise that later publishes reach it, and a busy broker
/// or host can take seconds.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `subscribe` retries while the request queue is full.
const QUEUE_FULL_TIMEOUT: Duration = Duration::from_secs(5);
/// Filters per SUBSCRIBE packet when subscribing again after a reconnect.
const RESUBSCRIBE_BATCH: usize = 256;

/// Settings of the external-broker connection.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ExternalConfig {
    /// `mqtt://host:port` (`tcp://` also accepted; the port defaults to 1883).
    pub url: String,
    /// Client ids are `<prefix>-<random>`, so several controllers can share a broker.
    pub client_id_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive_seconds: u64,
    pub connect_timeout_seconds: u64,
    /// Largest MQTT packet sent or accepted (rumqttc's default is only 10 KiB).
    pub max_packet_bytes: usize,
    /// Requests (publish, subscribe) queued for the connection before `publish` waits.
    pub request_queue_len: usize,
    /// First delay before reconnecting; doubles on each failure, with jitter.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// `retained()` returns once no retained message arrived for this long after the SUBACK.
    pub retained_silence_ms: u64,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".to_owned(),
            client_id_prefix: "iotctl".to_owned(),
            username: None,
            password: None,
            keep_alive_seconds: 30,
            connect_timeout_seconds: 5,
            max_packet_bytes: 1024 * 1024 + 64 * 1024,
            request_queue_len: 1024,
            reconnect_min_ms: 500,
            reconnect_max_ms: 10_000,
            retained_silence_ms: 300,
        }
    }
}

impl fmt::Debug for ExternalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalConfig")
            .field("url", &self.url)
            .field("client_id_prefix", &self.client_id_prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("keep_alive_seconds", &self.keep_alive_seconds)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("request_queue_len", &self.request_queue_len)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("retained_silence_ms", &self.retained_silence_ms)
            .finish()
    }
}

impl ExternalConfig {
    /// [`url`](Self::url), parsed.
    pub fn mqtt_url(&self) -> Result<MqttUrl, BrokerError> {
        Ok(MqttUrl::parse(&self.url)?)
    }

    fn options(&self, client_id: String) -> Result<(MqttOptions, NetworkOptions), BrokerError> {
        let url = self.mqtt_url()?;
        let mut opts = MqttOptions::new(client_id, url.host, url.port);
        opts.set_keep_alive(Duration::from_secs(self.keep_alive_seconds.max(5)))
            .set_clean_session(true)
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes);
        if let Some(user) = &self.username {
            opts.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(self.connect_timeout_seconds.max(1));
        Ok((opts, net))
    }

    fn client_id(&self, role: &str) -> String {
        format!(
            "{}-{role}{}",
            self.client_id_prefix,
            uuid::Uuid::new_v4().simple()
        )
    }
}

/// The external-broker connection. A cheap handle: clones share one connection.
#[derive(Clone)]
pub struct ExternalBroker {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ExternalConfig,
    client: AsyncClient,
    local: LocalRouter,
    /// Orders "register locally + enqueue SUBSCRIBE/UNSUBSCRIBE" against the resubscription
    /// after a reconnect. A std mutex: never held across an `.await`.
    subs: Mutex<SubState>,
    /// SUBACKs received on the current connection: (connection generation, count).
    acked: watch::Sender<(u64, u64)>,
    /// Cancelled when the event loop has ended.
    closed: CancellationToken,
}

/// SUBSCRIBE requests enqueued since the last connection loss. SUBACKs arrive in the order the
/// SUBSCRIBEs were queued, so the n-th SUBACK of a generation answers the n-th SUBSCRIBE.
#[derive(Default)]
struct SubState {
    generation: u64,
    sent: u64,
}

impl Inner {
    fn subs(&self) -> MutexGuard<'_, SubState> {
        locks::lock(&self.subs)
    }
}

impl ExternalBroker {
    /// Connects to `cfg.url`, failing fast if the broker cannot be reached or refuses us, then
    /// keeps the connection (reconnecting as needed) until `shutdown` is cancelled.
    pub async fn connect(
        cfg: &ExternalConfig,
        shutdown: CancellationToken,
    ) -> Result<(ExternalBroker, JoinHandle<()>), BrokerError> {
        let (opts, net) = cfg.options(cfg.client_id(""))?;
        let (client, mut eventloop) = AsyncClient::new(opts, cfg.request_queue_len.max(16));
        eventloop.set_network_options(net);
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {}
            Ok(other) => {
                return Err(BrokerError::Handshake {
                    url: cfg.url.clone(),
                    event: format!("{other:?}"),
                })
            }
            Err(error) => return Err(connect_error(&cfg.url, error)),
        }
        tracing::info!(url = %cfg.url, "connected to the external MQTT broker");

        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            client,
            local: LocalRouter::new(Duration::ZERO),
            subs: Mutex::default(),
            acked: watch::channel((0, 0)).0,
            closed: CancellationToken::new(),
        });
        let task = tokio::spawn(run(inner.clone(), eventloop, shutdown));
        Ok((ExternalBroker { inner }, task))
    }
}

fn connect_error(url: &str, error: ConnectionError) -> BrokerError {
    BrokerError::Connect {
        url: url.to_owned(),
        error: Box::new(error),
    }
}

/// The event loop: poll, dispatch, resubscribe after CONNACK, back off after errors.
async fn run(inner: Arc<Inner>, mut eventloop: EventLoop, shutdown: CancellationToken) {
    let min = Duration::from_millis(inner.cfg.reconnect_min_ms.max(10));
    let max = Duration::from_millis(inner.cfg.reconnect_max_ms).max(min);
    let mut backoff = min;
    let mut connected = true;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // A retained message arrives because we (re)subscribed; host subscriptions get
                // live traffic only, as in the embedded broker. `retained()` reads stored ones.
                if !p.retain {
                    inner.local.try_dispatch(&Message::new(
                        p.topic,
                        p.payload,
                        from_rumqttc_qos(p.qos),
                        false,
                    ));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => inner.acked.send_modify(|(_, n)| *n += 1),
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if !connected {
                    tracing::info!(url = %inner.cfg.url, "reconnected to the external MQTT broker");
                }
                connected = true;
                backoff = min;
                resubscribe(&inner);
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => break,
            Err(e) => {
                {
                    // Requests queued before this point are gone with the old session.
                    let mut st = inner.subs();
                    st.generation += 1;
                    st.sent = 0;
                    inner.acked.send_replace((st.generation, 0));
                }
                if connected {
                    tracing::warn!(url = %inner.cfg.url, error = %e, "lost the external MQTT broker; reconnecting");
                } else {
                    tracing::debug!(url = %inner.cfg.url, error = %e, "reconnect to the external MQTT broker failed");
                }
                connected = false;
                let delay = jitter(backoff);
                backoff = (backoff * 2).min(max);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    inner.closed.cancel();
    if connected && inner.client.try_disconnect().is_ok() {
        // Let the DISCONNECT go out, briefly.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    tracing::info!(url = %inner.cfg.url, "disconnected from the external MQTT broker");
}

/// Somewhere between half and all of `d`.
fn jitter(d: Duration) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::random_range(ms / 2..=ms))
}

/// Subscribes again to every filter in use (called on the event-loop task after a CONNACK).
fn resubscribe(inner: &Inner) {
    let mut st = inner.subs();
    let filters = inner.local.filters();
    for batch in filters.chunks(RESUBSCRIBE_BATCH) {
        let req: Vec<SubscribeFilter> = batch
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), rumqttc::QoS::ExactlyOnce))
            .collect();
        if inner.client.try_subscribe_many(req.clone()).is_ok() {
            st.sent += 1;
        } else {
            // The queue is full: queue it from another task (this one must keep polling). Its
            // SUBACK is then not counted, so a later `subscribe` may return a little early.
            let client = inner.client.clone();
            tokio::spawn(async move {
                let _ = client.subscribe_many(req).await;
            });
        }
    }
}

/// Unsubscribes from the broker when the last host subscription of a filter is dropped.
struct ExternalGuard {
    local: Option<LocalGuard>,
    inner: Weak<Inner>,
}

impl Drop for ExternalGuard {
    fn drop(&mut self) {
        let (Some(local), Some(inner)) = (self.local.take(), self.inner.upgrade()) else {
            return;
        };
        let _st = inner.subs();
        let filter = local.filter().to_owned();
        if local.release() {
            // Best effort: if the queue is full the broker keeps sending, and the messages are
            // ignored here until the next reconnect forgets the filter.
            let _ = inner.client.try_unsubscribe(filter);
        }
    }
}

/// Our [`QoS`] as rumqttc's, and back: the only conversions of this module.
fn to_rumqttc_qos(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

fn from_rumqttc_qos(q: rumqttc::QoS) -> QoS {
    match q {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

#[async_trait]
impl Broker for ExternalBroker {
    /// Sent to the broker only: a matching host subscription gets it back from the broker.
    /// MQTT 3.1.1 has no properties: `response_topic` and `correlation` are not sent.
    async fn publish(&self, msg: Message) -> Result<(), BrokerError> {
        if !valid_topic(&msg.topic) {
            return Err(BrokerError::Topic(msg.topic));
        }
        // rumqttc would drop the whole connection on an oversized packet.
        let limit = self
            .inner
            .cfg
            .max_packet_bytes
            .saturating_sub(msg.topic.len() + 16);
        if msg.payload.len() > limit {
            return Err(BrokerError::PayloadTooLarge {
                bytes: msg.payload.len(),
                key: "max_packet_bytes",
                limit: self.inner.cfg.max_packet_bytes,
            });
        }
        self.inner
            .client
            .publish_bytes(msg.topic, to_rumqttc_qos(msg.qos), msg.retain, msg.payload)
            .await
            .map_err(|_| BrokerError::Closed)
    }

    /// Registers the filter, sends SUBSCRIBE (QoS 2) if it is new and waits for the SUBACK
    /// (at most 5 s; the filter stays registered either way).
    async fn subscribe(&self, filter: &str, capacity: usize) -> Result<Subscription, BrokerError> {
        let inner = &self.inner;
        let give_up = Instant::now() + QUEUE_FULL_TIMEOUT;
        let (rx, guard, wait_for) = loop {
            if inner.closed.is_cancelled() {
                return Err(BrokerError::Closed);
            }
            {
                let mut st = inner.subs();
                if inner.local.contains_filter(filter) {
                    let (rx, guard) = inner.local.subscribe(filter, capacity)?;
                    break (rx, guard, None);
                }
                if !iot_proto::topics::valid_filter(filter) {
                    return Err(BrokerError::Filter(filter.to_owned()));
                }
                if inner
                    .client
                    .try_subscribe(filter, rumqttc::QoS::ExactlyOnce)
                    .is_ok()
                {
                    st.sent += 1;
                    let (rx, guard) = inner.local.subscribe(filter, capacity)?;
                    break (rx, guard, Some((st.generation, st.sent)));
                }
            }
            if Instant::now() >= give_up {
                return Err(BrokerError::QueueFull {
                    filter: filter.to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let guard = ExternalGuard {
            local: Some(guard),
            inner: Arc::downgrade(inner),
        };
        if let Some((generation, seq)) = wait_for {
            let mut acked = inner.acked.subscribe();
            let done = acked.wait_for(|&(g, n)| g != generation || n >= seq);
            if tokio::time::timeout(SUBACK_TIMEOUT, done).await.is_err() {
                tracing::warn!(
                    filter,
                    "no SUBACK from the external MQTT broker yet; continuing"
                );
            }
        }
        Ok(Subscription::new(filter.to_owned(), rx, Box::new(guard)))
    }

    /// Asks the broker on a second, short-lived connection: subscribes to `filter` and collects
    /// the messages flagged retained until none arrived for `retained_silence_ms` after the
    /// SUBACK (MQTT has no "end of retained messages" marker, so this is a heuristic).
    async fn retained(&self, filter: &str) -> Result<Vec<Message>, BrokerError> {
        if !iot_proto::topics::valid_filter(filter) {
            return Err(BrokerError::Filter(filter.to_owned()));
        }
        let cfg = &self.inner.cfg;
        let (opts, net) = cfg.options(cfg.client_id("r"))?;
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        eventloop.set_network_options(net);
        client
            .subscribe(filter, rumqttc::QoS::ExactlyOnce)
            .await
            .map_err(|_| BrokerError::Closed)?;

        let silence = Duration::from_millis(cfg.retained_silence_ms);
        let give_up = Instant::now()
            + Duration::from_secs(cfg.connect_timeout_seconds.max(1))
            + Duration::from_secs(30);
        let mut found = BTreeMap::new();
        let mut last_news: Option<Instant> = None; // set by the SUBACK
        loop {
            let until = last_news.map_or(give_up, |t| (t + silence).min(give_up));
            let event = match tokio::time::timeout_at(until, eventloop.poll()).await {
                Err(_) if last_news.is_some() => break,
                Err(_) => {
                    return Err(BrokerError::NoSuback {
                        url: cfg.url.clone(),
                        filter: filter.to_owned(),
                    })
                }
                Ok(Err(e)) => return Err(connect_error(&cfg.url, e)),
                Ok(Ok(event)) => event,
            };
            match event {
                Event::Incoming(Packet::SubAck(_)) => last_news = Some(Instant::now()),
                Event::Incoming(Packet::Publish(p)) if p.retain => {
                    let m = Message::new(p.topic, p.payload, from_rumqttc_qos(p.qos), true);
                    found.insert(m.topic.clone(), m);
                    if last_news.is_some() {
                        last_news = Some(Instant::now());
                    }
                }
                _ => {}
            }
        }
        if client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while let Ok(ev) = eventloop.poll().await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        Ok(found.into_values().collect())
    }

    fn stats(&self) -> BrokerStats {
        BrokerStats {
            sessions: 0,
            dropped: 0,
            host_dropped: self.inner.local.host_dropped(),
            ..BrokerStats::default()
        }
    }
}

impl fmt::Debug for ExternalBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalBroker")
            .field("url", &self.inner.cfg.url)
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> Result<(String, u16), BrokerError> {
        let url = ExternalConfig {
            url: u.into(),
            ..ExternalConfig::default()
        }
        .mqtt_url()?;
        Ok((url.host, url.port))
    }

    #[test]
    fn urls() {
        assert_eq!(
            url("mqtt://localhost:1884").unwrap(),
            ("localhost".into(), 1884)
        );
        assert_eq!(url("tcp://10.0.0.1").unwrap(), ("10.0.0.1".into(), 1883));
        assert_eq!(url("mqtt://[::1]:1885/").unwrap(), ("::1".into(), 1885));
        for bad in [
            "localhost:1883",
            "mqtts://h:1",
            "mqtt://:1883",
            "mqtt://h:x",
            "mqtt://u@h:1",
        ] {
            assert!(matches!(url(bad), Err(BrokerError::Url(_))), "{bad}");
        }
    }

    #[test]
    fn config_reads_from_toml_and_hides_the_password() {
        let c: ExternalConfig =
            toml::from_str("url = \"mqtt://h:1\"\nusername = \"u\"\npassword = \"p\"").unwrap();
        assert_eq!(
            (c.url.as_str(), c.max_packet_bytes, c.retained_silence_ms),
            ("mqtt://h:1", 1_114_112, 300)
        );
        assert!(!format!("{c:?}").contains("\"p\""));
    }

    #[test]
    fn jitter_stays_within_half_and_all() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000));
        }
    }
}
