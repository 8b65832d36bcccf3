//! MQTT 5 features of the embedded broker, with raw packets: subscription identifiers, no
//! local, retain as published, retain handling, topic aliases from the client, the client's
//! receive maximum and session expiry.

use std::time::Duration;

use iot_broker::{Broker, Message, QoS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::raw::{self, V5Publish};
use crate::{spawn_broker, TestBroker, WAIT};

async fn connect(
    b: &TestBroker,
    id: &str,
    clean: bool,
    props: &[u8],
) -> (TcpStream, (u8, Vec<u8>)) {
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&raw::connect_v5(id, clean, props))
        .await
        .unwrap();
    let ack = raw::expect(&mut s, WAIT, "CONNACK").await;
    assert_eq!(raw::connack_code(&ack), 0, "{ack:?}");
    (s, ack)
}

async fn subscribe(s: &mut TcpStream, filter: &str, options: u8, props: &[u8]) {
    s.write_all(&raw::subscribe_v5_with(1, filter, options, props))
        .await
        .unwrap();
    let ack = raw::expect(s, WAIT, "SUBACK").await;
    assert_eq!(ack.0, raw::SUBACK);
    assert!(ack.1[3] < 0x80, "subscription refused: {ack:?}");
}

/// The next PUBLISH (QoS 1 ones acknowledged).
async fn publish(s: &mut TcpStream, what: &str) -> V5Publish {
    let p = raw::parse_publish_v5(&raw::expect(s, WAIT, what).await);
    if p.pkid != 0 {
        s.write_all(&raw::ack(0x40, p.pkid)).await.unwrap();
    }
    p
}

/// Nothing arrives within a short while (what the broker sends arrives within milliseconds
/// on loopback; this only checks that a PINGRESP comes before any PUBLISH).
async fn nothing_before_ping(s: &mut TcpStream, what: &str) {
    s.write_all(&raw::pingreq()).await.unwrap();
    let p = raw::expect(s, WAIT, "PINGRESP").await;
    assert_eq!(p.0, raw::PINGRESP, "{what}: got {p:?} first");
}

fn sub_id(p: &V5Publish) -> Option<Vec<u8>> {
    p.props
        .iter()
        .find(|(id, _)| *id == 0x0B)
        .map(|(_, v)| v.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_ids_no_local_and_retain_as_published() {
    let b = spawn_broker().await;
    let (mut a, _) = connect(&b, "v5-a", true, &[]).await;
    // QoS 1, no local, retain as published; subscription identifier 7.
    subscribe(&mut a, "o/#", 0x01 | 0x04 | 0x08, &[0x0B, 7]).await;
    let (mut c, _) = connect(&b, "v5-c", true, &[]).await;
    // QoS 1, retain not as published, no subscription identifier.
    subscribe(&mut c, "o/#", 0x01, &[]).await;

    // Its own message does not come back to A (no local); C gets it.
    a.write_all(&raw::publish_v5("o/self", 0, 0, &[], b"mine"))
        .await
        .unwrap();
    let p = publish(&mut c, "A's message at C").await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("o/self", &b"mine"[..]));
    nothing_before_ping(&mut a, "no local").await;

    // A retained message published now: A sees retain 1 and its subscription id, C retain 0.
    b.broker
        .publish(Message::new("o/kept", "kept", QoS::AtLeastOnce, true))
        .await
        .unwrap();
    let p = publish(&mut a, "the retained message at A").await;
    assert!(p.retain, "retain as published");
    assert_eq!(sub_id(&p), Some(vec![7]));
    let p = publish(&mut c, "the retained message at C").await;
    assert!(!p.retain, "retain not as published");
    assert_eq!(sub_id(&p), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_on_subscribe() {
    let b = spawn_broker().await;
    b.broker
        .publish(Message::new("rh/x", "retained", QoS::AtLeastOnce, true))
        .await
        .unwrap();
    let (mut s, _) = connect(&b, "v5-rh", true, &[]).await;
    // 0: sent at every subscribe.
    for _ in 0..2 {
        subscribe(&mut s, "rh/#", 0x01, &[]).await;
        let p = publish(&mut s, "the retained message (handling 0)").await;
        assert_eq!(p.payload, b"retained");
    }
    // 2: never.
    subscribe(&mut s, "rh/+", 0x01 | (2 << 4), &[]).await;
    nothing_before_ping(&mut s, "retain handling 2").await;
    // 1: only when the subscription is new.
    subscribe(&mut s, "rh/x", 0x01 | (1 << 4), &[]).await;
    let p = publish(&mut s, "the retained message (handling 1, new)").await;
    assert_eq!(p.payload, b"retained");
    subscribe(&mut s, "rh/x", 0x01 | (1 << 4), &[]).await;
    nothing_before_ping(&mut s, "retain handling 1, existing subscription").await;
}

/// Connects a client, checks the broker offers topic aliases, and uses alias 1; returns the
/// stream, the broker's Topic Alias Maximum and the host subscription that saw the messages.
async fn aliased(b: &TestBroker, id: &str) -> (TcpStream, u16, iot_broker::Subscription) {
    let mut host = b.broker.subscribe("ta/#", 10).await.unwrap();
    let (mut s, ack) = connect(b, id, true, &[]).await;
    let max = raw::connack_props(&ack)
        .iter()
        .find(|(id, _)| *id == 0x22)
        .map(|(_, v)| u16::from_be_bytes([v[0], v[1]]))
        .unwrap_or(0);
    assert!(max >= 1, "the broker offers no topic alias: {ack:?}");
    s.write_all(&raw::publish_v5(
        "ta/long/topic",
        0,
        0,
        &[0x23, 0, 1],
        b"first",
    ))
    .await
    .unwrap();
    s.write_all(&raw::publish_v5("", 0, 0, &[0x23, 0, 1], b"second"))
        .await
        .unwrap();
    for want in ["first", "second"] {
        let m = tokio::time::timeout(WAIT, host.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.topic.as_str(), m.payload.as_ref()),
            ("ta/long/topic", want.as_bytes())
        );
    }
    (s, max, host)
}

/// A PUBLISH on `ta/bad` with the topic alias `max + 1`.
fn over_the_maximum(max: u16) -> Vec<u8> {
    let [hi, lo] = max.saturating_add(1).to_be_bytes();
    raw::publish_v5("ta/bad", 0, 0, &[0x23, hi, lo], b"bad")
}

/// A client's topic alias stands for its topic in later PUBLISHes (the broker announces a
/// Topic Alias Maximum, `broker.max_topic_aliases`); a PUBLISH with an alias above it is
/// dropped and ends the connection (rmqtt ignored the aliases it did not offer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_from_the_client() {
    let b = spawn_broker().await;
    let (mut s, max, mut host) = aliased(&b, "v5-alias").await;
    s.write_all(&over_the_maximum(max)).await.unwrap();
    // Closed: the native core first sends DISCONNECT 0x94 (MQTT-3.3.2-9; checked in
    // `native.rs`), rmqtt closes before it sends its DISCONNECT (report 9).
    loop {
        match raw::expect_or_closed(&mut s, WAIT, "the connection to close").await {
            None => break,
            Some(p) if p.0 == 0xE0 => {}
            Some(p) => panic!("unexpected {p:?}"),
        }
    }
    b.broker
        .publish(Message::new("ta/after", "after", QoS::AtMostOnce, false))
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, host.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.topic, "ta/after", "the bad PUBLISH was delivered: {m:?}");
}

/// The client's Receive Maximum: at most that many QoS 1 PUBLISHes unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_receive_maximum_is_kept() {
    let b = spawn_broker().await;
    let (mut s, _) = connect(&b, "v5-rm", true, &[0x21, 0, 2]).await;
    subscribe(&mut s, "rm/#", 0x01, &[]).await;
    for i in 0..5 {
        b.broker
            .publish(Message::new(
                "rm/x",
                format!("{i}"),
                QoS::AtLeastOnce,
                false,
            ))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = raw::parse_publish_v5(&raw::expect(&mut s, WAIT, "a PUBLISH").await);
        got.push(p);
    }
    nothing_before_ping(&mut s, "a third PUBLISH before any PUBACK").await;
    s.write_all(&raw::ack(0x40, got[0].pkid)).await.unwrap();
    let p = raw::parse_publish_v5(&raw::expect(&mut s, WAIT, "the third PUBLISH").await);
    assert_eq!(p.payload, b"2");
}

/// The Session Expiry Interval of an MQTT 5 CONNECT: back within it, the session is there;
/// after it, gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_interval_from_connect() {
    let b = spawn_broker().await;
    let props = [0x11, 0, 0, 0, 2];
    let present = |ack: &(u8, Vec<u8>)| ack.1[0] & 1 == 1;
    let (mut s, ack) = connect(&b, "v5-se", false, &props).await;
    assert!(!present(&ack));
    subscribe(&mut s, "se/#", 0x01, &[]).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, ack) = connect(&b, "v5-se", false, &props).await;
    assert!(present(&ack), "the session was kept");
    drop(s);
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let (_s, ack) = connect(&b, "v5-se", false, &props).await;
    assert!(!present(&ack), "the session outlived its expiry interval");
}

/// Towards a client that allows topic aliases, the broker may use them: every PUBLISH names
/// its topic by name or by an alias the client was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_towards_the_client() {
    let b = spawn_broker().await;
    // Topic Alias Maximum 5.
    let (mut s, _) = connect(&b, "v5-alias-in", true, &[0x22, 0, 5]).await;
    subscribe(&mut s, "tb/#", 0x01, &[]).await;
    let mut aliases = std::collections::HashMap::new();
    for i in 0..3 {
        b.broker
            .publish(Message::new(
                "tb/a/rather/long/topic",
                format!("{i}"),
                QoS::AtLeastOnce,
                false,
            ))
            .await
            .unwrap();
        let p = publish(&mut s, "a PUBLISH").await;
        let alias = p
            .props
            .iter()
            .find(|(id, _)| *id == 0x23)
            .map(|(_, v)| u16::from_be_bytes([v[0], v[1]]));
        let topic = match (alias, p.topic.is_empty()) {
            (Some(a), true) => aliases
                .get(&a)
                .cloned()
                .expect("an alias the client was not told"),
            (Some(a), false) => {
                assert!((1..=5).contains(&a), "alias {a} above the client's maximum");
                aliases.insert(a, p.topic.clone());
                p.topic.clone()
            }
            (None, _) => p.topic.clone(),
        };
        assert_eq!(
            (topic.as_str(), p.payload.clone()),
            ("tb/a/rather/long/topic", format!("{i}").into_bytes())
        );
    }
}
