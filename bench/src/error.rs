//! The bench's error type: one variant per way a run can fail, each message saying what went
//! wrong and, where it helps, what to check. Ctrl-C is one of them
//! ([`BenchError::Interrupted`]), so the caller chooses the exit status. Not here: printing;
//! the caller reports the error once.

use std::error::Error as _;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option out of range or malformed; the text names the flag and the allowed values.
    #[error("{0}")]
    InvalidOption(String),
    /// Ctrl-C stopped the run; what it created was removed.
    #[error("interrupted")]
    Interrupted,
    #[error("cannot listen for Ctrl-C")]
    Signal(#[source] std::io::Error),
    #[error("cannot create an HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// `GET /healthz` got no answer.
    #[error("controller not reachable at {csm} (GET {url})")]
    Unreachable {
        csm: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// `GET /healthz` answered, but not with a success.
    #[error("controller at {csm} answered {status} to GET /healthz: is this the CSM's URL (with csm.path_prefix)?")]
    NotCsm {
        csm: String,
        status: reqwest::StatusCode,
    },
    /// A request to the registration API or `/status` got no answer.
    #[error("{method} {url}: controller not reachable")]
    Request {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The controller refused a request; `reason` is the one it gave.
    #[error("{method} {url} refused ({status}): {reason}")]
    Refused {
        method: &'static str,
        url: String,
        status: reqwest::StatusCode,
        reason: String,
    },
    /// An answer that is not what the API documents.
    #[error("{method} {url}: unexpected reply: {reason}")]
    Reply {
        method: &'static str,
        url: String,
        reason: String,
    },
    #[error("cannot connect to the MQTT broker at {addr}: {reason}")]
    MqttConnect { addr: String, reason: String },
    #[error("cannot subscribe to {filter}: {reason}")]
    Subscribe { filter: String, reason: String },
    /// rumqttc's event loop is gone, so nothing more can be sent on that connection.
    #[error("cannot publish on {topic}: the connection is gone")]
    Publish { topic: String },
    /// A batched QoS 0 publisher's socket was closed by the broker.
    #[error("the broker closed the publisher's connection")]
    PublisherClosed,
    #[error("a publisher task failed")]
    PublisherTask(#[source] tokio::task::JoinError),
    /// The graph API refused a request, did not answer, or its connection failed.
    #[error(transparent)]
    Graph(#[from] iot_client::ClientError),
    #[error("the controller connected {up} of {total} links within {seconds} s (CONNECT signals on <id>/ctrl/o)")]
    LinksNotConnected {
        up: usize,
        total: usize,
        seconds: u64,
    },
    /// Priming found no path from the publishers to every receiver; `path` says which.
    #[error("{path}: no message came through within {seconds} s ({primed} of {receivers} receivers got one)")]
    NoFlow {
        path: String,
        seconds: u64,
        primed: usize,
        receivers: usize,
    },
    #[error("only {online} of {total} DAs were online after {seconds} s")]
    NotOnline {
        online: u64,
        total: usize,
        seconds: f64,
    },
    /// A step of the setup that cannot go on (a task the bench started ended early).
    #[error("{0}")]
    Setup(&'static str),
    #[error("latency histogram: {0}")]
    Histogram(String),
    #[error("cannot read /proc/{pid}/{file}: is process {pid} running here?")]
    NoProcess {
        pid: u32,
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Proc {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected {path} format")]
    ProcFormat { path: String },
    #[error("cannot encode the report as JSON")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    /// The message followed by its causes, `: `-separated, for a one-line report.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = self.source();
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lists_the_causes() {
        let e = BenchError::Proc {
            path: "/proc/stat".into(),
            source: std::io::Error::other("gone"),
        };
        assert_eq!(e.chain(), "cannot read /proc/stat: gone");
        assert_eq!(BenchError::Interrupted.chain(), "interrupted");
    }
}
