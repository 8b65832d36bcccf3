//! End-to-end tests of the broker layer with real sockets and real MQTT clients.
//! Embedded brokers run on `127.0.0.1:0`; the external-broker tests use the Mosquitto listening on
//! 127.0.0.1:1883 on this machine. Tests wait on conditions with timeouts, never on fixed sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod deep_topics;
mod embedded;
mod external;
mod mqtt5;
mod native;
mod native_review;
mod native_spec;
mod qos_resume;
mod raw;
mod reliability;
mod request_response;
mod sessions;
mod tls;
mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use iot_broker::{
    Authenticator, Broker, BrokerCore, BrokerError, BrokerStats, EmbeddedBroker, EmbeddedConfig,
    Message, NativeBroker, Security, Subscription,
};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any single expected event may take (a loaded CI machine can take seconds).
pub const WAIT: Duration = Duration::from_secs(30);

/// The embedded broker on either core (`broker.core`). The suite runs on the core
/// `IOT_BROKER_CORE` names (`rmqtt`, the default, or `native`); `native.rs` runs the targets
/// of the native core on it whatever that says.
#[derive(Debug, Clone)]
pub enum AnyBroker {
    Rmqtt(EmbeddedBroker),
    Native(NativeBroker),
}

impl AnyBroker {
    pub fn mqtt_addr(&self) -> SocketAddr {
        match self {
            AnyBroker::Rmqtt(b) => b.mqtt_addr(),
            AnyBroker::Native(b) => b.mqtt_addr(),
        }
    }
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        match self {
            AnyBroker::Rmqtt(b) => b.ws_addr(),
            AnyBroker::Native(b) => b.ws_addr(),
        }
    }
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        match self {
            AnyBroker::Rmqtt(b) => b.tls_addr(),
            AnyBroker::Native(b) => b.tls_addr(),
        }
    }
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        match self {
            AnyBroker::Rmqtt(b) => b.wss_addr(),
            AnyBroker::Native(b) => b.wss_addr(),
        }
    }
    fn inner(&self) -> &dyn Broker {
        match self {
            AnyBroker::Rmqtt(b) => b,
            AnyBroker::Native(b) => b,
        }
    }
}

#[async_trait]
impl Broker for AnyBroker {
    async fn publish(&self, msg: Message) -> Result<(), BrokerError> {
        self.inner().publish(msg).await
    }
    async fn subscribe(&self, filter: &str, capacity: usize) -> Result<Subscription, BrokerError> {
        self.inner().subscribe(filter, capacity).await
    }
    async fn retained(&self, filter: &str) -> Result<Vec<Message>, BrokerError> {
        self.inner().retained(filter).await
    }
    fn stats(&self) -> BrokerStats {
        self.inner().stats()
    }
}

/// The core the suite runs on: the default (native) unless `IOT_BROKER_CORE=rmqtt`.
pub fn suite_core() -> BrokerCore {
    match std::env::var("IOT_BROKER_CORE").as_deref() {
        Ok("rmqtt") => BrokerCore::Rmqtt,
        _ => BrokerCore::Native,
    }
}

/// Starts `cfg` on its core (`cfg.core`).
pub async fn start_any(
    cfg: &EmbeddedConfig,
    security: Security,
    shutdown: CancellationToken,
) -> Result<(AnyBroker, JoinHandle<()>), BrokerError> {
    Ok(match cfg.core {
        BrokerCore::Rmqtt => {
            let (b, t) = EmbeddedBroker::start_secured(cfg, security, shutdown).await?;
            (AnyBroker::Rmqtt(b), t)
        }
        BrokerCore::Native => {
            let (b, t) = NativeBroker::start(cfg, security, shutdown).await?;
            (AnyBroker::Native(b), t)
        }
    })
}

/// A running embedded broker; dropping it shuts it down.
#[derive(Debug)]
pub struct TestBroker {
    pub broker: AnyBroker,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<()>>,
}

impl TestBroker {
    pub fn addr(&self) -> SocketAddr {
        self.broker.mqtt_addr()
    }

    /// Cancels and waits until the broker task has ended.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("broker stops")
                .expect("broker task");
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn test_config() -> EmbeddedConfig {
    let core = suite_core();
    EmbeddedConfig {
        core,
        listen: "127.0.0.1:0".into(),
        ws_listen: "127.0.0.1:0".into(),
        ..EmbeddedConfig::default()
    }
}

pub async fn spawn_broker() -> TestBroker {
    spawn_broker_with(test_config()).await
}

pub async fn spawn_broker_with(cfg: EmbeddedConfig) -> TestBroker {
    spawn_broker_with_auth(cfg, None).await
}

/// A broker that checks every CONNECT with `auth` from the start.
pub async fn spawn_broker_with_auth(
    cfg: EmbeddedConfig,
    auth: Option<Arc<dyn Authenticator>>,
) -> TestBroker {
    let shutdown = CancellationToken::new();
    let security = Security { auth, acl: None };
    let (broker, task) = start_any(&cfg, security, shutdown.clone())
        .await
        .expect("broker starts");
    TestBroker {
        broker,
        shutdown,
        task: Some(task),
    }
}

/// A rumqttc client whose event loop runs on its own task; incoming packets arrive on `rx`.
#[derive(Debug)]
pub struct TestClient {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Packet>,
    task: JoinHandle<()>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(4 << 20, 4 << 20);
    opts
}

/// Connects and waits for the CONNACK.
pub async fn client(addr: SocketAddr, id: &str) -> TestClient {
    client_with(options(addr, id)).await
}

pub async fn client_with(opts: MqttOptions) -> TestClient {
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    // rumqttc's default of 5 s for the TCP connect, the CONNACK and each flush.
    net.set_connection_timeout(WAIT.as_secs());
    eventloop.set_network_options(net);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    eprintln!("test client: {e}");
                    return;
                }
            }
        }
    });
    within(WAIT, "CONNACK", async {
        loop {
            if let Packet::ConnAck(_) = rx
                .recv()
                .await
                .expect("client event loop ended before CONNACK")
            {
                break;
            }
        }
    })
    .await;
    TestClient { client, rx, task }
}

impl TestClient {
    /// The next incoming packet matching `pick`, skipping others.
    pub async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
        within(WAIT, what, async {
            loop {
                let p = self
                    .rx
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("client closed while waiting for {what}"));
                if let Some(t) = pick(p) {
                    return t;
                }
            }
        })
        .await
    }

    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        self.next("PUBLISH", |p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .await
    }

    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        self.next("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await;
    }
}

/// Awaits `fut` for at most `wait`, panicking with `what` otherwise.
pub async fn within<T>(wait: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(wait, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {wait:?} waiting for {what}"))
}

/// Polls `cond` every 10 ms until it holds, for at most `wait`.
pub async fn eventually(wait: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    within(wait, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
