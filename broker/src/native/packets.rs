//! What the native core does with each packet a connected client sends ([`handle`]), what it
//! sends from the session ([`Link::fill`]), and how a connection leaves its session
//! ([`Link::detach`]). `conn.rs` owns the socket and calls these.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use bytes::BytesMut;
use bytestring::ByteString;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::v5::{DisconnectReasonCode, PublishAckReason, RetainHandling};

use super::alias::Inbound;
use super::core::{split_share, Core, SubKey, SubVal};
use super::session::{Delivery, Kick, OwnSub, Routed, Session};
use super::wire::{Granted, In, Out, SubReq, Wire};
use crate::acl::ClientRef;
use crate::local::valid_topic;
use crate::Publisher;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// DISCONNECT (MQTT 5 reason 0): no will.
    Normal,
    /// MQTT 5 DISCONNECT with reason 0x04: the will is published.
    WithWill,
    /// The socket closed or failed without DISCONNECT.
    Lost,
    /// Nothing read for 1.5 keep-alive periods.
    KeepAlive,
    Kicked(Kick),
    /// A protocol error; MQTT 5 clients are told why.
    Refused(DisconnectReasonCode),
}

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
    /// The topic aliases the client set on this connection.
    aliases: Inbound,
}

impl Link {
    pub(crate) fn new(
        core: Arc<Core>,
        session: Arc<Session>,
        gen: u64,
        username: Option<&str>,
    ) -> Self {
        let from = Arc::new(Publisher {
            client_id: session.client_id.to_string(),
            username: username.map(str::to_owned),
        });
        Self {
            core,
            session,
            gen,
            from,
            aliases: Inbound::default(),
        }
    }

    /// Whether this connection still holds its session (not taken over, not ended).
    pub(crate) fn current(&self) -> bool {
        let st = self.session.state();
        !st.ended && st.attached.as_ref().map(|a| a.gen) == Some(self.gen)
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
            let bytes = (p.topic.len() + p.payload.len()) as u64;
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
            self.core
                .counts
                .sent_bytes
                .fetch_add(bytes, Ordering::Relaxed);
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
        super::connect::release(&self.core, &self.session, self.gen);
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
        In::PubRec(pid, true) => {
            return Flow::Continue {
                acked: link.session.state().pubrec_refused(pid),
            }
        }
        In::PubRec(pid, false) => {
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
            let granted = match subscribe(link, id, subs) {
                Ok(granted) => granted,
                Err(end) => return Flow::End(end),
            };
            out(wire, wbuf, Out::SubAck(pid, granted));
            return Flow::Continue { acked: true };
        }
        In::Unsubscribe { pid, filters } => {
            let Some(found) = unsubscribe(link, &filters) else {
                return Flow::End(End::Kicked(Kick::TakenOver));
            };
            out(wire, wbuf, Out::UnsubAck(pid, found));
        }
        In::Ping => out(wire, wbuf, Out::PingResp),
        In::Disconnect {
            reason,
            session_expiry,
        } => {
            if let Some(secs) = session_expiry {
                let mut st = link.session.state();
                if st.expiry.is_zero() && secs > 0 {
                    // MQTT 5, 3.14.2.2.2: not a valid DISCONNECT. The session still ends with
                    // its connection, and the connection ends as for a protocol error: with
                    // DISCONNECT 0x82, and the will.
                    tracing::debug!(client.id = %link.session.client_id, "DISCONNECT raising a session expiry of 0 refused");
                    return Flow::End(End::Refused(DisconnectReasonCode::ProtocolError));
                } else {
                    let cap = link.core.limits.session_expiry;
                    let asked = std::time::Duration::from_secs(u64::from(secs));
                    st.expiry = if cap.is_zero() { asked } else { asked.min(cap) };
                }
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

/// A client PUBLISH: its alias resolved, checked (topic, levels, ACL), routed, acknowledged.
async fn publish(link: &mut Link, wire: &mut Wire, mut p: Publish, wbuf: &mut BytesMut) -> Flow {
    let core = link.core.clone();
    if let Err(reason) = link.aliases.resolve(core.limits.max_aliases, &mut p) {
        return Flow::End(End::Refused(reason));
    }
    if !valid_topic(&p.topic) {
        return Flow::End(End::Refused(DisconnectReasonCode::TopicNameInvalid));
    }
    let pid = p.packet_id;
    let mut reason = PublishAckReason::Success;
    let mut route = true;
    if p.topic.starts_with('$') {
        // `$SYS/...` is the broker's own (as on the rmqtt core: not authorized).
        route = false;
        reason = PublishAckReason::NotAuthorized;
        core.counts.dropped.fetch_add(1, Ordering::Relaxed);
    } else if !super::limits_ok(&core, &p.topic) {
        route = false;
        reason = PublishAckReason::TopicNameInvalid;
        core.counts.dropped.fetch_add(1, Ordering::Relaxed);
    } else if p.payload.len() > core.limits.max_payload {
        // `broker.max_payload_bytes` (the packet limit leaves room for headers above it).
        route = false;
        reason = PublishAckReason::QuotaExceeded;
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
        // Only a routed message holds its id until PUBREL: a refused one ends its exchange
        // with the PUBREC's reason (MQTT 5, 4.3.3), and the client may reuse the id at once.
        if route {
            let mut st = link.session.state();
            if st.holds(id) {
                route = false; // a repeat of a message already routed
            } else if st.incoming_len() >= usize::from(core.limits.inflight) {
                // Not recorded: resent after a reconnect, it is routed then.
                return Flow::End(End::Refused(DisconnectReasonCode::ReceiveMaximumExceeded));
            } else {
                st.incoming(id);
            }
        }
    }
    core.counts.received.fetch_add(1, Ordering::Relaxed);
    let bytes = (p.topic.len() + p.payload.len()) as u64;
    core.counts
        .received_bytes
        .fetch_add(bytes, Ordering::Relaxed);
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
///
/// Ends the connection when another has taken the session over, and (MQTT-3.8.3-4, a
/// protocol error) for No Local on a shared subscription, before anything is subscribed.
fn subscribe(
    link: &Link,
    id: Option<std::num::NonZeroU32>,
    subs: Vec<SubReq>,
) -> Result<Vec<Granted>, End> {
    if subs
        .iter()
        .any(|s| s.no_local && split_share(&s.filter).0.is_some())
    {
        return Err(End::Refused(DisconnectReasonCode::ProtocolError));
    }
    let core = &link.core;
    let mut granted = Vec::with_capacity(subs.len());
    for s in subs {
        let (group, filter) = split_share(&s.filter);
        let valid = iot_proto::topics::valid_filter(filter)
            && group.is_none_or(|g| !g.is_empty() && !g.contains(['+', '#']))
            && super::limits_ok(core, filter);
        if !valid {
            granted.push(Granted::Invalid);
            continue;
        }
        if let Some(acl) = &core.security.acl {
            // The filter without `$share/<group>/`: the topics it reads (as the rmqtt core).
            if !acl.may_subscribe(&link.client(), filter) {
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
        if !link.current() {
            // Taken over: the session is another connection's now.
            return Err(End::Kicked(Kick::TakenOver));
        }
        let replaced = tree.insert(filter, key, val);
        let existed = replaced.is_some_and(|old| Arc::ptr_eq(&old.session, &link.session));
        if !existed {
            link.session.state().subs.push(OwnSub {
                filter: ByteString::from(&*s.filter),
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
    Ok(granted)
}

fn unsubscribe(link: &Link, filters: &[ByteString]) -> Option<Vec<bool>> {
    let core = &link.core;
    let mut tree = core.subs.write().unwrap_or_else(PoisonError::into_inner);
    if !link.current() {
        return None;
    }
    let mut st = link.session.state();
    let found = filters
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
        .collect();
    Some(found)
}
