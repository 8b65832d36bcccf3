//! The measuring engine shared by `bench route` and `bench broker`: publisher connections
//! that send timestamped payloads at a rate (or as fast as they can), recorders on the
//! receiving side (set up by the caller), priming, the warm-up and measurement window, the
//! drain, CPU and memory sampling, and the figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rumqttc::QoS;
use serde::Serialize;
use tokio::time::MissedTickBehavior;

use super::mqtt::{Conn, ConnCounters, ConnSpec};
use super::payload::Encoder;
use super::procstat::{self, ProcSample};
use super::progress::Progress;
use super::rawpub::RawPublisher;
use super::stats::{lock, new_histogram, Clock, SharedRecorder, Window};

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub qos: QoS,
    pub payload_bytes: usize,
    /// Messages per second over all publishers; 0 = as fast as they can.
    pub rate: u64,
    pub warmup: Duration,
    pub duration: Duration,
    /// Messages expected at the receivers per message sent (number of ODFs or subscribers).
    pub fanout: u64,
    /// After the last publish, the drain ends when nothing arrived for this long...
    pub drain_idle: Duration,
    /// ... or after this, at most.
    pub max_drain: Duration,
    /// Messages per write of a QoS 0 publisher.
    pub batch: usize,
    /// At full rate, how many messages may be on their way (sent, not received yet) over all
    /// publishers before they wait.
    pub max_inflight: u64,
}

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
    async fn send_now(&mut self, topic: &str, payload: &[u8]) -> Result<()> {
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
                .context("cannot publish"),
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
) -> Result<Vec<Publisher>> {
    if topics.is_empty() {
        bail!("nothing to publish to");
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
pub async fn prime(
    publisher: &mut Publisher,
    topics: &[String],
    recorders: &[SharedRecorder],
    clock: Clock,
    payload_bytes: usize,
    timeout: Duration,
) -> Result<()> {
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
            let primed = recorders.iter().filter(|r| lock(r).primed).count();
            bail!(
                "no message came through within {} s ({primed} of {} receivers got one)",
                timeout.as_secs(),
                recorders.len()
            );
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Messages sent during the measurement window.
    pub sent: u64,
    /// `sent × fan-out`.
    pub expected: u64,
    /// Of those, how many arrived (by the end of the drain).
    pub received: u64,
    pub lost: u64,
    pub loss_percent: f64,
    pub duplicates: u64,
    pub malformed: u64,
    pub in_msgs_per_s: f64,
    /// Messages that arrived during the window, per second.
    pub out_msgs_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub measured_s: f64,
    pub warmup_s: f64,
    pub drain_s: f64,
    pub controller_pid: Option<u32>,
    /// CPU use of the controller during the window, % of one core, with its child processes
    /// (the Python workers).
    pub controller_cpu_percent: Option<f64>,
    /// Resident memory of the controller process at the start and end of the window, and
    /// the most seen during it (without its children).
    pub controller_rss_start_mb: Option<f64>,
    pub controller_rss_mb: Option<f64>,
    pub controller_rss_max_mb: Option<f64>,
    /// Resident memory of its child processes (Python workers) at the end of the window.
    pub controller_children_rss_mb: Option<f64>,
    /// CPU use of this bench process during the window, % of one core.
    pub client_cpu_percent: Option<f64>,
    /// CPU use of the whole machine during the window, % of one core (at most 100 × cores):
    /// what is left after the controller and the client was used by something else.
    pub machine_cpu_percent: Option<f64>,
    pub cores: usize,
    pub reconnects: u64,
}

/// Publishes for the warm-up and the window, drains, and reads the recorders.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    spec: &LoadSpec,
    publishers: &mut Vec<Publisher>,
    recorders: &[SharedRecorder],
    seen: Arc<AtomicU64>,
    clock: Clock,
    pid: Option<u32>,
    counters: &Arc<ConnCounters>,
    progress: &Progress,
) -> Result<LoadResult> {
    let t0 = clock.now_ns() + 50_000_000;
    let start = t0 + u64::try_from(spec.warmup.as_nanos()).unwrap_or(u64::MAX / 4);
    let window = Window {
        start,
        end: start + u64::try_from(spec.duration.as_nanos()).unwrap_or(u64::MAX / 4),
    };
    for r in recorders {
        lock(r).arm(window);
    }
    let reconnects_before = counters.reconnects.load(Ordering::Relaxed);
    let per_pub = spec.rate as f64 / publishers.len().max(1) as f64;
    let sent_counters: Vec<Arc<AtomicU64>> = publishers
        .iter()
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    // The tasks own the publishers while they run and hand them back; if this future is
    // dropped (Ctrl-C), the guard stops them.
    let mut tasks = Vec::new();
    let mut guard = AbortOnDrop(Vec::new());
    let flow = Arc::new(Flow {
        limit: spec.max_inflight.max(1) * spec.fanout,
        fanout: spec.fanout,
        sent: sent_counters.clone(),
        seen: seen.clone(),
        seen_before: seen.load(Ordering::Relaxed),
        written_off: AtomicU64::new(0),
    });
    for (p, sent) in std::mem::take(publishers).into_iter().zip(&sent_counters) {
        let t = tokio::spawn(publish_loop(
            p,
            spec.clone(),
            per_pub,
            clock,
            t0,
            window,
            sent.clone(),
            flow.clone(),
        ));
        guard.0.push(t.abort_handle());
        tasks.push(t);
    }
    let ticker = tokio::spawn(tick_progress(
        progress.clone(),
        clock,
        t0,
        window,
        sent_counters.clone(),
        seen.clone(),
    ));
    guard.0.push(ticker.abort_handle());
    let sampler = tokio::spawn(sample_window(pid, clock, window));
    guard.0.push(sampler.abort_handle());
    let mut sent = 0;
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok((p, Ok(n))) => {
                sent += n;
                publishers.push(p);
            }
            Ok((p, Err(e))) => {
                failure = Some(e);
                publishers.push(p);
            }
            Err(e) => failure = Some(anyhow::anyhow!("publisher task failed: {e}")),
        }
    }
    ticker.abort();
    if let Some(e) = failure {
        return Err(e);
    }
    let expected = sent * spec.fanout;
    progress.phase(format!(
        "draining: waiting for the last of {expected} messages"
    ));
    // Wait until every expected message arrived, or nothing at all (not even a message sent
    // during the warm-up, still queued somewhere) arrived for `drain_idle`, or `max_drain`.
    let drain_start = tokio::time::Instant::now();
    let received_sum = || recorders.iter().map(|r| lock(r).received).sum::<u64>();
    let mut last_seen = seen.load(Ordering::Relaxed);
    let mut last_change = tokio::time::Instant::now();
    while received_sum() < expected
        && last_change.elapsed() < spec.drain_idle
        && drain_start.elapsed() < spec.max_drain
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = seen.load(Ordering::Relaxed);
        if now != last_seen {
            last_seen = now;
            last_change = tokio::time::Instant::now();
        }
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    let figures = sampler.await.unwrap_or_default();
    drop(guard);

    let mut hist = new_histogram()?;
    let (mut received, mut arrived, mut duplicates, mut malformed) = (0, 0, 0, 0);
    for r in recorders {
        let r = lock(r);
        received += r.received;
        arrived += r.arrived_in_window;
        duplicates += r.duplicates;
        malformed += r.malformed;
        hist.add(&r.hist)
            .map_err(|e| anyhow::anyhow!("cannot merge latency histograms: {e}"))?;
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    let q = |p: f64| {
        if hist.is_empty() {
            0.0
        } else {
            ms(hist.value_at_quantile(p))
        }
    };
    let secs = window.seconds();
    let lost = expected.saturating_sub(received);
    Ok(LoadResult {
        sent,
        expected,
        received,
        lost,
        loss_percent: if expected == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / expected as f64
        },
        duplicates,
        malformed,
        in_msgs_per_s: sent as f64 / secs,
        out_msgs_per_s: arrived as f64 / secs,
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: if hist.is_empty() { 0.0 } else { ms(hist.max()) },
        mean_ms: if hist.is_empty() {
            0.0
        } else {
            hist.mean() / 1e6
        },
        measured_s: secs,
        warmup_s: spec.warmup.as_secs_f64(),
        drain_s,
        controller_pid: pid,
        controller_cpu_percent: figures.cpu_percent,
        controller_rss_start_mb: figures.rss_start_kb.map(kb_to_mb),
        controller_rss_mb: figures.rss_end_kb.map(kb_to_mb),
        controller_rss_max_mb: figures.rss_max_kb.map(kb_to_mb),
        controller_children_rss_mb: figures.children_rss_kb.map(kb_to_mb),
        client_cpu_percent: figures.client_cpu_percent,
        machine_cpu_percent: figures.machine_cpu_percent,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        reconnects: counters.reconnects.load(Ordering::Relaxed) - reconnects_before,
    })
}

pub fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Aborts tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Flow control at full rate: publishers wait while more than `limit` receptions are
/// outstanding, so the run measures what the path sustains instead of filling socket buffers
/// with seconds of backlog. Receptions that never come (QoS 0 loss) are written off when
/// nothing has arrived for 200 ms, so a lossy path slows the publishers down but never
/// stops them.
#[derive(Debug)]
struct Flow {
    /// Outstanding receptions allowed (`max_inflight × fan-out`).
    limit: u64,
    fanout: u64,
    /// Messages sent by each publisher.
    sent: Vec<Arc<AtomicU64>>,
    /// Messages received by every receiver.
    seen: Arc<AtomicU64>,
    seen_before: u64,
    written_off: AtomicU64,
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
async fn publish_loop(
    mut p: Publisher,
    spec: LoadSpec,
    rate: f64,
    clock: Clock,
    t0: u64,
    window: Window,
    sent_total: Arc<AtomicU64>,
    flow: Arc<Flow>,
) -> (Publisher, Result<u64>) {
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
) -> Result<u64> {
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
                        .context("publisher: the connection is gone")?,
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

#[derive(Debug, Default)]
struct WindowFigures {
    cpu_percent: Option<f64>,
    rss_start_kb: Option<u64>,
    rss_end_kb: Option<u64>,
    rss_max_kb: Option<u64>,
    children_rss_kb: Option<u64>,
    client_cpu_percent: Option<f64>,
    machine_cpu_percent: Option<f64>,
}

/// Samples the controller (when local) and this process at the start and the end of the
/// window, and the controller's memory every 250 ms in between.
async fn sample_window(pid: Option<u32>, clock: Clock, window: Window) -> WindowFigures {
    tokio::time::sleep_until(clock.instant(window.start).into()).await;
    let me = std::process::id();
    let first: Option<ProcSample> = pid.and_then(|p| procstat::sample_with_children(p).ok());
    let me_first = procstat::sample(me).ok();
    let machine_first = procstat::machine().ok();
    let mut max_kb = first.map(|s| s.rss_kb);
    let end = clock.instant(window.end);
    while std::time::Instant::now() + Duration::from_millis(250) < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(s) = pid.and_then(|p| procstat::sample(p).ok()) {
            max_kb = max_kb.max(Some(s.rss_kb));
        }
    }
    tokio::time::sleep_until(end.into()).await;
    let last = pid.and_then(|p| procstat::sample_with_children(p).ok());
    let me_last = procstat::sample(me).ok();
    let machine_last = procstat::machine().ok();
    if let Some(s) = last {
        max_kb = max_kb.max(Some(s.rss_kb));
    }
    WindowFigures {
        cpu_percent: first.zip(last).map(|(a, b)| procstat::cpu_percent(&a, &b)),
        rss_start_kb: first.map(|s| s.rss_kb),
        rss_end_kb: last.map(|s| s.rss_kb),
        rss_max_kb: max_kb,
        children_rss_kb: last.map(|s| s.children_rss_kb),
        client_cpu_percent: me_first
            .zip(me_last)
            .map(|(a, b)| procstat::cpu_percent(&a, &b)),
        machine_cpu_percent: machine_first
            .zip(machine_last)
            .and_then(|(a, b)| procstat::machine_percent(&a, &b)),
    }
}

async fn tick_progress(
    progress: Progress,
    clock: Clock,
    t0: u64,
    window: Window,
    sent: Vec<Arc<AtomicU64>>,
    seen: Arc<AtomicU64>,
) {
    let total_ms = (window.end - t0) / 1_000_000;
    progress.timed(total_ms.div_ceil(1000), "warm-up");
    let mut last = (clock.now_ns(), 0u64, seen.load(Ordering::Relaxed));
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = clock.now_ns();
        let s: u64 = sent.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let r = seen.load(Ordering::Relaxed);
        let dt = (now - last.0) as f64 / 1e9;
        let phase = if now < window.start {
            "warm-up"
        } else {
            "measuring"
        };
        progress.set_position(now.saturating_sub(t0) / 1_000_000_000);
        progress.set_message(format!(
            "{phase}: in {} msgs/s, out {} msgs/s",
            group(((s - last.1.min(s)) as f64 / dt) as u64),
            group(((r - last.2.min(r)) as f64 / dt) as u64)
        ));
        last = (now, s, r);
    }
}

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
