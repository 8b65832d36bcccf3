//! What the actor must do after a state change. The registry and the graph store return
//! effects instead of doing I/O, so their rules are tested without a network; the actor
//! carries them out in order (plans and gates first, see `actor`).

use std::sync::Arc;

use bytes::Bytes;
use iot_broker::{Message, QoS};
use iot_migrations::das::Write;
use iot_proto::wire::graph_api::LinkRef;
use iot_proto::{DaId, MsgId, Rev};
use serde_json::Value;

use crate::plan::Plan;

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Publish(Message),
    Persist(Write),
    /// A graph's new execution plan (`None`: the graph is gone).
    Plan(String, Option<Arc<Plan>>),
    /// (Re)start the DA's expiry timer for this rev.
    ArmExpiry {
        id: DaId,
        rev: Rev,
    },
    DisarmExpiry(DaId),
    /// Publish an empty retained message on the DA's uplink again a little later, in case a
    /// retained message was in flight while the first clear went out.
    ClearAgainLater(DaId),
    /// An ODF link's data topic opened (the DA acknowledged CONNECT, so it is subscribed)
    /// or closed (CONNECT re-sent, or the DA went offline): the engine holds what it routes
    /// to a closed topic and delivers it when the topic opens.
    OdfGate {
        topic: String,
        open: bool,
    },
    /// CONNECT `msg_id` went out for an ODF link: if no reply comes in time, open its topic
    /// anyway (see `Registry::ack_wait_over`).
    AwaitAck {
        link: LinkRef,
        msg_id: MsgId,
    },
    /// Add (`Some(sha256)`) or remove (`None`) broker credentials of a DA.
    Credential {
        username: String,
        password_sha256: Option<[u8; 32]>,
    },
}

/// Publishes `body` as JSON (QoS 2).
pub fn publish(topic: impl Into<String>, body: &Value, retain: bool) -> Effect {
    Effect::Publish(Message::new(
        topic,
        Bytes::from(body.to_string()),
        QoS::ExactlyOnce,
        retain,
    ))
}

/// Clears the retained message of `topic`.
pub fn clear_retained(topic: impl Into<String>) -> Effect {
    Effect::Publish(Message::new(topic, Bytes::new(), QoS::ExactlyOnce, true))
}
