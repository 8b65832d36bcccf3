//! One MQTT connection of the bench (rumqttc): a publisher, a subscriber, a bench DA or the
//! graph API client.
//!
//! Its event-loop task only polls (rumqttc pitfall: never wait on anything that needs the
//! loop). What it receives goes one of three ways: data is counted in place by the stream's
//! [`Recorder`](crate::stats::Recorder) (no hand-off on the hot path); messages on the
//! `forward` topics and SUBACK/CONNACK go to the owner over a bounded channel with `try_send`
//! (dropped and counted if the owner lags, never blocking the loop). After a reconnect the task
//! resubscribes and republishes the birth message itself with `try_` calls. `tcp_nodelay` is on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, QoS,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::BenchError;
use crate::stats::{lock, SharedRecorder};

/// How long a CONNACK or SUBACK may take.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(15);

/// What the event loop hands to the connection's owner.
#[derive(Debug)]
pub enum ConnEvent {
    /// A message on one of the `forward` topics.
    Message {
        payload: Bytes,
    },
    SubAck,
    /// Connecting failed (before the first CONNACK): why.
    Error(String),
}

/// How to open a connection.
#[derive(Debug, Clone)]
pub struct ConnSpec {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Capacity of rumqttc's request channel (publishes waiting for the socket).
    pub request_cap: usize,
    pub will: Option<LastWill>,
    /// Published again (with `try_publish`) after every reconnect: `(topic, payload)`.
    pub birth: Option<(String, Vec<u8>)>,
    /// Messages on these exact topics go to the owner; every other message to the recorder.
    pub forward: Vec<String>,
    pub recorder: Option<SharedRecorder>,
    /// Capacity of the owner's event channel.
    pub event_cap: usize,
}

impl ConnSpec {
    pub fn new(host: &str, port: u16, client_id: String) -> Self {
        Self {
            host: host.to_owned(),
            port,
            client_id,
            keep_alive: Duration::from_secs(60),
            request_cap: 256,
            will: None,
            birth: None,
            forward: Vec::new(),
            recorder: None,
            event_cap: 64,
        }
    }
}

/// Counters shared by every connection of a bench.
#[derive(Debug, Default)]
pub struct ConnCounters {
    pub reconnects: AtomicU64,
    /// Events the owner was too slow to take.
    pub events_dropped: AtomicU64,
}

/// An open connection.
#[derive(Debug)]
pub struct Conn {
    pub client: AsyncClient,
    pub events: mpsc::Receiver<ConnEvent>,
    subs: Arc<Mutex<Vec<(String, QoS)>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Conn {
    /// Connects and waits for the CONNACK.
    pub async fn connect(spec: ConnSpec, counters: Arc<ConnCounters>) -> Result<Conn, BenchError> {
        let mut opts = MqttOptions::new(spec.client_id.clone(), spec.host.clone(), spec.port);
        opts.set_keep_alive(spec.keep_alive);
        opts.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        opts.set_inflight(100);
        if let Some(w) = spec.will.clone() {
            opts.set_last_will(w);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, spec.request_cap);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(10);
        eventloop.set_network_options(net);
        let (tx, mut events) = mpsc::channel(spec.event_cap.max(4));
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let subs = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(event_loop(
            eventloop,
            client.clone(),
            spec.clone(),
            tx,
            connected_tx,
            subs.clone(),
            stop.clone(),
            counters,
        ));
        let addr = format!("{}:{}", spec.host, spec.port);
        let waited = tokio::time::timeout(ACK_TIMEOUT, async {
            let mut connected = connected;
            loop {
                tokio::select! {
                    r = &mut connected => return r.map_err(|_| "the connection task ended".to_owned()),
                    e = events.recv() => match e {
                        Some(ConnEvent::Error(why)) => return Err(why),
                        Some(_) => {}
                        None => return Err("the connection task ended".to_owned()),
                    },
                }
            }
        })
        .await;
        let failed = match waited {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no CONNACK within {} s", ACK_TIMEOUT.as_secs())),
        };
        if let Some(reason) = failed {
            stop.cancel();
            task.abort();
            return Err(BenchError::MqttConnect { addr, reason });
        }
        Ok(Conn {
            client,
            events,
            subs,
            stop,
            task,
        })
    }

    /// Subscribes (and after a reconnect, again) without waiting for the SUBACK.
    pub async fn subscribe_nowait(&mut self, filter: &str, qos: QoS) -> Result<(), BenchError> {
        self.subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((filter.to_owned(), qos));
        self.client
            .subscribe(filter, qos)
            .await
            .map_err(|e| BenchError::Subscribe {
                filter: filter.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Subscribes and waits for the SUBACK; messages forwarded meanwhile are returned.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
    ) -> Result<Vec<ConnEvent>, BenchError> {
        self.subscribe_nowait(filter, qos).await?;
        let mut early = Vec::new();
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        let failed = |reason: String| BenchError::Subscribe {
            filter: filter.to_owned(),
            reason,
        };
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ConnEvent::SubAck)) => return Ok(early),
                Ok(Some(e)) => early.push(e),
                Ok(None) => return Err(failed("the connection closed".into())),
                Err(_) => {
                    return Err(failed(format!(
                        "no SUBACK within {} s",
                        ACK_TIMEOUT.as_secs()
                    )))
                }
            }
        }
    }

    /// Forgets a subscription (no reply awaited).
    pub async fn unsubscribe(&mut self, filter: &str) {
        self.subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(f, _)| f != filter);
        let _ = self.client.unsubscribe(filter).await;
    }

    /// Sends DISCONNECT (no will) and ends the task.
    pub async fn disconnect(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.disconnect()).await;
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn event_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    spec: ConnSpec,
    tx: mpsc::Sender<ConnEvent>,
    connected: tokio::sync::oneshot::Sender<()>,
    subs: Arc<Mutex<Vec<(String, QoS)>>>,
    stop: CancellationToken,
    counters: Arc<ConnCounters>,
) {
    let mut connected = Some(connected);
    let forward = |e: ConnEvent| {
        if tx.try_send(e).is_err() {
            counters.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    };
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if spec.forward.contains(&p.topic) {
                    forward(ConnEvent::Message { payload: p.payload });
                } else if let Some(r) = &spec.recorder {
                    lock(r).record(&p.payload);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => forward(ConnEvent::SubAck),
            Ok(Event::Incoming(Packet::ConnAck(_))) => match connected.take() {
                Some(c) => {
                    let _ = c.send(());
                }
                None => {
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    let again = subs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    for (f, q) in again {
                        let _ = client.try_subscribe(f, q);
                    }
                    if let Some((topic, payload)) = &spec.birth {
                        let _ = client.try_publish(
                            topic.clone(),
                            QoS::ExactlyOnce,
                            true,
                            payload.clone(),
                        );
                    }
                }
            },
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stop.is_cancelled() => break,
            Ok(_) => {}
            Err(e) => {
                if stop.is_cancelled() || matches!(e, ConnectionError::RequestsDone) {
                    break;
                }
                if connected.is_some() {
                    forward(ConnEvent::Error(e.to_string()));
                }
                // rumqttc retries at once; back off with jitter.
                let jitter = u64::from(rand_u16() % 200);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100 + jitter)) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
    }
}

/// A cheap pseudo-random number for jitter (no RNG crate needed for this).
fn rand_u16() -> u16 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (n ^ (n >> 16)) as u16
}

/// `0`, `1` or `2` as a rumqttc QoS.
pub fn qos(level: u8) -> Result<QoS, BenchError> {
    rumqttc::qos(level)
        .map_err(|_| BenchError::InvalidOption(format!("QoS must be 0, 1 or 2, not {level}")))
}
