//! Topics and filters with 10,000 levels (`a/a/.../a`) from real clients: the embedded broker
//! refuses them (`broker.max_topic_levels`) and keeps serving everyone else meanwhile and after.

use rumqttc::{Packet, QoS, SubscribeFilter, SubscribeReasonCode};

use crate::{
    client, client_with, options, spawn_broker, spawn_broker_with, test_config, TestClient, WAIT,
};
use iot_broker::{Broker, BrokerError, EmbeddedConfig, Message};
use rumqttc::LastWill;

/// `levels` levels of `a`: 2 bytes a level, well within one MQTT packet.
fn deep(levels: usize) -> String {
    vec!["a"; levels].join("/")
}

/// Publishes `n` on `steady/t` from `from` and waits for it on `to`.
async fn round_trip(from: &TestClient, to: &mut TestClient, n: usize) {
    from.client
        .publish("steady/t", QoS::AtLeastOnce, false, n.to_string())
        .await
        .unwrap();
    let p = to.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("steady/t", n.to_string().as_bytes())
    );
}

/// The SUBACK codes of one SUBSCRIBE of `filters`.
async fn suback(c: &mut TestClient, filters: &[&str]) -> Vec<SubscribeReasonCode> {
    let filters = filters
        .iter()
        .map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce));
    c.client.subscribe_many(filters).await.unwrap();
    c.next("SUBACK", |p| match p {
        Packet::SubAck(s) => Some(s.return_codes),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_topic_levels_are_refused_while_others_carry_on() {
    let b = spawn_broker().await;
    let mut steady_sub = client(b.addr(), "steady-sub").await;
    steady_sub.subscribe("steady/t", QoS::AtLeastOnce).await;
    let steady_pub = client(b.addr(), "steady-pub").await;
    round_trip(&steady_pub, &mut steady_sub, 0).await;
    // Would receive the deep publish if it were routed.
    let mut watcher = client(b.addr(), "watcher").await;
    watcher.subscribe("a/#", QoS::AtLeastOnce).await;
    let mut host = b.broker.subscribe("a/#", 16).await.unwrap();

    let mut attacker = client(b.addr(), "attacker").await;
    let deep_filter = deep(10_000);
    // The deep filter is refused; the other filter of the same SUBSCRIBE is not.
    let codes = suback(&mut attacker, &[&deep_filter, "fine/t"]).await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ]
    );
    round_trip(&steady_pub, &mut steady_sub, 1).await;

    let dropped = b.broker.stats().dropped;
    // Retained ones too: storing one in the retainer aborted the process (stack overflow).
    for i in 0..20 {
        attacker
            .client
            .publish(deep(10_000), QoS::AtLeastOnce, i % 2 == 0, "deep")
            .await
            .unwrap();
        round_trip(&steady_pub, &mut steady_sub, 2 + i).await;
    }
    // Dropped and counted, and the attacker's connection still works.
    crate::eventually(WAIT, "20 refused publishes counted", || {
        b.broker.stats().dropped >= dropped + 20
    })
    .await;
    attacker
        .client
        .publish("a/b", QoS::AtLeastOnce, false, "shallow")
        .await
        .unwrap();
    let p = watcher.next_publish().await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("a/b", &b"shallow"[..]));
    let m = crate::within(WAIT, "host message", host.recv())
        .await
        .unwrap();
    assert_eq!(
        m.topic, "a/b",
        "the host subscription saw a deep topic first"
    );
    attacker.client.unsubscribe(deep_filter).await.unwrap();
    assert_eq!(suback(&mut attacker, &["fine/u"]).await.len(), 1);
    assert!(b.broker.retained("#").await.unwrap().is_empty());
    round_trip(&steady_pub, &mut steady_sub, 100).await;
    assert!(watcher.rx.try_recv().is_err(), "nothing else reached `a/#`");
}

/// At the limit is fine, one more level is refused; the limit is a setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_is_max_topic_levels() {
    let b = spawn_broker_with(EmbeddedConfig {
        max_topic_levels: 8,
        ..test_config()
    })
    .await;
    let mut c = client(b.addr(), "limit").await;
    let codes = suback(&mut c, &[&deep(8), &deep(9)]).await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure
        ]
    );
    let dropped = b.broker.stats().dropped;
    c.client
        .publish(deep(9), QoS::AtLeastOnce, false, "9")
        .await
        .unwrap();
    c.client
        .publish(deep(8), QoS::AtLeastOnce, false, "8")
        .await
        .unwrap();
    let p = c.next_publish().await;
    assert_eq!((p.topic, &p.payload[..]), (deep(8), &b"8"[..]));
    assert_eq!(b.broker.stats().dropped, dropped + 1);
    // The host is held to the same limit.
    let host = Message::new(deep(9), "h", iot_broker::QoS::AtMostOnce, true);
    assert!(matches!(
        b.broker.publish(host).await,
        Err(BrokerError::TopicLevels {
            levels: 9,
            limit: 8,
            ..
        })
    ));
}

/// A retained will on a deep topic skips rmqtt's publish checks: it is sent unretained, and
/// the broker survives it (storing it aborted the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_retained_will_does_not_crash_the_broker() {
    let b = spawn_broker().await;
    let mut watcher = client(b.addr(), "will-watcher").await;
    watcher.subscribe("a/#", QoS::AtLeastOnce).await;
    let mut opts = options(b.addr(), "will-attacker");
    opts.set_last_will(LastWill::new(deep(10_000), "bye", QoS::AtLeastOnce, true));
    let attacker = client_with(opts).await;
    drop(attacker); // the connection closes without DISCONNECT: the will fires
    let p = watcher.next_publish().await;
    assert_eq!((p.topic.len(), p.retain), (deep(10_000).len(), false));
    assert!(b.broker.retained("#").await.unwrap().is_empty());
    let mut steady = client(b.addr(), "after-will").await;
    steady.subscribe("steady/t", QoS::AtLeastOnce).await;
    round_trip(&watcher, &mut steady, 1).await;
}
