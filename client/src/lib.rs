#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout: this file only. [`GraphClient`] is a cheap clonable handle; one task polls the
//! MQTT connection (resubscribing after every reconnect) and hands each reply to the request
//! waiting for its `nonce`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use iot_proto::topics;
use iot_proto::wire::graph_api::{GraphOk, GraphOp, GraphReply, GraphView, OpKind};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct GraphClientOptions {
    pub host: String,
    pub port: u16,
    /// The `<client>` level of the API topics (`gui`, `ccm`, ...).
    pub client: String,
    /// MQTT credentials, when the broker asks for them.
    pub credentials: Option<(String, String)>,
    /// How long a request waits for its reply (default 15 s).
    pub reply_timeout: Duration,
    /// How long [`GraphClient::connect`] waits for the broker (default 10 s).
    pub connect_timeout: Duration,
}

impl GraphClientOptions {
    pub fn new(host: impl Into<String>, port: u16, client: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            client: client.into(),
            credentials: None,
            reply_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not a valid client name for an API topic")]
    InvalidName(String),
    #[error("cannot connect to the broker at {addr}: {why}")]
    Connect { addr: String, why: String },
    #[error("graph request `{op}` on graph {gid} was refused: {reason}")]
    Refused {
        op: String,
        gid: String,
        reason: String,
    },
    #[error("no reply to graph request `{op}` on graph {gid} within {timeout_ms} ms: is a controller attached to this broker?")]
    Timeout {
        op: String,
        gid: String,
        timeout_ms: u128,
    },
    #[error("the reply to graph request `{op}` on graph {gid} has no readable `{field}`: is the controller older than this client?")]
    BadReply {
        op: String,
        gid: String,
        field: &'static str,
    },
    #[error("the connection to the broker is closed")]
    Closed,
}

/// Requests waiting for their reply, by nonce. A std mutex: held for an insert or a remove.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<GraphReply>>>>;

/// A graph-API client: one MQTT connection for every graph of one client name.
#[derive(Debug, Clone)]
pub struct GraphClient {
    mqtt: AsyncClient,
    client: String,
    waiting: Waiting,
    reply_timeout: Duration,
    _task: Arc<TaskGuard>,
}

/// Stops the connection's task when the last handle is dropped.
#[derive(Debug)]
struct TaskGuard(tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl GraphClient {
    /// Connects and subscribes to this client's replies; returns once the broker confirmed
    /// the subscription.
    pub async fn connect(opts: GraphClientOptions) -> Result<GraphClient, ClientError> {
        topics::check_level(&opts.client)
            .map_err(|_| ClientError::InvalidName(opts.client.clone()))?;
        let addr = format!("{}:{}", opts.host, opts.port);
        let id = format!(
            "iot-client-{}-{}",
            opts.client,
            uuid::Uuid::new_v4().simple()
        );
        let mut mqtt_opts = MqttOptions::new(id, opts.host.clone(), opts.port);
        mqtt_opts.set_keep_alive(Duration::from_secs(30));
        mqtt_opts.set_max_packet_size(64 * 1024 * 1024, 64 * 1024 * 1024);
        if let Some((user, password)) = &opts.credentials {
            mqtt_opts.set_credentials(user.clone(), password.clone());
        }
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        let (mqtt, mut events) = AsyncClient::new(mqtt_opts, 64);
        events.set_network_options(net);
        let filter = topics::graph_res_filter(&opts.client);
        let waiting: Waiting = Arc::default();
        let (ready_tx, mut ready) = watch::channel(None);
        let task = tokio::spawn(poll(
            events,
            mqtt.clone(),
            filter,
            waiting.clone(),
            ready_tx,
        ));
        let guard = Arc::new(TaskGuard(task.abort_handle()));
        let subscribed = tokio::time::timeout(opts.connect_timeout, async {
            loop {
                if let Some(r) = ready.borrow_and_update().clone() {
                    return r;
                }
                if ready.changed().await.is_err() {
                    return Err("the connection task stopped".to_owned());
                }
            }
        })
        .await;
        match subscribed {
            Ok(Ok(())) => Ok(GraphClient {
                mqtt,
                client: opts.client,
                waiting,
                reply_timeout: opts.reply_timeout,
                _task: guard,
            }),
            Ok(Err(why)) => Err(ClientError::Connect { addr, why }),
            Err(_) => Err(ClientError::Connect {
                addr,
                why: format!("no answer within {} s", opts.connect_timeout.as_secs()),
            }),
        }
    }

    /// The `<client>` level of this client's topics.
    pub fn name(&self) -> &str {
        &self.client
    }

    /// Sends `op` for graph `gid`; its typed results, or why it failed.
    pub async fn request(&self, gid: &str, op: GraphOp) -> Result<GraphOk, ClientError> {
        let kind = op.kind();
        let reply = self.send(gid, op.to_json()).await?;
        match reply.outcome {
            Ok(()) => Ok(reply.ok_for(kind)),
            Err(reason) => Err(ClientError::Refused {
                op: kind.as_str().to_owned(),
                gid: gid.to_owned(),
                reason,
            }),
        }
    }

    /// `show`: graph `gid` as it is now (functions, links and their settings, join, monitor),
    /// to reconcile against.
    pub async fn show(&self, gid: &str) -> Result<GraphView, ClientError> {
        match self.request(gid, GraphOp::Show).await? {
            GraphOk::Graph(view) => Ok(view),
            _ => Err(ClientError::BadReply {
                op: OpKind::Show.as_str().to_owned(),
                gid: gid.to_owned(),
                field: "graph",
            }),
        }
    }

    /// Sends any request body (a `nonce` is added) and returns the reply as it came, whatever
    /// its state: for callers that send what the typed ops cannot express.
    pub async fn send(
        &self,
        gid: &str,
        mut body: Map<String, Value>,
    ) -> Result<GraphReply, ClientError> {
        let op = body
            .get("op")
            .and_then(Value::as_str)
            .and_then(OpKind::parse)
            .map_or("?", OpKind::as_str)
            .to_owned();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        body.insert("nonce".into(), Value::String(nonce.clone()));
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(nonce.clone(), tx);
        let forget = |w: &Waiting| {
            lock(w).remove(&nonce);
        };
        let payload = Value::Object(body).to_string();
        let topic = topics::graph_req(&self.client, gid);
        if self
            .mqtt
            .publish(topic, QoS::ExactlyOnce, false, payload)
            .await
            .is_err()
        {
            forget(&self.waiting);
            return Err(ClientError::Closed);
        }
        match tokio::time::timeout(self.reply_timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                forget(&self.waiting);
                Err(ClientError::Timeout {
                    op,
                    gid: gid.to_owned(),
                    timeout_ms: self.reply_timeout.as_millis(),
                })
            }
        }
    }

    /// Disconnects cleanly (waiting requests fail with [`ClientError::Closed`]).
    pub async fn close(self) {
        let _ = self.mqtt.disconnect().await;
        lock(&self.waiting).clear();
    }
}

fn lock(w: &Waiting) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<GraphReply>>> {
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls the connection: subscribes on every CONNACK (a clean session forgets
/// subscriptions), reports readiness on the first SUBACK, and hands replies to their waiters.
async fn poll(
    mut events: EventLoop,
    mqtt: AsyncClient,
    filter: String,
    waiting: Waiting,
    ready: watch::Sender<Option<Result<(), String>>>,
) {
    let mut failures = 0u32;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                // Not awaited here: the request channel is drained by this very loop.
                let _ = mqtt.try_subscribe(filter.clone(), QoS::ExactlyOnce);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                ready.send_if_modified(|r| r.replace(Ok(())).is_none());
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(reply) = GraphReply::from_json(&p.payload) else {
                    continue;
                };
                let nonce = reply.fields.get("nonce").and_then(Value::as_str);
                if let Some(tx) = nonce.and_then(|n| lock(&waiting).remove(n)) {
                    let _ = tx.send(reply);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if ready.borrow().is_none() {
                    ready.send_replace(Some(Err(e.to_string())));
                    return;
                }
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, "graph API connection lost; reconnecting");
                let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}
