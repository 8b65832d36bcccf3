//! MQTT on the wire for the native core: rmqtt-codec's MQTT 3.1/3.1.1 and 5 codecs behind one
//! [`Wire`], and the packets the core reads ([`In`]) and writes ([`Out`]) whatever the
//! version, so `conn.rs` and `session.rs` never match on protocol versions.
//!
//! rmqtt-codec is only the packet encoder and decoder (a separate crate from rmqtt's server);
//! buffers are ours (`conn.rs`), so an idle connection holds none.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::v5::{
    self, DisconnectReasonCode, PublishAck2, PublishAck2Reason, PublishAckReason, RetainHandling,
    SubscribeAckReason, UnsubscribeAckReason,
};
use rmqtt_codec::{v3, version::ProtocolVersion};
use tokio_util::codec::{Decoder, Encoder};

use super::alias::Outbound;

/// A decode or encode failure: the connection is closed (MQTT 5: with this reason).
#[derive(Debug)]
pub(crate) struct WireError {
    pub reason: DisconnectReasonCode,
    pub what: String,
}

impl WireError {
    fn malformed(e: impl std::fmt::Display) -> Self {
        Self {
            reason: DisconnectReasonCode::MalformedPacket,
            what: e.to_string(),
        }
    }
}

/// One subscription of a SUBSCRIBE, with the MQTT 5 options (defaults for MQTT 3.1.1).
#[derive(Debug, Clone)]
pub(crate) struct SubReq {
    pub filter: ByteString,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// What a client sends after its CONNECT.
#[derive(Debug)]
pub(crate) enum In {
    Publish(Box<Publish>),
    PubAck(NonZeroU16),
    /// With whether the client refused the message (MQTT 5 reason 0x80 or more).
    PubRec(NonZeroU16, bool),
    PubRel(NonZeroU16),
    PubComp(NonZeroU16),
    Subscribe {
        pid: NonZeroU16,
        id: Option<NonZeroU32>,
        subs: Vec<SubReq>,
    },
    Unsubscribe {
        pid: NonZeroU16,
        filters: Vec<ByteString>,
    },
    Ping,
    /// DISCONNECT: with its reason code (0 for MQTT 3.1.1) and MQTT 5 session expiry.
    Disconnect {
        reason: u8,
        session_expiry: Option<u32>,
    },
    /// A packet a client must not send here (a second CONNECT, a CONNACK, AUTH ...).
    Unexpected(&'static str),
}

/// A SUBACK entry: granted QoS or refused (and why, for MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Granted {
    Qos(QoS),
    NotAuthorized,
    Invalid,
}

/// What the broker writes after the CONNACK.
#[derive(Debug)]
pub(crate) enum Out {
    Publish(Box<Publish>),
    PubAck(NonZeroU16, PublishAckReason),
    PubRec(NonZeroU16, PublishAckReason),
    PubRel(NonZeroU16),
    PubComp(NonZeroU16, bool),
    SubAck(NonZeroU16, Vec<Granted>),
    UnsubAck(NonZeroU16, Vec<bool>),
    PingResp,
    /// MQTT 5 only (MQTT 3.1.1 has no server DISCONNECT): nothing is written for 3.1.1.
    Disconnect(DisconnectReasonCode),
}

/// The codec of one connection, once its CONNECT has told the version.
#[derive(Debug)]
pub(crate) enum Wire {
    /// With the largest packet accepted (v3's codec does not say).
    V3(v3::Codec, u32),
    /// With the topic aliases the broker gives topics towards the client.
    V5(v5::Codec, Outbound),
}

/// The CONNECT, whichever version.
#[derive(Debug)]
pub(crate) enum Connect {
    V3(Box<v3::Connect>),
    V5(Box<v5::Connect>),
}

impl Wire {
    /// Reads the CONNECT at the start of `buf`: `Ok(None)` until it is complete. The
    /// broker uses up to `max_aliases` topic aliases towards an MQTT 5 client that allows them.
    pub(crate) fn connect(
        buf: &mut BytesMut,
        max_packet: u32,
        max_aliases: u16,
    ) -> Result<Option<(Wire, Connect)>, WireError> {
        let Some(mut packet) = take_packet(buf, max_packet)? else {
            return Ok(None);
        };
        let Some(version) = rmqtt_codec::version::VersionCodec
            .decode(&mut packet.clone())
            .map_err(WireError::malformed)?
        else {
            return Err(WireError::malformed("a CONNECT without its protocol level"));
        };
        let buf = &mut packet;
        match version {
            ProtocolVersion::MQTT3 => {
                let mut codec = v3::Codec::new(max_packet);
                match codec.decode(buf).map_err(WireError::malformed)? {
                    Some((v3::Packet::Connect(c), _)) => {
                        Ok(Some((Wire::V3(codec, max_packet), Connect::V3(c))))
                    }
                    Some(_) => Err(WireError::malformed("the first packet is not a CONNECT")),
                    None => Ok(None),
                }
            }
            ProtocolVersion::MQTT5 => {
                let mut codec = v5::Codec::new(max_packet, 0);
                match codec.decode(buf).map_err(WireError::malformed)? {
                    Some((v5::Packet::Connect(c), _)) => {
                        if let Some(max) = c.max_packet_size {
                            codec.set_max_outbound_size(max.get());
                        }
                        let aliases = Outbound::new(c.topic_alias_max, max_aliases);
                        Ok(Some((Wire::V5(codec, aliases), Connect::V5(c))))
                    }
                    Some(_) => Err(WireError::malformed("the first packet is not a CONNECT")),
                    None => Ok(None),
                }
            }
        }
    }

    /// The next complete packet in `buf`, if any.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<In>, WireError> {
        let max = match self {
            Wire::V3(_, max) => *max,
            Wire::V5(c, _) => c.max_inbound_size(),
        };
        let Some(mut packet) = take_packet(buf, max)? else {
            return Ok(None);
        };
        let failed = |e: rmqtt_codec::error::DecodeError| too_large_or_malformed(&e.to_string());
        let decoded = match self {
            Wire::V3(c, _) => c
                .decode(&mut packet)
                .map_err(failed)?
                .map(|(p, _)| from_v3(p)),
            Wire::V5(c, _) => c
                .decode(&mut packet)
                .map_err(failed)?
                .map(|(p, _)| from_v5(p)),
        };
        decoded
            .map(Some)
            .ok_or_else(|| WireError::malformed("a packet shorter than its length"))
    }

    /// Appends `out` to `buf`. A PUBLISH larger than an MQTT 5 client's Maximum Packet Size
    /// is an error the caller handles by discarding that message (MQTT-3.1.2-25).
    pub(crate) fn encode(&mut self, out: Out, buf: &mut BytesMut) -> Result<(), WireError> {
        let e = |e: rmqtt_codec::error::EncodeError| WireError {
            reason: DisconnectReasonCode::PacketTooLarge,
            what: e.to_string(),
        };
        match self {
            Wire::V3(c, _) => match to_v3(out) {
                Some(p) => c.encode(p, buf).map_err(e),
                None => Ok(()),
            },
            Wire::V5(c, aliases) => {
                let (out, new) = match out {
                    Out::Publish(mut p) => {
                        let new = aliases.apply(&mut p);
                        (Out::Publish(p), new)
                    }
                    out => (out, None),
                };
                c.encode(to_v5(out), buf).map_err(e)?;
                aliases.keep(new);
                Ok(())
            }
        }
    }

    /// A CONNACK (MQTT 3.1.1 return code or MQTT 5 reason, `code` as MQTT 5 names it).
    pub(crate) fn connack(&mut self, ack: ConnAck, buf: &mut BytesMut) -> Result<(), WireError> {
        let e = |e: rmqtt_codec::error::EncodeError| WireError::malformed(e);
        match self {
            Wire::V3(c, _) => c
                .encode(
                    v3::Packet::ConnectAck(v3::ConnectAck {
                        return_code: v3_refusal(ack.code),
                        session_present: ack.session_present,
                    }),
                    buf,
                )
                .map_err(e),
            Wire::V5(c, _) => c
                .encode(
                    v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                        session_present: ack.session_present,
                        reason_code: ack.code,
                        session_expiry_interval_secs: ack.session_expiry,
                        receive_max: ack.receive_max,
                        max_packet_size: Some(ack.max_packet),
                        assigned_client_id: ack.assigned_client_id,
                        topic_alias_max: ack.topic_alias_max,
                        ..v5::ConnectAck::default()
                    })),
                    buf,
                )
                .map_err(e),
        }
    }
}

/// The next whole packet of `buf`, moved into a buffer of its own size. The codecs hand out
/// topics, payloads and filters as slices of the buffer they decode; decoding from this copy
/// keeps a stored subscription or a queued message from holding a whole read buffer, and the
/// codecs, which consume the header of a packet they cannot finish, only see whole packets.
/// A packet over `max` (the remaining length) is refused from its header, before it is read.
fn take_packet(buf: &mut BytesMut, max: u32) -> Result<Option<BytesMut>, WireError> {
    let Some(len) = whole_packet(buf)? else {
        return Ok(None);
    };
    if len > u64::from(max).saturating_add(5) {
        return Err(WireError {
            reason: DisconnectReasonCode::PacketTooLarge,
            what: format!("a packet of {len} bytes"),
        });
    }
    let Ok(len) = usize::try_from(len) else {
        return Ok(None);
    };
    if buf.len() < len {
        return Ok(None);
    }
    let packet = BytesMut::from(&buf[..len]);
    buf.advance(len);
    Ok(Some(packet))
}

/// The length of the packet starting `buf` (fixed header included), once its header is here.
fn whole_packet(buf: &[u8]) -> Result<Option<u64>, WireError> {
    let mut remaining: u64 = 0;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        remaining |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(remaining + 2 + i as u64));
        }
    }
    if buf.len() >= 5 {
        return Err(WireError::malformed(
            "a remaining length of more than 4 bytes",
        ));
    }
    Ok(None)
}

/// What a CONNACK says.
#[derive(Debug)]
pub(crate) struct ConnAck {
    pub code: v5::ConnectAckReason,
    pub session_present: bool,
    pub session_expiry: Option<u32>,
    pub receive_max: NonZeroU16,
    pub max_packet: u32,
    pub assigned_client_id: Option<ByteString>,
    /// The Topic Alias Maximum the broker announces (`broker.max_topic_aliases`).
    pub topic_alias_max: u16,
}

fn too_large_or_malformed(what: &str) -> WireError {
    WireError {
        reason: if what.contains("size") || what.contains("large") {
            DisconnectReasonCode::PacketTooLarge
        } else {
            DisconnectReasonCode::MalformedPacket
        },
        what: what.to_owned(),
    }
}

/// MQTT 5's CONNACK reasons as MQTT 3.1.1 return codes.
fn v3_refusal(code: v5::ConnectAckReason) -> v3::ConnectAckReason {
    use v3::ConnectAckReason as R3;
    use v5::ConnectAckReason as R5;
    match code {
        R5::Success => R3::ConnectionAccepted,
        R5::UnsupportedProtocolVersion => R3::UnacceptableProtocolVersion,
        R5::ClientIdentifierNotValid => R3::IdentifierRejected,
        R5::BadUserNameOrPassword => R3::BadUserNameOrPassword,
        R5::NotAuthorized => R3::NotAuthorized,
        _ => R3::ServiceUnavailable,
    }
}

fn from_v3(p: v3::Packet) -> In {
    use v3::Packet as P;
    match p {
        P::Publish(p) => In::Publish(p),
        P::PublishAck { packet_id } => In::PubAck(packet_id),
        P::PublishReceived { packet_id } => In::PubRec(packet_id, false),
        P::PublishRelease { packet_id } => In::PubRel(packet_id),
        P::PublishComplete { packet_id } => In::PubComp(packet_id),
        P::Subscribe {
            packet_id,
            topic_filters,
        } => In::Subscribe {
            pid: packet_id,
            id: None,
            subs: topic_filters
                .into_iter()
                .map(|(filter, qos)| SubReq {
                    filter,
                    qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::AtSubscribe,
                })
                .collect(),
        },
        P::Unsubscribe {
            packet_id,
            topic_filters,
        } => In::Unsubscribe {
            pid: packet_id,
            filters: topic_filters,
        },
        P::PingRequest => In::Ping,
        P::Disconnect => In::Disconnect {
            reason: 0,
            session_expiry: None,
        },
        P::Connect(_) => In::Unexpected("CONNECT"),
        P::ConnectAck(_) => In::Unexpected("CONNACK"),
        P::SubscribeAck { .. } => In::Unexpected("SUBACK"),
        P::UnsubscribeAck { .. } => In::Unexpected("UNSUBACK"),
        P::PingResponse => In::Unexpected("PINGRESP"),
    }
}

fn from_v5(p: v5::Packet) -> In {
    use v5::Packet as P;
    match p {
        P::Publish(p) => In::Publish(p),
        P::PublishAck(a) => In::PubAck(a.packet_id),
        P::PublishReceived(a) => In::PubRec(a.packet_id, u8::from(a.reason_code) >= 0x80),
        P::PublishRelease(a) => In::PubRel(a.packet_id),
        P::PublishComplete(a) => In::PubComp(a.packet_id),
        P::Subscribe(s) => In::Subscribe {
            pid: s.packet_id,
            id: s.id,
            subs: s
                .topic_filters
                .into_iter()
                .map(|(filter, o)| SubReq {
                    filter,
                    qos: o.qos,
                    no_local: o.no_local,
                    retain_as_published: o.retain_as_published,
                    retain_handling: o.retain_handling,
                })
                .collect(),
        },
        P::Unsubscribe(u) => In::Unsubscribe {
            pid: u.packet_id,
            filters: u.topic_filters,
        },
        P::PingRequest => In::Ping,
        P::Disconnect(d) => In::Disconnect {
            reason: u8::from(d.reason_code),
            session_expiry: d.session_expiry_interval_secs,
        },
        P::Connect(_) => In::Unexpected("CONNECT"),
        P::ConnectAck(_) => In::Unexpected("CONNACK"),
        P::SubscribeAck(_) => In::Unexpected("SUBACK"),
        P::UnsubscribeAck(_) => In::Unexpected("UNSUBACK"),
        P::PingResponse => In::Unexpected("PINGRESP"),
        P::Auth(_) => In::Unexpected("AUTH"),
    }
}

fn to_v3(out: Out) -> Option<v3::Packet> {
    use v3::Packet as P;
    Some(match out {
        Out::Publish(mut p) => {
            p.properties = None;
            P::Publish(p)
        }
        Out::PubAck(packet_id, _) => P::PublishAck { packet_id },
        Out::PubRec(packet_id, _) => P::PublishReceived { packet_id },
        Out::PubRel(packet_id) => P::PublishRelease { packet_id },
        Out::PubComp(packet_id, _) => P::PublishComplete { packet_id },
        Out::SubAck(packet_id, granted) => P::SubscribeAck {
            packet_id,
            status: granted
                .into_iter()
                .map(|g| match g {
                    Granted::Qos(q) => v3::SubscribeReturnCode::Success(q),
                    Granted::NotAuthorized | Granted::Invalid => v3::SubscribeReturnCode::Failure,
                })
                .collect(),
        },
        Out::UnsubAck(packet_id, _) => P::UnsubscribeAck { packet_id },
        Out::PingResp => P::PingResponse,
        Out::Disconnect(_) => return None,
    })
}

fn to_v5(out: Out) -> v5::Packet {
    use v5::Packet as P;
    let ack = |packet_id, reason_code| v5::PublishAck {
        packet_id,
        reason_code,
        properties: Vec::new(),
        reason_string: None,
    };
    let ack2 = |packet_id, found: bool| PublishAck2 {
        packet_id,
        reason_code: if found {
            PublishAck2Reason::Success
        } else {
            PublishAck2Reason::PacketIdNotFound
        },
        properties: Vec::new(),
        reason_string: None,
    };
    match out {
        Out::Publish(p) => P::Publish(p),
        Out::PubAck(pid, r) => P::PublishAck(ack(pid, r)),
        Out::PubRec(pid, r) => P::PublishReceived(ack(pid, r)),
        Out::PubRel(pid) => P::PublishRelease(ack2(pid, true)),
        Out::PubComp(pid, found) => P::PublishComplete(ack2(pid, found)),
        Out::SubAck(packet_id, granted) => P::SubscribeAck(v5::SubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: granted
                .into_iter()
                .map(|g| match g {
                    Granted::Qos(QoS::AtMostOnce) => SubscribeAckReason::GrantedQos0,
                    Granted::Qos(QoS::AtLeastOnce) => SubscribeAckReason::GrantedQos1,
                    Granted::Qos(QoS::ExactlyOnce) => SubscribeAckReason::GrantedQos2,
                    Granted::NotAuthorized => SubscribeAckReason::NotAuthorized,
                    Granted::Invalid => SubscribeAckReason::TopicFilterInvalid,
                })
                .collect(),
        }),
        Out::UnsubAck(packet_id, found) => P::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: found
                .into_iter()
                .map(|f| {
                    if f {
                        UnsubscribeAckReason::Success
                    } else {
                        UnsubscribeAckReason::NoSubscriptionExisted
                    }
                })
                .collect(),
        }),
        Out::PingResp => P::PingResponse,
        Out::Disconnect(reason_code) => P::Disconnect(v5::Disconnect {
            reason_code,
            ..v5::Disconnect::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNECT that arrives a few bytes at a time is read once it is whole.
    #[test]
    fn a_connect_in_pieces() {
        // MQTT 3.1.1 CONNECT, client id of 300 bytes: a two-byte remaining length.
        let id = "c".repeat(300);
        let mut body = b"\x00\x04MQTT\x04\x02\x00\x3c".to_vec();
        body.extend_from_slice(&u16::try_from(id.len()).unwrap().to_be_bytes());
        body.extend_from_slice(id.as_bytes());
        let n = body.len();
        let mut packet = vec![
            0x10,
            u8::try_from(n & 0x7F).unwrap() | 0x80,
            u8::try_from(n >> 7).unwrap(),
        ];
        packet.extend_from_slice(&body);
        let mut buf = BytesMut::new();
        for (i, b) in packet.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = Wire::connect(&mut buf, 1 << 20, 10).unwrap();
            assert_eq!(got.is_some(), i == packet.len() - 1, "byte {i}");
            if let Some((_, Connect::V3(c))) = got {
                assert_eq!(c.client_id, id);
            }
        }
        assert!(Wire::connect(
            &mut BytesMut::from(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]),
            1 << 20,
            10
        )
        .is_err());
    }
}
