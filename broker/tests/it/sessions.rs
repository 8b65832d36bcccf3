//! Sessions and their owners: with an authenticator, a client id's live session belongs to
//! its username (another cannot kick it off or resume it; an offline one is discarded for a
//! newcomer of another username); a message an MQTT 5 client's Maximum Packet Size does not
//! allow is discarded.

use std::sync::Arc;

use iot_broker::{Authenticator, Broker, EmbeddedConfig, Message, QoS};
use tokio::io::AsyncWriteExt;

use crate::raw::{self, Proto};
use crate::{spawn_broker, spawn_broker_with_auth, test_config, WAIT};

#[derive(Debug)]
struct TwoUsers;

#[async_trait::async_trait]
impl Authenticator for TwoUsers {
    async fn check(&self, username: &str, password: &[u8]) -> bool {
        matches!((username, password), ("alice", b"a") | ("bob", b"b"))
    }
}

/// Alice's persistent session under client id `shared-id` is hers: while she is online, Bob
/// (good credentials) can neither resume it nor take it over with a clean start, and she
/// stays connected; she resumes it with its queued message. Once she is offline, Bob's
/// CONNECT discards it (so a stale session cannot lock its client id) and he gets a fresh one,
/// without her subscriptions or queued messages.
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

    // Offline with a queued message: Alice resumes it.
    let offline = |alice| async {
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
    };
    offline(alice).await;
    let (mut alice, code) = raw::connect_with(b.addr(), &persistent(("alice", "a"))).await;
    assert_eq!(code, 0);
    let p = raw::expect(&mut alice, WAIT, "the queued PUBLISH").await;
    assert_eq!(raw::publish_parts(&p).1, b"for alice");

    // Offline again: Bob's resume gets a fresh session (session present 0), nothing of hers.
    offline(alice).await;
    let mut bob = tokio::net::TcpStream::connect(b.addr()).await.unwrap();
    bob.write_all(&persistent(("bob", "b"))).await.unwrap();
    let ack = raw::expect(&mut bob, WAIT, "CONNACK").await;
    assert_eq!((raw::connack_code(&ack), ack.1[0] & 1), (0, 0), "{ack:?}");
    bob.write_all(&raw::pingreq()).await.unwrap();
    let p = raw::expect(&mut bob, WAIT, "PINGRESP").await;
    assert_eq!(p.0, raw::PINGRESP, "Bob got something of Alice's: {p:?}");
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

/// A message larger than the subscriber's Maximum Packet Size is discarded (MQTT 5,
/// [MQTT-3.1.2-25]) and counted as dropped; the connection stays up and what comes after
/// arrives, on this connection and after a resume. (rmqtt dropped the connection instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_clients_maximum_packet_size_is_discarded() {
    let b = spawn_broker().await;
    let conn = connect_v5_limited("small-packets", 200);
    let (mut s, code) = raw::connect_with(b.addr(), &conn).await;
    assert_eq!(code, 0);
    s.write_all(&raw::subscribe_v5(1, "lim/#", 1))
        .await
        .unwrap();
    assert_eq!(raw::expect(&mut s, WAIT, "SUBACK").await.0, raw::SUBACK);
    let dropped = b.broker.stats().dropped;
    for (topic, payload) in [
        ("lim/big", vec![b'x'; 1_000]),
        ("lim/small", b"small".to_vec()),
    ] {
        b.broker
            .publish(Message::new(topic, payload, QoS::AtLeastOnce, false))
            .await
            .unwrap();
    }
    let p = raw::expect(&mut s, WAIT, "the small PUBLISH").await;
    let (pkid, rest) = raw::publish_parts(&p);
    assert!(rest.ends_with(b"small"), "{p:?}");
    s.write_all(&raw::ack(0x40, pkid)).await.unwrap();
    assert_eq!(b.broker.stats().dropped, dropped + 1);
    s.write_all(&raw::pingreq()).await.unwrap();
    assert_eq!(raw::expect(&mut s, WAIT, "PINGRESP").await.0, raw::PINGRESP);

    // Queued while offline: the big one is discarded on resume too.
    drop(s);
    crate::eventually(WAIT, "offline", || b.broker.stats().sessions == 0).await;
    for (topic, payload) in [
        ("lim/big", vec![b'y'; 1_000]),
        ("lim/small", b"later".to_vec()),
    ] {
        b.broker
            .publish(Message::new(topic, payload, QoS::AtLeastOnce, false))
            .await
            .unwrap();
    }
    let (mut s, code) = raw::connect_with(b.addr(), &conn).await;
    assert_eq!(code, 0);
    let p = raw::expect(&mut s, WAIT, "the queued small PUBLISH").await;
    assert!(raw::publish_parts(&p).1.ends_with(b"later"), "{p:?}");
    s.write_all(&raw::pingreq()).await.unwrap();
    assert_eq!(raw::expect(&mut s, WAIT, "PINGRESP").await.0, raw::PINGRESP);
}
