//! Sessions and their owners: with an authenticator, a client id whose session (live or
//! offline) belongs to one username cannot be taken, resumed or kicked off by another; a
//! message an MQTT 5 client's Maximum Packet Size does not allow is not resent on every resume.

use std::sync::Arc;

use iot_broker::{Authenticator, Broker, EmbeddedConfig, Message, QoS};
use tokio::io::AsyncWriteExt;

use crate::raw::{self, Proto};
use crate::{spawn_broker, spawn_broker_with_auth, test_config, within, WAIT};

#[derive(Debug)]
struct TwoUsers;

#[async_trait::async_trait]
impl Authenticator for TwoUsers {
    async fn check(&self, username: &str, password: &[u8]) -> bool {
        matches!((username, password), ("alice", b"a") | ("bob", b"b"))
    }
}

/// Alice's persistent session under client id `shared-id` is hers: Bob (good credentials)
/// cannot resume it, take it over with a clean start, or kick her off while she is online;
/// Alice resumes it with its queued message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_username_cannot_take_a_session() {
    let b = spawn_broker_with_auth(
        EmbeddedConfig {
            allow_anonymous: false,
            ..test_config()
        },
        Some(Arc::new(TwoUsers)),
    )
    .await;
    let persistent = |login: (&str, &str)| {
        let mut c = raw::connect("shared-id", Proto::V311, 0, Some(login));
        c[9] &= !0x02;
        c
    };
    let (mut alice, code) = raw::connect_with(b.addr(), &persistent(("alice", "a"))).await;
    assert_eq!(code, 0);
    alice
        .write_all(&raw::subscribe(1, "alice/#", 1))
        .await
        .unwrap();
    assert_eq!(raw::expect(&mut alice, WAIT, "SUBACK").await.0, raw::SUBACK);

    // Online: neither a resume nor a clean start by Bob gets in, and Alice stays connected.
    let clean = raw::connect("shared-id", Proto::V311, 0, Some(("bob", "b")));
    for conn in [persistent(("bob", "b")), clean] {
        assert_eq!(raw::connect_with(b.addr(), &conn).await.1, 5);
        alice.write_all(&raw::pingreq()).await.unwrap();
        assert_eq!(
            raw::expect(&mut alice, WAIT, "PINGRESP").await.0,
            raw::PINGRESP
        );
    }

    // Offline with a queued message: Bob cannot resume it; Alice can, and gets the message.
    drop(alice);
    crate::eventually(WAIT, "Alice offline", || b.broker.stats().sessions == 0).await;
    b.broker
        .publish(Message::new(
            "alice/1",
            "for alice",
            QoS::AtLeastOnce,
            false,
        ))
        .await
        .unwrap();
    assert_eq!(
        raw::connect_with(b.addr(), &persistent(("bob", "b")))
            .await
            .1,
        5
    );
    let (mut alice, code) = raw::connect_with(b.addr(), &persistent(("alice", "a"))).await;
    assert_eq!(code, 0);
    let p = raw::expect(&mut alice, WAIT, "the queued PUBLISH").await;
    assert_eq!(raw::publish_parts(&p).1, b"for alice");
}

/// An MQTT 5 CONNECT with clean start 0, a session expiry and a Maximum Packet Size.
fn connect_v5_limited(client_id: &str, max_packet: u32) -> Vec<u8> {
    let mut props = vec![0x11];
    props.extend_from_slice(&3600u32.to_be_bytes());
    props.push(0x27);
    props.extend_from_slice(&max_packet.to_be_bytes());
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x00];
    body.extend_from_slice(&60u16.to_be_bytes());
    body.push(props.len() as u8);
    body.extend_from_slice(&props);
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut out = vec![0x10, body.len() as u8];
    out.extend(body);
    out
}

/// A message larger than the subscriber's Maximum Packet Size is never sent to it; what comes
/// after is, and a resumed connection is not dropped by it again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_clients_maximum_packet_size_is_not_resent() {
    let b = spawn_broker().await;
    let conn = connect_v5_limited("small-packets", 200);
    let (mut s, code) = raw::connect_with(b.addr(), &conn).await;
    assert_eq!(code, 0);
    s.write_all(&raw::subscribe_v5(1, "lim/#", 1))
        .await
        .unwrap();
    assert_eq!(raw::expect(&mut s, WAIT, "SUBACK").await.0, raw::SUBACK);
    let big = vec![b'x'; 1_000];
    b.broker
        .publish(Message::new("lim/big", big, QoS::AtLeastOnce, false))
        .await
        .unwrap();
    b.broker
        .publish(Message::new("lim/small", "small", QoS::AtLeastOnce, false))
        .await
        .unwrap();
    // The small one arrives, on this connection or (if the big one made the broker drop it)
    // on the next; either way the connection after that stays up.
    let mut got_small = false;
    for _ in 0..3 {
        match within(WAIT, "a packet", raw::read(&mut s)).await {
            Some(p) if p.0 & 0xF0 == 0x30 => {
                assert!(
                    p.1.len() < 200,
                    "a packet over the limit: {} bytes",
                    p.1.len()
                );
                let (pkid, rest) = raw::publish_parts(&p);
                got_small |= rest.ends_with(b"small");
                s.write_all(&raw::ack(0x40, pkid)).await.unwrap();
                if got_small {
                    break;
                }
            }
            Some(p) => panic!("unexpected {p:?}"),
            None => {
                let (again, code) = raw::connect_with(b.addr(), &conn).await;
                assert_eq!(code, 0);
                s = again;
            }
        }
    }
    assert!(got_small, "the small message never arrived");
    s.write_all(&raw::pingreq()).await.unwrap();
    assert_eq!(raw::expect(&mut s, WAIT, "PINGRESP").await.0, raw::PINGRESP);
    drop(s);
    // Resumed twice more: the connection stays up each time.
    for _ in 0..2 {
        let (mut s, code) = raw::connect_with(b.addr(), &conn).await;
        assert_eq!(code, 0);
        s.write_all(&raw::pingreq()).await.unwrap();
        let p = raw::expect(&mut s, WAIT, "PINGRESP on a resumed connection").await;
        assert_eq!(p.0, raw::PINGRESP, "{p:?}");
    }
}
