//! The execution engine: one task per graph routes messages from the graph's IDF data topics
//! through its functions to its ODF data topics (see [`exec`] for the step itself). A task
//! follows its graph's [`Plan`], an immutable snapshot the CSM replaces on every graph
//! change; nothing here touches the database or the CSM's state. Graphs do not share a task,
//! so a slow function in one graph does not hold up another; within a graph, messages are
//! handled one at a time, which keeps their order on every IDF -> ODF path.

pub mod exec;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

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
    /// The DA acknowledged CONNECT: it is subscribed to `topic`. Until then (and while it is
    /// offline or reconnecting) outputs are held, see [`Hold`].
    pub open: bool,
}

/// How outputs to an ODF whose DA is not subscribed (not yet acknowledged CONNECT, offline,
/// reconnecting after a restart) are held and delivered, in order, once it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Most messages held per ODF; the oldest goes first. 0 disables holding: outputs are
    /// published at once, and lost if nobody is subscribed (IoTtalk v2's behaviour).
    pub max: usize,
    /// Most payload bytes held per ODF; the oldest goes first.
    pub max_bytes: usize,
    /// Held messages older than this are dropped instead of delivered.
    pub ttl: Duration,
}

impl Default for Hold {
    fn default() -> Self {
        Self {
            max: 1000,
            max_bytes: 1024 * 1024,
            ttl: Duration::from_secs(60),
        }
    }
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
    /// Outputs held now for ODFs whose DA is not subscribed.
    pub held: AtomicU64,
    /// Held outputs dropped: over [`Hold::max`], older than [`Hold::ttl`], or their ODF left
    /// the graph.
    pub held_dropped: AtomicU64,
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
            "held": g(&self.held),
            "held_dropped": g(&self.held_dropped),
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

/// What a graph task is told, in the order the CSM decided it.
enum Cmd {
    /// A new plan, with subscriptions to the IDF topics it did not have.
    Update {
        plan: Arc<Plan>,
        subs: Vec<(Arc<str>, Subscription)>,
    },
    /// An ODF topic opened or closed (see [`OdfPlan::open`]).
    Gate { topic: Arc<str>, open: bool },
}

struct Runner {
    updates: mpsc::Sender<Cmd>,
    cancel: CancellationToken,
    /// IDF topics subscribed for this graph.
    topics: HashSet<Arc<str>>,
    /// ODF topics of its plan.
    odfs: HashSet<Arc<str>>,
}

/// Starts, updates and stops graph tasks as plans arrive. Owned by the CSM actor.
#[derive(Debug)]
pub struct Engine {
    broker: BrokerHandle,
    runners: HashMap<String, Runner>,
    pub stats: Arc<EngineStats>,
    shutdown: CancellationToken,
    hold: Hold,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(broker: BrokerHandle, shutdown: CancellationToken, hold: Hold) -> Self {
        Self {
            broker,
            runners: HashMap::new(),
            stats: Arc::default(),
            shutdown,
            hold,
        }
    }

    /// Tells every graph routing to ODF `topic` that it opened or closed.
    pub async fn gate(&mut self, topic: &str, open: bool) {
        let topic: Arc<str> = Arc::from(topic);
        for r in self.runners.values().filter(|r| r.odfs.contains(&topic)) {
            let _ = r
                .updates
                .send(Cmd::Gate {
                    topic: topic.clone(),
                    open,
                })
                .await;
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
        let odfs = plan
            .odfs
            .iter()
            .map(|o| Arc::from(o.topic.as_str()))
            .collect();
        let update = Cmd::Update { plan, subs };
        match self.runners.get_mut(&gid) {
            Some(r) => {
                r.topics = topics;
                r.odfs = odfs;
                let _ = r.updates.send(update).await;
            }
            None => {
                let (tx, rx) = mpsc::channel(16);
                let cancel = self.shutdown.child_token();
                let stats = Arc::new(GraphStats::default());
                self.stats.set(&gid, Some(stats.clone()));
                let _ = tx.send(update).await;
                let held = Held::new(self.hold, stats.clone());
                tokio::spawn(run(self.broker.clone(), rx, stats, held, cancel.clone()));
                self.runners.insert(
                    gid,
                    Runner {
                        updates: tx,
                        cancel,
                        topics,
                        odfs,
                    },
                );
            }
        }
    }
}

/// Outputs held for closed ODF topics of one graph.
struct Held {
    cfg: Hold,
    stats: Arc<GraphStats>,
    /// Closed ODF topics of the plan.
    closed: HashSet<Arc<str>>,
    queues: HashMap<Arc<str>, HeldQueue>,
}

#[derive(Default)]
struct HeldQueue {
    msgs: VecDeque<(Instant, Bytes)>,
    bytes: usize,
}

impl HeldQueue {
    fn pop(&mut self) {
        if let Some((_, p)) = self.msgs.pop_front() {
            self.bytes -= p.len();
        }
    }
}

impl Held {
    fn new(cfg: Hold, stats: Arc<GraphStats>) -> Self {
        Self {
            cfg,
            stats,
            closed: HashSet::new(),
            queues: HashMap::new(),
        }
    }

    /// Takes the gates of a new plan; drops what was held for ODFs it no longer has, and
    /// returns what was held for ODFs that are open now.
    fn follow(&mut self, plan: &Plan) -> Vec<(Arc<str>, Vec<Bytes>)> {
        self.closed = plan
            .odfs
            .iter()
            .filter(|o| !o.open)
            .map(|o| Arc::from(o.topic.as_str()))
            .collect();
        let mut gone = 0;
        self.queues.retain(|t, q| {
            let keep = plan.odfs.iter().any(|o| *o.topic == **t);
            if !keep {
                gone += q.msgs.len() as u64;
            }
            keep
        });
        self.dropped(gone);
        let opened: Vec<Arc<str>> = self
            .queues
            .keys()
            .filter(|t| !self.closed.contains(*t))
            .cloned()
            .collect();
        opened
            .into_iter()
            .map(|t| (t.clone(), self.gate(t, true)))
            .collect()
    }

    fn dropped(&self, n: u64) {
        if n > 0 {
            self.stats.held.fetch_sub(n, Ordering::Relaxed);
            self.stats.held_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Keeps `payload` for `topic` if the topic is closed; gives it back otherwise.
    fn hold(&mut self, topic: &str, payload: Bytes) -> Option<Bytes> {
        if self.cfg.max == 0 || self.closed.is_empty() || !self.closed.contains(topic) {
            return Some(payload);
        }
        let now = Instant::now();
        if !self.queues.contains_key(topic) {
            self.queues.insert(Arc::from(topic), HeldQueue::default());
        }
        // Present: inserted just above if it was not.
        let q = self.queues.get_mut(topic)?;
        let mut stale = 0;
        while q
            .msgs
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.cfg.ttl)
        {
            q.pop();
            stale += 1;
        }
        q.bytes += payload.len();
        q.msgs.push_back((now, payload));
        while q.msgs.len() > self.cfg.max || q.bytes > self.cfg.max_bytes {
            q.pop();
            stale += 1;
        }
        self.stats.held.fetch_add(1, Ordering::Relaxed);
        self.dropped(stale);
        None
    }

    /// Opens or closes `topic`; on opening, returns what was held for it that is still fresh.
    fn gate(&mut self, topic: Arc<str>, open: bool) -> Vec<Bytes> {
        if !open {
            self.closed.insert(topic);
            return Vec::new();
        }
        self.closed.remove(&topic);
        let Some(q) = self.queues.remove(&topic) else {
            return Vec::new();
        };
        let total = q.msgs.len() as u64;
        let fresh: Vec<Bytes> = q
            .msgs
            .into_iter()
            .filter(|(at, _)| at.elapsed() <= self.cfg.ttl)
            .map(|(_, p)| p)
            .collect();
        self.stats
            .held
            .fetch_sub(fresh.len() as u64, Ordering::Relaxed);
        self.dropped(total - fresh.len() as u64);
        fresh
    }
}

async fn run(
    broker: BrokerHandle,
    mut updates: mpsc::Receiver<Cmd>,
    stats: Arc<GraphStats>,
    mut held: Held,
    cancel: CancellationToken,
) {
    let Some(Cmd::Update {
        plan: first,
        subs: first_subs,
    }) = updates.recv().await
    else {
        return;
    };
    let mut plan = first;
    let mut exec = Exec::with_stats(&plan, stats.clone());
    let mut subs: StreamMap<Arc<str>, Subscription> = StreamMap::new();
    let mut index = follow(&plan, first_subs, &mut subs);
    // A new task holds nothing yet.
    let _ = held.follow(&plan);
    let mut batch: Vec<(Arc<str>, Message)> = Vec::with_capacity(BATCH);
    tracing::debug!(graph.id = %plan.gid, "graph task started");
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            cmd = updates.recv() => match cmd {
                None => break,
                Some(Cmd::Update { plan: p, subs: new }) => {
                    plan = p;
                    exec.adapt(&plan);
                    index = follow(&plan, new, &mut subs);
                    for (topic, release) in held.follow(&plan) {
                        deliver_held(&broker, &plan, &stats, &topic, release).await;
                    }
                }
                Some(Cmd::Gate { topic, open }) => {
                    let release = held.gate(topic.clone(), open);
                    deliver_held(&broker, &plan, &stats, &topic, release).await;
                }
            },
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
                handle(&broker, &plan, &mut exec, &stats, &mut held, &index, &batch).await;
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
    held: &mut Held,
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
                    let topic = &plan.odfs[*j].topic;
                    let payload = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
                    if let Some(payload) = held.hold(topic, payload) {
                        publish_out(broker, plan, stats, topic, payload).await;
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

async fn deliver_held(
    broker: &BrokerHandle,
    plan: &Plan,
    stats: &GraphStats,
    topic: &str,
    release: Vec<Bytes>,
) {
    if !release.is_empty() {
        tracing::debug!(graph.id = %plan.gid, mqtt.topic = %topic, msgs = release.len(), "delivering held outputs");
    }
    for payload in release {
        publish_out(broker, plan, stats, topic, payload).await;
    }
}

async fn publish_out(
    broker: &BrokerHandle,
    plan: &Plan,
    stats: &GraphStats,
    topic: &str,
    payload: Bytes,
) {
    let out = Message::new(topic, payload, QoS::AtMostOnce, false);
    match broker.publish(out).await {
        Ok(()) => {
            stats.msgs_out.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(graph.id = %plan.gid, error = %e, "publish failed"),
    }
}

async fn monitor(broker: &BrokerHandle, topic: &str, body: &Value) {
    let msg = Message::new(topic, body.to_string(), QoS::AtMostOnce, false);
    if let Err(e) = broker.publish(msg).await {
        tracing::debug!(error = %e, "monitor publish failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(open: bool) -> Plan {
        Plan {
            gid: "g".into(),
            monitor: None,
            idfs: Vec::new(),
            join: None,
            odfs: vec![OdfPlan {
                da: "00000000-0000-4000-8000-000000000001".parse().unwrap(),
                feature: "Out".parse().unwrap(),
                topic: "out".into(),
                func: None,
                open,
            }],
        }
    }

    fn held(max: usize, ttl: Duration) -> (Held, Arc<GraphStats>) {
        let stats = Arc::new(GraphStats::default());
        let hold = Hold {
            max,
            max_bytes: 1000,
            ttl,
        };
        (Held::new(hold, stats.clone()), stats)
    }

    fn n(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn closed_odfs_hold_in_order_up_to_max_and_release_on_open() {
        let (mut h, stats) = held(3, Duration::from_secs(60));
        assert!(h.follow(&plan(false)).is_empty());
        for i in 0..5u8 {
            assert_eq!(h.hold("out", Bytes::from(vec![i])), None);
        }
        // Another topic (not in the plan's closed set) passes through.
        assert!(h.hold("other", Bytes::from_static(b"x")).is_some());
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (3, 2));
        let out = h.gate(Arc::from("out"), true);
        assert_eq!(out, vec![vec![2u8], vec![3], vec![4]]);
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (0, 2));
        // Open: passes through; closed again: held again.
        assert!(h.hold("out", Bytes::from_static(b"y")).is_some());
        assert!(h.gate(Arc::from("out"), false).is_empty());
        assert_eq!(h.hold("out", Bytes::from_static(b"z")), None);
        // A plan without the ODF drops what was held for it.
        let mut other = plan(false);
        other.odfs.clear();
        assert!(h.follow(&other).is_empty());
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (0, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_held_outputs_are_dropped_not_delivered() {
        let (mut h, stats) = held(10, Duration::from_secs(5));
        let _ = h.follow(&plan(false));
        assert_eq!(h.hold("out", Bytes::from_static(b"old")), None);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(h.hold("out", Bytes::from_static(b"new")), None);
        assert_eq!(n(&stats.held_dropped), 1);
        tokio::time::advance(Duration::from_secs(4)).await;
        // A new plan that finds the ODF open delivers what is fresh.
        let out = h.follow(&plan(true));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, vec![Bytes::from_static(b"new")]);
        assert_eq!(n(&stats.held), 0);
    }

    #[tokio::test]
    async fn held_bytes_are_bounded_per_odf() {
        let (mut h, stats) = held(100, Duration::from_secs(60));
        let _ = h.follow(&plan(false));
        for i in 0..5u8 {
            assert_eq!(h.hold("out", Bytes::from(vec![i; 300])), None);
        }
        // 1000 bytes hold three of 300.
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (3, 2));
        let out = h.gate(Arc::from("out"), true);
        assert_eq!(out.iter().map(|b| b[0]).collect::<Vec<_>>(), vec![2, 3, 4]);
        // One payload larger than the bound is not held at all.
        let _ = h.gate(Arc::from("out"), false);
        assert_eq!(h.hold("out", Bytes::from(vec![9; 2000])), None);
        assert!(h.gate(Arc::from("out"), true).is_empty());
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (0, 3));
    }

    #[tokio::test]
    async fn holding_disabled_passes_everything() {
        let (mut h, _) = held(0, Duration::from_secs(60));
        let _ = h.follow(&plan(false));
        assert!(h.hold("out", Bytes::from_static(b"x")).is_some());
    }
}
