//! Request/response in the DA's task (`Core`): as the server, requests on
//! `iottalk/rpc/<id>/req` handed to the handler served for their method (or answered with an
//! error), and the handlers' results published as replies; as the client, calls published
//! with a deadline and replies matched to them. Not here: running a handler (`rpc`), the
//! wire format (`iot_proto::rpc`).

use std::time::Duration;

use bytes::Bytes;
use iot_proto::rpc::{RpcErrorCode, RpcOutcome, RpcReply, RpcRequest};
use iot_proto::rpc_stream::{StreamControl, StreamMsg};
use iot_proto::{topics, QoS};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{loose_str, Core, PendingCall};
use crate::error::Error;
use crate::features::valid_topic;
use crate::rpc::{self, Done, ReplyTo, Served};
use crate::transport::{Out, Props, Tag};

impl Core {
    /// Serves `method` with `handler` (replacing an earlier one).
    pub(super) fn serve(
        &mut self,
        method: String,
        handler: Served,
        reply: oneshot::Sender<Result<(), Error>>,
    ) {
        let first = self.handlers.is_empty() && self.streams.handlers.is_empty();
        match handler {
            Served::Once(h) => {
                self.streams.handlers.remove(&method);
                self.handlers.insert(method, h);
            }
            Served::Stream(h) => {
                self.handlers.remove(&method);
                self.streams.handlers.insert(method, h);
            }
        }
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

    pub(super) fn on_request(&mut self, payload: &[u8], props: Option<Props>) {
        // A caller's word about a stream we serve comes on the same topic.
        match StreamControl::parse(payload) {
            Some(Ok(ctl)) => return self.on_stream_control(ctl),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "ignored a malformed stream control message");
                return;
            }
            None => {}
        }
        let parsed = RpcRequest::from_json(payload);
        let (v5_topic, v5_id) = match props {
            Some(p) => (p.response_topic, p.correlation),
            None => (None, None),
        };
        // Where to reply is read loosely, so that even a request that does not parse gets
        // its error reply.
        let (json_topic, json_id) = match &parsed {
            Ok(r) => (r.reply_to.clone(), r.id.clone()),
            Err(_) => (loose_str(payload, "reply_to"), loose_str(payload, "id")),
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
        let streamed = self.streams.handlers.get(&req.method).cloned();
        let handler = self.handlers.get(&req.method).cloned();
        if streamed.is_none() && handler.is_none() {
            if let Some(r) = reply_to {
                let mut known: Vec<&str> = self
                    .handlers
                    .keys()
                    .chain(self.streams.handlers.keys())
                    .map(String::as_str)
                    .collect();
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
        }
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
        let Some(handler) = handler else {
            if let (Some(h), Some(r)) = (streamed, reply_to) {
                self.start_stream(req, h, r, permit);
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

    pub(super) fn on_done(&mut self, done: Done) {
        let body = RpcReply {
            id: done.reply_to.id.clone(),
            outcome: done.outcome,
        }
        .to_json();
        self.send_reply(done.reply_to, &body);
    }

    /// Publishes a reply (or a stream message) where a request asked for it.
    pub(super) fn send_reply(&mut self, to: ReplyTo, body: &Value) {
        self.enqueue(Out::Publish {
            topic: to.topic,
            payload: Bytes::from(body.to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            tag: Tag::Other,
            props: to.correlation.map(|c| Props {
                correlation: Some(c),
                ..Props::default()
            }),
            expires: None,
        });
    }

    pub(super) fn on_reply(&mut self, payload: &[u8], props: Option<Props>) {
        let correlation = props
            .and_then(|p| p.correlation)
            .map(|c| String::from_utf8_lossy(&c).into_owned());
        match StreamMsg::from_json(payload) {
            Ok(Some(m)) => {
                let id = correlation.unwrap_or_else(|| m.id().to_owned());
                if !self.on_stream_msg(&id, m) {
                    tracing::debug!(id, "a stream message for no call of ours");
                }
                return;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ignored a malformed stream message");
                return;
            }
        }
        let reply = match RpcReply::from_json(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a malformed reply");
                return;
            }
        };
        let id = correlation.unwrap_or_else(|| reply.id.clone());
        let Some(call) = self.calls.remove(&id) else {
            if !self.on_stream_reply(&id, reply) {
                tracing::debug!(id, "a reply for no pending call (late, or not ours)");
            }
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

    pub(super) fn call(
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
        let id = self.send_request(topic, method.clone(), args, timeout, None);
        self.calls.insert(
            id,
            PendingCall {
                target,
                method,
                reply,
            },
        );
    }

    /// Publishes a request to `topic` with a fresh id, returned: kept across reconnects until
    /// `timeout`, which is also its `deadline_ms` (a streamed call's deadline per item).
    pub(super) fn send_request(
        &mut self,
        topic: String,
        method: String,
        args: Value,
        timeout: Duration,
        stream: Option<u32>,
    ) -> String {
        let id = format!("{}-{}", self.nonce, self.next_call);
        self.next_call += 1;
        let body = RpcRequest {
            id: Some(id.clone()),
            method,
            args,
            reply_to: Some(self.reply_topic.clone()),
            deadline_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            stream,
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
                expiry_secs: Some(
                    u32::try_from(timeout.as_secs().saturating_add(1)).unwrap_or(u32::MAX),
                ),
            }),
            // A deadline past what the clock can hold (`Duration::MAX`) never expires.
            expires: Instant::now().checked_add(timeout),
        });
        id
    }
}
