//! One graph's task: routes the messages of its IDF topics through its functions to its ODF
//! topics, following the latest [`Snapshot`] the engine publishes for it (a `watch`: the CSM
//! never waits for this task, however long a batch takes; the task reads the newest snapshot
//! between batches, and whatever it missed in between is in that one). It runs inside a
//! `graph` span carrying `graph.id`, so its events do not repeat it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use iot_broker::{BrokerHandle, Message, QoS, Subscription};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;

use super::exec::Exec;
use super::held::Held;
use super::{odf_output, odf_payload, GraphStats, PendingSubs, Snapshot};
use crate::plan::Plan;
use iot_proto::log::Escaped;

/// Most messages handled in one pass.
const BATCH: usize = 256;

/// What a graph task is given when it starts.
pub(super) struct Task {
    pub broker: BrokerHandle,
    pub snapshots: watch::Receiver<Snapshot>,
    pub subs: PendingSubs,
    pub stats: Arc<GraphStats>,
    pub held: Held,
    pub cancel: CancellationToken,
}

impl Task {
    /// The newest snapshot and the subscriptions made for it (or for an older plan) since the
    /// last look, taken together under the lock the engine holds while it adds both, so the
    /// subscriptions of a plan never arrive without that plan.
    fn latest(&mut self) -> (Snapshot, Vec<(Arc<str>, Subscription)>) {
        let mut pending = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
        let snap = self.snapshots.borrow_and_update().clone();
        (snap, std::mem::take(&mut *pending))
    }

    pub(super) async fn run(mut self) {
        let (first, new_subs) = self.latest();
        let mut plan = first.plan.clone();
        let stats = self.stats.clone();
        let broker = self.broker.clone();
        let mut exec = Exec::with_stats(&plan, stats.clone());
        let mut subs: StreamMap<Arc<str>, Subscription> = StreamMap::new();
        let mut index = follow(&plan, new_subs, &mut subs);
        // A new task holds nothing yet.
        let _ = self.held.follow(&plan, &first.gates);
        let mut batch: Vec<(Arc<str>, Message)> = Vec::with_capacity(BATCH);
        tracing::debug!("graph task started");
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let (snap, new_subs) = self.latest();
                    if !Arc::ptr_eq(&snap.plan, &plan) {
                        plan = snap.plan.clone();
                        exec.adapt(&plan);
                    }
                    index = follow(&plan, new_subs, &mut subs);
                    for (topic, release) in self.held.follow(&plan, &snap.gates) {
                        deliver_held(&broker, &stats, &topic, release).await;
                    }
                }
                Some((key, msg)) = subs.next() => {
                    // Take what else is already queued too (up to BATCH): one pass through
                    // the functions for all of it.
                    batch.clear();
                    batch.push((key, msg));
                    while batch.len() < BATCH {
                        match subs.next().now_or_never() {
                            Some(Some(km)) => batch.push(km),
                            _ => break,
                        }
                    }
                    handle(&broker, &plan, &mut exec, &stats, &mut self.held, &index, &batch).await;
                }
            }
        }
        tracing::debug!("graph task stopped");
    }
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
    let mut joined = exec.take_joined().into_iter();
    for ((i, payload), result) in msgs.iter().zip(results) {
        let join = joined.next().flatten();
        match result {
            Ok(outs) => {
                for (j, value) in &outs {
                    let topic = &plan.odfs[*j].topic;
                    let payload = odf_payload(value);
                    if let Some(payload) = held.hold(topic, payload) {
                        publish_out(broker, stats, topic, payload).await;
                    }
                }
                if let Some(topic) = &plan.monitor {
                    let idf = &plan.idfs[*i];
                    let input: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                    let outputs: Vec<Value> = outs
                        .iter()
                        .map(|(j, v)| json!({"odf": format!("{}/{}", plan.odfs[*j].da, plan.odfs[*j].feature), "value": v}))
                        .collect();
                    let body = json!({"op": "esm_data", "data": {"src": format!("idf {}/{}", idf.da, idf.feature), "input": input, "join": join, "outputs": outputs}});
                    monitor(broker, topic, &body).await;
                }
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error.src = ?e.src, error.msg = ?e.msg, "message dropped");
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

async fn deliver_held(broker: &BrokerHandle, stats: &GraphStats, topic: &str, release: Vec<Bytes>) {
    if !release.is_empty() {
        tracing::debug!(mqtt.topic = ?topic, msgs = release.len(), "delivering held outputs");
    }
    for payload in release {
        publish_out(broker, stats, topic, payload).await;
    }
}

async fn publish_out(broker: &BrokerHandle, stats: &GraphStats, topic: &str, payload: Bytes) {
    match broker.publish(odf_output(topic, payload)).await {
        Ok(()) => {
            stats.msgs_out.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %Escaped(&e), "publish failed"),
    }
}

/// Publishes on the graph's monitor topic; a message too large for the broker is replaced by
/// an `esm_error` that says so (the watcher learns that something was not shown).
async fn monitor(broker: &BrokerHandle, topic: &str, body: &Value) {
    let msg = Message::new(topic, body.to_string(), QoS::AtMostOnce, false);
    match broker.publish(msg).await {
        Ok(()) => {}
        Err(iot_broker::BrokerError::PayloadTooLarge { bytes, limit, .. }) => {
            let op = body["op"].as_str().unwrap_or("message");
            let note = serde_json::json!({"op": "esm_error", "data": {
                "msg": format!("{op} too large ({bytes} bytes > broker.max_payload_bytes {limit}): not shown"),
                "src": body["data"]["src"],
            }});
            let msg = Message::new(topic, note.to_string(), QoS::AtMostOnce, false);
            if let Err(e) = broker.publish(msg).await {
                tracing::debug!(error = %Escaped(&e), "monitor publish failed");
            }
        }
        Err(e) => tracing::debug!(error = %Escaped(&e), "monitor publish failed"),
    }
}
