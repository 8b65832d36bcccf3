//! QoS 1/2 messages are in flight *before* they are written, so a write that fails because the
//! connection was just reset loses nothing.
//!
//! rmqtt's delivery takes a message off the session's queue, writes it and only then records it
//! in the session's in-flight list; when the write fails (the subscriber's connection was reset
//! and the delivery won the race against the read that would have noticed), it returns before
//! that, and the message is gone: not resent on resume, not counted as dropped
//! (docs/broker-upstream.md, report 4). Its `MessageDelivered` hook runs after the packet id is
//! chosen and just before the write, so [`InFlightFirst`] records the message in flight there,
//! under that packet id: a failed write leaves it in flight, and the resumed session (or the
//! one taking it over) resends it with DUP set, under the same packet id, so a QoS 2
//! subscriber that did get it discards the repeat. A successful write's own record replaces
//! ours in place.
//!
//! A message too big for an MQTT 5 client's Maximum Packet Size: rmqtt tried to write it, its
//! encoder refused, and the error dropped the connection (recorded in flight first, it would
//! drop every resumed connection too). MQTT 5 says the server discards such a message as if it
//! had been sent [MQTT-3.1.2-25]: [`TooBig`] answers rmqtt's `MessageExpiryCheck` (asked just
//! before each delivery) with "expired" for it, so rmqtt discards it, counted as dropped.
//!
//! A QoS 1/2 message routed to a persistent session while a new connection takes it over finds
//! no session (between rmqtt removing the old one and registering the new one) or the old
//! connection's closed channel, and rmqtt drops it (counted). [`Reforward`] forwards such a
//! message again once the client id has a connected session that resumed the old one and is
//! subscribed to the message's topic (after its state transfer): at least once, not in order.
//! One waiter per client id, for at most `RESUME_WAIT`, within a byte budget.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::inflight::{MomentStatus, OutInflightMessage};
use rmqtt::session::Session;
use rmqtt::topic::Topic;
use rmqtt::types::{ClientId, From, Message, Publish, QoS, Reason, To};

/// How long a dropped message waits for its client's resumed session.
const RESUME_WAIT: Duration = Duration::from_secs(2);
const RESUME_POLL: Duration = Duration::from_millis(10);
/// Payload and topic bytes of all waiting messages together; more are left dropped.
const WAITING_BYTES: usize = 64 << 20;

/// Registers the hooks. Called before the server accepts connections.
pub(super) async fn register(scx: &ServerContext) {
    let register = scx.extends.hook_mgr().register();
    register
        .add(Type::MessageExpiryCheck, Box::new(TooBig))
        .await;
    register
        .add(Type::MessageDelivered, Box::new(InFlightFirst))
        .await;
    let reforward = Reforward {
        scx: scx.clone(),
        waiting: Arc::default(),
        bytes: Arc::default(),
    };
    register
        .add(Type::MessageDropped, Box::new(reforward))
        .await;
    register.start().await;
}

struct TooBig;

#[async_trait]
impl Handler for TooBig {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        if let Parameter::MessageExpiryCheck(session, _, publish) = param {
            if !fits(session, publish).await {
                tracing::debug!(client.id = %session.id.client_id, topic = %publish.topic, "discarded a message larger than the client's Maximum Packet Size");
                return (false, Some(HookResult::MessageExpiry));
            }
        }
        (true, acc)
    }
}

struct InFlightFirst;

#[async_trait]
impl Handler for InFlightFirst {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        if let Parameter::MessageDelivered(session, from, publish) = param {
            let status = match publish.qos {
                QoS::AtMostOnce => None,
                QoS::AtLeastOnce => Some(MomentStatus::UnAck),
                QoS::ExactlyOnce => Some(MomentStatus::UnReceived),
            };
            // (A message too big for the client never gets here: [`TooBig`] has discarded it
            // in the expiry check, which rmqtt makes just before this hook.)
            if let (Some(status), Some(_)) = (status, publish.packet_id) {
                let msg = OutInflightMessage::new(status, from.clone(), (*publish).clone());
                session.out_inflight().write().await.push_back(msg);
            }
        }
        (true, acc)
    }
}

/// Whether `p` fits the client's MQTT 5 Maximum Packet Size (always, without one). The size
/// is counted in full (fixed header and a topic alias included), at least what rmqtt's encoder
/// counts, so what passes here always encodes. (A QoS 2 message already past PUBREC that no
/// longer fits, after a resume with a smaller limit, is dropped instead of released.)
async fn fits(session: &Session, p: &Publish) -> bool {
    let Ok(info) = session.connect_info().await else {
        return true;
    };
    let Some(max) = info.max_packet_size() else {
        return true;
    };
    publish_size_v5(p) <= max.get() as usize
}

fn var_int_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The size of `p` as an MQTT 5 PUBLISH with a packet id and a topic alias: never less than
/// what rmqtt will write.
fn publish_size_v5(p: &Publish) -> usize {
    let props = p.properties.as_ref().map_or(0, |pr| {
        let opt = |b: Option<usize>| b.map_or(0, |n| 3 + n);
        usize::from(pr.message_expiry_interval.is_some()) * 5
            + usize::from(pr.is_utf8_payload) * 2
            + opt(pr.content_type.as_ref().map(|s| s.len()))
            + opt(pr.response_topic.as_ref().map(|s| s.len()))
            + opt(pr.correlation_data.as_ref().map(|b| b.len()))
            + pr.user_properties
                .iter()
                .map(|(k, v)| 5 + k.len() + v.len())
                .sum::<usize>()
            + pr.subscription_ids
                .iter()
                .map(|id| 1 + var_int_len(id.get() as usize))
                .sum::<usize>()
    });
    // A Topic Alias (3 bytes) may be added on the way out.
    let props = props + 3;
    let remaining = 2 + p.topic.len() + 2 + var_int_len(props) + props + p.payload.len();
    1 + var_int_len(remaining) + remaining
}

/// Messages waiting for their client's resumed session, by client id.
type Waiting = Arc<Mutex<HashMap<ClientId, Vec<(From, Publish)>>>>;

/// Forwards QoS 1/2 messages dropped during a take-over again, to the resumed session.
struct Reforward {
    scx: ServerContext,
    /// Messages waiting, by client id; a client id here has a waiter task.
    waiting: Waiting,
    /// Their topic and payload bytes.
    bytes: Arc<AtomicUsize>,
}

/// rmqtt's reasons for a message routed to a session in the middle of a take-over.
fn during_take_over(reason: &Reason) -> bool {
    let text = reason.to_string();
    text.contains("the client has disconnected") || text.contains("Tx is closed")
}

fn size(p: &Publish) -> usize {
    p.topic.len() + p.payload.len()
}

#[async_trait]
impl Handler for Reforward {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let Parameter::MessageDropped(Some(to), from, publish, reason) = param else {
            return (true, acc);
        };
        if publish.qos == QoS::AtMostOnce || !during_take_over(reason) {
            return (true, acc);
        }
        let n = size(publish);
        if self.bytes.fetch_add(n, Ordering::Relaxed) + n > WAITING_BYTES {
            self.bytes.fetch_sub(n, Ordering::Relaxed);
            return (true, acc);
        }
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let queue = waiting.entry(to.client_id.clone()).or_default();
            queue.push((from.clone(), publish.clone()));
            queue.len() == 1
        };
        if first {
            let (scx, waiting, bytes) =
                (self.scx.clone(), self.waiting.clone(), self.bytes.clone());
            let to = to.clone();
            tokio::spawn(async move {
                let session = resumed(&scx, &to).await;
                let msgs = waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&to.client_id)
                    .unwrap_or_default();
                bytes.fetch_sub(msgs.iter().map(|(_, p)| size(p)).sum(), Ordering::Relaxed);
                if let Some((session, tx)) = session {
                    forward_subscribed(&session, &tx, msgs).await;
                }
            });
        }
        (true, acc)
    }
}

/// The connected session of `to`'s client id that resumed a session and has its subscriptions
/// (its state transfer done), waiting up to `RESUME_WAIT`.
async fn resumed(scx: &ServerContext, to: &To) -> Option<(Session, rmqtt::types::Tx)> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < RESUME_WAIT {
        let entry = { scx.extends.shared().await.entry(to.clone()) };
        if let (Some(tx), Some(session)) = (entry.tx(), entry.session()) {
            let ready = !tx.is_closed()
                && session.connected().await.unwrap_or(false)
                && session.session_present().await.unwrap_or(false)
                && match session.subscriptions().await {
                    Ok(subs) => !subs.read().await.is_empty(),
                    Err(_) => false,
                };
            if ready {
                return Some((session, tx));
            }
        }
        tokio::time::sleep(RESUME_POLL).await;
    }
    None
}

/// Forwards each message whose topic one of `session`'s subscriptions matches (the ones rmqtt
/// would have routed to it).
async fn forward_subscribed(session: &Session, tx: &rmqtt::types::Tx, msgs: Vec<(From, Publish)>) {
    let Ok(subs) = session.subscriptions().await else {
        return;
    };
    let filters: Vec<Topic> = subs
        .read()
        .await
        .keys()
        .filter_map(|f| Topic::from_str(f).ok())
        .collect();
    for (from, publish) in msgs {
        if filters.iter().any(|f| f.matches_str(&*publish.topic)) {
            if tx.unbounded_send(Message::Forward(from, publish)).is_err() {
                return;
            }
            tracing::debug!(client.id = %session.id.client_id, "forwarded a message dropped during a take-over again");
        }
    }
}
