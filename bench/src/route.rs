//! `bench route`: N IDF DAs -> one graph (join none, Rhai or Python) -> M ODF DAs,
//! all set up through the public protocol: registration over HTTP, control channels over
//! MQTT, the graph through the graph API. Every IDF message yields one output per ODF, so
//! `expected = sent × M`. With `runaway`, a second graph whose Python join loops forever is
//! fed for the whole run ([`crate::runaway`]). Everything the run created is removed at the
//! end (the graphs are detached, the DAs deleted), also after an error or Ctrl-C.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use iot_proto::wire::graph_api::{digest, GraphOp};
use iot_proto::wire::Direction;
use iot_proto::{DaId, Rev};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::da::{self, BenchDa, DaConnect, LinkUp};
use crate::error::BenchError;
use crate::graph::GraphClient;
use crate::load::{self, LoadResult};
use crate::mqtt::ConnCounters;
use crate::options::{RouteOptions, Target};
use crate::progress::Progress;
use crate::publish::{self, Publisher};
use crate::report;
use crate::runaway::{Runaway, RunawayFigures};
use crate::spec::LoadSpec;
use crate::stats::{Clock, Recorder, SharedRecorder};
use crate::{csm, ctrl_c, run_id};

/// How long the controller may take to connect every link and to carry the first message.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize)]
struct RouteReport {
    bench: &'static str,
    csm: String,
    mqtt: String,
    join: &'static str,
    idfs: usize,
    odfs: usize,
    publishers: usize,
    qos: u8,
    payload_bytes: usize,
    /// Requested rate, msgs/s (0 = max).
    rate: u64,
    batch: u64,
    max_inflight: u64,
    /// Another graph's Python join looped forever during the run (only with `--runaway`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    runaway: bool,
    #[serde(flatten)]
    result: LoadResult,
    #[serde(flatten)]
    runaway_figures: Option<RunawayFigures>,
}

/// What the run created, to be removed at the end.
#[derive(Debug, Default)]
struct Created {
    registered: Vec<(DaId, Rev)>,
    das: Vec<BenchDa>,
    graph: Option<GraphClient>,
    attached: bool,
    publishers: Vec<Publisher>,
    runaway: Option<Runaway>,
}

impl Created {
    /// Detaches the graph, disconnects everything and deletes the DAs; returns what failed.
    async fn cleanup(self, http: &reqwest::Client, csm: &str) -> Vec<String> {
        let mut failed = Vec::new();
        if let Some(r) = self.runaway {
            failed.extend(r.cleanup(http, csm).await);
        }
        if let Some(g) = self.graph {
            if self.attached {
                if let Err(e) = g.request(GraphOp::Detach).await {
                    failed.push(e.chain());
                }
            }
            g.close().await;
        }
        for p in self.publishers {
            p.disconnect().await;
        }
        futures::future::join_all(self.das.into_iter().map(BenchDa::close)).await;
        let results: Vec<Result<(), BenchError>> = futures::stream::iter(self.registered)
            .map(|(id, rev)| async move { da::deregister(http, csm, &id, &rev).await })
            .buffer_unordered(16)
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

/// Runs `bench route` against `target` and prints its report (a table, or JSON).
pub async fn run(target: &Target, args: &RouteOptions) -> Result<(), BenchError> {
    args.check()?;
    let publishers = args.load.publishers(args.idfs)?;
    let spec = LoadSpec::new(&args.load, args.odfs as u64)?;
    let progress = Progress::new(args.load.json);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(BenchError::HttpClient)?;
    csm::check(&http, &target.csm).await?;

    let mut created = Created::default();
    let outcome = tokio::select! {
        r = measure(args, target, &spec, publishers, &http, &progress, &mut created) => r,
        e = ctrl_c() => Err(e),
    };
    progress.phase("cleaning up: detaching the graphs, deleting the bench DAs");
    // A second Ctrl-C stops the cleanup too.
    let failed = tokio::select! {
        f = created.cleanup(&http, &target.csm) => f,
        _ = tokio::signal::ctrl_c() => {
            progress.finish();
            eprintln!("iotctl bench: interrupted again: cleanup stopped; graph bench-* and DAs of model {} may remain", da::MODEL);
            return Err(BenchError::Interrupted);
        }
    };
    progress.finish();
    for f in &failed {
        eprintln!("iotctl bench: cleanup: {f}");
    }
    let (result, runaway_figures) = outcome?;
    let report = RouteReport {
        bench: "route",
        csm: target.csm.clone(),
        mqtt: target.mqtt(),
        join: args.join.as_str(),
        idfs: args.idfs,
        odfs: args.odfs,
        publishers,
        qos: args.load.qos,
        payload_bytes: args.load.payload_bytes,
        rate: args.load.rate,
        batch: args.load.batch,
        max_inflight: args.load.max_inflight,
        runaway: args.runaway,
        result,
        runaway_figures,
    };
    let title = format!(
        "bench route: {} IDF -> join {} -> {} ODF, QoS {}, {} B payloads, rate {}, {} publishers{}\n  controller {} (mqtt {})",
        args.idfs,
        args.join.as_str(),
        args.odfs,
        args.load.qos,
        args.load.payload_bytes,
        report::rate(args.load.rate, args.load.max_inflight),
        publishers,
        if args.runaway {
            "; beside a runaway graph (its Python join loops forever, 5 msgs/s)"
        } else {
            ""
        },
        target.csm,
        target.mqtt()
    );
    let mut rows = report::load_rows(&report.result);
    if let Some(f) = &report.runaway_figures {
        rows.push(f.row());
    }
    report::print(args.load.json, &report, &title, &rows)
}

async fn measure(
    args: &RouteOptions,
    target: &Target,
    spec: &LoadSpec,
    publishers: usize,
    http: &reqwest::Client,
    progress: &Progress,
    created: &mut Created,
) -> Result<(LoadResult, Option<RunawayFigures>), BenchError> {
    let run = run_id();
    let clock = Clock::new();
    let counters = Arc::new(ConnCounters::default());
    let seen = Arc::new(AtomicU64::new(0));
    let (n, m) = (args.idfs, args.odfs);

    progress.phase(format!("registering {n} IDF and {m} ODF DAs"));
    for i in 0..n + m {
        let idf = i < n;
        let name = if idf {
            format!("bench-{run}-in{i}")
        } else {
            format!("bench-{run}-out{}", i - n)
        };
        let id = DaId::new_v4();
        let reply =
            da::register(http, &target.csm, &id, &da::register_body(&name, idf, !idf)).await?;
        created.registered.push((id, reply.rev));
    }

    progress.phase("connecting the DAs");
    let (links_tx, mut links) = mpsc::channel::<LinkUp>(n + m + 16);
    let how = DaConnect {
        host: target.mqtt_host.clone(),
        port: target.mqtt_port,
        data_qos: spec.qos,
        keep_alive: Duration::from_secs(60),
    };
    let mut recorders: Vec<SharedRecorder> = Vec::new();
    for (i, (id, rev)) in created.registered.clone().into_iter().enumerate() {
        let recorder = if i >= n {
            let r = Arc::new(Mutex::new(Recorder::new(clock, seen.clone())?));
            recorders.push(r.clone());
            Some(r)
        } else {
            None
        };
        let d = BenchDa::connect(
            i,
            id,
            rev,
            &how,
            recorder,
            links_tx.clone(),
            counters.clone(),
        )
        .await?;
        created.das.push(d);
    }

    progress.phase("building the graph");
    let gid = format!("bench-{run}");
    let graph = GraphClient::connect(
        &target.mqtt_host,
        target.mqtt_port,
        &format!("bench-{run}"),
        &gid,
    )
    .await?;
    let g = created.graph.insert(graph);
    g.request(GraphOp::Attach).await?;
    created.attached = true;
    let join_digest = match args.join.code(n) {
        Some(code) => {
            let d = digest(&code);
            g.request(GraphOp::add_funcs([code])).await?;
            Some(d)
        }
        None => None,
    };
    g.link_all(&created.registered, n).await?;
    if join_digest.is_some() {
        g.request(GraphOp::SetJoin {
            prev: None,
            new: join_digest,
            depends: Default::default(),
        })
        .await?;
    }

    progress.phase(format!(
        "waiting for the controller to connect {} links",
        n + m
    ));
    let mut idf_topics: Vec<Option<String>> = vec![None; n];
    let mut up = 0;
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    while up < n + m {
        let link = tokio::time::timeout_at(deadline, links.recv())
            .await
            .map_err(|_| BenchError::LinksNotConnected {
                up,
                total: n + m,
                seconds: SETUP_TIMEOUT.as_secs(),
            })?
            .ok_or(BenchError::Setup("the bench DAs stopped"))?;
        if link.direction == Direction::Idf && link.da < n {
            idf_topics[link.da] = Some(link.topic);
        }
        up += 1;
    }
    let idf_topics: Vec<String> =
        idf_topics
            .into_iter()
            .collect::<Option<_>>()
            .ok_or(BenchError::Setup(
                "an IDF link was connected without a topic",
            ))?;

    progress.phase(format!("connecting {publishers} publishers"));
    created.publishers = publish::connect_publishers(
        &target.mqtt_host,
        target.mqtt_port,
        publishers,
        &idf_topics,
        spec.qos,
        &run,
        &counters,
    )
    .await?;

    progress.phase("checking that data flows from every IDF to every ODF");
    publish::prime(
        "the graph does not route: check `iotctl status` and the controller's log",
        &mut created.publishers[0],
        &idf_topics,
        &recorders,
        clock,
        spec.payload_bytes,
        SETUP_TIMEOUT,
    )
    .await?;

    if args.runaway {
        // After priming: the measured graph's Python function has answered, so it runs on
        // the shared workers, and the runaway graph's on the probation worker.
        progress.phase("setting up the runaway graph (its Python join loops forever)");
        created
            .runaway
            .insert(Runaway::default())
            .start(target, http, &run, &how, SETUP_TIMEOUT)
            .await?;
    }

    let result = load::run(
        spec,
        &mut created.publishers,
        &recorders,
        seen,
        clock,
        target.pid,
        &counters,
        progress,
    )
    .await?;
    let figures = match &created.runaway {
        Some(r) => Some(r.figures(http, &target.csm).await?),
        None => None,
    };
    Ok((result, figures))
}
