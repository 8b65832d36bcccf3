//! What the pool knows of one graph's Python functions: whether they may run on the shared
//! workers, and whether they are suspended after a call timed out or brought its worker down.
//!
//! A graph's functions run on the shared workers only once one of their calls has been
//! answered (a Python exception counts: the worker survived it). Until then, and after any
//! call that timed out, crashed its worker or ran out of memory, they run on the probation
//! worker, so a function that loops forever never holds up a shared worker. After such a
//! failure the graph's calls are refused at once ("suspended") for a backoff that doubles
//! with each failure, from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`]; the first call after it is
//! the probe. Binding new functions for the graph clears it all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::funcs::FnError;

/// The first suspension after a failure.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// The longest suspension.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A failure this long after the previous one starts again from [`MIN_BACKOFF`].
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Where a call may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Shared,
    Probation,
}

/// One graph's standing with the pool.
#[derive(Debug)]
pub struct Owner {
    pub graph: String,
    trusted: AtomicBool,
    penalty: Mutex<Penalty>,
    /// Calls of this graph that timed out, crashed their worker or ran out of memory.
    pub failures: AtomicU64,
    /// Calls refused while the graph was suspended.
    pub suspended: AtomicU64,
}

#[derive(Debug, Default)]
struct Penalty {
    until: Option<Instant>,
    backoff: Duration,
    last_failure: Option<Instant>,
    why: String,
}

impl Owner {
    pub fn new(graph: &str) -> Self {
        Self {
            graph: graph.to_owned(),
            trusted: AtomicBool::new(false),
            penalty: Mutex::new(Penalty::default()),
            failures: AtomicU64::new(0),
            suspended: AtomicU64::new(0),
        }
    }

    fn penalty(&self) -> std::sync::MutexGuard<'_, Penalty> {
        self.penalty.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where a call made `now` may run, or why it is refused.
    pub fn admit(&self, now: Instant) -> Result<Lane, FnError> {
        let p = self.penalty();
        if let Some(until) = p.until.filter(|u| *u > now) {
            self.suspended.fetch_add(1, Ordering::Relaxed);
            let left = until.saturating_duration_since(now).as_secs_f64();
            return Err(FnError(format!(
                "suspended: a Python call of this graph {}; its calls are dropped for another \
                 {left:.1} s (backoff)",
                p.why
            )));
        }
        Ok(if self.trusted.load(Ordering::Relaxed) {
            Lane::Shared
        } else {
            Lane::Probation
        })
    }

    /// A call was answered: the worker survived it.
    pub fn answered(&self) {
        self.trusted.store(true, Ordering::Relaxed);
    }

    /// A call timed out or brought its worker down (`why` says which): back to probation and
    /// suspended for the next backoff.
    pub fn failed(&self, why: &str, now: Instant) {
        self.trusted.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut p = self.penalty();
        let recent = p
            .last_failure
            .is_some_and(|t| now.saturating_duration_since(t) < FORGET_AFTER);
        p.backoff = if recent {
            (p.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
        } else {
            MIN_BACKOFF
        };
        p.until = Some(now + p.backoff);
        p.last_failure = Some(now);
        p.why = why.to_owned();
        tracing::warn!(
            graph = ?self.graph,
            reason = ?why,
            suspended_s = p.backoff.as_secs(),
            "a graph's Python function failed its worker; the graph's calls are suspended"
        );
    }

    /// New functions were bound for the graph: a fresh start, on probation.
    pub fn reset(&self) {
        self.trusted.store(false, Ordering::Relaxed);
        *self.penalty() = Penalty::default();
    }

    /// The counters and state shown in `/status` (per graph, under `python`).
    pub fn json(&self, now: Instant) -> Value {
        let p = self.penalty();
        let left = p
            .until
            .map_or(0.0, |u| u.saturating_duration_since(now).as_secs_f64());
        json!({
            "lane": if self.trusted.load(Ordering::Relaxed) { "shared" } else { "probation" },
            "failures": self.failures.load(Ordering::Relaxed),
            "suspended_calls": self.suspended.load(Ordering::Relaxed),
            "suspended_for_s": left,
            "last_failure": if p.why.is_empty() { Value::Null } else { p.why.clone().into() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probation_until_answered_then_shared() {
        let o = Owner::new("g");
        let now = Instant::now();
        assert_eq!(o.admit(now), Ok(Lane::Probation));
        o.answered();
        assert_eq!(o.admit(now), Ok(Lane::Shared));
    }

    #[test]
    fn failures_suspend_with_a_doubling_backoff() {
        let o = Owner::new("g");
        let t0 = Instant::now();
        o.answered();
        o.failed("timed out", t0);
        let e = o.admit(t0).unwrap_err();
        assert!(
            e.0.contains("suspended") && e.0.contains("timed out"),
            "{e}"
        );
        assert_eq!(o.suspended.load(Ordering::Relaxed), 1);
        // After the backoff: a probe, on probation.
        let t1 = t0 + MIN_BACKOFF;
        assert_eq!(o.admit(t1), Ok(Lane::Probation));
        o.failed("timed out", t1);
        assert!(
            o.admit(t1 + MIN_BACKOFF).is_err(),
            "the second backoff is longer"
        );
        assert_eq!(o.admit(t1 + 2 * MIN_BACKOFF), Ok(Lane::Probation));
        // Capped.
        let mut t = t1;
        for _ in 0..20 {
            t += MAX_BACKOFF;
            o.failed("crashed", t);
        }
        assert!(o.admit(t + MAX_BACKOFF - Duration::from_millis(1)).is_err());
        assert!(o.admit(t + MAX_BACKOFF).is_ok());
        assert_eq!(o.failures.load(Ordering::Relaxed), 22);
        // Long after: from the start again.
        let later = t + FORGET_AFTER + MAX_BACKOFF;
        o.failed("timed out", later);
        assert!(o.admit(later + MIN_BACKOFF).is_ok());
    }

    #[test]
    fn new_functions_get_a_fresh_start() {
        let o = Owner::new("g");
        let now = Instant::now();
        o.failed("timed out", now);
        assert!(o.admit(now).is_err());
        o.reset();
        assert_eq!(o.admit(now), Ok(Lane::Probation));
        assert_eq!(o.json(now)["failures"], 1, "counters are kept");
    }
}
