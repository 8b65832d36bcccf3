//! Home figures for `/metrics`: commands by target and result, and a histogram of leaf
//! latencies (one observation per device reached, retries included). Targets are catalog
//! names (bounded by the catalog); a command for an unknown target counts as `(unknown)`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label of a command whose target was not found.
pub const UNKNOWN: &str = "(unknown)";

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    /// Ran, and some leaf failed.
    Failed,
    /// Not run: malformed, unknown target, rate limited, too many running.
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }
}

/// The counters; shared by every running command.
#[derive(Debug, Default)]
pub struct HomeMetrics {
    commands: Mutex<BTreeMap<(String, Outcome), u64>>,
    /// Per bucket (the last is +Inf), not cumulative.
    leaf_buckets: [AtomicU64; BUCKETS.len() + 1],
    leaf_count: AtomicU64,
    leaf_failed: AtomicU64,
    /// Sum of leaf latencies, in microseconds.
    leaf_sum_us: AtomicU64,
}

impl HomeMetrics {
    pub fn command(&self, target: &str, outcome: Outcome) {
        *self
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((target.to_owned(), outcome))
            .or_default() += 1;
    }

    pub fn leaf(&self, took: Duration, ok: bool) {
        let s = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.leaf_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.leaf_count.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.leaf_failed.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.leaf_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The Prometheus text of these figures.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP iotctl_home_commands_total Home commands by target and result.\n");
        out.push_str("# TYPE iotctl_home_commands_total counter\n");
        let commands = self
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for ((target, outcome), n) in commands {
            let _ = writeln!(
                out,
                "iotctl_home_commands_total{{target=\"{}\",result=\"{}\"}} {n}",
                escape_label(&target),
                outcome.as_str()
            );
        }
        out.push_str(
            "# HELP iotctl_home_leaf_seconds Time to reach one device, retries included.\n",
        );
        out.push_str("# TYPE iotctl_home_leaf_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.leaf_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "iotctl_home_leaf_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = self.leaf_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "iotctl_home_leaf_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.leaf_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "iotctl_home_leaf_seconds_sum {sum}");
        let _ = writeln!(out, "iotctl_home_leaf_seconds_count {count}");
        out.push_str("# HELP iotctl_home_leaf_failures_total Devices that could not be reached.\n");
        out.push_str("# TYPE iotctl_home_leaf_failures_total counter\n");
        let _ = writeln!(
            out,
            "iotctl_home_leaf_failures_total {}",
            self.leaf_failed.load(Ordering::Relaxed)
        );
    }
}

/// A label value as Prometheus text wants it.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_as_prometheus_text() {
        let m = HomeMetrics::default();
        m.command("evening", Outcome::Ok);
        m.command("evening", Outcome::Ok);
        m.command(UNKNOWN, Outcome::Refused);
        m.leaf(Duration::from_millis(3), true);
        m.leaf(Duration::from_millis(700), false);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("iotctl_home_commands_total{target=\"evening\",result=\"ok\"} 2\n"));
        assert!(out.contains("{target=\"(unknown)\",result=\"refused\"} 1\n"));
        assert!(out.contains("iotctl_home_leaf_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(out.contains("iotctl_home_leaf_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(out.contains("iotctl_home_leaf_seconds_bucket{le=\"1\"} 2\n"));
        assert!(out.contains("iotctl_home_leaf_seconds_count 2\n"));
        assert!(out.contains("iotctl_home_leaf_failures_total 1\n"));
    }
}
