//! The DA's task: the one owner of its state (features, outbox, pending calls, handlers,
//! connection). Handles reach it through a bounded command channel; the connection
//! supervisor (`transport`) feeds it events. It never awaits on rumqttc: requests go
//! through `try_*` calls and wait in its own queue (`outq`) when rumqttc's is full.
//!
//! This file holds the state, the task's loop, the handles' commands, the status and
//! stopping. The handlers of the rest add to `Core` in the files beside it, one concern
//! each, and import only this file (never each other):
//! - `connection`: a connection coming up or going down, and what rumqttc reports on it;
//! - `delivery`: handing queued requests and outbox entries to the connection, in order;
//! - `control`: signals from the server, our own uplink, ODF data to its consumers;
//! - `requests`: request/response, as the server (`serve`) and as the client (`call`);
//! - `streams`: streamed replies, served and called;
//! - `home`: home scene commands (`home_run`) and their results.
//!
//! Not here: the MQTT connection itself (`transport`), what a signal does to the features
//! (`features`), storage (`outbox`), running request handlers (`rpc`).
//!
//! Every event of the task is logged inside its `da` span (see `Core::run`), which carries
//! `da.id`; the events themselves do not repeat it.

mod connection;
mod control;
mod delivery;
mod home;
mod requests;
mod streams;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iot_proto::home::HomeResult;
use iot_proto::wire::{Presence, Uplink};
use iot_proto::{topics, DaId, QoS, Rev};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Options, SignalHook};
use crate::error::Error;
use crate::features::Features;
use crate::outbox::Outbox;
use crate::produce::Opened;
use crate::rpc::{Done, Handler, Served};
use crate::status::{ConnState, Status};
use crate::transport::{Input, Link, Out, Registration, Tag};

/// Messages in `outq` beyond which no more stream items are taken from their producers.
const STREAM_OUTQ: usize = 32;

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
        handler: Served,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Call {
        target: String,
        method: String,
        args: Value,
        timeout: Duration,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    CallStream {
        target: String,
        method: String,
        args: Value,
        window: u32,
        gap: Duration,
        reply: oneshot::Sender<Result<Opened, Error>>,
    },
    /// Runs a home target; the result is sent back on a reply topic of this DA's own.
    Home {
        target: String,
        cmd: String,
        /// The request's `deadline_ms` (`None`: the controller's default).
        deadline_ms: Option<u64>,
        /// How long the caller waits: the request is not sent after that.
        wait: Duration,
        reply: oneshot::Sender<Result<HomeResult, Error>>,
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

struct PendingHome {
    target: String,
    reply: oneshot::Sender<Result<HomeResult, Error>>,
}

/// The home commands of this DA: where their results come back and who waits for them.
struct Home {
    /// `iottalk/home/res/<id>/+`.
    filter: String,
    /// Whether a home command was made: from then on the filter is subscribed to on every
    /// connection.
    used: bool,
    /// The token of the first subscription to the filter, until the broker acknowledges it.
    pending: Option<u64>,
    /// Requests waiting for that acknowledgement (nonce, request).
    held: Vec<(String, Out)>,
    /// Waiting callers by nonce (the last level of the reply topic, also the request's `id`).
    calls: HashMap<String, PendingHome>,
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
    streams: streams::Streams,
    home: Home,
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

/// The string field `key` of a JSON object payload, read loosely, to answer a message that
/// does not parse (its `msg_id`, `reply_to`, `id`); `None` for anything else.
pub(crate) fn loose_str(payload: &[u8], key: &str) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    v.get(key).and_then(Value::as_str).map(str::to_owned)
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
            streams: streams::Streams::new(),
            home: Home {
                filter: iot_proto::home::owned_res_filter(&me),
                used: false,
                pending: None,
                held: Vec::new(),
                calls: HashMap::new(),
            },
            sub_waiters: HashMap::new(),
            serve_pending: None,
            next_token: 1,
            stopping: None,
            finished: false,
            features_changed: false,
            odf_pending: HashMap::new(),
        })
    }

    /// The task's loop, until stopped. It runs in a span `da` with `da.id`, made once for
    /// the task's life and entered on each poll, so events name the DA without carrying the
    /// field themselves. The span is at level ERROR so that it is enabled whenever any event
    /// of the task is: under a `warn` filter the warnings keep their context.
    #[tracing::instrument(name = "da", level = "error", skip_all, fields(da.id = %self.id))]
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
                // Served streams wait while the connection is behind: their producers block
                // on a full channel instead of growing `outq`.
                Some(p) = self.streams.out_rx.recv(), if self.outq.len() < STREAM_OUTQ => {
                    self.on_produced(p)
                }
                Some(note) = self.streams.notes_rx.recv() => self.on_stream_note(note),
                cmd = cmds.recv(), if self.stopping.is_none() => match cmd {
                    Some(c) => self.on_cmd(c).await,
                    // Every handle was dropped: stop (without deregistering).
                    None => self.begin_stop(None),
                },
                () = tokio::time::sleep_until(resume_at.unwrap_or_else(far)), if resume_at.is_some() => {
                    tracing::info!("no CONNECT re-sent within the resume timeout: sending to the topics known before");
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
        tracing::debug!("stopped");
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
            } => self.serve(method, handler, reply),
            Cmd::Call {
                target,
                method,
                args,
                timeout,
                reply,
            } => self.call(target, method, args, timeout, reply),
            Cmd::CallStream {
                target,
                method,
                args,
                window,
                gap,
                reply,
            } => self.call_stream(target, method, args, window, gap, reply),
            Cmd::Home {
                target,
                cmd,
                deadline_ms,
                wait,
                reply,
            } => self.home_run(target, cmd, deadline_ms, wait, reply),
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

    fn on_tick(&mut self) {
        // Calls whose caller gave up (deadline or cancellation) are forgotten.
        self.calls.retain(|_, c| !c.reply.is_closed());
        self.sweep_streams();
        self.home.calls.retain(|_, c| !c.reply.is_closed());
        if self
            .stopping
            .as_ref()
            .is_some_and(|s| Instant::now() >= s.deadline)
        {
            tracing::warn!("stop: the broker did not confirm offline in time");
            self.finish();
        }
    }

    fn begin_stop(&mut self, reply: Option<oneshot::Sender<Rev>>) {
        self.cancel_streams();
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use iot_proto::wire::BrokerUrl;

    use super::*;
    use crate::status::Protocol;
    use crate::transport::NetEvent;

    /// What a test's subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A DA's task state, not running, without a connection (stop at once).
    pub(super) async fn test_core() -> Core {
        let id = DaId::new_v4();
        let opts = Arc::new(Options {
            stop_timeout: Duration::ZERO,
            ..Options::default()
        });
        let reg = Registration {
            rev: Rev::generate(),
            name: "t".into(),
            broker: BrokerUrl {
                scheme: "mqtt".into(),
                host: "127.0.0.1".into(),
                port: 1883,
                ws_scheme: "ws".into(),
                ws_port: 8083,
            },
            username: None,
            password: None,
        };
        let outbox = Outbox::open(&opts.outbox, &id).await.unwrap();
        let (status_tx, _status_rx) =
            watch::channel(Status::new(id, reg.name.clone(), reg.rev.clone()));
        Core::new(
            id,
            opts,
            reg,
            None,
            Features::new([], []),
            outbox,
            status_tx,
            CancellationToken::new(),
        )
        .unwrap()
    }

    /// A connection whose event loop is never polled.
    pub(super) fn link() -> Link {
        let (client, _) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "h", 1), 4);
        Link::V4(client)
    }

    /// `core` as on a connection (generation 1).
    pub(super) async fn connect(core: &mut Core) {
        core.on_connected(1, link(), Protocol::V311).await;
    }

    /// The events of the task name no DA themselves; its span does, and keeps doing so when
    /// the filter lets only warnings through.
    #[tokio::test(start_paused = true)]
    async fn events_carry_the_da_id_of_the_tasks_span() {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let core = test_core().await;
        let id = core.id;
        let (cmd_tx, cmd_rx) = mpsc::channel(1);
        let (net_tx, net_rx) = mpsc::channel(4);
        let task = tokio::spawn(core.run(cmd_rx, net_rx));

        // A connection (whose event loop is never polled), a malformed signal on it, then a
        // stop the broker never confirms: two warnings, one debug line left out.
        for input in [
            Input::Connected {
                gen: 1,
                link: link(),
                protocol: Protocol::V311,
            },
            Input::Net {
                gen: 1,
                ev: NetEvent::Publish {
                    topic: topics::ctrl_o(&id),
                    payload: Bytes::from_static(b"not json"),
                    retain: false,
                    props: None,
                },
            },
        ] {
            net_tx.send(input).await.unwrap();
        }
        drop(cmd_tx);
        task.await.unwrap();

        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let span = format!("da{{da.id={id}}}");
        let warnings: Vec<&str> = text.lines().collect();
        assert_eq!(warnings.len(), 2, "{text}");
        assert!(warnings[0].contains("ignored a malformed signal"), "{text}");
        assert!(warnings[1].contains("did not confirm offline"), "{text}");
        for line in warnings {
            assert!(line.contains(&span), "{line}");
            assert_eq!(line.matches("da.id").count(), 1, "{line}");
        }
    }
}
