//! The execution engine: one task per graph routes messages from the graph's IDF data topics
//! through its functions to its ODF data topics (see [`exec`] for the step itself, [`task`]
//! for the loop, [`held`] for outputs held for ODFs that are not subscribed). Graphs do not
//! share a task, so a slow function in one graph does not hold up another; within a graph,
//! messages are handled one at a time, which keeps their order on every IDF -> ODF path.
//!
//! The CSM actor owns the [`Engine`] and never waits for a graph task: each task follows the
//! latest [`Snapshot`] of its graph (plan and ODF gates) over a `watch`, which a send replaces
//! without blocking; a slow or stuck function delays only its own graph. A task that dies (a
//! panic) is noticed by the actor through [`Engine::next_exit`], logged, counted, and started
//! again from its graph's latest snapshot.

pub mod exec;
mod held;
mod task;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use iot_broker::{BrokerHandle, Message, QoS, Subscription};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::plan::Plan;
use held::Held;
use iot_proto::log::Escaped;

/// Messages queued per IDF topic before the broker waits for the graph task.
const IDF_QUEUE: usize = 4096;

/// The payload of an ODF output: the value's JSON text (a list, as the DA's SDK expects).
pub fn odf_payload(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// An ODF output as the controller publishes it on the ODF's data topic: QoS 0, not
/// retained. Routed outputs and the ODF-write API (`registry::odf_api`) both go out so.
pub fn odf_output(topic: &str, payload: Bytes) -> Message {
    Message::new(topic, payload, QoS::AtMostOnce, false)
}

/// Which ODF topics of a plan are open (their DA is subscribed), by topic.
pub type Gates = HashMap<Arc<str>, bool>;

/// What a graph task follows: its plan and its gates. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub plan: Arc<Plan>,
    pub gates: Arc<Gates>,
}

/// Subscriptions made for a graph's new IDF topics, waiting for its task to take them.
type PendingSubs = Arc<Mutex<Vec<(Arc<str>, Subscription)>>>;

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
pub struct EngineStats {
    graphs: RwLock<HashMap<String, Arc<GraphStats>>>,
    /// Graph tasks that ended unexpectedly (a panic) and were started again from their plan.
    pub task_restarts: AtomicU64,
}

impl EngineStats {
    pub fn snapshot(&self) -> Vec<(String, Arc<GraphStats>)> {
        let m = self.graphs.read().unwrap_or_else(PoisonError::into_inner);
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn set(&self, gid: &str, s: Option<Arc<GraphStats>>) {
        let mut m = self.graphs.write().unwrap_or_else(PoisonError::into_inner);
        match s {
            Some(s) => m.insert(gid.to_owned(), s),
            None => m.remove(gid),
        };
    }
}

struct Runner {
    snapshot: watch::Sender<Snapshot>,
    subs: PendingSubs,
    cancel: CancellationToken,
    stats: Arc<GraphStats>,
    /// IDF topics subscribed for this graph.
    topics: HashSet<Arc<str>>,
    /// The task running it now (set by `Engine::start`).
    task: Option<Id>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// Starts, updates, supervises and stops graph tasks as plans arrive. Owned by the CSM actor;
/// none of its methods waits for a graph task.
#[derive(Debug)]
pub struct Engine {
    broker: BrokerHandle,
    runners: HashMap<String, Runner>,
    tasks: JoinSet<()>,
    /// Which graph each task runs.
    task_gids: HashMap<Id, String>,
    pub stats: Arc<EngineStats>,
    shutdown: CancellationToken,
    hold: Hold,
}

impl Engine {
    pub fn new(broker: BrokerHandle, shutdown: CancellationToken, hold: Hold) -> Self {
        Self {
            broker,
            runners: HashMap::new(),
            tasks: JoinSet::new(),
            task_gids: HashMap::new(),
            stats: Arc::default(),
            shutdown,
            hold,
        }
    }

    /// Tells every graph routing to ODF `topic` that it opened or closed.
    pub fn gate(&mut self, topic: &str, open: bool) {
        for r in self.runners.values() {
            r.snapshot.send_if_modified(|s| {
                match s.gates.get(topic) {
                    Some(was) if *was != open => {}
                    _ => return false,
                }
                let mut gates = Gates::clone(&s.gates);
                gates.insert(Arc::from(topic), open);
                s.gates = Arc::new(gates);
                true
            });
        }
    }

    /// Gives graph `gid` a new plan (starting its task if needed), or stops it (`None`).
    /// The plan's new IDF topics are subscribed before this returns, so a DA told to
    /// publish afterwards (CONNECT) is heard from its first message.
    pub async fn apply(&mut self, gid: String, plan: Option<Arc<Plan>>) {
        let Some(plan) = plan else {
            if let Some(r) = self.runners.remove(&gid) {
                r.cancel.cancel();
                if let Some(t) = r.task {
                    self.task_gids.remove(&t);
                }
            }
            self.stats.set(&gid, None);
            return;
        };
        let have = self
            .runners
            .get(&gid)
            .map(|r| r.topics.clone())
            .unwrap_or_default();
        let (topics, subs) = self.subscribe(&gid, &plan, &have).await;
        let gates: Gates = plan
            .odfs
            .iter()
            .map(|o| (Arc::from(o.topic.as_str()), o.open))
            .collect();
        let snapshot = Snapshot {
            plan,
            gates: Arc::new(gates),
        };
        match self.runners.get_mut(&gid) {
            Some(r) => {
                r.topics = topics;
                // Under the lock the task takes both with: a plan's subscriptions never
                // arrive without it. Neither step waits.
                let mut pending = r.subs.lock().unwrap_or_else(PoisonError::into_inner);
                pending.extend(subs);
                r.snapshot.send_replace(snapshot);
            }
            None => {
                let stats = Arc::new(GraphStats::default());
                self.stats.set(&gid, Some(stats.clone()));
                let (tx, _) = watch::channel(snapshot);
                let r = Runner {
                    snapshot: tx,
                    subs: Arc::new(Mutex::new(subs)),
                    cancel: self.shutdown.child_token(),
                    stats,
                    topics,
                    task: None,
                };
                self.start(gid, r);
            }
        }
    }

    /// Subscribes to the IDF topics of `plan` that are not in `have`; returns every IDF topic
    /// of the plan that is subscribed, and the new subscriptions.
    async fn subscribe(
        &self,
        gid: &str,
        plan: &Plan,
        have: &HashSet<Arc<str>>,
    ) -> (HashSet<Arc<str>>, Vec<(Arc<str>, Subscription)>) {
        let mut topics = HashSet::new();
        let mut subs = Vec::new();
        for idf in &plan.idfs {
            let topic: Arc<str> = Arc::from(idf.topic.as_str());
            if !have.contains(&topic) {
                match self.broker.subscribe(&topic, IDF_QUEUE).await {
                    Ok(s) => subs.push((topic.clone(), s)),
                    Err(e) => {
                        tracing::error!(graph.id = ?gid, mqtt.topic = ?topic, error = %Escaped(&e), "cannot subscribe");
                        continue;
                    }
                }
            }
            topics.insert(topic);
        }
        (topics, subs)
    }

    /// Spawns the task of `r` and records it.
    fn start(&mut self, gid: String, mut r: Runner) {
        let t = task::Task {
            broker: self.broker.clone(),
            snapshots: r.snapshot.subscribe(),
            subs: r.subs.clone(),
            stats: r.stats.clone(),
            held: Held::new(self.hold, r.stats.clone()),
            cancel: r.cancel.clone(),
        };
        let span = tracing::info_span!("graph", graph.id = ?gid);
        let handle = self
            .tasks
            .spawn(tracing::Instrument::instrument(t.run(), span));
        r.task = Some(handle.id());
        self.task_gids.insert(handle.id(), gid.clone());
        self.runners.insert(gid, r);
    }

    /// The next graph task that ended, to be passed to [`Self::task_ended`]; pending while
    /// none runs.
    pub async fn next_exit(&mut self) -> Result<Id, JoinError> {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => Ok(id),
            Some(Err(e)) => Err(e),
            None => std::future::pending().await,
        }
    }

    /// A graph task ended: if its graph still exists and this was its current task (it was
    /// not stopped on purpose), it died: it is logged, counted, and started again from the
    /// graph's latest snapshot, with its IDF topics subscribed anew.
    pub async fn task_ended(&mut self, ended: Result<Id, JoinError>) {
        let (id, why) = match ended {
            Ok(id) => (id, "it returned".to_owned()),
            Err(e) => (
                e.id(),
                if e.is_panic() {
                    "it panicked".into()
                } else {
                    e.to_string()
                },
            ),
        };
        let Some(gid) = self.task_gids.remove(&id) else {
            return;
        };
        let Some(mut r) = self.runners.remove(&gid) else {
            return;
        };
        if r.cancel.is_cancelled() || r.task != Some(id) {
            self.runners.insert(gid, r);
            return;
        }
        self.stats.task_restarts.fetch_add(1, Ordering::Relaxed);
        tracing::error!(graph.id = ?gid, reason = ?why, "graph task died; restarting it from its plan");
        // What it held is lost with it.
        let lost = r.stats.held.swap(0, Ordering::Relaxed);
        r.stats.held_dropped.fetch_add(lost, Ordering::Relaxed);
        let plan = r.snapshot.borrow().plan.clone();
        let (topics, subs) = self.subscribe(&gid, &plan, &HashSet::new()).await;
        r.topics = topics;
        *r.subs.lock().unwrap_or_else(PoisonError::into_inner) = subs;
        self.start(gid, r);
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
