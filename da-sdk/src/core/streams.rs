//! Streamed replies in the DA's task (`Core`): as the server, a stream request starts its
//! producer (`crate::produce::spawn`), the caller's acknowledgements and cancellation on our
//! request topic reach it, and its messages are published to the caller; as the caller, a
//! streamed call is published, the server's numbered messages put back in order and handed
//! to the reader's [`crate::CallStream`], whose acknowledgements and cancellation are
//! published to the server. Not here: the producer's task and the reader's stream
//! (`crate::produce`, `crate::streams`), the wire format (`iot_proto::rpc_stream`).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use iot_proto::rpc::{RpcErrorCode, RpcOutcome, RpcReply, RpcRequest};
use iot_proto::rpc_stream::{Reorder, StreamControl, StreamMsg};
use iot_proto::{topics, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::Core;
use crate::error::Error;
use crate::produce::{self, Job, Note, Opened, Piece, Produced, Serving};
use crate::rpc::StreamHandler;
use crate::rpc::{Done, ReplyTo, DEFAULT_HANDLER_DEADLINE};
use crate::transport::{Out, Tag};

/// The streams of a DA, served and called.
pub(super) struct Streams {
    pub handlers: HashMap<String, StreamHandler>,
    /// Served streams running, by request id.
    serving: HashMap<String, Serving>,
    /// Served streams that ended lately, by request id: a late repeat of their request
    /// (QoS 1) does not run them again.
    ended: HashMap<String, Instant>,
    /// Streamed calls being read, by request id.
    calls: HashMap<String, Caller>,
    out_tx: mpsc::Sender<Produced>,
    pub out_rx: mpsc::Receiver<Produced>,
    notes_tx: mpsc::UnboundedSender<Note>,
    pub notes_rx: mpsc::UnboundedReceiver<Note>,
}

impl Streams {
    pub fn new() -> Streams {
        let (out_tx, out_rx) = mpsc::channel(64);
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        Streams {
            handlers: HashMap::new(),
            serving: HashMap::new(),
            ended: HashMap::new(),
            calls: HashMap::new(),
            out_tx,
            out_rx,
            notes_tx,
            notes_rx,
        }
    }
}

/// How long a stream's acknowledgement or cancellation waits for a connection.
const CONTROL_KEPT: Duration = Duration::from_secs(60);

/// How long an ended stream's id is remembered, and how many at most.
const ENDED_KEPT: Duration = Duration::from_secs(60);
const MAX_ENDED: usize = 4096;

impl Streams {
    /// Remembers that the stream `id` ended.
    fn ended(&mut self, id: &str) {
        if self.ended.len() >= MAX_ENDED {
            let now = Instant::now();
            self.ended
                .retain(|_, t| now.duration_since(*t) < ENDED_KEPT);
        }
        if self.ended.len() < MAX_ENDED {
            self.ended.insert(id.to_owned(), Instant::now());
        }
    }
}

/// A streamed call of ours.
struct Caller {
    target: String,
    method: String,
    /// The target's request topic, where acknowledgements go.
    req_topic: String,
    reorder: Reorder<StreamMsg>,
    tx: mpsc::Sender<Piece>,
    /// A stream message arrived: a plain reply now is a repeat of a refusal, not ours.
    started: bool,
}

impl Core {
    pub(super) fn serves_streams(&self) -> bool {
        !self.streams.handlers.is_empty()
    }

    /// Cancels calls whose reader went away, as its drop would have; forgets streams that
    /// ended long enough ago.
    pub(super) fn sweep_streams(&mut self) {
        let now = Instant::now();
        (self.streams.ended).retain(|_, t| now.duration_since(*t) < ENDED_KEPT);
        let gone: Vec<String> = (self.streams.calls.iter())
            .filter(|(_, c)| c.tx.is_closed())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.end_call(&id, None);
        }
    }

    /// On stopping: our streamed calls are cancelled, our served streams end with the DA
    /// (dropping their `Serving` cancels them).
    pub(super) fn cancel_streams(&mut self) {
        let ids: Vec<String> = self.streams.calls.keys().cloned().collect();
        for id in ids {
            self.end_call(&id, None);
        }
        self.streams.serving.clear();
    }

    /// A request for a streamed method: its producer starts, or the caller hears why not.
    pub(super) fn start_stream(
        &mut self,
        req: RpcRequest,
        handler: StreamHandler,
        reply_to: ReplyTo,
        permit: OwnedSemaphorePermit,
    ) {
        let refuse = |reason: String| RpcOutcome::Error {
            code: RpcErrorCode::BadRequest,
            reason,
        };
        // A repeat (QoS 1 may deliver twice) of a request whose stream runs or just ended: it
        // has its answer.
        let id = &reply_to.id;
        if req.stream.is_some()
            && (self.streams.serving.contains_key(id) || self.streams.ended.contains_key(id))
        {
            tracing::debug!(id = reply_to.id, "ignored a repeated stream request");
            return;
        }
        let why = match req.stream {
            None => Some(format!(
                "`{}` streams its reply: call it as a stream (`\"stream\": true`)",
                req.method
            )),
            Some(_) if reply_to.id.is_empty() => Some("a streamed call needs an `id`".into()),
            Some(_) => None,
        };
        if let Some(reason) = why {
            self.on_done(Done {
                reply_to,
                outcome: refuse(reason),
            });
            return;
        }
        let gap = req
            .deadline_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_HANDLER_DEADLINE)
            .min(DEFAULT_HANDLER_DEADLINE);
        let id = reply_to.id.clone();
        let serving = produce::spawn(Job {
            handler,
            args: req.args,
            window: req.stream.unwrap_or(1),
            gap,
            reply_to,
            permit,
            out: self.streams.out_tx.clone(),
        });
        self.streams.serving.insert(id, serving);
    }

    /// An acknowledgement or a cancellation from a caller of one of our streams.
    pub(super) fn on_stream_control(&mut self, ctl: StreamControl) {
        match ctl {
            StreamControl::Ack { id, seq } => {
                if let Some(s) = self.streams.serving.get(&id) {
                    // Any number may come from outside; the producer refuses one it did not send.
                    let count = seq.saturating_add(1);
                    s.acked.send_if_modified(|n| {
                        let changed = count > *n;
                        *n = (*n).max(count);
                        changed
                    });
                }
            }
            StreamControl::Cancel { id } => {
                if let Some(s) = self.streams.serving.remove(&id) {
                    tracing::debug!(id, "a streamed call was cancelled by its caller");
                    s.cancel.cancel();
                    self.streams.ended(&id);
                }
            }
        }
    }

    /// Publishes a message of one of our streams to its caller.
    pub(super) fn on_produced(&mut self, p: Produced) {
        if !matches!(p.msg, StreamMsg::Item { .. }) {
            self.streams.serving.remove(p.msg.id());
            self.streams.ended(p.msg.id());
        }
        let body = p.msg.to_json();
        self.send_reply(p.reply_to, &body);
    }

    /// Starts a streamed call: the request goes out, the reader gets its channel.
    pub(super) fn call_stream(
        &mut self,
        target: String,
        method: String,
        args: Value,
        window: u32,
        gap: Duration,
        reply: oneshot::Sender<Result<Opened, Error>>,
    ) {
        let req_topic = match topics::rpc_req(&target) {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(Error::InvalidName(e.to_string())));
                return;
            }
        };
        let id = self.send_request(req_topic.clone(), method.clone(), args, gap, Some(window));
        // Room for a full window, the last message and an error of ours: a server keeping to
        // the window never finds it full.
        let (tx, rx) = mpsc::channel(window as usize + 3);
        self.streams.calls.insert(
            id.clone(),
            Caller {
                target,
                method,
                req_topic,
                reorder: Reorder::new(window),
                tx,
                started: false,
            },
        );
        let _ = reply.send(Ok(Opened {
            id,
            rx,
            notes: self.streams.notes_tx.clone(),
        }));
    }

    /// A message of a stream we called; `false` when no call of ours has this id.
    pub(super) fn on_stream_msg(&mut self, id: &str, msg: StreamMsg) -> bool {
        let Some(call) = self.streams.calls.get_mut(id) else {
            return false;
        };
        call.started = true;
        let seq = msg.seq();
        if let Err(e) = call.reorder.push(seq, msg) {
            let why = format!("the server broke the stream's flow control: {e}");
            return self.end_call(id, Some(why));
        }
        while let Some(m) = call.reorder.pop() {
            let piece = match m {
                StreamMsg::Item { item, .. } => Piece::Item(item),
                StreamMsg::End { .. } => Piece::End,
                StreamMsg::Failed { code, reason, .. } => Piece::Fail(Error::Remote {
                    target: call.target.clone(),
                    method: call.method.clone(),
                    code,
                    reason,
                }),
            };
            let last = !matches!(piece, Piece::Item(_));
            match call.tx.try_send(piece) {
                Ok(()) if last => {
                    self.streams.calls.remove(id);
                    return true;
                }
                Ok(()) => {}
                // The reader left (its cancellation may still be on its way): say it for it.
                Err(mpsc::error::TrySendError::Closed(_)) => return self.end_call(id, None),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let why = "the server sent past the window".to_owned();
                    return self.end_call(id, Some(why));
                }
            }
        }
        true
    }

    /// A plain reply to a streamed call (the method is not streamed, or the server refused
    /// the call): an error ends the stream with it, a result is its one item.
    pub(super) fn on_stream_reply(&mut self, id: &str, reply: RpcReply) -> bool {
        if self.streams.calls.get(id).is_none_or(|c| c.started) {
            return self.streams.calls.contains_key(id);
        }
        let Some(call) = self.streams.calls.remove(id) else {
            return false;
        };
        match reply.outcome {
            RpcOutcome::Ok(v) => {
                let _ = call.tx.try_send(Piece::Item(v));
                let _ = call.tx.try_send(Piece::End);
            }
            RpcOutcome::Error { code, reason } => {
                let _ = call.tx.try_send(Piece::Fail(Error::Remote {
                    target: call.target,
                    method: call.method,
                    code,
                    reason,
                }));
            }
        }
        true
    }

    /// Something the reader of one of our streamed calls did.
    pub(super) fn on_stream_note(&mut self, note: Note) {
        let (id, ctl) = match note {
            Note::Ack { id, seq } => (id.clone(), StreamControl::Ack { id, seq }),
            Note::Cancel { id } => (id.clone(), StreamControl::Cancel { id }),
        };
        let cancel = matches!(ctl, StreamControl::Cancel { .. });
        let Some(call) = self.streams.calls.get(&id) else {
            return;
        };
        if cancel {
            self.end_call(&id, None);
        } else {
            let topic = call.req_topic.clone();
            self.publish_control(topic, &ctl);
        }
    }

    /// An acknowledgement or cancellation for a server: kept across a reconnect (a lost
    /// acknowledgement would stall the stream), for a while.
    fn publish_control(&mut self, topic: String, ctl: &StreamControl) {
        self.enqueue(Out::Publish {
            topic,
            payload: Bytes::from(ctl.to_json().to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            tag: Tag::Call,
            props: None,
            expires: Instant::now().checked_add(CONTROL_KEPT),
        });
    }

    /// Ends a call of ours before its end: the server is told to stop; the reader gets an
    /// error when `why` says what went wrong. Returns `true` (the message was ours).
    fn end_call(&mut self, id: &str, why: Option<String>) -> bool {
        let Some(call) = self.streams.calls.remove(id) else {
            return true;
        };
        if let Some(reason) = why {
            tracing::warn!(id, target = call.target, reason, "a streamed call failed");
            let _ = call.tx.try_send(Piece::Fail(Error::Protocol {
                url: call.req_topic.clone(),
                why: reason,
            }));
        }
        let ctl = StreamControl::Cancel { id: id.to_owned() };
        self.publish_control(call.req_topic, &ctl);
        true
    }
}
