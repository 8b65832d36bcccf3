//! The event side of a connection: [`Poller`] polls rumqttc's event loop (3.1.1 or 5) and
//! reduces each event to what the DA's task needs ([`NetEvent`]), and tells a broker that
//! refuses the protocol version from any other failure (so `Auto` can try the other one).
//! Not here: the loop that polls it and reconnects (the supervisor, `transport`).

use rumqttc::v5::mqttbytes as m5;

use super::events::NetEvent;
use super::link::Props;

/// A failed poll: its message, and whether it looks like the broker refusing the protocol
/// version (then `Auto` tries the other one).
pub(super) struct PollError {
    pub message: String,
    pub version_refused: bool,
}

pub(super) enum Polled {
    ConnAck,
    Event(NetEvent),
    Skip,
}

pub(super) enum Poller {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

impl Poller {
    pub async fn poll(&mut self) -> Result<Polled, PollError> {
        match self {
            Self::V4(ev) => match ev.poll().await {
                Ok(e) => Ok(map_v4(e)),
                Err(e) => Err(PollError {
                    version_refused: matches!(
                        &e,
                        rumqttc::ConnectionError::ConnectionRefused(
                            rumqttc::ConnectReturnCode::RefusedProtocolVersion
                        )
                    ),
                    message: e.to_string(),
                }),
            },
            Self::V5(ev) => match ev.poll().await {
                Ok(e) => Ok(map_v5(e)),
                Err(e) => Err(PollError {
                    version_refused: v5_refused(&e),
                    message: e.to_string(),
                }),
            },
        }
    }
}

/// A v5 CONNECT answered in a way only a 3.1.1-only broker answers: a refusal code for the
/// version, or a CONNACK that does not parse as v5, or the connection closed before CONNACK.
fn v5_refused(e: &rumqttc::v5::ConnectionError) -> bool {
    use rumqttc::v5::ConnectionError as E;
    use rumqttc::v5::StateError as S;
    match e {
        E::ConnectionRefused(
            m5::v5::ConnectReturnCode::UnsupportedProtocolVersion
            | m5::v5::ConnectReturnCode::RefusedProtocolVersion
            | m5::v5::ConnectReturnCode::ProtocolError
            | m5::v5::ConnectReturnCode::MalformedPacket,
        ) => true,
        E::MqttState(S::ConnFail {
            reason:
                m5::v5::ConnectReturnCode::UnsupportedProtocolVersion
                | m5::v5::ConnectReturnCode::RefusedProtocolVersion,
        }) => true,
        E::MqttState(S::Deserialization(_)) | E::NotConnAck(_) => true,
        E::Io(io) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => false,
    }
}

fn map_v4(e: rumqttc::Event) -> Polled {
    use rumqttc::{Event, Outgoing, Packet};
    match e {
        Event::Incoming(Packet::ConnAck(_)) => Polled::ConnAck,
        Event::Incoming(Packet::Publish(p)) => Polled::Event(NetEvent::Publish {
            topic: p.topic,
            payload: p.payload,
            retain: p.retain,
            props: None,
        }),
        Event::Incoming(Packet::PubAck(a)) => Polled::Event(NetEvent::PubAck(a.pkid)),
        Event::Incoming(Packet::PubComp(c)) => Polled::Event(NetEvent::PubComp(c.pkid)),
        Event::Incoming(Packet::SubAck(s)) => {
            let refused = s
                .return_codes
                .iter()
                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
            if refused {
                tracing::warn!("the broker refused a subscription");
            }
            Polled::Event(NetEvent::SubAck {
                pkid: s.pkid,
                refused,
            })
        }
        Event::Incoming(_) => Polled::Skip,
        Event::Outgoing(Outgoing::Publish(pkid)) => Polled::Event(NetEvent::OutPublish(pkid)),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => Polled::Event(NetEvent::AwaitAck(pkid)),
        Event::Outgoing(Outgoing::Disconnect) => Polled::Event(NetEvent::OutDisconnect),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Polled::Event(NetEvent::OutSubscribe(pkid)),
        Event::Outgoing(Outgoing::PingReq | Outgoing::PingResp) => Polled::Skip,
        Event::Outgoing(_) => Polled::Event(NetEvent::Progress),
    }
}

fn map_v5(e: rumqttc::v5::Event) -> Polled {
    use m5::v5::Packet;
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
    match e {
        Event::Incoming(Packet::ConnAck(_)) => Polled::ConnAck,
        Event::Incoming(Packet::Publish(p)) => {
            let props = p.properties.map(|pp| Props {
                response_topic: pp.response_topic,
                correlation: pp.correlation_data,
                expiry_secs: pp.message_expiry_interval,
            });
            Polled::Event(NetEvent::Publish {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                retain: p.retain,
                props,
            })
        }
        Event::Incoming(Packet::PubAck(a)) => Polled::Event(NetEvent::PubAck(a.pkid)),
        Event::Incoming(Packet::PubComp(c)) => Polled::Event(NetEvent::PubComp(c.pkid)),
        Event::Incoming(Packet::SubAck(s)) => {
            let refused = s
                .return_codes
                .iter()
                .any(|c| !matches!(c, m5::v5::SubscribeReasonCode::Success(_)));
            if refused {
                tracing::warn!(codes = ?s.return_codes, "the broker refused a subscription");
            }
            Polled::Event(NetEvent::SubAck {
                pkid: s.pkid,
                refused,
            })
        }
        Event::Incoming(_) => Polled::Skip,
        Event::Outgoing(Outgoing::Publish(pkid)) => Polled::Event(NetEvent::OutPublish(pkid)),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => Polled::Event(NetEvent::AwaitAck(pkid)),
        Event::Outgoing(Outgoing::Disconnect) => Polled::Event(NetEvent::OutDisconnect),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Polled::Event(NetEvent::OutSubscribe(pkid)),
        Event::Outgoing(Outgoing::PingReq | Outgoing::PingResp) => Polled::Skip,
        Event::Outgoing(_) => Polled::Event(NetEvent::Progress),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_refusals_switch_protocols() {
        use m5::v5::ConnectReturnCode as C;
        use rumqttc::v5::ConnectionError as E;
        assert!(v5_refused(&E::ConnectionRefused(
            C::UnsupportedProtocolVersion
        )));
        assert!(v5_refused(&E::MqttState(
            rumqttc::v5::StateError::ConnFail {
                reason: C::UnsupportedProtocolVersion
            }
        )));
        assert!(v5_refused(&E::Io(std::io::ErrorKind::UnexpectedEof.into())));
        assert!(!v5_refused(&E::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        )));
        assert!(!v5_refused(&E::ConnectionRefused(C::BadUserNamePassword)));
    }
}
