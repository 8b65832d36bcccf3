//! Operator figures: one list of samples, rendered as Prometheus text (`GET /metrics`) and as
//! human-readable `name: value` lines (`GET /varz`, `GET /varz?name=das_online` for one).
//! The values already live in the CSM's counters, the engine's per-graph counters and the
//! broker's stats; this module only reads them (no registry duplicates them).

use std::fmt::Write as _;

use crate::actor::Status;
use crate::CsmHandle;

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One value, with its metric name (without the `iotctl_` prefix) and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

fn sample(name: &'static str, help: &'static str, kind: Kind, value: f64) -> Sample {
    Sample {
        name,
        help,
        kind,
        labels: Vec::new(),
        value,
    }
}

/// Gathers every figure.
pub async fn collect(h: &CsmHandle) -> Result<Vec<Sample>, crate::CsmError> {
    let s: Status = h.status().await?;
    let b = h.broker.stats();
    let c = &s.counters;
    use Kind::*;
    let mut out = vec![
        sample(
            "das_registered",
            "Registered device applications.",
            Gauge,
            s.registered as f64,
        ),
        sample(
            "das_online",
            "Device applications online.",
            Gauge,
            s.online as f64,
        ),
        sample(
            "registrations_total",
            "Successful registrations (PUT).",
            Counter,
            c.registrations as f64,
        ),
        sample(
            "deregistrations_total",
            "Deregistrations (DELETE).",
            Counter,
            c.deregistrations as f64,
        ),
        sample(
            "expirations_total",
            "DAs deregistered by the offline expiry.",
            Counter,
            c.expirations as f64,
        ),
        sample(
            "links_unacked",
            "Links whose DA has not acknowledged CONNECT.",
            Gauge,
            s.unacked_links as f64,
        ),
        sample(
            "links_failed",
            "Links whose DA answered CONNECT with an error.",
            Gauge,
            s.failed_links.len() as f64,
        ),
        sample("graphs", "Graphs.", Gauge, s.graphs.len() as f64),
        sample(
            "broker_sessions",
            "MQTT client sessions connected to the embedded broker.",
            Gauge,
            b.sessions as f64,
        ),
        sample(
            "broker_dropped_total",
            "Messages the broker dropped (queues full, expired, refused).",
            Counter,
            b.dropped as f64,
        ),
        sample(
            "broker_host_dropped_total",
            "Messages not handed to a controller task because its queue stayed full.",
            Counter,
            b.host_dropped as f64,
        ),
        sample(
            "python_workers",
            "Python worker processes running.",
            Gauge,
            (s.python_workers.iter().filter(|p| **p > 0).count()
                + usize::from(s.python_probation_worker > 0)) as f64,
        ),
        sample(
            "python_restarts_total",
            "Python workers replaced after a timeout, crash or memory error.",
            Counter,
            s.python_restarts as f64,
        ),
        sample(
            "graph_task_restarts_total",
            "Graph routing tasks that died and were started again from their plan.",
            Counter,
            s.graph_task_restarts as f64,
        ),
    ];
    for (reason, n) in [
        ("stale", c.uplink_stale),
        ("garbage", c.uplink_garbage),
        ("unknown", c.uplink_unknown),
    ] {
        let mut x = sample(
            "uplink_ignored_total",
            "Ignored control-channel messages, by reason.",
            Counter,
            n as f64,
        );
        x.labels.push(("reason", reason.into()));
        out.push(x);
    }
    for (result, n) in [("ok", c.odf_writes), ("refused", c.odf_writes_refused)] {
        let mut x = sample(
            "odf_writes_total",
            "ODF-write API requests, by result.",
            Counter,
            n as f64,
        );
        x.labels.push(("result", result.into()));
        out.push(x);
    }
    for (action, n) in [
        ("publish", b.acl_denied_publish),
        ("subscribe", b.acl_denied_subscribe),
    ] {
        let mut x = sample(
            "acl_denied_total",
            "PUBLISHes (wills included) and SUBSCRIBE filters refused by the topic ACL.",
            Counter,
            n as f64,
        );
        x.labels.push(("action", action.into()));
        out.push(x);
    }
    for (why, n) in h.refusals.snapshot() {
        let mut x = sample(
            "auth_refused_total",
            "Refused clients and requests, by reason (docs/security.md).",
            Counter,
            n as f64,
        );
        x.labels.push(("reason", why.as_str().into()));
        out.push(x);
    }
    let per_graph: [(&'static str, &'static str, &str, Kind); 10] = [
        (
            "graph_messages_in_total",
            "Messages received on a graph's IDF topics.",
            "/msgs_in",
            Kind::Counter,
        ),
        (
            "graph_messages_out_total",
            "Messages published on a graph's ODF topics.",
            "/msgs_out",
            Kind::Counter,
        ),
        (
            "graph_errors_total",
            "Messages dropped by a graph (bad input or failing function).",
            "/errors",
            Kind::Counter,
        ),
        (
            "function_calls_total",
            "Function calls.",
            "/fn_calls",
            Kind::Counter,
        ),
        (
            "function_errors_total",
            "Function calls that failed.",
            "/fn_errors",
            Kind::Counter,
        ),
        (
            "function_seconds_total",
            "Time spent in functions.",
            "/fn_seconds",
            Kind::Counter,
        ),
        (
            "graph_held_messages",
            "Outputs held for ODFs whose DA is not subscribed yet.",
            "/held",
            Kind::Gauge,
        ),
        (
            "graph_held_dropped_total",
            "Held outputs dropped (too many, too old, or their ODF left the graph).",
            "/held_dropped",
            Kind::Counter,
        ),
        (
            "graph_python_failures_total",
            "Python calls of a graph that timed out, crashed their worker or ran out of memory.",
            "/python/failures",
            Kind::Counter,
        ),
        (
            "graph_python_suspended_total",
            "Python calls of a graph dropped while it was suspended after such a failure.",
            "/python/suspended_calls",
            Kind::Counter,
        ),
    ];
    for (gid, g) in &s.graphs {
        for (name, help, key, kind) in per_graph {
            let value = g.pointer(key).and_then(|v| v.as_f64()).unwrap_or(0.0);
            let mut x = sample(name, help, kind, value);
            x.labels.push(("graph", gid.clone()));
            out.push(x);
        }
    }
    Ok(out)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format (version 0.0.4).
pub fn prometheus(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut last = "";
    for s in samples {
        if s.name != last {
            let kind = match s.kind {
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
            };
            let _ = writeln!(out, "# HELP iotctl_{} {}", s.name, s.help);
            let _ = writeln!(out, "# TYPE iotctl_{} {kind}", s.name);
            last = s.name;
        }
        let labels = if s.labels.is_empty() {
            String::new()
        } else {
            let l: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            format!("{{{}}}", l.join(","))
        };
        let _ = writeln!(out, "iotctl_{}{labels} {}", s.name, s.value);
    }
    out
}

/// The `/varz` name of a sample: its name, then its label values (`graph_messages_in_total.1`).
fn varz_name(s: &Sample) -> String {
    let mut n = s.name.to_owned();
    for (_, v) in &s.labels {
        n.push('.');
        n.push_str(v);
    }
    n
}

/// `name: value` lines, or the one value of `only`.
pub fn varz(samples: &[Sample], only: Option<&str>) -> Option<String> {
    match only {
        Some(name) => samples
            .iter()
            .find(|s| varz_name(s) == name)
            .map(|s| format!("{}\n", s.value)),
        None => Some(
            samples
                .iter()
                .map(|s| format!("{}: {}\n", varz_name(s), s.value))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_formats() {
        let mut g = sample("graph_messages_in_total", "In.", Kind::Counter, 3.0);
        g.labels.push(("graph", "a\"b".into()));
        let samples = vec![sample("das_online", "Online.", Kind::Gauge, 2.0), g];
        let text = prometheus(&samples);
        assert!(
            text.contains("# TYPE iotctl_das_online gauge\niotctl_das_online 2\n"),
            "{text}"
        );
        assert!(
            text.contains("iotctl_graph_messages_in_total{graph=\"a\\\"b\"} 3\n"),
            "{text}"
        );
        assert_eq!(varz(&samples, Some("das_online")).unwrap(), "2\n");
        assert_eq!(
            varz(&samples, Some("graph_messages_in_total.a\"b")).unwrap(),
            "3\n"
        );
        assert!(varz(&samples, Some("nope")).is_none());
        assert!(varz(&samples, None).unwrap().starts_with("das_online: 2\n"));
    }
}
