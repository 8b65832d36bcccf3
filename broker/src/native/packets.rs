//! What the native core does with each packet a connected client sends ([`handle`]), what it
//! sends from the session ([`Link::fill`]), and how a connection leaves its session
//! ([`Link::detach`]). `conn.rs` owns the socket and calls these.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use bytes::BytesMut;
use bytestring::ByteString;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::v5::{DisconnectReasonCode, PublishAckReason, RetainHandling};

use super::conn::End;
use super::connect::Hello;
use super::core::{split_share, Core, SubKey, SubVal};
use super::session::{Delivery, OwnSub, Routed, Session};
use super::wire::{Granted, In, Out, SubReq, Wire};
use crate::acl::ClientRef;
use crate::local::valid_topic;
use crate::Publisher;

/// What the loop does after a packet.
#[derive(Debug)]
pub(crate) enum Flow {
    /// Go on; `acked`: the window may have room again.
    Continue {
        acked: bool,
    },
    End(End),
}

const GO: Flow = Flow::Continue { acked: false };

/// A connection attached to its session.
pub(crate) struct Link {
    pub core: Arc<Core>,
    pub session: Arc<Session>,
    gen: u64,
    from: Arc<Publisher>,
}

impl Link {
    pub(crate) fn new(core: Arc<Core>, session: Arc<Session>, gen: u64, hello: &Hello) -> Self {
        let from = Arc::new(Publisher {
            client_id: session.client_id.to_string(),
            username: hello.username.as_ref().map(|u| u.to_string()),
        });
        Self {
            core,
            session,
            gen,
            from,
        }
    }

    fn client(&self) -> ClientRef<'_> {
        ClientRef {
            username: self.from.username.as_deref(),
            client_id: &self.from.client_id,
        }
    }

    /// Moves messages the window allows from the session into `wbuf`; `true` if more may be
    /// waiting. Nothing once another connection has taken the session over.
    pub(crate) fn fill(&self, wire: &mut Wire, wbuf: &mut BytesMut) -> bool {
        let mut st = self.session.state();
        if st.attached.as_ref().map(|a| a.gen) != Some(self.gen) {
            return false;
        }
        while wbuf.len() < 64 * 1024 {
            let Some(p) = st.next_out() else {
                return false;
            };
            let pid = p.packet_id;
            if let Err(e) = wire.encode(Out::Publish(p), wbuf) {
                // Larger than the client's Maximum Packet Size: discarded (MQTT-3.1.2-25).
                tracing::debug!(client.id = %self.session.client_id, error = %e.what, "message discarded for this client");
                if let Some(pid) = pid {
                    st.discard(pid);
                }
                self.core.counts.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.core.counts.sent.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Publishes the connection's will.
    /// Publishes the connection's will. One deeper than `broker.max_topic_levels` is sent
    /// unretained (as the rmqtt core does): it reaches its watchers but is not stored.
    pub(crate) async fn publish_will(&self, mut will: Publish) {
        if !super::limits_ok(&self.core, &will.topic) {
            will.retain = false;
        }
        let msg = Arc::new(Routed {
            publish: will,
            from: Some(self.from.clone()),
        });
        self.core.route(msg, Some(&self.session.client_id)).await;
    }

    /// Leaves the session: offline (kept for its expiry) or, with no expiry, removed.
    pub(crate) fn detach(self) {
        let remove = {
            let mut map = self.core.sessions();
            let mut st = self.session.state();
            if st.attached.as_ref().map(|a| a.gen) != Some(self.gen) {
                false
            } else {
                st.attached = None;
                st.offline_since = Some(std::time::Instant::now());
                let gone = st.expiry.is_zero();
                drop(st);
                if gone
                    && map
                        .get(&self.session.client_id)
                        .is_some_and(|s| Arc::ptr_eq(s, &self.session))
                {
                    map.remove(&self.session.client_id);
                }
                gone
            }
        };
        if remove {
            self.core.end(&self.session);
        }
    }
}

/// Handles one packet from the client.
pub(crate) async fn handle(
    link: &mut Link,
    wire: &mut Wire,
    packet: In,
    wbuf: &mut BytesMut,
) -> Flow {
    let out = |wire: &mut Wire, wbuf: &mut BytesMut, o: Out| {
        let _ = wire.encode(o, wbuf);
    };
    match packet {
        In::Publish(p) => return Box::pin(publish(link, wire, *p, wbuf)).await,
        In::PubAck(pid) => {
            return Flow::Continue {
                acked: link.session.state().puback(pid),
            }
        }
        In::PubRec(pid) => {
            link.session.state().pubrec(pid);
            out(wire, wbuf, Out::PubRel(pid));
        }
        In::PubComp(pid) => {
            return Flow::Continue {
                acked: link.session.state().pubcomp(pid),
            }
        }
        In::PubRel(pid) => {
            let found = link.session.state().release(pid);
            out(wire, wbuf, Out::PubComp(pid, found));
        }
        In::Subscribe { pid, id, subs } => {
            let granted = subscribe(link, id, subs);
            out(wire, wbuf, Out::SubAck(pid, granted));
            return Flow::Continue { acked: true };
        }
        In::Unsubscribe { pid, filters } => {
            let found = unsubscribe(link, &filters);
            out(wire, wbuf, Out::UnsubAck(pid, found));
        }
        In::Ping => out(wire, wbuf, Out::PingResp),
        In::Disconnect {
            reason,
            session_expiry,
        } => {
            if let Some(secs) = session_expiry {
                let mut st = link.session.state();
                let cap = link.core.limits.session_expiry;
                let asked = std::time::Duration::from_secs(u64::from(secs));
                st.expiry = if cap.is_zero() { asked } else { asked.min(cap) };
            }
            return Flow::End(if reason == 0x04 {
                End::WithWill
            } else {
                End::Normal
            });
        }
        In::Unexpected(what) => {
            tracing::debug!(client.id = %link.session.client_id, packet = what, "MQTT protocol error");
            return Flow::End(End::Refused(DisconnectReasonCode::ProtocolError));
        }
    }
    GO
}

/// A client PUBLISH: checked (topic, alias, levels, ACL), routed, acknowledged.
async fn publish(link: &mut Link, wire: &mut Wire, mut p: Publish, wbuf: &mut BytesMut) -> Flow {
    let core = link.core.clone();
    if p.properties
        .as_ref()
        .is_some_and(|pr| pr.topic_alias.is_some())
    {
        // We announce a Topic Alias Maximum of 0: any alias is invalid (MQTT-3.3.2-8).
        return Flow::End(End::Refused(DisconnectReasonCode::TopicAliasInvalid));
    }
    if !valid_topic(&p.topic) {
        return Flow::End(End::Refused(DisconnectReasonCode::TopicNameInvalid));
    }
    let pid = p.packet_id;
    let mut reason = PublishAckReason::Success;
    let mut route = true;
    if p.topic.starts_with('$') || !super::limits_ok(&core, &p.topic) {
        route = false;
        reason = PublishAckReason::TopicNameInvalid;
        core.counts.dropped.fetch_add(1, Ordering::Relaxed);
    } else if let Some(acl) = &core.security.acl {
        if !acl.may_publish(&link.client(), &p.topic, p.retain) {
            route = false;
            reason = PublishAckReason::NotAuthorized;
            core.counts.acl_publish.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client.id = %link.session.client_id, topic = %p.topic, "PUBLISH refused by the topic ACL");
        }
    }
    if p.qos == QoS::ExactlyOnce {
        let Some(id) = pid else {
            return Flow::End(End::Refused(DisconnectReasonCode::ProtocolError));
        };
        let mut st = link.session.state();
        if !st.incoming(id) {
            route = false; // a repeat of a message already routed
        } else if st.incoming_len() > usize::from(core.limits.inflight) {
            return Flow::End(End::Refused(DisconnectReasonCode::ReceiveMaximumExceeded));
        }
    }
    core.counts.received.fetch_add(1, Ordering::Relaxed);
    if route {
        p.dup = false;
        p.packet_id = None;
        if let Some(props) = &mut p.properties {
            props.subscription_ids.clear();
        }
        let msg = Arc::new(Routed {
            publish: p.clone(),
            from: Some(link.from.clone()),
        });
        core.route(msg, Some(&link.session.client_id)).await;
    }
    match (p.qos, pid) {
        (QoS::AtLeastOnce, Some(id)) => {
            let _ = wire.encode(Out::PubAck(id, reason), wbuf);
        }
        (QoS::ExactlyOnce, Some(id)) => {
            let _ = wire.encode(Out::PubRec(id, reason), wbuf);
        }
        _ => {}
    }
    GO
}

/// A SUBSCRIBE: each filter checked, added to the tree and the session, and its retained
/// messages queued (as its Retain Handling says) while the tree is locked, so a message
/// published at the same time arrives once, live or retained, never both.
fn subscribe(link: &Link, id: Option<std::num::NonZeroU32>, subs: Vec<SubReq>) -> Vec<Granted> {
    let core = &link.core;
    let mut granted = Vec::with_capacity(subs.len());
    for s in subs {
        let (group, filter) = split_share(&s.filter);
        let valid = iot_proto::topics::valid_filter(filter)
            && group.is_none_or(|g| !g.is_empty() && !g.contains(['+', '#']) && !s.no_local)
            && super::limits_ok(core, filter);
        if !valid {
            granted.push(Granted::Invalid);
            continue;
        }
        if let Some(acl) = &core.security.acl {
            if !acl.may_subscribe(&link.client(), &s.filter) {
                core.counts.acl_subscribe.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client.id = %link.session.client_id, filter = %s.filter, "SUBSCRIBE refused by the topic ACL");
                granted.push(Granted::NotAuthorized);
                continue;
            }
        }
        let key = SubKey {
            client: link.session.client_id.clone(),
            group: group.map(Arc::from),
        };
        let val = SubVal {
            session: link.session.clone(),
            qos: s.qos,
            no_local: s.no_local,
            retain_as_published: s.retain_as_published,
            sub_id: id,
        };
        let mut tree = core.subs.write().unwrap_or_else(PoisonError::into_inner);
        let existed = tree.insert(filter, key, val).is_some();
        if !existed {
            link.session.state().subs.push(OwnSub {
                filter: s.filter.clone(),
            });
        }
        let send_retained = group.is_none()
            && match s.retain_handling {
                RetainHandling::AtSubscribe => true,
                RetainHandling::AtSubscribeNew => !existed,
                RetainHandling::NoAtSubscribe => false,
            };
        if send_retained {
            for r in core.retained_matching(filter) {
                let qos = r.publish.qos.min(s.qos);
                let d = Delivery {
                    msg: Arc::new(Routed {
                        publish: r.publish,
                        from: None,
                    }),
                    qos,
                    retain: true,
                    sub_id: id,
                };
                link.session.deliver(d);
            }
        }
        drop(tree);
        granted.push(Granted::Qos(s.qos));
    }
    granted
}

fn unsubscribe(link: &Link, filters: &[ByteString]) -> Vec<bool> {
    let core = &link.core;
    let mut tree = core.subs.write().unwrap_or_else(PoisonError::into_inner);
    let mut st = link.session.state();
    filters
        .iter()
        .map(|f| {
            let (group, filter) = split_share(f);
            let key = SubKey {
                client: link.session.client_id.clone(),
                group: group.map(Arc::from),
            };
            let found = tree.remove(filter, &key).is_some();
            st.subs.retain(|s| s.filter != *f);
            found
        })
        .collect()
}
