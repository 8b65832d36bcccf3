//! The measuring engine shared by `bench route` and `bench broker`: given publishers and the
//! recorders of the receiving side (both set up by the caller), it runs the warm-up and the
//! measurement window, drains, samples CPU and memory, and computes the figures. Not here:
//! how publishers send ([`crate::publish`]) or what a recorder counts ([`crate::stats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::BenchError;
use crate::mqtt::ConnCounters;
use crate::procstat::sample_window;
use crate::progress::{tick_progress, Progress};
use crate::publish::{publish_loop, Flow, Publisher};
use crate::spec::LoadSpec;
use crate::stats::{lock, new_histogram, Clock, SharedRecorder, Window};
use crate::units::kb_to_mb;

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
) -> Result<LoadResult, BenchError> {
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
            Err(e) => failure = Some(BenchError::PublisherTask(e)),
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
            .map_err(|e| BenchError::Histogram(format!("cannot merge: {e}")))?;
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

/// Aborts tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
