//! `bench route --runaway`: a second graph, `bench-<run>-runaway`, whose Python join loops
//! forever, fed one message every [`GAP`] for the rest of the run, so the route bench
//! measures its own graph while another graph's function keeps failing its worker (the
//! containment of docs/functions.md, issue 15). It has its own IDF and ODF DA, registered,
//! connected and deleted like the bench's other DAs; at the end its figures are read from
//! the controller's `/status`.
//!
//! Not here: the measured graph and the figures of the run ([`crate::route`],
//! [`crate::load`]). Nothing of the runaway graph is measured but what `/status` says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use iot_proto::wire::graph_api::{digest, GraphOp};
use iot_proto::wire::Direction;
use iot_proto::{DaId, Rev};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::csm;
use crate::da::{self, BenchDa, DaConnect, LinkUp};
use crate::error::BenchError;
use crate::graph::GraphClient;
use crate::mqtt::ConnCounters;
use crate::options::Target;
use crate::rawpub::RawPublisher;

/// The runaway graph's join: it never returns.
pub const CODE: &str = "def run(*args):\n    while True:\n        pass\n";
/// One message to the runaway graph every 200 ms (5 msgs/s).
pub const GAP: Duration = Duration::from_millis(200);

/// What the controller's `/status` says of the runaway graph at the end of the run (`None`
/// when it does not say).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunawayFigures {
    /// The runaway graph's id.
    pub runaway_graph: String,
    /// Messages sent to it, from before the window started until the figures were read.
    pub runaway_sent: u64,
    /// `graphs.<gid>.python.failures`: its calls that timed out or brought a worker down.
    pub runaway_failures: Option<u64>,
    /// `graphs.<gid>.python.suspended_calls`: its calls refused while it was suspended.
    pub runaway_suspended_calls: Option<u64>,
    /// `python_restarts`: Python worker restarts of the whole controller (every graph).
    pub python_restarts: Option<u64>,
}

impl RunawayFigures {
    /// The figures of graph `gid` in a `/status` reply.
    fn from_status(gid: &str, sent: u64, status: &Value) -> Self {
        let python = &status["graphs"][gid]["python"];
        Self {
            runaway_graph: gid.to_owned(),
            runaway_sent: sent,
            runaway_failures: python["failures"].as_u64(),
            runaway_suspended_calls: python["suspended_calls"].as_u64(),
            python_restarts: status["python_restarts"].as_u64(),
        }
    }

    /// The report's row.
    pub fn row(&self) -> (String, String) {
        let n = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
        (
            "runaway graph".to_owned(),
            format!(
                "{}: sent {}   python failures {}   suspended calls {}   worker restarts {} (all graphs)",
                self.runaway_graph,
                self.runaway_sent,
                n(self.runaway_failures),
                n(self.runaway_suspended_calls),
                n(self.python_restarts)
            ),
        )
    }
}

/// The runaway graph and what it created, to be removed at the end.
#[derive(Debug, Default)]
pub struct Runaway {
    gid: String,
    registered: Vec<(DaId, Rev)>,
    das: Vec<BenchDa>,
    graph: Option<GraphClient>,
    attached: bool,
    feeder: Option<Feeder>,
}

/// The task that feeds the runaway graph; it returns its publisher when stopped.
#[derive(Debug)]
struct Feeder {
    stop: CancellationToken,
    sent: Arc<AtomicU64>,
    task: JoinHandle<RawPublisher>,
}

impl Runaway {
    /// Registers and connects the runaway graph's two DAs, builds the graph with the looping
    /// join, waits until both links are up and starts feeding it. What was created is kept in
    /// `self` as it goes, so that [`Self::cleanup`] removes it after an error too.
    pub async fn start(
        &mut self,
        target: &Target,
        http: &reqwest::Client,
        run: &str,
        how: &DaConnect,
        timeout: Duration,
    ) -> Result<(), BenchError> {
        self.gid = format!("bench-{run}-runaway");
        for (idf, name) in [(true, "runaway-in"), (false, "runaway-out")] {
            let id = DaId::new_v4();
            let body = da::register_body(&format!("bench-{run}-{name}"), idf, !idf);
            let reply = da::register(http, &target.csm, &id, &body).await?;
            self.registered.push((id, reply.rev));
        }
        let (links_tx, mut links) = mpsc::channel::<LinkUp>(16);
        // Its own counters: its reconnects are not the measured graph's.
        let counters = Arc::new(ConnCounters::default());
        for (i, (id, rev)) in self.registered.clone().into_iter().enumerate() {
            let d =
                BenchDa::connect(i, id, rev, how, None, links_tx.clone(), counters.clone()).await?;
            self.das.push(d);
        }

        let graph =
            GraphClient::connect(&target.mqtt_host, target.mqtt_port, &self.gid, &self.gid).await?;
        let g = self.graph.insert(graph);
        g.request(GraphOp::Attach).await?;
        self.attached = true;
        g.request(GraphOp::add_funcs([CODE.to_owned()])).await?;
        g.link_all(&self.registered, 1).await?;
        g.request(GraphOp::SetJoin {
            prev: None,
            new: Some(digest(CODE)),
            depends: Default::default(),
        })
        .await?;

        let mut topic = None;
        let deadline = tokio::time::Instant::now() + timeout;
        for up in 0..2 {
            let link = tokio::time::timeout_at(deadline, links.recv())
                .await
                .map_err(|_| BenchError::LinksNotConnected {
                    up,
                    total: 2,
                    seconds: timeout.as_secs(),
                })?
                .ok_or(BenchError::Setup("the runaway graph's DAs stopped"))?;
            if link.direction == Direction::Idf {
                topic = Some(link.topic);
            }
        }
        let topic = topic.ok_or(BenchError::Setup(
            "the runaway graph's IDF link was connected without a topic",
        ))?;
        let publisher = RawPublisher::connect(
            &target.mqtt_host,
            target.mqtt_port,
            &format!("iotctl-bench-{run}-runaway-pub"),
        )
        .await?;
        let stop = CancellationToken::new();
        let sent = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(feed(publisher, topic, stop.clone(), sent.clone()));
        self.feeder = Some(Feeder { stop, sent, task });
        Ok(())
    }

    /// The runaway graph's figures from the controller's `/status`, now.
    pub async fn figures(
        &self,
        http: &reqwest::Client,
        csm_url: &str,
    ) -> Result<RunawayFigures, BenchError> {
        let sent = self
            .feeder
            .as_ref()
            .map_or(0, |f| f.sent.load(Ordering::Relaxed));
        let status = csm::status(http, csm_url).await?;
        Ok(RunawayFigures::from_status(&self.gid, sent, &status))
    }

    /// Stops feeding, detaches the graph, disconnects and deletes its DAs; returns what
    /// failed.
    pub async fn cleanup(self, http: &reqwest::Client, csm_url: &str) -> Vec<String> {
        let mut failed = Vec::new();
        if let Some(f) = self.feeder {
            f.stop.cancel();
            match f.task.await {
                Ok(p) => p.disconnect().await,
                Err(e) => failed.push(BenchError::PublisherTask(e).chain()),
            }
        }
        if let Some(g) = self.graph {
            if self.attached {
                if let Err(e) = g.request(GraphOp::Detach).await {
                    failed.push(e.chain());
                }
            }
            g.close().await;
        }
        futures::future::join_all(self.das.into_iter().map(BenchDa::close)).await;
        let results: Vec<Result<(), BenchError>> = futures::stream::iter(self.registered)
            .map(|(id, rev)| async move { da::deregister(http, csm_url, &id, &rev).await })
            .buffer_unordered(2)
            .collect()
            .await;
        failed.extend(
            results
                .into_iter()
                .filter_map(|r| r.err().map(|e| e.chain())),
        );
        failed
    }
}

/// Sends `[0, n, 0, "runaway"]` to `topic` every [`GAP`] until stopped; a failed write is
/// tried again at the next tick; `sent` counts the messages written.
async fn feed(
    mut publisher: RawPublisher,
    topic: String,
    stop: CancellationToken,
    sent: Arc<AtomicU64>,
) -> RawPublisher {
    let mut tick = tokio::time::interval(GAP);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let payload = json!([0, n, 0, "runaway"]).to_string();
        let ok = match publisher.push(&topic, payload.as_bytes()) {
            Ok(()) => publisher.flush().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    publisher
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_from_status() {
        let status = json!({
            "graphs": {"bench-x-runaway": {"python": {"failures": 3, "suspended_calls": 12}}},
            "python_restarts": 4,
        });
        let f = RunawayFigures::from_status("bench-x-runaway", 60, &status);
        assert_eq!(
            (
                f.runaway_failures,
                f.runaway_suspended_calls,
                f.python_restarts
            ),
            (Some(3), Some(12), Some(4))
        );
        let f = RunawayFigures::from_status("other", 0, &status);
        assert_eq!(f.runaway_failures, None);
        let v = serde_json::to_value(&f).unwrap();
        assert!(v["runaway_failures"].is_null() && v["python_restarts"] == 4);
    }
}
