//! The shared state of the native core: sessions by client id, the subscription tree, the
//! retained messages, host subscriptions, limits and counters; and routing, which ties them
//! together. Connections (`conn.rs`) and the host API (`mod.rs`) both publish through
//! [`Core::route`].
//!
//! Locks are std locks held for synchronous updates only: the sessions map while a CONNECT
//! takes a client id (so two CONNECTs of one id are ordered), the tree while a message is
//! matched, each session while a delivery is queued.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::v5::PublishProperties;

use super::session::{Delivery, Pushed, Routed, Session};
use super::tree::{RetainTree, SubTree};
use crate::local::LocalRouter;
use crate::{Message, Security};

/// The limits a connection applies, from the checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_packet: u32,
    pub max_payload: usize,
    pub inflight: u16,
    pub max_queue: usize,
    pub max_sessions: usize,
    pub max_levels: usize,
    /// MQTT 3.1.1 persistent sessions' expiry, and the cap of MQTT 5 ones (zero: no cap for 5).
    pub session_expiry: Duration,
    pub handshake: Duration,
    pub allow_anonymous: bool,
    /// `broker.max_topic_aliases`, each way.
    pub max_aliases: u16,
}

/// Counters, read by `stats()` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub connected: AtomicU64,
    pub dropped: AtomicU64,
    pub acl_publish: AtomicU64,
    pub acl_subscribe: AtomicU64,
    /// Client PUBLISH packets, and their topic and payload bytes (`$SYS`).
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    /// PUBLISH packets written to clients, and their topic and payload bytes.
    pub sent: AtomicU64,
    pub sent_bytes: AtomicU64,
}

/// Who subscribed: the client id, and the share group of a `$share/<group>/` subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SubKey {
    pub client: Arc<str>,
    pub group: Option<Arc<str>>,
}

/// How a subscription receives messages.
#[derive(Debug, Clone)]
pub(crate) struct SubVal {
    pub session: Arc<Session>,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub sub_id: Option<NonZeroU32>,
}

/// A retained message, copied out of the connection's read buffer.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    pub publish: Publish,
}

/// A session and what to queue for it.
type Target = (Arc<Session>, Delivery);

pub(crate) struct Core {
    pub limits: Limits,
    pub security: Security,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    pub subs: RwLock<SubTree<SubKey, SubVal>>,
    pub retained: RwLock<RetainTree<Retained>>,
    pub local: LocalRouter,
    pub counts: Counts,
    next_gen: AtomicU64,
    shared_turn: AtomicUsize,
}

impl Core {
    pub(crate) fn new(limits: Limits, security: Security, local: LocalRouter) -> Self {
        Self {
            limits,
            security,
            sessions: Mutex::new(HashMap::new()),
            subs: RwLock::new(SubTree::new()),
            retained: RwLock::new(RetainTree::new()),
            local,
            counts: Counts::default(),
            next_gen: AtomicU64::new(1),
            shared_turn: AtomicUsize::new(0),
        }
    }

    /// The `$SYS` figures now.
    pub(crate) fn figures(&self) -> crate::sys::Figures {
        let c = &self.counts;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        crate::sys::Figures {
            connected: get(&c.connected),
            sessions: self.sessions().len() as u64,
            received: get(&c.received),
            received_bytes: get(&c.received_bytes),
            sent: get(&c.sent),
            sent_bytes: get(&c.sent_bytes),
        }
    }

    /// The sessions map, locked (a CONNECT's take-over, expiry, shutdown).
    pub(crate) fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.next_gen.fetch_add(1, Ordering::Relaxed)
    }

    /// Removes `session`'s subscriptions from the tree and marks it ended, so that nothing
    /// is queued for it any more. The caller has removed it from the sessions map.
    pub(crate) fn end(&self, session: &Session) {
        let subs = {
            let mut st = session.state();
            st.ended = true;
            std::mem::take(&mut st.subs)
        };
        if subs.is_empty() {
            return;
        }
        let mut tree = self.subs.write().unwrap_or_else(PoisonError::into_inner);
        for s in subs {
            let (group, filter) = split_share(&s.filter);
            let key = SubKey {
                client: session.client_id.clone(),
                group: group.map(Arc::from),
            };
            // A new session of the same client id may have subscribed the same filter since:
            // that subscription is its, not this one's.
            if let Some(other) = tree.remove(filter, &key) {
                if !std::ptr::eq(&*other.session, session) {
                    tree.insert(filter, key, other);
                }
            }
        }
    }

    /// Removes the offline sessions whose expiry has passed; returns how many.
    pub(crate) fn expire(&self, now: Instant) -> usize {
        let expired: Vec<Arc<Session>> = {
            let mut map = self.sessions();
            let ids: Vec<Arc<str>> = map
                .iter()
                .filter(|(_, s)| {
                    let st = s.state();
                    st.attached.is_none()
                        && st
                            .offline_since
                            .is_some_and(|at| now.duration_since(at) >= st.expiry)
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        for s in &expired {
            self.end(s);
        }
        expired.len()
    }

    /// Routes one message: the retained store, every matching client subscription (one
    /// member per share group), then host subscriptions. `origin`: the publishing client's
    /// id, for No Local.
    pub(crate) async fn route(&self, msg: Arc<Routed>, origin: Option<&str>) {
        let p = &msg.publish;
        let mut targets: Vec<Target> = Vec::new();
        let mut groups: HashMap<(String, Arc<str>), Vec<Target>> = HashMap::new();
        {
            // The retained store is updated under the tree's lock, as a SUBSCRIBE reads it, so
            // a new subscription gets this message once: live or retained.
            let tree = self.subs.read().unwrap_or_else(PoisonError::into_inner);
            if p.retain {
                self.retain(p);
            }
            tree.for_each_match(&p.topic, |filter, key, val| {
                if val.no_local && origin == Some(&*key.client) {
                    return;
                }
                let d = Delivery {
                    msg: msg.clone(),
                    qos: p.qos.min(val.qos),
                    retain: p.retain && val.retain_as_published,
                    sub_id: val.sub_id,
                };
                match &key.group {
                    None => targets.push((val.session.clone(), d)),
                    Some(g) => groups
                        .entry((filter.to_owned(), g.clone()))
                        .or_default()
                        .push((val.session.clone(), d)),
                }
            });
        }
        for (_, mut members) in groups {
            // Round robin over the connected members; an offline one only if none is.
            let turn = self.shared_turn.fetch_add(1, Ordering::Relaxed);
            let online: Vec<usize> = (0..members.len())
                .filter(|i| members[*i].0.state().attached.is_some())
                .collect();
            let pick = if online.is_empty() {
                turn % members.len()
            } else {
                online[turn % online.len()]
            };
            targets.push(members.swap_remove(pick));
        }
        for (session, d) in targets {
            if session.deliver(d) == Pushed::Dropped {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Last, as it may wait for a full host subscription: a host subscriber that reads the
        // retained store on receipt finds this message there.
        if !self.local.is_empty() {
            self.local.dispatch(&host_message(&msg)).await;
        }
    }

    /// Stores (or, for an empty payload, clears) the retained message of `p`'s topic, copied
    /// so that it does not hold the read buffer it was decoded from.
    fn retain(&self, p: &Publish) {
        let mut store = self
            .retained
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if p.payload.is_empty() {
            store.remove(&p.topic);
            return;
        }
        let mut copy = owned(p);
        copy.dup = false;
        copy.packet_id = None;
        store.insert(&p.topic, Retained { publish: copy });
    }

    /// The retained messages matching `filter`, sorted by topic.
    pub(crate) fn retained_matching(&self, filter: &str) -> Vec<Retained> {
        let store = self.retained.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = Vec::new();
        store.for_each_match(filter, |_, r| found.push(r.clone()));
        found.sort_by(|a, b| a.publish.topic.cmp(&b.publish.topic));
        found
    }
}

/// A copy of `p` that shares no memory with it: a decoded packet's topic, payload and
/// properties are slices of its packet, which a stored copy must not keep alive (one small
/// retained message would hold a large packet, and the payload twice). Topic alias and
/// subscription identifiers are left out: they belong to one connection.
pub(crate) fn owned(p: &Publish) -> Publish {
    let text = |t: &ByteString| ByteString::from(&**t);
    let properties = p.properties.as_ref().map(|pr| PublishProperties {
        topic_alias: None,
        correlation_data: pr.correlation_data.as_deref().map(Bytes::copy_from_slice),
        message_expiry_interval: pr.message_expiry_interval,
        content_type: pr.content_type.as_ref().map(text),
        user_properties: pr
            .user_properties
            .iter()
            .map(|(k, v)| (text(k), text(v)))
            .collect(),
        is_utf8_payload: pr.is_utf8_payload,
        response_topic: pr.response_topic.as_ref().map(text),
        subscription_ids: Vec::new(),
    });
    Publish {
        dup: p.dup,
        retain: p.retain,
        qos: p.qos,
        topic: text(&p.topic),
        packet_id: p.packet_id,
        payload: Bytes::copy_from_slice(&p.payload),
        properties,
    }
}

/// `$share/<group>/<filter>` as (group, filter); any other filter as (None, filter).
pub(crate) fn split_share(filter: &str) -> (Option<&str>, &str) {
    match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((group, f)) => (Some(group), f),
            None => (None, filter),
        },
        None => (None, filter),
    }
}

/// A routed message as a host subscription sees it.
pub(crate) fn host_message(msg: &Routed) -> Message {
    let p = &msg.publish;
    let mut m = Message::new(
        p.topic.to_string(),
        p.payload.clone(),
        from_codec_qos(p.qos),
        p.retain,
    );
    m.from = msg.from.clone();
    if let Some(props) = &p.properties {
        m.response_topic = props.response_topic.as_ref().map(|t| t.to_string());
        m.correlation = props.correlation_data.clone();
    }
    m
}

pub(crate) fn to_codec_qos(q: crate::QoS) -> QoS {
    match q {
        crate::QoS::AtMostOnce => QoS::AtMostOnce,
        crate::QoS::AtLeastOnce => QoS::AtLeastOnce,
        crate::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(crate) fn from_codec_qos(q: QoS) -> crate::QoS {
    match q {
        QoS::AtMostOnce => crate::QoS::AtMostOnce,
        QoS::AtLeastOnce => crate::QoS::AtLeastOnce,
        QoS::ExactlyOnce => crate::QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_groups_split() {
        assert_eq!(split_share("$share/g/a/+"), (Some("g"), "a/+"));
        assert_eq!(split_share("a/b"), (None, "a/b"));
        assert_eq!(split_share("$share/g"), (None, "$share/g"));
    }
}
