//! QoS 1/2 messages are in flight *before* they are written, so a write that fails because the
//! connection was just reset loses nothing.
//!
//! rmqtt's delivery takes a message off the session's queue, writes it and only then records it
//! in the session's in-flight list; when the write fails (the subscriber's connection was reset
//! and the delivery won the race against the read that would have noticed), it returns before
//! that, and the message is gone: not resent on resume, not counted as dropped
//! (docs/broker-upstream.md, report 4). Its `MessageDelivered` hook runs after the packet id is
//! chosen and just before the write, so this hook records the message in flight there, under
//! that packet id: a failed write leaves it in flight, and the resumed session (or the one
//! taking it over) resends it with DUP set, under the same packet id, so a QoS 2 subscriber that
//! did get it discards the repeat. A successful write's own record replaces ours in place.
//!
//! A QoS 1/2 message routed to a persistent session while a new connection takes it over finds
//! no session (between rmqtt removing the old one and registering the new one) or the old
//! connection's closed channel, and rmqtt drops it (counted). [`Reforward`] forwards such a
//! message again once the new connection has the session, if that connection resumed it (not a
//! clean start, which discards what the old session had): at least once, not in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::inflight::{MomentStatus, OutInflightMessage};
use rmqtt::types::{From, Message, Publish, QoS, Reason, To};

/// How long a dropped message waits for its client's resumed session.
const RESUME_WAIT: Duration = Duration::from_secs(2);
const RESUME_POLL: Duration = Duration::from_millis(5);
/// At most this many dropped messages wait at once; more are left dropped.
const MAX_WAITING: usize = 10_000;

/// Registers the hooks. Called before the server accepts connections.
pub(super) async fn register(scx: &ServerContext) {
    let register = scx.extends.hook_mgr().register();
    register
        .add(Type::MessageDelivered, Box::new(InFlightFirst))
        .await;
    let reforward = Reforward {
        scx: scx.clone(),
        waiting: Arc::new(AtomicUsize::new(0)),
    };
    register
        .add(Type::MessageDropped, Box::new(reforward))
        .await;
    register.start().await;
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
            if let (Some(status), Some(_)) = (status, publish.packet_id) {
                let msg = OutInflightMessage::new(status, from.clone(), (*publish).clone());
                session.out_inflight().write().await.push_back(msg);
            }
        }
        (true, acc)
    }
}

/// Forwards a QoS 1/2 message dropped during a take-over again, to the resumed session.
struct Reforward {
    scx: ServerContext,
    /// Messages waiting for a session now.
    waiting: Arc<AtomicUsize>,
}

/// rmqtt's reasons for a message routed to a session in the middle of a take-over.
fn during_take_over(reason: &Reason) -> bool {
    let text = reason.to_string();
    text.contains("the client has disconnected") || text.contains("Tx is closed")
}

#[async_trait]
impl Handler for Reforward {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        if let Parameter::MessageDropped(Some(to), from, publish, reason) = param {
            if publish.qos != QoS::AtMostOnce
                && during_take_over(reason)
                && self.waiting.fetch_add(1, Ordering::Relaxed) < MAX_WAITING
            {
                let (scx, waiting) = (self.scx.clone(), self.waiting.clone());
                let (to, from, publish) = (to.clone(), from.clone(), publish.clone());
                tokio::spawn(async move {
                    forward_when_resumed(&scx, to, from, publish).await;
                    waiting.fetch_sub(1, Ordering::Relaxed);
                });
            } else if publish.qos != QoS::AtMostOnce && during_take_over(reason) {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        (true, acc)
    }
}

async fn forward_when_resumed(scx: &ServerContext, to: To, from: From, publish: Publish) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < RESUME_WAIT {
        let entry = { scx.extends.shared().await.entry(to.clone()) };
        if let (Some(tx), Some(session)) = (entry.tx(), entry.session()) {
            if !tx.is_closed() && session.connected().await.unwrap_or(false) {
                // A clean start discarded the session the message was routed to.
                let resumed = session
                    .connect_info()
                    .await
                    .is_ok_and(|info| !info.clean_start());
                if resumed && tx.unbounded_send(Message::Forward(from, publish)).is_ok() {
                    tracing::debug!(client.id = %to.client_id, "forwarded a message dropped during a take-over again");
                }
                return;
            }
        }
        tokio::time::sleep(RESUME_POLL).await;
    }
}
