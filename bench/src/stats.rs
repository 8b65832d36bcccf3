//! What a bench counts: the shared monotonic clock, the measurement window, and the per-stream
//! [`Recorder`] that reads each received message's timestamp, counts it and records its latency.
//!
//! A message belongs to the run when its *send* time falls inside the window, whenever it
//! arrives: loss is `sent × fan-out − received` over those messages after a drain period. The
//! output rate counts what *arrived* during the window. No I/O here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::BenchError;
use crate::payload::{scan, triggering, Slot, PRIME_PUB};

/// Nanoseconds since the bench started; shared by publishers and subscribers (one process).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The `Instant` of clock time `ns`.
    pub fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

/// The measured interval, in clock nanoseconds: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

impl Window {
    pub fn contains(&self, ns: u64) -> bool {
        ns >= self.start && ns < self.end
    }

    pub fn seconds(&self) -> f64 {
        (self.end - self.start) as f64 / 1e9
    }
}

/// Latencies are recorded in nanoseconds, from 1 µs to 60 s, with 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
        .map_err(|e| BenchError::Histogram(format!("cannot create one: {e}")))
}

/// Counts of one received stream (one subscriber connection and topic).
#[derive(Debug)]
pub struct Recorder {
    clock: Clock,
    window: Option<Window>,
    /// Every data message received (for the progress bar), shared with the ticker.
    seen: Arc<AtomicU64>,
    prev: Vec<Slot>,
    cur: Vec<Slot>,
    pub primed: bool,
    /// Messages sent inside the window that arrived (any time before the end of the drain).
    pub received: u64,
    /// Messages that arrived during the window (by arrival time), for the output rate.
    pub arrived_in_window: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub hist: Histogram<u64>,
}

impl Recorder {
    pub fn new(clock: Clock, seen: Arc<AtomicU64>) -> Result<Self, BenchError> {
        Ok(Self {
            clock,
            window: None,
            seen,
            prev: Vec::new(),
            cur: Vec::new(),
            primed: false,
            received: 0,
            arrived_in_window: 0,
            duplicates: 0,
            malformed: 0,
            hist: new_histogram()?,
        })
    }

    /// Starts counting for `window`.
    pub fn arm(&mut self, window: Window) {
        self.window = Some(window);
    }

    /// One message as received.
    pub fn record(&mut self, payload: &[u8]) {
        let now = self.clock.now_ns();
        self.seen.fetch_add(1, Ordering::Relaxed);
        if scan(payload, &mut self.cur).is_err() {
            self.malformed += 1;
            return;
        }
        let trigger = triggering(&self.prev, &self.cur);
        std::mem::swap(&mut self.prev, &mut self.cur);
        let Some(t) = trigger else {
            self.duplicates += 1;
            return;
        };
        if t.publisher == PRIME_PUB {
            self.primed = true;
            return;
        }
        let Some(w) = self.window else {
            return;
        };
        if w.contains(now) {
            self.arrived_in_window += 1;
        }
        if w.contains(t.ts_ns) {
            self.received += 1;
            self.hist
                .saturating_record(now.saturating_sub(t.ts_ns).max(1));
        }
    }
}

/// A recorder shared between the event-loop task that feeds it and the bench that reads it
/// at phase changes. A std mutex: it is locked for one `record` (no `.await` under it) and is
/// contended only when the bench arms it or reads the results.
pub type SharedRecorder = Arc<std::sync::Mutex<Recorder>>;

/// Locks a recorder, recovering it if a task panicked while holding it.
pub fn lock(r: &SharedRecorder) -> std::sync::MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::super::payload::Encoder;
    use super::*;

    #[test]
    fn counts_by_send_time_and_ignores_priming_and_duplicates() {
        let clock = Clock::new();
        let seen = Arc::new(AtomicU64::new(0));
        let mut r = Recorder::new(clock, seen.clone()).unwrap();
        let mut e = Encoder::new(0, 32);
        r.record(e.encode_prime(0, 0));
        assert!(r.primed);
        let start = clock.now_ns();
        r.arm(Window {
            start,
            end: start + 60_000_000_000,
        });
        // Sent before the window: not counted.
        r.record(e.encode(1, start.saturating_sub(1)));
        let p = e.encode(2, start + 1).to_vec();
        r.record(&p);
        r.record(&p);
        r.record(b"garbage");
        assert_eq!(r.received, 1);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.malformed, 1);
        assert_eq!(r.hist.len(), 1);
        assert_eq!(seen.load(Ordering::Relaxed), 5);
    }
}
