//! The publishing side of a measured run: publisher connections (batched raw writes for QoS
//! 0, rumqttc for QoS 1 and 2) and the topics each sends to, priming (every receiver has seen
//! a message before anything is measured), and the publish loop with its flow control at
//! full rate. Not here: the window, the drain and the figures ([`crate::load`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::QoS;
use tokio::time::MissedTickBehavior;

use crate::error::BenchError;
use crate::mqtt::{Conn, ConnCounters, ConnSpec};
use crate::payload::Encoder;
use crate::rawpub::RawPublisher;
use crate::spec::LoadSpec;
use crate::stats::{lock, Clock, SharedRecorder, Window};

/// A publisher's connection: batched raw writes for QoS 0, rumqttc for QoS 1 and 2.
#[derive(Debug)]
pub enum PubConn {
    Raw(RawPublisher),
    Client(Conn),
}

/// One publisher connection and the topics it sends to, in turn.
#[derive(Debug)]
pub struct Publisher {
    pub conn: PubConn,
    pub index: u64,
    pub topics: Vec<String>,
}

impl Publisher {
    /// Sends one message at QoS 0 right away.
    async fn send_now(&mut self, topic: &str, payload: &[u8]) -> Result<(), BenchError> {
        match &mut self.conn {
            PubConn::Raw(r) => {
                r.push(topic, payload)?;
                r.flush().await
            }
            PubConn::Client(c) => c
                .client
                .publish_bytes(
                    topic.to_owned(),
                    QoS::AtMostOnce,
                    false,
                    Bytes::copy_from_slice(payload),
                )
                .await
                .map_err(|_| BenchError::Publish {
                    topic: topic.to_owned(),
                }),
        }
    }

    pub async fn disconnect(self) {
        match self.conn {
            PubConn::Raw(r) => r.disconnect().await,
            PubConn::Client(c) => c.disconnect().await,
        }
    }
}

/// Opens `n` publisher connections and spreads `topics` over them: publisher `k` sends to
/// every topic `i` with `i % n == k`, or to topic `k % topics.len()` when there are fewer
/// topics than publishers.
pub async fn connect_publishers(
    host: &str,
    port: u16,
    n: usize,
    topics: &[String],
    qos: QoS,
    run_id: &str,
    counters: &Arc<ConnCounters>,
) -> Result<Vec<Publisher>, BenchError> {
    if topics.is_empty() {
        return Err(BenchError::Setup("nothing to publish to"));
    }
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let mut mine: Vec<String> = topics
            .iter()
            .enumerate()
            .filter(|(i, _)| i % n == k)
            .map(|(_, t)| t.clone())
            .collect();
        if mine.is_empty() {
            mine.push(topics[k % topics.len()].clone());
        }
        let client_id = format!("iotctl-bench-{run_id}-pub{k}");
        let conn = if qos == QoS::AtMostOnce {
            PubConn::Raw(RawPublisher::connect(host, port, &client_id).await?)
        } else {
            let spec = ConnSpec::new(host, port, client_id);
            PubConn::Client(Conn::connect(spec, counters.clone()).await?)
        };
        out.push(Publisher {
            conn,
            index: k as u64,
            topics: mine,
        });
    }
    Ok(out)
}

/// Sends priming messages to every topic until every recorder has seen one: the whole path
/// (broker, graph, functions, subscriptions) is up before anything is measured.
/// `path` names what is primed, for the error when nothing comes through.
pub async fn prime(
    path: &str,
    publisher: &mut Publisher,
    topics: &[String],
    recorders: &[SharedRecorder],
    clock: Clock,
    payload_bytes: usize,
    timeout: Duration,
) -> Result<(), BenchError> {
    let mut enc = Encoder::new(0, payload_bytes);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seq = 0;
    loop {
        for t in topics {
            publisher
                .send_now(t, enc.encode_prime(seq, clock.now_ns()))
                .await?;
            seq += 1;
        }
        let wait_until = tokio::time::Instant::now() + Duration::from_millis(200);
        while tokio::time::Instant::now() < wait_until {
            if recorders.iter().all(|r| lock(r).primed) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BenchError::NoFlow {
                path: path.to_owned(),
                seconds: timeout.as_secs(),
                primed: recorders.iter().filter(|r| lock(r).primed).count(),
                receivers: recorders.len(),
            });
        }
    }
}

/// Flow control at full rate: publishers wait while more than `limit` receptions are
/// outstanding, so the run measures what the path sustains instead of filling socket buffers
/// with seconds of backlog. Receptions that never come (QoS 0 loss) are written off when
/// nothing has arrived for 200 ms, so a lossy path slows the publishers down but never
/// stops them.
#[derive(Debug)]
pub struct Flow {
    /// Outstanding receptions allowed (`max_inflight × fan-out`).
    pub limit: u64,
    pub fanout: u64,
    /// Messages sent by each publisher.
    pub sent: Vec<Arc<AtomicU64>>,
    /// Messages received by every receiver.
    pub seen: Arc<AtomicU64>,
    pub seen_before: u64,
    pub written_off: AtomicU64,
}

impl Flow {
    fn outstanding(&self) -> u64 {
        let sent: u64 = self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        let received = self.seen.load(Ordering::Relaxed) - self.seen_before
            + self.written_off.load(Ordering::Relaxed);
        (sent * self.fanout).saturating_sub(received)
    }

    /// Waits until there is room for more messages.
    async fn wait_for_room(&self) {
        let mut last = self.seen.load(Ordering::Relaxed);
        let mut stalled_since = tokio::time::Instant::now();
        loop {
            let out = self.outstanding();
            if out <= self.limit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = self.seen.load(Ordering::Relaxed);
            if now != last {
                last = now;
                stalled_since = tokio::time::Instant::now();
            } else if stalled_since.elapsed() > Duration::from_millis(200) {
                self.written_off.fetch_add(out, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// One publisher: from `t0` until the end of the window, at `rate` msgs/s (0 = as fast as
/// the path takes them, see [`Flow`]). Returns the publisher and how many messages it sent
/// inside the window.
#[allow(clippy::too_many_arguments)]
pub async fn publish_loop(
    mut p: Publisher,
    spec: LoadSpec,
    rate: f64,
    clock: Clock,
    t0: u64,
    window: Window,
    sent_total: Arc<AtomicU64>,
    flow: Arc<Flow>,
) -> (Publisher, Result<u64, BenchError>) {
    let r = publish(&mut p, &spec, rate, clock, t0, window, &sent_total, &flow).await;
    (p, r)
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    p: &mut Publisher,
    spec: &LoadSpec,
    rate: f64,
    clock: Clock,
    t0: u64,
    window: Window,
    sent_total: &AtomicU64,
    flow: &Flow,
) -> Result<u64, BenchError> {
    let mut enc = Encoder::new(p.index, spec.payload_bytes);
    let topics = p.topics.clone();
    let batch = spec.batch.max(1) as u64;
    let mut seq: u64 = 0;
    let mut in_window = 0;
    tokio::time::sleep_until(clock.instant(t0).into()).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        // How many to send now: a batch at full rate, what is due at a fixed rate.
        let n = if rate <= 0.0 {
            flow.wait_for_room().await;
            batch
        } else {
            tick.tick().await;
            let due = (clock.now_ns().saturating_sub(t0) as f64 * rate / 1e9) as u64;
            due.saturating_sub(seq)
        };
        if clock.now_ns() >= window.end {
            break;
        }
        let mut left = n;
        while left > 0 {
            let chunk = left.min(batch);
            for _ in 0..chunk {
                let ts = clock.now_ns();
                let topic = &topics[(seq % topics.len() as u64) as usize];
                let payload = enc.encode(seq, ts);
                match &mut p.conn {
                    PubConn::Raw(r) => r.push(topic, payload)?,
                    PubConn::Client(c) => c
                        .client
                        .publish_bytes(
                            topic.clone(),
                            spec.qos,
                            false,
                            Bytes::copy_from_slice(payload),
                        )
                        .await
                        .map_err(|_| BenchError::Publish {
                            topic: topic.clone(),
                        })?,
                }
                if window.contains(ts) {
                    in_window += 1;
                }
                seq += 1;
            }
            if let PubConn::Raw(r) = &mut p.conn {
                r.flush().await?;
            }
            left -= chunk;
            sent_total.store(seq, Ordering::Relaxed);
        }
    }
    Ok(in_window)
}
