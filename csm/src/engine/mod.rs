//! The execution engine: one task per graph routes messages from the graph's IDF data topics
//! through its functions to its ODF data topics (see [`exec`] for the step itself). A task
//! follows its graph's [`Plan`], an immutable snapshot the CSM replaces on every graph
//! change; nothing here touches the database or the CSM's state. Graphs do not share a task,
//! so a slow function in one graph does not hold up another; within a graph, messages are
//! handled one at a time, which keeps their order on every IDF -> ODF path.

pub mod exec;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::{FutureExt, StreamExt};
use iot_broker::{BrokerHandle, Message, QoS, Subscription};
use iot_proto::{DaId, FeatureName};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;

use crate::funcs::Callable;
use exec::Exec;

/// Messages queued per IDF topic before the broker waits for the graph task.
const IDF_QUEUE: usize = 4096;
/// Most messages handled in one pass.
const BATCH: usize = 256;

/// What the engine needs to route one graph.
#[derive(Debug)]
pub struct Plan {
    pub gid: String,
    pub monitor: Option<String>,
    pub idfs: Vec<IdfPlan>,
    pub join: Option<Callable>,
    pub odfs: Vec<OdfPlan>,
}

/// Plans compare by identity: each graph change makes a new one.
impl PartialEq for Plan {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

#[derive(Debug)]
pub struct IdfPlan {
    pub da: DaId,
    pub feature: FeatureName,
    pub topic: String,
    pub func: Option<Callable>,
    /// Which data positions are `variant` inputs.
    pub variant: Vec<bool>,
    pub param_no: usize,
    pub tag_param_no: usize,
}

#[derive(Debug)]
pub struct OdfPlan {
    pub da: DaId,
    pub feature: FeatureName,
    pub topic: String,
    pub func: Option<Callable>,
}

/// Counters of one graph.
#[derive(Debug, Default)]
pub struct GraphStats {
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    /// Messages dropped: bad input or a failing function.
    pub errors: AtomicU64,
    pub fn_calls: AtomicU64,
    pub fn_errors: AtomicU64,
    /// Time spent in functions, in nanoseconds.
    pub fn_time_ns: AtomicU64,
}

impl GraphStats {
    pub fn json(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "msgs_in": g(&self.msgs_in),
            "msgs_out": g(&self.msgs_out),
            "errors": g(&self.errors),
            "fn_calls": g(&self.fn_calls),
            "fn_errors": g(&self.fn_errors),
            "fn_seconds": g(&self.fn_time_ns) as f64 / 1e9,
        })
    }
}

/// Counters of every graph, readable from anywhere (status, metrics). A std lock: it is
/// held only to clone an `Arc`, never across an `.await`.
#[derive(Debug, Default)]
pub struct EngineStats(RwLock<HashMap<String, Arc<GraphStats>>>);

impl EngineStats {
    pub fn snapshot(&self) -> Vec<(String, Arc<GraphStats>)> {
        match self.0.read() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn set(&self, gid: &str, s: Option<Arc<GraphStats>>) {
        if let Ok(mut m) = self.0.write() {
            match s {
                Some(s) => m.insert(gid.to_owned(), s),
                None => m.remove(gid),
            };
        }
    }
}

/// A new plan for a graph task, with subscriptions to the IDF topics it did not have.
struct Update {
    plan: Arc<Plan>,
    subs: Vec<(Arc<str>, Subscription)>,
}

struct Runner {
    updates: mpsc::Sender<Update>,
    cancel: CancellationToken,
    /// IDF topics subscribed for this graph.
    topics: HashSet<Arc<str>>,
}

/// Starts, updates and stops graph tasks as plans arrive. Owned by the CSM actor.
#[derive(Debug)]
pub struct Engine {
    broker: BrokerHandle,
    runners: HashMap<String, Runner>,
    pub stats: Arc<EngineStats>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(broker: BrokerHandle, shutdown: CancellationToken) -> Self {
        Self {
            broker,
            runners: HashMap::new(),
            stats: Arc::default(),
            shutdown,
        }
    }

    /// Gives graph `gid` a new plan (starting its task if needed), or stops it (`None`).
    /// The plan's new IDF topics are subscribed before this returns, so a DA told to
    /// publish afterwards (CONNECT) is heard from its first message.
    pub async fn apply(&mut self, gid: String, plan: Option<Arc<Plan>>) {
        let Some(plan) = plan else {
            if let Some(r) = self.runners.remove(&gid) {
                r.cancel.cancel();
            }
            self.stats.set(&gid, None);
            return;
        };
        let have = self
            .runners
            .get(&gid)
            .map(|r| r.topics.clone())
            .unwrap_or_default();
        let mut topics = HashSet::new();
        let mut subs = Vec::new();
        for idf in &plan.idfs {
            let topic: Arc<str> = Arc::from(idf.topic.as_str());
            if !have.contains(&topic) {
                match self.broker.subscribe(&topic, IDF_QUEUE).await {
                    Ok(s) => subs.push((topic.clone(), s)),
                    Err(e) => {
                        tracing::error!(graph.id = %gid, mqtt.topic = %topic, error = %e, "cannot subscribe");
                        continue;
                    }
                }
            }
            topics.insert(topic);
        }
        let update = Update { plan, subs };
        match self.runners.get_mut(&gid) {
            Some(r) => {
                r.topics = topics;
                let _ = r.updates.send(update).await;
            }
            None => {
                let (tx, rx) = mpsc::channel(16);
                let cancel = self.shutdown.child_token();
                let stats = Arc::new(GraphStats::default());
                self.stats.set(&gid, Some(stats.clone()));
                let _ = tx.send(update).await;
                tokio::spawn(run(self.broker.clone(), rx, stats, cancel.clone()));
                self.runners.insert(
                    gid,
                    Runner {
                        updates: tx,
                        cancel,
                        topics,
                    },
                );
            }
        }
    }
}

async fn run(
    broker: BrokerHandle,
    mut updates: mpsc::Receiver<Update>,
    stats: Arc<GraphStats>,
    cancel: CancellationToken,
) {
    let Some(first) = updates.recv().await else {
        return;
    };
    let mut plan = first.plan.clone();
    let mut exec = Exec::with_stats(&plan, stats.clone());
    let mut subs: StreamMap<Arc<str>, Subscription> = StreamMap::new();
    let mut index = follow(&plan, first.subs, &mut subs);
    let mut batch: Vec<(Arc<str>, Message)> = Vec::with_capacity(BATCH);
    tracing::debug!(graph.id = %plan.gid, "graph task started");
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            update = updates.recv() => {
                let Some(update) = update else { break };
                plan = update.plan;
                exec.adapt(&plan);
                index = follow(&plan, update.subs, &mut subs);
            }
            Some((key, msg)) = subs.next() => {
                // Take what else is already queued too (up to BATCH): one pass through the
                // functions for all of it.
                batch.clear();
                batch.push((key, msg));
                while batch.len() < BATCH {
                    match subs.next().now_or_never() {
                        Some(Some(km)) => batch.push(km),
                        _ => break,
                    }
                }
                handle(&broker, &plan, &mut exec, &stats, &index, &batch).await;
            }
        }
    }
    tracing::debug!(graph.id = %plan.gid, "graph task stopped");
}

/// Adds the new subscriptions, drops those the plan no longer has, and maps each topic to
/// its IDF index.
fn follow(
    plan: &Plan,
    new: Vec<(Arc<str>, Subscription)>,
    subs: &mut StreamMap<Arc<str>, Subscription>,
) -> HashMap<Arc<str>, usize> {
    for (topic, s) in new {
        subs.insert(topic, s);
    }
    let index: HashMap<Arc<str>, usize> = plan
        .idfs
        .iter()
        .enumerate()
        .map(|(i, p)| (Arc::from(p.topic.as_str()), i))
        .collect();
    let gone: Vec<Arc<str>> = subs
        .keys()
        .filter(|k| !index.contains_key(*k))
        .cloned()
        .collect();
    for k in gone {
        subs.remove(&k);
    }
    index
}

async fn handle(
    broker: &BrokerHandle,
    plan: &Plan,
    exec: &mut Exec,
    stats: &GraphStats,
    index: &HashMap<Arc<str>, usize>,
    batch: &[(Arc<str>, Message)],
) {
    // Empty payloads are cleared retained messages, not data.
    let msgs: Vec<(usize, &[u8])> = batch
        .iter()
        .filter(|(_, m)| !m.payload.is_empty())
        .filter_map(|(key, m)| index.get(key).map(|i| (*i, &m.payload[..])))
        .collect();
    stats
        .msgs_in
        .fetch_add(msgs.len() as u64, Ordering::Relaxed);
    let results = exec.on_batch(plan, &msgs).await;
    for ((i, payload), result) in msgs.iter().zip(results) {
        match result {
            Ok(outs) => {
                for (j, value) in &outs {
                    let payload = serde_json::to_vec(value).unwrap_or_default();
                    let out =
                        Message::new(plan.odfs[*j].topic.clone(), payload, QoS::AtMostOnce, false);
                    match broker.publish(out).await {
                        Ok(()) => {
                            stats.msgs_out.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(graph.id = %plan.gid, error = %e, "publish failed")
                        }
                    }
                }
                if let Some(topic) = &plan.monitor {
                    let idf = &plan.idfs[*i];
                    let input: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                    let outputs: Vec<Value> = outs
                        .iter()
                        .map(|(j, v)| json!({"odf": format!("{}/{}", plan.odfs[*j].da, plan.odfs[*j].feature), "value": v}))
                        .collect();
                    let body = json!({"op": "esm_data", "data": {"src": format!("idf {}/{}", idf.da, idf.feature), "input": input, "outputs": outputs}});
                    monitor(broker, topic, &body).await;
                }
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(graph.id = %plan.gid, error.src = %e.src, error.msg = %e.msg, "message dropped");
                if let Some(topic) = &plan.monitor {
                    monitor(
                        broker,
                        topic,
                        &json!({"op": "esm_error", "data": {"msg": e.msg, "src": e.src}}),
                    )
                    .await;
                }
            }
        }
    }
}

async fn monitor(broker: &BrokerHandle, topic: &str, body: &Value) {
    let msg = Message::new(topic, body.to_string(), QoS::AtMostOnce, false);
    if let Err(e) = broker.publish(msg).await {
        tracing::debug!(error = %e, "monitor publish failed");
    }
}
