//! The DA's task (`Core`) as a connection comes up or goes down, and as rumqttc reports
//! on it: what is sent on connecting (subscriptions, `online`, calls made while offline),
//! what is reset on a loss, and how the reports (packet ids, acknowledgements, incoming
//! publishes) are matched to what the task queued. Incoming publishes are only routed here;
//! `control`, `requests` and `home` handle them. Not here: sending the outbox (`delivery`).

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use iot_proto::wire::{Presence, Uplink};
use iot_proto::QoS;
use tokio::time::Instant;

use super::{Core, Session};
use crate::status::{ConnState, Protocol};
use crate::transport::{Input, Link, NetEvent, Out, Props, Tag};

impl Core {
    pub(super) async fn on_input(&mut self, input: Input) {
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
                    tracing::debug!(%error, "connection attempt failed");
                    if self.stopping.is_some() {
                        self.finish();
                    }
                    return;
                }
                tracing::info!(%error, "connection lost; reconnecting");
                self.session = None;
                self.inflight.clear();
                self.cursor = 0;
                self.resume_deadline = None;
                self.outq
                    .retain(|o| matches!(o, Out::Publish { tag: Tag::Call, .. }));
                self.home_connection_lost();
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

    pub(super) async fn on_connected(&mut self, gen: u64, link: Link, protocol: Protocol) {
        tracing::debug!(?protocol, "connected");
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
        if !self.handlers.is_empty() || self.serves_streams() {
            filters.push((self.serve_topic.clone(), QoS::AtLeastOnce));
        }
        if let Some(f) = self.home_filter() {
            filters.push((f.to_owned(), QoS::AtLeastOnce));
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
                tracing::warn!(error = %e, "cannot read the outbox");
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

    pub(super) fn publish_online(&mut self) {
        let body = Uplink::presence_json(Presence::Online, &self.reg.rev);
        self.publish_json(
            self.ctrl_i.clone(),
            &body,
            QoS::ExactlyOnce,
            true,
            Tag::Online,
        );
    }

    pub(super) async fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::OutPublish(pkid) => {
                let Some(s) = &mut self.session else { return };
                let tag = s.collided.take().or_else(|| s.fifo.pop_front());
                match tag {
                    Some(tag) if pkid == 0 => self.confirm(tag).await,
                    Some(tag) => {
                        s.by_pkid.insert(pkid, tag);
                    }
                    None => tracing::debug!(pkid, "a publish we did not queue"),
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
            NetEvent::SubAck { pkid, refused } => {
                let token = self
                    .session
                    .as_mut()
                    .and_then(|s| s.sub_by_pkid.remove(&pkid));
                if let Some(token) = token {
                    if !self.home_subscribed(token, refused) {
                        self.subscribed(token);
                    }
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
    pub(super) async fn confirm(&mut self, tag: Tag) {
        match tag {
            Tag::Data(seq) => {
                if self.inflight.remove(&seq) {
                    if let Err(e) = self.outbox.remove(seq).await {
                        tracing::warn!(error = %e, "cannot remove a delivered push from the outbox");
                    }
                }
            }
            Tag::Online => {
                if self.stopping.is_none() && self.status.state != ConnState::Online {
                    tracing::info!(rev = %self.reg.rev, "online");
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

    pub(super) fn on_publish(
        &mut self,
        topic: &str,
        payload: Bytes,
        retain: bool,
        props: Option<Props>,
    ) {
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
        } else if !self.on_home_result(topic, &payload) {
            tracing::debug!(topic, "message on a topic we no longer use");
        }
    }
}
