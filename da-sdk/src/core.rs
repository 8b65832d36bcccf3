//! The DA's task: the one owner of its state (features, outbox, pending calls, handlers,
//! connection). Handles reach it through a bounded command channel; the connection
//! supervisor (`transport.rs`) feeds it events. It never awaits on rumqttc: requests go
//! through `try_*` calls and wait in its own queue (`outq`) when rumqttc's is full.
//!
//! Delivery of pushes: every push is appended to the outbox first. When the connection is
//! up (and, after a reconnect, the server has re-sent CONNECT for the IDFs, or the resume
//! timeout passed), entries are sent in order, at most `window` unacknowledged at a time.
//! Each publish handed to rumqttc is recorded in a FIFO of tags; rumqttc reports publishes in
//! request order with their packet ids, so the broker's PUBACK/PUBCOMP can be matched to the
//! outbox entry, which is then removed. On a connection loss the unacknowledged entries are
//! simply sent again from the start of the outbox.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iot_proto::rpc::{RpcErrorCode, RpcOutcome, RpcReply, RpcRequest};
use iot_proto::wire::{Presence, Signal, Uplink};
use iot_proto::{topics, DaId, QoS, Rev};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Options, SignalHook};
use crate::error::Error;
use crate::features::{valid_topic, Effect, Features};
use crate::outbox::Outbox;
use crate::rpc::{self, Done, Handler, ReplyTo};
use crate::status::{ConnState, Protocol, Status};
use crate::transport::{Input, Link, NetEvent, Out, Props, Registration, Tag};

/// How often pending calls are swept and stop deadlines checked.
const TICK: Duration = Duration::from_millis(200);

/// Requests from [`crate::Da`] handles.
pub(crate) enum Cmd {
    Push {
        feature: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Odf {
        feature: String,
        reply: oneshot::Sender<Result<mpsc::Receiver<Bytes>, Error>>,
    },
    Serve {
        method: String,
        handler: Handler,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Call {
        target: String,
        method: String,
        args: Value,
        timeout: Duration,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    /// Publish offline, disconnect, stop; answers with the last rev.
    Stop { reply: oneshot::Sender<Rev> },
}

/// One live MQTT connection.
struct Session {
    gen: u64,
    link: Link,
    /// Tags of publishes handed to rumqttc and not yet reported written.
    fifo: VecDeque<Tag>,
    /// Tags of written QoS 1/2 publishes by packet id, until acknowledged.
    by_pkid: HashMap<u16, Tag>,
    /// A publish waiting for a free packet id.
    collided: Option<Tag>,
    /// Tokens of subscribes handed to rumqttc and not yet reported written.
    sub_fifo: VecDeque<Option<u64>>,
    /// Tokens of written subscribes by packet id, until acknowledged.
    sub_by_pkid: HashMap<u16, u64>,
}

struct PendingCall {
    target: String,
    method: String,
    reply: oneshot::Sender<Result<Value, Error>>,
}

struct Stopping {
    replies: Vec<oneshot::Sender<Rev>>,
    deadline: Instant,
}

/// The state owned by the DA's task.
pub(crate) struct Core {
    id: DaId,
    opts: Arc<Options>,
    reg: Registration,
    hook: Option<SignalHook>,
    features: Features,
    outbox: Outbox,
    status_tx: watch::Sender<Status>,
    stop: CancellationToken,
    /// Per-process nonce of the reply topic.
    nonce: String,
    status: Status,
    ctrl_i: String,
    ctrl_o: String,
    reply_topic: String,
    serve_topic: String,
    session: Option<Session>,
    outq: VecDeque<Out>,
    /// Outbox entries handed to the connection and not yet acknowledged.
    inflight: BTreeSet<i64>,
    /// The last outbox entry handed to the connection.
    cursor: i64,
    resume_deadline: Option<Instant>,
    odf_subs: HashMap<String, Vec<mpsc::Sender<Bytes>>>,
    handlers: HashMap<String, Handler>,
    handler_slots: Arc<Semaphore>,
    rpc_tx: mpsc::Sender<Done>,
    rpc_rx: mpsc::Receiver<Done>,
    calls: HashMap<String, PendingCall>,
    next_call: u64,
    /// Callers of `serve` waiting for the broker to acknowledge a subscription.
    sub_waiters: HashMap<u64, Vec<oneshot::Sender<Result<(), Error>>>>,
    /// The token of the request-topic subscription in flight.
    serve_pending: Option<u64>,
    next_token: u64,
    stopping: Option<Stopping>,
    finished: bool,
    /// A signal changed the features since the last status.
    features_changed: bool,
    /// ODF subscriptions not yet acknowledged by the broker: their CONNECT is answered, and
    /// they count as connected, once it has them.
    odf_pending: HashMap<u64, (String, Value)>,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: DaId,
        opts: Arc<Options>,
        reg: Registration,
        hook: Option<SignalHook>,
        features: Features,
        outbox: Outbox,
        status_tx: watch::Sender<Status>,
        stop: CancellationToken,
    ) -> Result<Self, Error> {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let me = id.to_string();
        let reply_topic =
            topics::rpc_res(&me, &nonce).map_err(|e| Error::InvalidName(e.to_string()))?;
        let serve_topic = topics::rpc_req(&me).map_err(|e| Error::InvalidName(e.to_string()))?;
        let status = status_tx.borrow().clone();
        let (rpc_tx, rpc_rx) = mpsc::channel(64);
        Ok(Self {
            ctrl_i: topics::ctrl_i(&id),
            ctrl_o: topics::ctrl_o(&id),
            handler_slots: Arc::new(Semaphore::new(opts.max_handlers)),
            id,
            opts,
            reg,
            hook,
            features,
            outbox,
            status_tx,
            stop,
            nonce,
            status,
            reply_topic,
            serve_topic,
            session: None,
            outq: VecDeque::new(),
            inflight: BTreeSet::new(),
            cursor: 0,
            resume_deadline: None,
            odf_subs: HashMap::new(),
            handlers: HashMap::new(),
            rpc_tx,
            rpc_rx,
            calls: HashMap::new(),
            next_call: 1,
            sub_waiters: HashMap::new(),
            serve_pending: None,
            next_token: 1,
            stopping: None,
            finished: false,
            features_changed: false,
            odf_pending: HashMap::new(),
        })
    }

    pub async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, mut net: mpsc::Receiver<Input>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let far = || Instant::now() + Duration::from_secs(86_400);
        loop {
            let resume_at = self.resume_deadline;
            tokio::select! {
                biased;
                Some(input) = net.recv() => self.on_input(input).await,
                Some(done) = self.rpc_rx.recv() => self.on_done(done),
                cmd = cmds.recv(), if self.stopping.is_none() => match cmd {
                    Some(c) => self.on_cmd(c).await,
                    // Every handle was dropped: stop (without deregistering).
                    None => self.begin_stop(None),
                },
                () = tokio::time::sleep_until(resume_at.unwrap_or_else(far)), if resume_at.is_some() => {
                    tracing::info!(da.id = %self.id, "no CONNECT re-sent within the resume timeout: sending to the topics known before");
                    self.resume_deadline = None;
                    self.features.end_resume();
                }
                _ = tick.tick() => self.on_tick(),
            }
            if self.finished {
                break;
            }
            self.drain();
            self.pump().await;
            self.publish_status();
        }
        self.status.state = ConnState::Stopped;
        self.publish_status();
        tracing::debug!(da.id = %self.id, "stopped");
    }

    fn publish_status(&mut self) {
        self.status.outbox_len = self.outbox.len();
        if std::mem::take(&mut self.features_changed) {
            self.status.connected_idfs = self.features.connected_idfs();
            let mut odfs = self.features.connected_odfs();
            for (odf, _) in self.odf_pending.values() {
                odfs.remove(odf);
            }
            self.status.connected_odfs = odfs;
        }
        let current = &self.status;
        self.status_tx.send_if_modified(|s| {
            if s != current {
                *s = current.clone();
                true
            } else {
                false
            }
        });
    }

    fn enqueue(&mut self, out: Out) {
        self.outq.push_back(out);
    }

    fn publish_json(&mut self, topic: String, body: &Value, qos: QoS, retain: bool, tag: Tag) {
        self.enqueue(Out::Publish {
            topic,
            payload: Bytes::from(body.to_string()),
            qos,
            retain,
            tag,
            props: None,
            expires: None,
        });
    }

    /// Hands queued requests to rumqttc until its queue is full.
    fn drain(&mut self) {
        let Some(s) = &mut self.session else {
            return;
        };
        let now = Instant::now();
        while let Some(out) = self.outq.front() {
            if let Out::Publish {
                expires: Some(t), ..
            } = out
            {
                if *t <= now {
                    self.outq.pop_front();
                    continue;
                }
            }
            if !s.link.try_send(out) {
                break;
            }
            match out {
                Out::Publish { tag, .. } => s.fifo.push_back(*tag),
                Out::Subscribe(_, token) => s.sub_fifo.push_back(*token),
                Out::Unsubscribe(_) | Out::Disconnect => {}
            }
            self.outq.pop_front();
        }
    }

    /// Sends outbox entries, in order, while the window has room.
    async fn pump(&mut self) {
        let window = self.opts.window.max(1);
        while self.session.is_some()
            && self.stopping.is_none()
            && self.features.resumed()
            && self.outq.is_empty()
            && self.inflight.len() < window
            // Every entry is in flight or waiting: nothing to read when all are in flight.
            && self.outbox.len() > self.inflight.len()
        {
            let batch = match self
                .outbox
                .after(self.cursor, window - self.inflight.len())
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(da.id = %self.id, error = %e, "cannot read the outbox");
                    return;
                }
            };
            if batch.is_empty() {
                return;
            }
            for e in batch {
                self.cursor = e.seq;
                match self.features.idf_topic(&e.feature) {
                    Some(topic) => {
                        let topic = topic.to_owned();
                        self.inflight.insert(e.seq);
                        self.enqueue(Out::Publish {
                            topic,
                            payload: e.payload,
                            qos: self.opts.push_qos,
                            retain: false,
                            tag: Tag::Data(e.seq),
                            props: None,
                            expires: None,
                        });
                    }
                    None => {
                        // The IDF was disconnected (or no longer exists): nowhere to send it.
                        if let Err(err) = self.outbox.remove(e.seq).await {
                            tracing::warn!(da.id = %self.id, error = %err, "cannot drop an outbox entry");
                        }
                        self.status.outbox_dropped += 1;
                        tracing::debug!(da.id = %self.id, idf = %e.feature, "dropped a push: its IDF is not connected");
                    }
                }
            }
            self.drain();
        }
    }

    async fn on_input(&mut self, input: Input) {
        match input {
            Input::Registered(reg) => {
                self.status.rev = reg.rev.clone();
                self.status.name = reg.name.clone();
                self.status.registrations += 1;
                self.reg = reg;
            }
            Input::Connected {
                gen,
                link,
                protocol,
            } => self.on_connected(gen, link, protocol).await,
            Input::Net { gen, ev } => {
                if self.session.as_ref().is_some_and(|s| s.gen == gen) {
                    self.on_net(ev).await;
                }
            }
            Input::Disconnected { gen, error } => {
                self.status.last_error = Some(error.clone());
                if self.session.as_ref().is_none_or(|s| s.gen != gen) {
                    // A failed attempt (no CONNACK).
                    tracing::debug!(da.id = %self.id, %error, "connection attempt failed");
                    if self.stopping.is_some() {
                        self.finish();
                    }
                    return;
                }
                tracing::info!(da.id = %self.id, %error, "connection lost; reconnecting");
                self.session = None;
                self.inflight.clear();
                self.cursor = 0;
                self.resume_deadline = None;
                self.outq
                    .retain(|o| matches!(o, Out::Publish { tag: Tag::Call, .. }));
                // Pending subscriptions are made again on connecting; the server re-sends
                // CONNECT on our online, and that one is answered.
                let tokens: Vec<u64> = self.sub_waiters.keys().copied().collect();
                for t in tokens {
                    self.subscribed(t);
                }
                if !self.odf_pending.is_empty() {
                    self.odf_pending.clear();
                    self.features_changed = true;
                }
                self.status.state = ConnState::Reconnecting;
                if self.stopping.is_some() {
                    self.finish();
                }
            }
        }
    }

    async fn on_connected(&mut self, gen: u64, link: Link, protocol: Protocol) {
        tracing::debug!(da.id = %self.id, ?protocol, "connected");
        self.session = Some(Session {
            gen,
            link,
            fifo: VecDeque::new(),
            by_pkid: HashMap::new(),
            collided: None,
            sub_fifo: VecDeque::new(),
            sub_by_pkid: HashMap::new(),
        });
        self.status.sessions += 1;
        self.status.protocol = Some(protocol);
        self.status.state = ConnState::Connecting;
        self.inflight.clear();
        self.cursor = 0;
        // Subscriptions first, then online (retained; the will says offline), then calls
        // made while disconnected. Pushes follow once `outq` is empty.
        let mut filters = vec![
            (self.ctrl_o.clone(), QoS::ExactlyOnce),
            (self.ctrl_i.clone(), QoS::AtLeastOnce),
            (self.reply_topic.clone(), QoS::AtLeastOnce),
        ];
        if !self.handlers.is_empty() {
            filters.push((self.serve_topic.clone(), QoS::AtLeastOnce));
        }
        filters.extend(
            self.features
                .odf_topics()
                .map(|t| (t.to_owned(), self.opts.odf_qos)),
        );
        let calls: Vec<Out> = self
            .outq
            .drain(..)
            .filter(|o| matches!(o, Out::Publish { tag: Tag::Call, .. }))
            .collect();
        self.enqueue(Out::Subscribe(filters, None));
        self.publish_online();
        self.outq.extend(calls);
        // Pushes wait for the server to re-send CONNECT for the IDFs they go to.
        let pending = if self.outbox.len() > 0 {
            self.outbox.features().await.unwrap_or_else(|e| {
                tracing::warn!(da.id = %self.id, error = %e, "cannot read the outbox");
                BTreeSet::new()
            })
        } else {
            BTreeSet::new()
        };
        self.resume_deadline = self
            .features
            .begin_resume(pending)
            .then(|| Instant::now() + self.opts.resume_timeout);
    }

    fn publish_online(&mut self) {
        let body = Uplink::presence_json(Presence::Online, &self.reg.rev);
        self.publish_json(
            self.ctrl_i.clone(),
            &body,
            QoS::ExactlyOnce,
            true,
            Tag::Online,
        );
    }

    async fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::OutPublish(pkid) => {
                let Some(s) = &mut self.session else { return };
                let tag = s.collided.take().or_else(|| s.fifo.pop_front());
                match tag {
                    Some(tag) if pkid == 0 => self.confirm(tag).await,
                    Some(tag) => {
                        s.by_pkid.insert(pkid, tag);
                    }
                    None => tracing::debug!(da.id = %self.id, pkid, "a publish we did not queue"),
                }
            }
            NetEvent::AwaitAck(_) => {
                if let Some(s) = &mut self.session {
                    s.collided = s.fifo.pop_front();
                }
            }
            NetEvent::PubAck(pkid) | NetEvent::PubComp(pkid) => {
                let tag = self.session.as_mut().and_then(|s| s.by_pkid.remove(&pkid));
                if let Some(tag) = tag {
                    self.confirm(tag).await;
                }
            }
            NetEvent::Publish {
                topic,
                payload,
                retain,
                props,
            } => self.on_publish(&topic, payload, retain, props),
            NetEvent::OutSubscribe(pkid) => {
                if let Some(s) = &mut self.session {
                    if let Some(Some(token)) = s.sub_fifo.pop_front() {
                        s.sub_by_pkid.insert(pkid, token);
                    }
                }
            }
            NetEvent::SubAck(pkid) => {
                let token = self
                    .session
                    .as_mut()
                    .and_then(|s| s.sub_by_pkid.remove(&pkid));
                if let Some(token) = token {
                    self.subscribed(token);
                }
            }
            NetEvent::OutDisconnect => {
                if self.stopping.is_some() {
                    self.finish();
                }
            }
            NetEvent::Progress => {}
        }
    }

    /// The broker acknowledged (or, at QoS 0, we wrote) a publish.
    async fn confirm(&mut self, tag: Tag) {
        match tag {
            Tag::Data(seq) => {
                if self.inflight.remove(&seq) {
                    if let Err(e) = self.outbox.remove(seq).await {
                        tracing::warn!(da.id = %self.id, error = %e, "cannot remove a delivered push from the outbox");
                    }
                }
            }
            Tag::Online => {
                if self.stopping.is_none() && self.status.state != ConnState::Online {
                    tracing::info!(da.id = %self.id, rev = %self.reg.rev, "online");
                    self.status.state = ConnState::Online;
                }
            }
            Tag::Offline => {
                if self.stopping.is_some() {
                    self.enqueue(Out::Disconnect);
                }
            }
            Tag::Call | Tag::Other => {}
        }
    }

    fn on_publish(&mut self, topic: &str, payload: Bytes, retain: bool, props: Option<Props>) {
        if topic == self.ctrl_o {
            self.on_signal(&payload);
        } else if topic == self.ctrl_i {
            self.on_own_uplink(&payload, retain);
        } else if topic == self.reply_topic {
            self.on_reply(&payload, props);
        } else if topic == self.serve_topic {
            self.on_request(&payload, props);
        } else if let Some(odf) = self.features.odf_for_topic(topic) {
            let odf = odf.to_owned();
            self.deliver(&odf, payload);
        } else {
            tracing::debug!(da.id = %self.id, topic, "message on a topic we no longer use");
        }
    }

    fn on_signal(&mut self, payload: &[u8]) {
        // The token of an ODF subscription the answer must wait for.
        let mut wait_for = None;
        let (msg_id, result) = match Signal::from_json(payload) {
            Ok(sig) => {
                let r = self.features.apply(&sig, self.hook.as_ref());
                if let Ok(effects) = &r {
                    self.features_changed = true;
                    for fx in effects {
                        match fx {
                            Effect::Subscribe(t) => {
                                let token = self.next_token;
                                self.next_token += 1;
                                wait_for = Some((token, sig.feature.to_string()));
                                self.enqueue(Out::Subscribe(
                                    vec![(t.clone(), self.opts.odf_qos)],
                                    Some(token),
                                ));
                            }
                            Effect::Unsubscribe(t) => self.enqueue(Out::Unsubscribe(t.clone())),
                        }
                    }
                    tracing::info!(da.id = %self.id, command = ?sig.command, direction = sig.direction.as_str(), feature = %sig.feature, "signal applied");
                    if self.resume_deadline.is_some() && self.features.resumed() {
                        self.resume_deadline = None;
                    }
                }
                (sig.msg_id.to_string(), r.map(|_| ()))
            }
            Err(e) => {
                // Answer anything that names a msg_id (e.g. an unknown command); ignore the rest.
                let msg_id = serde_json::from_slice::<Value>(payload)
                    .ok()
                    .and_then(|v| v.get("msg_id").and_then(Value::as_str).map(str::to_owned));
                match msg_id {
                    Some(m) => (m, Err(format!("cannot handle this signal: {e}"))),
                    None => {
                        tracing::warn!(da.id = %self.id, error = %e, "ignored a malformed signal");
                        return;
                    }
                }
            }
        };
        let body = match result {
            Ok(()) => json!({"msg_id": msg_id, "state": "ok"}),
            Err(reason) => {
                tracing::warn!(da.id = %self.id, %reason, "refused a signal");
                self.status.signals_refused += 1;
                json!({"msg_id": msg_id, "state": "error", "reason": reason})
            }
        };
        match wait_for {
            // An ODF is answered once the broker has its subscription, so data routed to it
            // after the server sees the answer is not lost.
            Some((token, odf)) => {
                self.odf_pending.insert(token, (odf, body));
            }
            None => self.publish_json(
                self.ctrl_i.clone(),
                &body,
                QoS::ExactlyOnce,
                false,
                Tag::Other,
            ),
        }
    }

    /// Our own uplink, watched for a late will: when the broker publishes the will of our
    /// previous connection after our new `online`, we announce `online` again. This replaces
    /// the Python SDK's 1 s sleep.
    fn on_own_uplink(&mut self, payload: &[u8], retain: bool) {
        if retain || payload.is_empty() || self.stopping.is_some() || self.session.is_none() {
            return;
        }
        if let Ok(Uplink::Presence {
            state: Presence::Offline,
            rev,
        }) = Uplink::from_json(payload)
        {
            if rev == self.reg.rev {
                tracing::info!(da.id = %self.id, "a late will marked us offline; announcing online again");
                self.publish_online();
            }
        }
    }

    fn deliver(&mut self, odf: &str, payload: Bytes) {
        let Some(subs) = self.odf_subs.get_mut(odf) else {
            tracing::debug!(da.id = %self.id, odf, "ODF data with no consumer");
            return;
        };
        subs.retain(|tx| !tx.is_closed());
        for tx in subs.iter() {
            if tx.try_send(payload.clone()).is_err() {
                self.status.odf_dropped += 1;
                if self.status.odf_dropped.is_power_of_two() {
                    tracing::warn!(da.id = %self.id, odf, dropped = self.status.odf_dropped, "an ODF consumer is too slow; samples dropped");
                }
            }
        }
    }

    fn on_request(&mut self, payload: &[u8], props: Option<Props>) {
        let parsed = RpcRequest::from_json(payload);
        let (v5_topic, v5_id) = match props {
            Some(p) => (p.response_topic, p.correlation),
            None => (None, None),
        };
        // Where to reply is read loosely, so that even a request that does not parse gets
        // its error reply.
        let (json_topic, json_id) = match &parsed {
            Ok(r) => (r.reply_to.clone(), r.id.clone()),
            Err(_) => {
                let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
                (s("reply_to"), s("id"))
            }
        };
        let reply_to = v5_topic
            .or(json_topic)
            .filter(|t| valid_topic(t))
            .map(|topic| ReplyTo {
                topic,
                id: v5_id
                    .as_ref()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .or(json_id)
                    .unwrap_or_default(),
                correlation: v5_id.clone(),
            });
        let fail = |code, reason: String| RpcOutcome::Error { code, reason };
        let req = match parsed {
            Ok(r) => r,
            Err(e) => {
                if let Some(r) = reply_to {
                    self.on_done(Done {
                        reply_to: r,
                        outcome: fail(RpcErrorCode::BadRequest, e.to_string()),
                    });
                }
                return;
            }
        };
        let Some(handler) = self.handlers.get(&req.method).cloned() else {
            if let Some(r) = reply_to {
                let mut known: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
                known.sort_unstable();
                self.on_done(Done {
                    reply_to: r,
                    outcome: fail(
                        RpcErrorCode::UnknownMethod,
                        format!(
                            "unknown method `{}`; served: {}",
                            req.method,
                            known.join(", ")
                        ),
                    ),
                });
            }
            return;
        };
        let Ok(permit) = self.handler_slots.clone().try_acquire_owned() else {
            if let Some(r) = reply_to {
                self.on_done(Done {
                    reply_to: r,
                    outcome: fail(
                        RpcErrorCode::Busy,
                        format!(
                            "{} requests are running; try again later",
                            self.opts.max_handlers
                        ),
                    ),
                });
            }
            return;
        };
        let deadline = req
            .deadline_ms
            .map(Duration::from_millis)
            .unwrap_or(rpc::DEFAULT_HANDLER_DEADLINE)
            .min(rpc::DEFAULT_HANDLER_DEADLINE);
        rpc::spawn(
            handler,
            req.args,
            deadline,
            reply_to,
            permit,
            self.rpc_tx.clone(),
        );
    }

    fn on_done(&mut self, done: Done) {
        let body = RpcReply {
            id: done.reply_to.id.clone(),
            outcome: done.outcome,
        }
        .to_json();
        self.enqueue(Out::Publish {
            topic: done.reply_to.topic,
            payload: Bytes::from(body.to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            tag: Tag::Other,
            props: done.reply_to.correlation.map(|c| Props {
                correlation: Some(c),
                ..Props::default()
            }),
            expires: None,
        });
    }

    fn on_reply(&mut self, payload: &[u8], props: Option<Props>) {
        let reply = match RpcReply::from_json(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(da.id = %self.id, error = %e, "ignored a malformed reply");
                return;
            }
        };
        let id = props
            .and_then(|p| p.correlation)
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or(reply.id);
        let Some(call) = self.calls.remove(&id) else {
            tracing::debug!(da.id = %self.id, id, "a reply for no pending call (late, or not ours)");
            return;
        };
        let result = match reply.outcome {
            RpcOutcome::Ok(v) => Ok(v),
            RpcOutcome::Error { code, reason } => Err(Error::Remote {
                target: call.target,
                method: call.method,
                code,
                reason,
            }),
        };
        // The caller may have given up meanwhile.
        let _ = call.reply.send(result);
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Push {
                feature,
                payload,
                reply,
            } => {
                let r = self.push(&feature, payload).await;
                let _ = reply.send(r);
            }
            Cmd::Odf { feature, reply } => {
                let r = if self.features.has_odf(&feature) {
                    let (tx, rx) = mpsc::channel(self.opts.odf_buffer);
                    self.odf_subs.entry(feature).or_default().push(tx);
                    Ok(rx)
                } else {
                    Err(Error::UnknownFeature {
                        direction: "ODF",
                        feature,
                    })
                };
                let _ = reply.send(r);
            }
            Cmd::Serve {
                method,
                handler,
                reply,
            } => {
                let first = self.handlers.is_empty();
                self.handlers.insert(method, handler);
                // Answer once requests can reach the handler: when the broker has
                // acknowledged the subscription to our request topic (or at once when it is
                // in place, or when we are offline: it is made on connecting).
                match (self.session.is_some(), first, self.serve_pending) {
                    (true, true, _) => {
                        let token = self.next_token;
                        self.next_token += 1;
                        self.serve_pending = Some(token);
                        self.sub_waiters.entry(token).or_default().push(reply);
                        self.enqueue(Out::Subscribe(
                            vec![(self.serve_topic.clone(), QoS::AtLeastOnce)],
                            Some(token),
                        ));
                    }
                    (true, false, Some(token)) => {
                        self.sub_waiters.entry(token).or_default().push(reply);
                    }
                    _ => {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Cmd::Call {
                target,
                method,
                args,
                timeout,
                reply,
            } => self.call(target, method, args, timeout, reply),
            Cmd::Stop { reply } => self.begin_stop(Some(reply)),
        }
    }

    async fn push(&mut self, feature: &str, payload: Bytes) -> Result<(), Error> {
        if !self.features.has_idf(feature) {
            return Err(Error::UnknownFeature {
                direction: "IDF",
                feature: feature.to_owned(),
            });
        }
        if self.features.idf_topic(feature).is_none() {
            return Err(Error::NotConnected(feature.to_owned()));
        }
        let appended = self.outbox.append(feature, payload).await?;
        if let Some(dropped) = appended.dropped {
            self.inflight.remove(&dropped);
            self.status.outbox_dropped += 1;
        }
        Ok(())
    }

    fn call(
        &mut self,
        target: String,
        method: String,
        args: Value,
        timeout: Duration,
        reply: oneshot::Sender<Result<Value, Error>>,
    ) {
        let topic = match topics::rpc_req(&target) {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(Error::InvalidName(e.to_string())));
                return;
            }
        };
        let id = format!("{}-{}", self.nonce, self.next_call);
        self.next_call += 1;
        let deadline_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let body = RpcRequest {
            id: Some(id.clone()),
            method: method.clone(),
            args,
            reply_to: Some(self.reply_topic.clone()),
            deadline_ms: Some(deadline_ms),
        }
        .to_json();
        self.enqueue(Out::Publish {
            topic,
            payload: Bytes::from(body.to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            tag: Tag::Call,
            props: Some(Props {
                response_topic: Some(self.reply_topic.clone()),
                correlation: Some(Bytes::from(id.clone())),
                expiry_secs: Some(u32::try_from(timeout.as_secs() + 1).unwrap_or(u32::MAX)),
            }),
            expires: Some(Instant::now() + timeout),
        });
        self.calls.insert(
            id,
            PendingCall {
                target,
                method,
                reply,
            },
        );
    }

    /// The broker acknowledged the subscription `token`.
    fn subscribed(&mut self, token: u64) {
        if self.serve_pending == Some(token) {
            self.serve_pending = None;
        }
        if let Some((_, body)) = self.odf_pending.remove(&token) {
            self.features_changed = true;
            self.publish_json(
                self.ctrl_i.clone(),
                &body,
                QoS::ExactlyOnce,
                false,
                Tag::Other,
            );
        }
        for w in self.sub_waiters.remove(&token).unwrap_or_default() {
            let _ = w.send(Ok(()));
        }
    }

    fn on_tick(&mut self) {
        // Calls whose caller gave up (deadline or cancellation) are forgotten.
        self.calls.retain(|_, c| !c.reply.is_closed());
        if self
            .stopping
            .as_ref()
            .is_some_and(|s| Instant::now() >= s.deadline)
        {
            tracing::warn!(da.id = %self.id, "stop: the broker did not confirm offline in time");
            self.finish();
        }
    }

    fn begin_stop(&mut self, reply: Option<oneshot::Sender<Rev>>) {
        let replies = reply.into_iter().collect();
        self.stopping = Some(Stopping {
            replies,
            deadline: Instant::now() + self.opts.stop_timeout,
        });
        if self.session.is_none() {
            self.finish();
            return;
        }
        // Offline (retained, QoS 2) goes out after what is queued; DISCONNECT follows its
        // PUBCOMP, and a clean DISCONNECT discards the will.
        let body = Uplink::presence_json(Presence::Offline, &self.reg.rev);
        self.publish_json(
            self.ctrl_i.clone(),
            &body,
            QoS::ExactlyOnce,
            true,
            Tag::Offline,
        );
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.stop.cancel();
        if let Some(s) = self.stopping.take() {
            for r in s.replies {
                let _ = r.send(self.reg.rev.clone());
            }
        }
    }
}
