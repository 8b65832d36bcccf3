//! The request side of a connection: what the DA's task asks of it ([`Out`], with the
//! [`Tag`] that says what a publish was for) and how that is handed to rumqttc without
//! waiting ([`Link::try_send`]), for MQTT 3.1.1 and 5 alike. Not here: building the client
//! (`client`), what comes back from the connection (`poller`, `events`).

use bytes::Bytes;
use iot_proto::QoS;
use rumqttc::v5::mqttbytes as m5;

/// MQTT 5 properties of a request or reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Props {
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
    pub expiry_secs: Option<u32>,
}

/// What a publish was for, so its acknowledgement can be acted upon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// An outbox entry.
    Data(i64),
    Online,
    Offline,
    /// A request of `Da::call`: kept across reconnects until its deadline.
    Call,
    Other,
}

/// A request for the connection, queued by the DA's task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        tag: Tag,
        props: Option<Props>,
        /// Dropped instead of sent after this instant (call requests).
        expires: Option<tokio::time::Instant>,
    },
    /// Filters, and a token to resolve when the broker acknowledges them.
    Subscribe(Vec<(String, QoS)>, Option<u64>),
    Unsubscribe(String),
    Disconnect,
}

/// [`QoS`] as rumqttc's MQTT 3.1.1 type.
fn q4(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// [`QoS`] as rumqttc's MQTT 5 type.
fn q5(q: QoS) -> m5::QoS {
    match q {
        QoS::AtMostOnce => m5::QoS::AtMostOnce,
        QoS::AtLeastOnce => m5::QoS::AtLeastOnce,
        QoS::ExactlyOnce => m5::QoS::ExactlyOnce,
    }
}

/// The request side of one connection.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Link {
    /// Hands `out` to rumqttc without waiting; `false` when its queue is full (or the
    /// connection is gone), in which case the caller keeps `out` and tries again later.
    pub fn try_send(&self, out: &Out) -> bool {
        let r = match (self, out) {
            (
                Self::V4(c),
                Out::Publish {
                    topic,
                    payload,
                    qos,
                    retain,
                    ..
                },
            ) => c
                .try_publish(topic.as_str(), q4(*qos), *retain, payload.to_vec())
                .is_ok(),
            (
                Self::V5(c),
                Out::Publish {
                    topic,
                    payload,
                    qos,
                    retain,
                    props,
                    ..
                },
            ) => {
                let r = match props {
                    None => c.try_publish(topic.as_str(), q5(*qos), *retain, payload.clone()),
                    Some(p) => c.try_publish_with_properties(
                        topic.as_str(),
                        q5(*qos),
                        *retain,
                        payload.clone(),
                        m5::v5::PublishProperties {
                            response_topic: p.response_topic.clone(),
                            correlation_data: p.correlation.clone(),
                            message_expiry_interval: p.expiry_secs,
                            ..Default::default()
                        },
                    ),
                };
                r.is_ok()
            }
            (Self::V4(c), Out::Subscribe(filters, _)) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), q4(*q))),
                )
                .is_ok(),
            (Self::V5(c), Out::Subscribe(filters, _)) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| m5::v5::Filter::new(f.clone(), q5(*q))),
                )
                .is_ok(),
            (Self::V4(c), Out::Unsubscribe(f)) => c.try_unsubscribe(f.as_str()).is_ok(),
            (Self::V5(c), Out::Unsubscribe(f)) => c.try_unsubscribe(f.as_str()).is_ok(),
            (Self::V4(c), Out::Disconnect) => c.try_disconnect().is_ok(),
            (Self::V5(c), Out::Disconnect) => c.try_disconnect().is_ok(),
        };
        r
    }
}
