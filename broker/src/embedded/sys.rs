//! `$SYS/broker/...` on the rmqtt core: the figures `crate::sys` publishes. Counting is two
//! hooks (`MessagePublish` for what clients send, `MessageDelivered` for what the broker
//! sends them); the rest is rmqtt's own counts. rmqtt has none of this (docs/broker-upstream.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use tokio_util::sync::CancellationToken;

use crate::sys::Figures;

/// PUBLISH packets and their topic and payload bytes, each way.
#[derive(Debug, Default)]
pub(super) struct Counts {
    received: AtomicU64,
    received_bytes: AtomicU64,
    sent: AtomicU64,
    sent_bytes: AtomicU64,
}

/// Registers the counting hooks. Called before the server accepts connections.
pub(super) async fn register(scx: &ServerContext, counts: Arc<Counts>) {
    let register = scx.extends.hook_mgr().register();
    register
        .add(Type::MessagePublish, Box::new(Counting(counts.clone())))
        .await;
    register
        .add(Type::MessageDelivered, Box::new(Counting(counts)))
        .await;
    register.start().await;
}

struct Counting(Arc<Counts>);

fn bytes(topic: &str, payload: &Bytes) -> u64 {
    (topic.len() + payload.len()) as u64
}

#[async_trait]
impl Handler for Counting {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            // A client's publish (not the host's, nor a will).
            Parameter::MessagePublish(Some(_), from, p) if from.is_custom() => {
                self.0.received.fetch_add(1, Ordering::Relaxed);
                (self.0.received_bytes).fetch_add(bytes(&p.topic, &p.payload), Ordering::Relaxed);
            }
            Parameter::MessageDelivered(_, _, p) => {
                self.0.sent.fetch_add(1, Ordering::Relaxed);
                (self.0.sent_bytes).fetch_add(bytes(&p.topic, &p.payload), Ordering::Relaxed);
            }
            _ => {}
        }
        (true, acc)
    }
}

/// Publishes the figures every `every` until `shutdown` (`crate::sys`).
pub(super) fn spawn(
    broker: super::EmbeddedBroker,
    counts: Arc<Counts>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let version = format!(
        "iotctl {} (rmqtt {})",
        env!("CARGO_PKG_VERSION"),
        RMQTT_VERSION
    );
    let scx = broker.inner.scx.clone();
    let figures = move || Figures {
        connected: scx.connections.count().try_into().unwrap_or(0),
        sessions: scx.sessions.count().try_into().unwrap_or(0),
        received: get(&counts.received),
        received_bytes: get(&counts.received_bytes),
        sent: get(&counts.sent),
        sent_bytes: get(&counts.sent_bytes),
    };
    crate::sys::spawn(broker, version, figures, every, shutdown);
}

/// The rmqtt release pinned in Cargo.toml.
const RMQTT_VERSION: &str = "0.24.0";

fn get(n: &AtomicU64) -> u64 {
    n.load(Ordering::Relaxed)
}
