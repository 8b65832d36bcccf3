//! The native core (`broker.core = "native"`, the default) on issue 14's targets that the
//! rmqtt core misses (docs/broker-upstream.md, reports 4 and 9), whatever core
//! `IOT_BROKER_CORE` runs the rest of the suite on (`IOT_BROKER_CORE=rmqtt` runs it on the
//! rmqtt core).

use iot_broker::{Broker, BrokerCore, EmbeddedConfig, Message, QoS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::qos_resume::resets_lose_nothing_on;
use crate::raw::{self, Proto};
use crate::reliability::{disconnect_and_will_over_tcp, same_id_reconnects_over_tcp};
use crate::{client, spawn_broker_with, within, TestBroker, WAIT};

fn native_config() -> EmbeddedConfig {
    EmbeddedConfig {
        core: BrokerCore::Native,
        listen: "127.0.0.1:0".into(),
        ws_listen: String::new(),
        ..EmbeddedConfig::default()
    }
}

async fn native() -> TestBroker {
    spawn_broker_with(native_config()).await
}

/// Held by each test here that runs no resume test (those take it for writing).
async fn beside() -> tokio::sync::RwLockReadGuard<'static, ()> {
    crate::qos_resume::HEAVY.read().await
}

/// QoS 1, 100 resets with the publisher running throughout: nothing lost (the rmqtt core
/// loses 4-15 in the take-over window, ignored test in `qos_resume.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_resets_lose_nothing_while_publishing() {
    resets_lose_nothing_on(native().await, 1, false).await;
}

/// QoS 2, 100 resets: every message exactly once, no packet id reused while the client holds
/// it (the rmqtt core forgets owed PUBRELs: report 4, cause 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_resets_lose_nothing_and_repeat_nothing() {
    resets_lose_nothing_on(native().await, 2, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_resets_lose_nothing_while_publishing() {
    resets_lose_nothing_on(native().await, 2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_same_id_reconnects_are_never_refused() {
    let _beside = beside().await;
    same_id_reconnects_over_tcp(&native().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_the_connection_and_discards_the_will() {
    let _beside = beside().await;
    let b = native().await;
    let mut wills = disconnect_and_will_over_tcp(&b).await;
    let extra = tokio::time::timeout(std::time::Duration::from_millis(300), wills.recv()).await;
    assert!(extra.is_err(), "a will after DISCONNECT: {extra:?}");
}

/// MQTT 5 clients are told why the server closes their connection (3.14), before it closes:
/// 0x8E when another connection takes the session over, 0x94 for a topic alias above the
/// maximum the broker offered. The rmqtt core closes the socket first (report 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_get_the_disconnect_reason() {
    let _beside = beside().await;
    let b = native().await;
    let conn = raw::connect("v5-twice", Proto::V5, 30, None);
    let (mut first, code) = raw::connect_with(b.addr(), &conn).await;
    assert_eq!(code, 0);
    let (_second, code) = raw::connect_with(b.addr(), &conn).await;
    assert_eq!(code, 0);
    let p = raw::expect(&mut first, WAIT, "DISCONNECT").await;
    assert_eq!((p.0, p.1.first().copied()), (0xE0, Some(0x8E)), "{p:?}");
    assert!(raw::expect_or_closed(&mut first, WAIT, "the close")
        .await
        .is_none());

    let (mut s, code) =
        raw::connect_with(b.addr(), &raw::connect("v5-alias", Proto::V5, 30, None)).await;
    assert_eq!(code, 0);
    // Topic alias (property 0x23) one above `broker.max_topic_aliases`.
    let [hi, lo] = (native_config().max_topic_aliases + 1).to_be_bytes();
    s.write_all(&raw::publish_v5("ta/bad", 0, 0, &[0x23, hi, lo], b"bad"))
        .await
        .unwrap();
    let p = raw::expect(&mut s, WAIT, "DISCONNECT").await;
    assert_eq!((p.0, p.1.first().copied()), (0xE0, Some(0x94)), "{p:?}");
}

/// Clients, host publishes, host subscriptions and retained messages meet as on the rmqtt
/// core, with the publisher's client id on what a client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_host_meet() {
    let _beside = beside().await;
    let b = native().await;
    let mut host = b.broker.subscribe("up/#", 10).await.unwrap();
    let mut sub = client(b.addr(), "native-sub").await;
    sub.subscribe("down/#", rumqttc::QoS::ExactlyOnce).await;
    let publisher = client(b.addr(), "native-pub").await;
    publisher
        .client
        .publish("up/1", rumqttc::QoS::AtLeastOnce, true, "from a client")
        .await
        .unwrap();
    let m = within(WAIT, "the client's message", host.recv())
        .await
        .unwrap();
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("up/1", &b"from a client"[..])
    );
    assert_eq!(
        m.from.as_ref().map(|f| f.client_id.as_str()),
        Some("native-pub")
    );
    b.broker
        .publish(Message::new(
            "down/1",
            "from the host",
            QoS::ExactlyOnce,
            false,
        ))
        .await
        .unwrap();
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("down/1", &b"from the host"[..])
    );
    assert_eq!(p.qos, rumqttc::QoS::ExactlyOnce);
    let kept = b.broker.retained("up/#").await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(&kept[0].payload[..], b"from a client");
    // A late subscriber gets the retained message, flagged retained.
    let mut late = client(b.addr(), "native-late").await;
    late.subscribe("up/+", rumqttc::QoS::AtLeastOnce).await;
    let p = late.next_publish().await;
    assert!(p.retain && p.topic == "up/1", "{p:?}");
    assert_eq!(b.broker.stats().sessions, 3);
}

/// A CONNECT that arrives one byte at a time is read once it is whole (the codec must not
/// start on a packet it cannot finish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_connect_is_read_when_it_completes() {
    let _beside = beside().await;
    let b = native().await;
    let conn = raw::connect(&"c".repeat(200), Proto::V311, 30, None);
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    for byte in &conn {
        s.write_all(std::slice::from_ref(byte)).await.unwrap();
        s.flush().await.unwrap();
    }
    let ack = raw::expect(&mut s, WAIT, "CONNACK").await;
    assert_eq!(raw::connack_code(&ack), 0);
}

/// Packets sent right behind the CONNECT, in the same write, are handled at once (a SUBSCRIBE
/// gets its SUBACK; a DISCONNECT closes after the CONNACK), not when more bytes come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_behind_the_connect_are_handled() {
    let _beside = beside().await;
    let b = native().await;
    let mut both = raw::connect("pipelined", Proto::V311, 0, None);
    both.extend(raw::subscribe(1, "pipelined/t", 1));
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    s.write_all(&both).await.unwrap();
    assert_eq!(raw::expect(&mut s, WAIT, "CONNACK").await.0, raw::CONNACK);
    assert_eq!(raw::expect(&mut s, WAIT, "SUBACK").await.0, raw::SUBACK);

    let mut bye = raw::connect("pipelined-bye", Proto::V311, 0, None);
    bye.extend([0xE0, 0x00]);
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    s.write_all(&bye).await.unwrap();
    assert_eq!(raw::expect(&mut s, WAIT, "CONNACK").await.0, raw::CONNACK);
    assert!(raw::expect_or_closed(&mut s, WAIT, "the close")
        .await
        .is_none());
}
