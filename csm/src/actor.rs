//! The task that owns the [`Coordinator`] (registry and graphs): it takes requests from HTTP
//! handlers, uplink messages, device, ODF-write and graph API requests from the broker, timer expiries and
//! finished function checks, one at a time, and carries out the effects they return (publish,
//! persist, timers, credentials, plans). It never waits on a graph: plans and gates reach the
//! engine without blocking, and `add_funcs` compiles its functions in a task of its own (later
//! requests for that graph wait for it, other graphs and DAs do not).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use iot_broker::{BrokerHandle, Message, QoS, Subscription};
use iot_proto::topics::{self, ApiRequest};
use iot_proto::wire::graph_api::LinkRef;
use iot_proto::wire::{paging, DaRecord, RegisterRequest};
use iot_proto::{DaId, MsgId, Rev};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};
use zeroize::Zeroizing;

use crate::acl::DaGrants;
use crate::checks::Checks;
use crate::coordinator::Coordinator;
use crate::credentials::Credentials;
use crate::effect::Effect;
use crate::engine::Engine;
use crate::error::CsmError;
use crate::registry::{now_epoch, PresenceState, Registered, UplinkKind};
use crate::store::{Persisted, Store};
use iot_proto::log::Escaped;

/// A request to the actor; each carries the channel its answer goes to.
#[derive(Debug)]
pub enum Request {
    Register {
        id: DaId,
        req: RegisterRequest,
        /// The broker password the client sent (HTTP Basic with the DA id as username).
        password: Option<Zeroizing<Vec<u8>>>,
        reply: oneshot::Sender<Result<(Registered, Persisted), CsmError>>,
    },
    Get {
        id: DaId,
        reply: oneshot::Sender<Option<(DaRecord, PresenceState)>>,
    },
    Deregister {
        id: DaId,
        rev: Rev,
        reply: oneshot::Sender<Result<Persisted, CsmError>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
}

/// Figures for `iotctl status` and `/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub registered: usize,
    pub online: usize,
    pub failed_links: Vec<serde_json::Value>,
    /// Links whose DA has not acknowledged CONNECT yet.
    pub unacked_links: usize,
    pub counters: CounterValues,
    /// Per graph: its links and routing counters.
    pub graphs: serde_json::Map<String, serde_json::Value>,
    /// Python worker pids (0: not started) and how many were replaced.
    pub python_workers: Vec<u32>,
    /// The probation worker's pid (0: not running): new and failing graphs' functions.
    pub python_probation_worker: u32,
    pub python_restarts: u64,
    /// Graph tasks that died and were started again.
    pub graph_task_restarts: u64,
}

/// Event counters kept by the actor.
#[derive(Debug, Default)]
pub struct Counters {
    pub registrations: AtomicU64,
    pub deregistrations: AtomicU64,
    pub expirations: AtomicU64,
    pub uplink_stale: AtomicU64,
    pub uplink_garbage: AtomicU64,
    pub uplink_unknown: AtomicU64,
    /// ODF-write API requests carried out, and refused.
    pub odf_writes: AtomicU64,
    pub odf_writes_refused: AtomicU64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CounterValues {
    pub registrations: u64,
    pub deregistrations: u64,
    pub expirations: u64,
    pub uplink_stale: u64,
    pub uplink_garbage: u64,
    pub uplink_unknown: u64,
    pub odf_writes: u64,
    pub odf_writes_refused: u64,
}

impl Counters {
    pub fn values(&self) -> CounterValues {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterValues {
            registrations: g(&self.registrations),
            deregistrations: g(&self.deregistrations),
            expirations: g(&self.expirations),
            uplink_stale: g(&self.uplink_stale),
            uplink_garbage: g(&self.uplink_garbage),
            uplink_unknown: g(&self.uplink_unknown),
            odf_writes: g(&self.odf_writes),
            odf_writes_refused: g(&self.odf_writes_refused),
        }
    }
}

/// The broker subscriptions of the MQTT APIs the actor serves.
#[derive(Debug)]
pub struct ApiSubscriptions {
    /// `iottalk/api/req/+/device`
    pub device: Subscription,
    /// `iottalk/api/req/+/odf`
    pub odf: Subscription,
    /// `iottalk/api/req/+/graph/+`
    pub graph: Subscription,
}

pub(crate) enum Timer {
    Expire { id: DaId, rev: Rev },
    ClearAgain(DaId),
    AckWait { link: LinkRef, msg_id: MsgId },
}

/// How long after a first clear of a stale retained uplink the second one goes out.
const CLEAR_AGAIN_AFTER: Duration = Duration::from_millis(500);

pub(crate) struct Actor {
    pub state: Coordinator,
    pub broker: BrokerHandle,
    pub store: Store,
    pub credentials: Credentials,
    /// The data topics each DA may use, for the topic ACL: kept in step with its links.
    pub grants: DaGrants,
    pub counters: Arc<Counters>,
    /// `None` disables expiry.
    pub offline_expiry: Option<Duration>,
    /// How long an ODF's outputs wait for its DA's reply to CONNECT (`None`: for ever).
    pub odf_ack_wait: Option<Duration>,
    pub timers: DelayQueue<Timer>,
    pub expiry_keys: HashMap<DaId, delay_queue::Key>,
    pub engine: Engine,
    /// `add_funcs` requests whose functions are being checked, and the requests for the same
    /// graphs that wait for them.
    pub checks: Checks,
}

impl Actor {
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut uplinks: Subscription,
        apis: ApiSubscriptions,
        initial: Vec<Effect>,
        shutdown: CancellationToken,
    ) {
        let ApiSubscriptions {
            device: mut device_api,
            odf: mut odf_api,
            graph: mut graph_api,
        } = apis;
        self.execute(initial).await;
        loop {
            let mut fx = Vec::new();
            // Biased, MQTT first: what a DA published before it sent an HTTP request is
            // handled before that request (an SDK publishes `offline`, waits for the broker's
            // ack, then sends DELETE: the offline is already queued when the DELETE arrives).
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = uplinks.recv() => match msg {
                    Some(msg) => self.uplink(&msg, &mut fx),
                    None => break,
                },
                msg = device_api.recv() => match msg {
                    Some(msg) => {
                        if let Some(ApiRequest::Device { client }) = ApiRequest::parse(&msg.topic) {
                            self.state.registry.device_request(client, &msg.payload, &mut fx);
                        }
                    }
                    None => break,
                },
                msg = odf_api.recv() => match msg {
                    Some(msg) => self.odf_request(&msg, &mut fx),
                    None => break,
                },
                msg = graph_api.recv() => match msg {
                    Some(msg) => self.graph_request(msg, &mut fx),
                    None => break,
                },
                done = self.checks.next() => self.checks.finish(&mut self.state, done, &mut fx),
                ended = self.engine.next_exit() => self.engine.task_ended(ended).await,
                Some(t) = self.timers.next(), if !self.timers.is_empty() => self.timer(t.into_inner(), &mut fx),
                req = requests.recv() => match req {
                    Some(req) => { self.request(req).await; continue; }
                    None => break,
                },
            }
            self.execute(fx).await;
        }
        tracing::debug!("csm actor stopped");
    }

    fn graph_request(&mut self, msg: Message, fx: &mut Vec<Effect>) {
        let Some(ApiRequest::Graph { client, gid }) = ApiRequest::parse(&msg.topic) else {
            return;
        };
        self.checks
            .request(&mut self.state, client, gid, msg.payload.clone(), fx);
    }

    fn odf_request(&mut self, msg: &Message, fx: &mut Vec<Effect>) {
        let Some(ApiRequest::Odf { client }) = ApiRequest::parse(&msg.topic) else {
            return;
        };
        let c = &self.counters;
        if self.state.registry.odf_request(client, &msg.payload, fx) {
            c.odf_writes.fetch_add(1, Ordering::Relaxed);
        } else {
            c.odf_writes_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn uplink(&mut self, msg: &Message, fx: &mut Vec<Effect>) {
        let kind =
            self.state
                .registry
                .uplink(&msg.topic, &msg.payload, msg.retain, now_epoch(), fx);
        let c = &self.counters;
        match kind {
            UplinkKind::Stale => c.uplink_stale.fetch_add(1, Ordering::Relaxed),
            UplinkKind::Garbage => c.uplink_garbage.fetch_add(1, Ordering::Relaxed),
            UplinkKind::Unknown => c.uplink_unknown.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        match kind {
            UplinkKind::Garbage => {
                tracing::debug!(mqtt.topic = ?msg.topic, "ignored garbage on an uplink")
            }
            UplinkKind::Stale => {
                tracing::debug!(mqtt.topic = ?msg.topic, "ignored a message with a stale rev")
            }
            UplinkKind::Online | UplinkKind::Offline => {
                tracing::debug!(mqtt.topic = ?msg.topic, da.presence = ?kind, "presence")
            }
            _ => {}
        }
    }

    fn timer(&mut self, t: Timer, fx: &mut Vec<Effect>) {
        match t {
            Timer::Expire { id, rev } => {
                self.expiry_keys.remove(&id);
                if self.state.expire(&id, &rev, now_epoch(), fx) {
                    self.counters.expirations.fetch_add(1, Ordering::Relaxed);
                }
            }
            Timer::AckWait { link, msg_id } => {
                self.state.ack_wait_over(&link, &msg_id, fx);
            }
            Timer::ClearAgain(id) => {
                if !self.state.registry.contains(&id) {
                    fx.push(Effect::Publish(Message::new(
                        topics::ctrl_i(&id),
                        bytes::Bytes::new(),
                        QoS::ExactlyOnce,
                        true,
                    )));
                }
            }
        }
    }

    async fn request(&mut self, req: Request) {
        let mut fx = Vec::new();
        let now = now_epoch();
        match req {
            Request::Register {
                id,
                req,
                password,
                reply,
            } => {
                // Checked here, on the actor: no other request runs between check and register.
                let result = self
                    .state
                    .registry
                    .check_takeover(&id, password.as_deref().map(Vec::as_slice))
                    .and_then(|()| self.state.register(id, req, now, &mut fx));
                let persisted = self.execute(fx).await;
                match &result {
                    Ok(r) => {
                        self.counters.registrations.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(da.id = %id, da.name = ?r.record.name, "registered");
                    }
                    Err(e) => {
                        tracing::debug!(da.id = %id, error = %Escaped(&e), "registration refused")
                    }
                }
                let _ = reply.send(result.map(|r| (r, persisted.unwrap_or_else(done))));
            }
            Request::Deregister { id, rev, reply } => {
                let result = self.state.deregister(&id, &rev, now, &mut fx);
                let persisted = self.execute(fx).await;
                if result.is_ok() {
                    self.counters
                        .deregistrations
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(da.id = %id, "deregistered");
                }
                let _ = reply.send(result.map(|()| persisted.unwrap_or_else(done)));
            }
            Request::Get { id, reply } => {
                let record = self.state.registry.record(&id);
                let _ = reply.send(record.map(|(r, p)| (r.clone(), p)));
            }
            Request::Status { reply } => {
                let registry = &self.state.registry;
                let failed_links = registry
                    .failed_links()
                    .into_iter()
                    .map(|(id, (dir, feature), reason)| {
                        serde_json::json!({"da_id": id, dir.as_str(): feature, "reason": reason})
                    })
                    .collect();
                let stats: HashMap<String, _> = self.engine.stats.snapshot().into_iter().collect();
                let python = self.state.graphs.runtimes().python.as_ref();
                let graphs = self
                    .state
                    .graphs
                    .iter()
                    .map(|(gid, g)| {
                        let mut v = stats
                            .get(gid)
                            .map(|s| s.json())
                            .unwrap_or_else(|| serde_json::json!({}));
                        v["links"] = g.links.len().into();
                        v["monitor"] = g.monitor.clone().into();
                        if let Some(p) = python.and_then(|p| p.graph_json(gid)) {
                            v["python"] = p;
                        }
                        (gid.clone(), v)
                    })
                    .collect();
                let _ = reply.send(Status {
                    registered: registry.len(),
                    online: registry.online_count(),
                    failed_links,
                    unacked_links: registry.unacked_links(),
                    graph_task_restarts: self.engine.stats.task_restarts.load(Ordering::Relaxed),
                    counters: self.counters.values(),
                    graphs,
                    python_workers: python.map(|p| p.pids()).unwrap_or_default(),
                    python_probation_worker: python.map_or(0, |p| p.probation_pid()),
                    python_restarts: python.map_or(0, |p| p.restarts()),
                });
            }
        }
    }

    /// Carries out effects in order; returns the receiver of the last database write.
    async fn execute(&mut self, fx: Vec<Effect>) -> Option<Persisted> {
        let mut persisted = None;
        // Routing first: a graph's IDF topics are subscribed before the CONNECT that makes
        // its DAs publish there goes out.
        let (plans, fx): (Vec<Effect>, Vec<Effect>) = fx
            .into_iter()
            .partition(|e| matches!(e, Effect::Plan(..) | Effect::OdfGate { .. }));
        for e in plans {
            match e {
                Effect::Plan(gid, plan) => self.engine.apply(gid, plan).await,
                Effect::OdfGate { topic, open } => self.engine.gate(&topic, open),
                _ => {}
            }
        }
        for e in fx {
            match e {
                Effect::Publish(msg) => {
                    let msg = fit_reply(msg, self.state.registry.max_reply_bytes());
                    // A control message (CONNECT, DISCONNECT) changes what the DA may use:
                    // its grants follow before it reads the message.
                    if let Some(id) = ctrl_o_da(&msg.topic) {
                        self.grants.refresh(&self.state.registry, &id);
                    }
                    if let Err(e) = self.broker.publish(msg).await {
                        tracing::warn!(error = %Escaped(&e), "publish failed");
                    }
                }
                Effect::Persist(w) => persisted = Some(self.store.write(w).await),
                Effect::ArmExpiry { id, rev } => {
                    if let Some(key) = self.expiry_keys.remove(&id) {
                        self.timers.try_remove(&key);
                    }
                    if let Some(after) = self.offline_expiry {
                        let key = self.timers.insert(Timer::Expire { id, rev }, after);
                        self.expiry_keys.insert(id, key);
                    }
                }
                Effect::DisarmExpiry(id) => {
                    if let Some(key) = self.expiry_keys.remove(&id) {
                        self.timers.try_remove(&key);
                    }
                }
                Effect::ClearAgainLater(id) => {
                    self.timers.insert(Timer::ClearAgain(id), CLEAR_AGAIN_AFTER);
                }
                Effect::Plan(..) | Effect::OdfGate { .. } => {}
                Effect::AwaitAck { link, msg_id } => {
                    if let Some(after) = self.odf_ack_wait {
                        self.timers.insert(Timer::AckWait { link, msg_id }, after);
                    }
                }
                Effect::Credential {
                    username,
                    password_sha256,
                } => {
                    if let Ok(id) = username.parse::<DaId>() {
                        self.grants.refresh(&self.state.registry, &id);
                    }
                    self.credentials.set(username, password_sha256);
                }
            }
        }
        persisted
    }
}

/// An API reply (or announcement) larger than the broker carries becomes an error reply that
/// says so, with the request's small fields (`op`, a `nonce`): a client always gets an answer.
/// Other messages pass unchanged.
fn fit_reply(msg: Message, limit: usize) -> Message {
    if msg.payload.len() <= limit || !topics::is_api_res(&msg.topic) {
        return msg;
    }
    let body = serde_json::from_slice(&msg.payload).unwrap_or(serde_json::Value::Null);
    let reply = paging::too_large_reply(&body, msg.payload.len(), limit, "");
    tracing::warn!(
        mqtt.topic = ?msg.topic,
        payload.bytes = msg.payload.len(),
        limit.bytes = limit,
        "reply larger than broker.max_payload_bytes: an error reply goes instead"
    );
    Message::new(msg.topic, reply.to_string(), msg.qos, msg.retain)
}

/// The DA a control message on `<id>/ctrl/o` is for.
fn ctrl_o_da(topic: &str) -> Option<DaId> {
    topic.strip_suffix("/ctrl/o")?.parse().ok()
}

/// A receiver that is already resolved (nothing needed storing).
fn done() -> Persisted {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Ok(()));
    rx
}

#[cfg(test)]
mod tests {
    use iot_proto::wire::graph_api::{reply, GraphOk, GraphView, LinkRef, LinkSpec, LinkView};
    use iot_proto::wire::Direction;
    use serde_json::{json, Value};

    use super::*;
    use crate::effect::publish;

    #[test]
    fn a_show_reply_too_large_for_the_broker_becomes_an_error_reply() {
        let links = (0..100u128)
            .map(|n| LinkView {
                link: LinkRef {
                    da_id: DaId::from_uuid(uuid::Uuid::from_u128(n)),
                    direction: Direction::Idf,
                    feature: "Temp".parse().unwrap(),
                },
                spec: LinkSpec::default(),
            })
            .collect();
        let ok = GraphOk::Graph(GraphView {
            links,
            ..GraphView::default()
        });
        let Value::Object(fields) = json!({"op": "show", "nonce": "n1"}) else {
            unreachable!()
        };
        let body = reply(&fields, Ok(&ok));
        let msg = match publish(topics::graph_res("ccm", "g"), &body, false) {
            Effect::Publish(m) => m,
            other => panic!("{other:?}"),
        };
        let limit = 2000;
        assert!(msg.payload.len() > limit);
        let out: Value = serde_json::from_slice(&fit_reply(msg, limit).payload).unwrap();
        assert_eq!(out["state"], "error");
        assert_eq!(out["op"], "show");
        assert_eq!(out["nonce"], "n1");
        assert!(out.get("graph").is_none());
        let reason = out["reason"].as_str().unwrap();
        assert!(reason.starts_with("reply too large ("), "{reason}");
    }
}
