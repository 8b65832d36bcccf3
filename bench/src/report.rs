//! How results are printed: a two-column table for people, or exactly one JSON object on
//! stdout (`--json`) for scripts; and the number formats they share.

use serde::Serialize;

use crate::error::BenchError;
use crate::load::LoadResult;
use crate::units::group;

/// Prints `report` as one JSON line, or `rows` as a table.
pub fn print<T: Serialize>(
    json: bool,
    report: &T,
    title: &str,
    rows: &[(String, String)],
) -> Result<(), BenchError> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!("{title}");
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
    Ok(())
}

/// A value or `n/a`.
pub fn or_na(v: Option<String>) -> String {
    v.unwrap_or_else(|| "n/a".into())
}

/// The requested rate: `max (at most N in flight)` or `N msgs/s`.
pub fn rate(r: u64, max_inflight: u64) -> String {
    if r == 0 {
        format!("max (at most {} in flight)", group(max_inflight))
    } else {
        format!("{} msgs/s", group(r))
    }
}

/// The rows of a load result.
pub fn load_rows(r: &LoadResult) -> Vec<(String, String)> {
    let row = |k: &str, v: String| (k.to_owned(), v);
    vec![
        row(
            "throughput",
            format!(
                "in {} msgs/s   out {} msgs/s",
                group(r.in_msgs_per_s.round() as u64),
                group(r.out_msgs_per_s.round() as u64)
            ),
        ),
        row(
            "messages",
            format!(
                "sent {}   expected {}   received {}   lost {} ({:.3}%)",
                group(r.sent),
                group(r.expected),
                group(r.received),
                group(r.lost),
                r.loss_percent
            ),
        ),
        row(
            "latency ms",
            format!(
                "p50 {:.3}   p90 {:.3}   p99 {:.3}   p99.9 {:.3}   max {:.3}   mean {:.3}",
                r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms, r.mean_ms
            ),
        ),
        row(
            "controller",
            match r.controller_pid {
                Some(pid) => format!(
                    "pid {pid}   cpu {}   rss {} (start {}, max {}){}",
                    or_na(r.controller_cpu_percent.map(|c| format!("{c:.0}%"))),
                    or_na(r.controller_rss_mb.map(|m| format!("{m:.1} MB"))),
                    or_na(r.controller_rss_start_mb.map(|m| format!("{m:.1}"))),
                    or_na(r.controller_rss_max_mb.map(|m| format!("{m:.1}"))),
                    match r.controller_children_rss_mb {
                        Some(c) if c > 0.0 => {
                            format!("; child processes {c:.1} MB (their cpu is included)")
                        }
                        _ => String::new(),
                    }
                ),
                None => "cpu n/a   rss n/a (not a local process; --pid PID to sample one)".into(),
            },
        ),
        row(
            "bench client",
            format!(
                "cpu {}",
                or_na(r.client_cpu_percent.map(|c| format!("{c:.0}%")))
            ),
        ),
        row(
            "machine",
            format!(
                "cpu {} of {}% ({} cores){}",
                or_na(r.machine_cpu_percent.map(|c| format!("{c:.0}%"))),
                r.cores * 100,
                r.cores,
                match (
                    r.machine_cpu_percent,
                    r.controller_cpu_percent,
                    r.client_cpu_percent
                ) {
                    (Some(m), c, Some(b)) => format!(
                        "; {:.0}% used by other processes",
                        (m - c.unwrap_or(0.0) - b).max(0.0)
                    ),
                    _ => String::new(),
                }
            ),
        ),
        row(
            "window",
            format!(
                "{:.1} s after {:.1} s warm-up; drained {:.2} s; {} duplicates, {} malformed, {} reconnects",
                r.measured_s, r.warmup_s, r.drain_s, r.duplicates, r.malformed, r.reconnects
            ),
        ),
    ]
}
