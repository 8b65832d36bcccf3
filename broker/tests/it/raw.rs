//! Hand-encoded MQTT packets over plain TCP: cheaper than rumqttc for thousands of clients and
//! precise about what goes on the wire (protocol names, keepalive 0, unacknowledged QoS 2).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const CONNACK: u8 = 0x20;
pub const PUBREC: u8 = 0x50;
pub const PUBCOMP: u8 = 0x70;
pub const SUBACK: u8 = 0x90;
pub const PINGRESP: u8 = 0xD0;

#[derive(Debug, Clone, Copy)]
pub enum Proto {
    V31,
    V311,
    V5,
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

pub fn connect(
    client_id: &str,
    proto: Proto,
    keep_alive: u16,
    login: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    let (name, level): (&[u8], u8) = match proto {
        Proto::V31 => (b"MQIsdp", 3),
        Proto::V311 => (b"MQTT", 4),
        Proto::V5 => (b"MQTT", 5),
    };
    put_str(&mut body, name);
    body.push(level);
    let mut flags = 0x02; // clean session
    if login.is_some() {
        flags |= 0xC0;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if let Proto::V5 = proto {
        body.push(0); // no properties
    }
    put_str(&mut body, client_id.as_bytes());
    if let Some((user, pass)) = login {
        put_str(&mut body, user.as_bytes());
        put_str(&mut body, pass.as_bytes());
    }
    packet(0x10, &body)
}

pub fn subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    put_str(&mut body, filter.as_bytes());
    body.push(qos);
    packet(0x82, &body)
}

pub fn publish(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// MQTT 5 SUBSCRIBE without properties.
pub fn subscribe_v5(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(0); // no properties
    put_str(&mut body, filter.as_bytes());
    body.push(qos);
    packet(0x82, &body)
}

/// MQTT 5 PUBLISH with `props` (encoded properties, shorter than 128 bytes).
pub fn publish_v5(topic: &str, qos: u8, pkid: u16, props: &[u8], payload: &[u8]) -> Vec<u8> {
    assert!(props.len() < 128);
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// The Message Expiry Interval property (0x02) of an MQTT 5 PUBLISH as received, if any.
pub fn message_expiry(p: &(u8, Vec<u8>)) -> Option<u32> {
    let props = parse_publish_v5(p).props;
    let (_, v) = props.into_iter().find(|(id, _)| *id == 0x02)?;
    Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

pub fn pubrel(pkid: u16) -> Vec<u8> {
    packet(0x62, &pkid.to_be_bytes())
}

/// PUBACK, PUBREC or PUBCOMP (`header` 0x40, 0x50, 0x70) for `pkid`.
pub fn ack(header: u8, pkid: u16) -> Vec<u8> {
    packet(header, &pkid.to_be_bytes())
}

/// An MQTT 3.1.1 CONNECT with clean session 0: the session outlives the connection.
pub fn connect_persistent(client_id: &str) -> Vec<u8> {
    let mut conn = connect(client_id, Proto::V311, 60, None);
    // The flags byte follows "\0\x04MQTT" and the level.
    assert_eq!(&conn[4..8], b"MQTT");
    conn[9] &= !0x02;
    conn
}

/// The packet id and payload of an MQTT 3.1.1 PUBLISH as received (packet id 0 at QoS 0).
pub fn publish_parts(p: &(u8, Vec<u8>)) -> (u16, &[u8]) {
    assert_eq!(p.0 & 0xF0, 0x30, "expected PUBLISH, got {:#x}", p.0);
    let mut i = 2 + usize::from(u16::from_be_bytes([p.1[0], p.1[1]]));
    let mut pkid = 0;
    if p.0 & 0x06 != 0 {
        pkid = u16::from_be_bytes([p.1[i], p.1[i + 1]]);
        i += 2;
    }
    (pkid, &p.1[i..])
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0]
}

/// Reads one packet: (first byte, body). `None` when the peer closed the connection.
pub async fn read(stream: &mut (impl AsyncRead + Unpin)) -> Option<(u8, Vec<u8>)> {
    let header = stream.read_u8().await.ok()?;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = stream.read_u8().await.ok()?;
        len |= usize::from(b & 0x7F) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    Some((header, body))
}

/// Reads one packet within `wait`, panicking with `what` otherwise.
pub async fn expect(
    stream: &mut (impl AsyncRead + Unpin),
    wait: Duration,
    what: &str,
) -> (u8, Vec<u8>) {
    match tokio::time::timeout(wait, read(stream)).await {
        Ok(Some(p)) => p,
        Ok(None) => panic!("connection closed while waiting for {what}"),
        Err(_) => panic!("no {what} within {wait:?}"),
    }
}

/// Reads one packet within `wait`: `None` when the peer closed the connection; panics with
/// `what` when neither happens in time.
pub async fn expect_or_closed(
    stream: &mut (impl AsyncRead + Unpin),
    wait: Duration,
    what: &str,
) -> Option<(u8, Vec<u8>)> {
    match tokio::time::timeout(wait, read(stream)).await {
        Ok(p) => p,
        Err(_) => panic!("no {what} within {wait:?}"),
    }
}

/// The CONNACK return code (3.1/3.1.1) or reason code (5).
pub fn connack_code(p: &(u8, Vec<u8>)) -> u8 {
    assert_eq!(p.0 & 0xF0, CONNACK, "expected CONNACK, got {:#x}", p.0);
    p.1[1]
}

/// Connects and sends CONNECT; returns the stream and the CONNACK code.
pub async fn connect_with(addr: SocketAddr, conn: &[u8]) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(addr).await.expect("tcp connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(conn).await.expect("send CONNECT");
    let ack = expect(&mut s, crate::WAIT, "CONNACK").await;
    let code = connack_code(&ack);
    (s, code)
}

/// An MQTT 5 CONNECT: clean start as given, keepalive 60, `props` (encoded properties, shorter
/// than 128 bytes), no login.
pub fn connect_v5(client_id: &str, clean: bool, props: &[u8]) -> Vec<u8> {
    assert!(props.len() < 128);
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(5);
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend_from_slice(&60u16.to_be_bytes());
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    put_str(&mut body, client_id.as_bytes());
    packet(0x10, &body)
}

/// MQTT 5 SUBSCRIBE of one filter with its options byte (QoS, no local 0x04, retain as
/// published 0x08, retain handling << 4) and `props` (shorter than 128 bytes).
pub fn subscribe_v5_with(pkid: u16, filter: &str, options: u8, props: &[u8]) -> Vec<u8> {
    assert!(props.len() < 128);
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    put_str(&mut body, filter.as_bytes());
    body.push(options);
    packet(0x82, &body)
}

/// An MQTT 5 PUBLISH as received: (topic, packet id or 0, properties as (id, value bytes),
/// payload, retain flag).
pub struct V5Publish {
    pub topic: String,
    pub pkid: u16,
    pub props: Vec<(u8, Vec<u8>)>,
    pub payload: Vec<u8>,
    pub retain: bool,
}

fn var_int(b: &[u8], i: &mut usize) -> usize {
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let byte = b[*i];
        *i += 1;
        n |= usize::from(byte & 0x7F) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return n;
        }
    }
}

pub fn parse_publish_v5(p: &(u8, Vec<u8>)) -> V5Publish {
    assert_eq!(p.0 & 0xF0, 0x30, "expected PUBLISH, got {:#x}", p.0);
    let b = &p.1;
    let tlen = usize::from(u16::from_be_bytes([b[0], b[1]]));
    let topic = String::from_utf8(b[2..2 + tlen].to_vec()).unwrap();
    let mut i = 2 + tlen;
    let mut pkid = 0;
    if p.0 & 0x06 != 0 {
        pkid = u16::from_be_bytes([b[i], b[i + 1]]);
        i += 2;
    }
    let props = properties(b, &mut i);
    let end = i;
    V5Publish {
        topic,
        pkid,
        props,
        payload: b[end..].to_vec(),
        retain: p.0 & 0x01 == 1,
    }
}

/// The properties of an MQTT 5 CONNACK as (id, value bytes).
pub fn connack_props(p: &(u8, Vec<u8>)) -> Vec<(u8, Vec<u8>)> {
    properties(&p.1, &mut 2)
}

/// MQTT 5 properties (their length first) at `b[*i..]`, as (id, value bytes); `*i` ends past
/// them.
fn properties(b: &[u8], i: &mut usize) -> Vec<(u8, Vec<u8>)> {
    let len = var_int(b, i);
    let end = *i + len;
    let mut props = Vec::new();
    let string_at = |i: usize| 2 + usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
    while *i < end {
        let id = b[*i];
        *i += 1;
        let start = *i;
        match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => *i += 1,
            0x13 | 0x21 | 0x22 | 0x23 => *i += 2,
            0x02 | 0x11 | 0x18 | 0x27 => *i += 4,
            0x0B => {
                var_int(b, i);
            }
            0x26 => {
                *i += string_at(*i);
                *i += string_at(*i);
            }
            _ => *i += string_at(*i),
        }
        props.push((id, b[start..*i].to_vec()));
    }
    props
}
