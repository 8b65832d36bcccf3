#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout:
//! - this file: the [`Broker`] interface the servers use, [`Message`] (with its
//!   [`Publisher`]), [`Subscription`], and
//!   [`QoS`] (re-exported from `iot-proto`, shared with the device SDK).
//! - [`embedded`]: rmqtt in-process, with TCP and WebSocket listeners; [`EmbeddedConfig`]
//!   and its validation.
//! - [`external`]: a connection to another broker (Mosquitto, ...) over rumqttc.
//! - [`acl`]: [`TopicAcl`], the per-client topic rules the embedded broker enforces.
//! - [`local`]: the in-process fan-out of messages to host subscriptions, shared by both.
//! - [`url`]: `mqtt://host:port` parsed once into an [`MqttUrl`].
//! - [`error`]: [`BrokerError`], one variant per failure.
//! - [`tls`]: [`TlsFiles`], the certificate and key of the TLS listeners (and the CSM's
//!   HTTPS), checked into a rustls server configuration.
//! - `locks`: how std locks are taken (poisoning ignored), the one helper for it.
//! - `net` and `websocket`: binding a listener and the WebSocket upgrade, for both cores; `sys`: the `$SYS` topics
//!   both cores publish.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

pub mod acl;
pub mod embedded;
pub mod error;
pub mod external;
pub mod local;
mod locks;
pub mod native;
mod net;
mod sys;
pub mod tls;
mod websocket;

pub use acl::{ClientRef, TopicAcl};
pub use embedded::config::BrokerCore;
pub use embedded::{Authenticator, EmbeddedBroker, EmbeddedConfig, Security};
pub use error::BrokerError;
pub use external::{ExternalBroker, ExternalConfig};
pub use iot_proto::url::{self, MqttUrl, UrlError};
/// MQTT quality of service: the one type of the workspace, defined in `iot-proto`.
pub use iot_proto::QoS;
pub use native::NativeBroker;
pub use tls::{TlsError, TlsFiles};

/// One MQTT application message as the servers see it.
///
/// Beyond topic, payload, QoS and retain it carries who published it ([`from`](Self::from))
/// and the MQTT 5 request/response properties ([`response_topic`](Self::response_topic),
/// [`correlation`](Self::correlation)). These are `None` on the hot path (a DA's data: no
/// properties; `from` is one shared [`Arc`]), so a clone stays a few reference counts.
///
/// Which broker fills what:
/// - embedded, received by a host subscription: `from` is the client session that published
///   it (its will included); `response_topic` and `correlation` are the PUBLISH's MQTT 5
///   properties (always `None` from an MQTT 3.1.1 client). A host publish has `from == None`.
/// - embedded, published by the host: `response_topic` and `correlation` go out as PUBLISH
///   properties to MQTT 5 subscribers; MQTT 3.1.1 subscribers get the payload only. `from` is
///   ignored (the broker sets who published).
/// - external (rumqttc, MQTT 3.1.1): all three are `None` on received messages and ignored on
///   publishes; MQTT 3.1.1 has no properties and does not say who published.
/// - `retained(filter)`: `from` is `None`; the properties are those stored (embedded only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The client that published it (embedded broker, received messages only); `None` for the
    /// host's own publishes and on the external broker.
    pub from: Option<Arc<Publisher>>,
    /// MQTT 5 Response Topic: where the publisher wants its reply.
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data: to be copied into the reply.
    pub correlation: Option<Bytes>,
}

/// The client session that published a [`Message`], as the embedded broker knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Publisher {
    pub client_id: String,
    /// The username it connected with (`None`: anonymous).
    pub username: Option<String>,
}

impl Message {
    /// A message without publisher and without MQTT 5 properties.
    pub fn new(
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            from: None,
            response_topic: None,
            correlation: None,
        }
    }

    /// With an MQTT 5 Response Topic (a reply's request names it).
    #[must_use]
    pub fn with_response_topic(mut self, topic: impl Into<String>) -> Self {
        self.response_topic = Some(topic.into());
        self
    }

    /// With MQTT 5 Correlation Data (a reply copies its request's).
    #[must_use]
    pub fn with_correlation(mut self, data: impl Into<Bytes>) -> Self {
        self.correlation = Some(data.into());
        self
    }

    /// With the publishing client (set by the embedded broker; a host publish ignores it).
    #[must_use]
    pub fn with_from(mut self, from: Publisher) -> Self {
        self.from = Some(Arc::new(from));
        self
    }
}

/// Counters the broker layer keeps, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Client sessions currently connected (embedded only; 0 for external).
    pub sessions: u64,
    /// Messages the broker dropped (queue overflow, expiry, refused), as its MessageDropped hook saw them.
    pub dropped: u64,
    /// Messages not handed to a host subscription because its channel stayed full.
    pub host_dropped: u64,
    /// PUBLISHes (wills included) refused by the topic ACL (embedded only).
    pub acl_denied_publish: u64,
    /// SUBSCRIBE filters refused by the topic ACL (embedded only).
    pub acl_denied_subscribe: u64,
}

/// A host subscription: a bounded stream of the messages matching one filter.
/// Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Message>,
    filter: String,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    pub fn new(filter: String, rx: mpsc::Receiver<Message>, guard: Box<dyn Send + Sync>) -> Self {
        Self {
            rx,
            filter,
            _guard: guard,
        }
    }

    /// The next message, or `None` once the broker is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Like [`recv`](Self::recv) without waiting: `None` when nothing is queued.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// What the servers (CSM, CCM) need from a broker. Implemented by the embedded broker and by
/// the external-broker connection, so the servers run unchanged on either.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Publishes as the controller. Host subscriptions matching the topic receive it too.
    async fn publish(&self, msg: Message) -> Result<(), BrokerError>;

    /// Subscribes to `filter` (MQTT syntax); matching messages from clients and from the host
    /// arrive on a stream bounded to `capacity` messages.
    async fn subscribe(&self, filter: &str, capacity: usize) -> Result<Subscription, BrokerError>;

    /// The retained messages currently stored for topics matching `filter`.
    async fn retained(&self, filter: &str) -> Result<Vec<Message>, BrokerError>;

    /// Counters for status and metrics.
    fn stats(&self) -> BrokerStats;
}

/// A cheap, clonable handle to whichever broker is in use.
pub type BrokerHandle = Arc<dyn Broker>;

impl futures::Stream for Subscription {
    type Item = Message;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Message>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clone shares the publisher instead of copying its strings; `new` sets no extras.
    #[test]
    fn clones_share_the_publisher() {
        let plain = Message::new("t", "p", QoS::AtMostOnce, false);
        assert_eq!(
            (&plain.from, &plain.response_topic, &plain.correlation),
            (&None, &None, &None)
        );
        let m = plain.with_from(Publisher {
            client_id: "c".into(),
            username: None,
        });
        let c = m.clone();
        let (a, b) = (m.from.unwrap(), c.from.unwrap());
        assert!(Arc::ptr_eq(&a, &b));
    }
}
