//! The embedded rmqtt broker with real clients.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iot_broker::{
    Authenticator, Broker, BrokerError, EmbeddedBroker, EmbeddedConfig, Message, Publisher, QoS,
};
use rumqttc::Packet;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::raw::{self, Proto};
use crate::{
    client, eventually, options, spawn_broker, spawn_broker_with, spawn_broker_with_auth,
    test_config, within, WAIT,
};

/// (a) Clients that vanish right after CONNECT (closed or reset) leave no stuck session: a
/// fresh client with the same id is accepted and stays connected. While the aborted handshakes
/// are still being processed, rmqtt may refuse it (code 3) or let a late one take the session
/// over, as MQTT says; real clients retry, and so does this test, briefly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_connects_do_not_block_the_client_id() {
    let b = spawn_broker().await;
    for i in 0..50 {
        let mut s = TcpStream::connect(b.addr()).await.unwrap();
        s.write_all(&raw::connect("dup", Proto::V311, 30, None))
            .await
            .unwrap();
        if i % 2 == 0 {
            s.set_zero_linger().unwrap(); // RST on drop
        }
        drop(s);
    }
    within(WAIT, "a lasting connection as `dup`", async {
        loop {
            let (mut s, code) =
                raw::connect_with(b.addr(), &raw::connect("dup", Proto::V311, 30, None)).await;
            if code == 0 {
                s.write_all(&raw::pingreq()).await.unwrap();
                if let Some((raw::PINGRESP, _)) = raw::read(&mut s).await {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// (b) 2,000 clients connecting at once all get an accepting CONNACK and stay connected (how
/// fast is `iotctl bench connect`'s business, not a test's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_connect_at_once() {
    let b = spawn_broker().await;
    let addr = b.addr();
    let tasks: Vec<_> = (0..2000)
        .map(|i| {
            tokio::spawn(async move {
                raw::connect_with(addr, &raw::connect(&format!("c{i}"), Proto::V311, 60, None))
                    .await
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (s, code) = t.await.unwrap();
        assert_eq!(code, 0);
        streams.push(s);
    }
    eventually(WAIT, "2000 sessions counted", || {
        b.broker.stats().sessions == 2000
    })
    .await;
    drop(streams);
    eventually(WAIT, "sessions gone", || b.broker.stats().sessions == 0).await;
}

/// (c) 300 retained topics all reach a later wildcard subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_retained_topics_reach_a_wildcard_subscriber() {
    let b = spawn_broker().await;
    let mut publisher = client(b.addr(), "ret-pub").await;
    for i in 0..300 {
        publisher
            .client
            .publish(
                format!("ret/{i}/v"),
                rumqttc::QoS::AtLeastOnce,
                true,
                format!("{i}"),
            )
            .await
            .unwrap();
    }
    let mut acks = 0;
    while acks < 300 {
        publisher
            .next("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await;
        acks += 1;
    }
    let mut sub = client(b.addr(), "ret-sub").await;
    sub.client
        .subscribe("ret/+/v", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 300 {
        let p = sub.next_publish().await;
        assert!(p.retain);
        seen.insert(p.topic);
    }
    assert_eq!(b.broker.retained("ret/#").await.unwrap().len(), 300);
}

/// (d) A QoS 0 publish reaches a QoS 2 subscriber at QoS 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_publish_reaches_qos2_subscriber_at_qos0() {
    let b = spawn_broker().await;
    let mut sub = client(b.addr(), "q-sub").await;
    sub.subscribe("q/#", rumqttc::QoS::ExactlyOnce).await;
    let publisher = client(b.addr(), "q-pub").await;
    publisher
        .client
        .publish("q/1", rumqttc::QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.qos, &p.payload[..]),
        ("q/1", rumqttc::QoS::AtMostOnce, &b"x"[..])
    );
}

/// (e) A 1 MiB payload passes from a publisher to a subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_payload_passes() {
    let b = spawn_broker().await;
    let mut sub = client(b.addr(), "big-sub").await;
    sub.subscribe("big", rumqttc::QoS::AtLeastOnce).await;
    let publisher = client(b.addr(), "big-pub").await;
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    publisher
        .client
        .publish("big", rumqttc::QoS::AtLeastOnce, false, payload.clone())
        .await
        .unwrap();
    let p = sub.next_publish().await;
    assert_eq!(p.payload.len(), payload.len());
    assert!(p.payload[..] == payload[..]);
    // Larger than max_payload_bytes: refused for the host.
    let too_big = Message::new("big", vec![0u8; 1024 * 1024 + 1], QoS::AtMostOnce, false);
    assert!(matches!(
        b.broker.publish(too_big).await,
        Err(BrokerError::PayloadTooLarge { .. })
    ));
}

/// (f) Keepalive 0 is allowed, and MQTT 3.1 (MQIsdp), 3.1.1 and 5 are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_zero_and_all_protocol_levels_are_accepted() {
    let b = spawn_broker().await;
    for (id, proto) in [
        ("v31", Proto::V31),
        ("v311", Proto::V311),
        ("v5", Proto::V5),
    ] {
        let (mut s, code) = raw::connect_with(b.addr(), &raw::connect(id, proto, 0, None)).await;
        assert_eq!(code, 0, "{proto:?} with keepalive 0 refused");
        s.write_all(&raw::pingreq()).await.unwrap();
        assert_eq!(raw::expect(&mut s, WAIT, "PINGRESP").await.0, raw::PINGRESP);
    }
}

/// Messages published without a Message Expiry Interval never expire: an MQTT 5 subscriber gets
/// them without one (rmqtt's default gave them 300 s, so messages queued for an offline
/// persistent session vanished after 5 min), while a publisher's own interval still applies.
/// Found by the paho interoperability suite (client_test5 `test_server_topic_alias` printed
/// `MessageExpiryInterval : 300` on messages published without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_expiry_interval_never_expire() {
    let b = spawn_broker().await;
    let (mut sub, code) =
        raw::connect_with(b.addr(), &raw::connect("exp-sub", Proto::V5, 30, None)).await;
    assert_eq!(code, 0);
    sub.write_all(&raw::subscribe_v5(1, "exp/#", 1))
        .await
        .unwrap();
    assert_eq!(raw::expect(&mut sub, WAIT, "SUBACK").await.0, raw::SUBACK);

    // From an MQTT 3.1.1 client (no expiry there), an MQTT 5 client without and with an
    // interval, and the host.
    let (mut v3, code) =
        raw::connect_with(b.addr(), &raw::connect("exp-v3", Proto::V311, 30, None)).await;
    assert_eq!(code, 0);
    v3.write_all(&raw::publish("exp/v3", 1, 1, b"a"))
        .await
        .unwrap();
    let p = raw::expect(&mut sub, WAIT, "PUBLISH from 3.1.1").await;
    assert_eq!(raw::message_expiry(&p), None, "3.1.1 publish got an expiry");

    let (mut v5, code) =
        raw::connect_with(b.addr(), &raw::connect("exp-v5", Proto::V5, 30, None)).await;
    assert_eq!(code, 0);
    v5.write_all(&raw::publish_v5("exp/v5", 1, 1, &[], b"b"))
        .await
        .unwrap();
    let p = raw::expect(&mut sub, WAIT, "PUBLISH from 5").await;
    assert_eq!(
        raw::message_expiry(&p),
        None,
        "MQTT 5 publish got an expiry"
    );

    v5.write_all(&raw::publish_v5(
        "exp/v5x",
        1,
        2,
        &[0x02, 0, 0, 0, 60],
        b"c",
    ))
    .await
    .unwrap();
    let p = raw::expect(&mut sub, WAIT, "PUBLISH with expiry").await;
    let left = raw::message_expiry(&p).expect("the publisher's expiry interval is kept");
    // Kept and counting down (the receiver gets what is left): not dropped, not replaced by a
    // default. The publish took less than WAIT (30 s) to arrive.
    assert!((30..=60).contains(&left), "{left}");

    b.broker
        .publish(Message::new("exp/host", "d", QoS::AtLeastOnce, false))
        .await
        .unwrap();
    let p = raw::expect(&mut sub, WAIT, "PUBLISH from the host").await;
    assert_eq!(raw::message_expiry(&p), None, "host publish got an expiry");
}

/// (g) Like paho: 20 QoS 2 messages sent without waiting for any ack do not get the client
/// disconnected (rmqtt's default inflight window is 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_unacked_qos2_publishes_are_fine() {
    let b = spawn_broker().await;
    let mut host = b.broker.subscribe("burst/#", 100).await.unwrap();
    let (mut s, code) =
        raw::connect_with(b.addr(), &raw::connect("burst", Proto::V311, 30, None)).await;
    assert_eq!(code, 0);
    let mut burst = Vec::new();
    for pkid in 1..=20u16 {
        burst.extend(raw::publish(&format!("burst/{pkid}"), 2, pkid, b"p"));
    }
    s.write_all(&burst).await.unwrap();
    for _ in 0..20 {
        assert_eq!(raw::expect(&mut s, WAIT, "PUBREC").await.0, raw::PUBREC);
    }
    let rels: Vec<u8> = (1..=20u16).flat_map(raw::pubrel).collect();
    s.write_all(&rels).await.unwrap();
    for _ in 0..20 {
        assert_eq!(raw::expect(&mut s, WAIT, "PUBCOMP").await.0, raw::PUBCOMP);
    }
    for _ in 0..20 {
        within(WAIT, "host message", host.recv()).await.unwrap();
    }
}

/// (h) Host subscriptions see client and host publishes; host `retained()` sees what a client
/// retained; an empty retained publish clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_subscribe_publish_and_retained() {
    let b = spawn_broker().await;
    let mut host = b.broker.subscribe("h/+/x", 10).await.unwrap();
    let mut exact = b.broker.subscribe("h/1/x", 10).await.unwrap();
    let mut c = client(b.addr(), "h-client").await;
    c.subscribe("h/#", rumqttc::QoS::AtLeastOnce).await;

    c.client
        .publish("h/1/x", rumqttc::QoS::AtLeastOnce, true, "from client")
        .await
        .unwrap();
    let m = within(WAIT, "client publish", host.recv()).await.unwrap();
    assert_eq!(
        m,
        Message::new("h/1/x", "from client", QoS::AtLeastOnce, true).with_from(Publisher {
            client_id: "h-client".into(),
            username: None,
        })
    );
    assert_eq!(
        within(WAIT, "exact", exact.recv()).await.unwrap().payload,
        "from client"
    );

    b.broker
        .publish(Message::new("h/2/x", "from host", QoS::AtMostOnce, false))
        .await
        .unwrap();
    let m = within(WAIT, "host publish", host.recv()).await.unwrap();
    assert_eq!(
        m,
        Message::new("h/2/x", "from host", QoS::AtMostOnce, false)
    );
    // The client gets both too (in either order: host subscriptions are fed before routing).
    // rmqtt looks up the retained messages for a new subscription on a task of its own after
    // the SUBACK, so the client's own retained publish, made right after, may also come back
    // once more as a retained message (retain flag set): a race of rmqtt's (report 10 in
    // docs/broker-upstream.md), not what this test is about; such a copy is skipped.
    let mut got = Vec::new();
    while got.len() < 2 {
        let p = c.next_publish().await;
        if p.retain && p.payload == "from client" && got.contains(&p.payload) {
            continue;
        }
        got.push(p.payload);
    }
    got.sort();
    assert_eq!(
        got,
        vec![Bytes::from("from client"), Bytes::from("from host")]
    );
    assert!(exact.try_recv().is_none());

    let stored = b.broker.retained("h/#").await.unwrap();
    assert_eq!(
        stored,
        vec![Message::new("h/1/x", "from client", QoS::AtLeastOnce, true)]
    );

    // A host retained publish is stored too, and an empty one clears the topic.
    b.broker
        .publish(Message::new("h/3/x", "kept", QoS::AtLeastOnce, true))
        .await
        .unwrap();
    assert_eq!(b.broker.retained("h/3/x").await.unwrap().len(), 1);
    c.client
        .publish("h/1/x", rumqttc::QoS::AtLeastOnce, true, Bytes::new())
        .await
        .unwrap();
    b.broker
        .publish(Message::new("h/3/x", Bytes::new(), QoS::AtLeastOnce, true))
        .await
        .unwrap();
    let payloads: Vec<Bytes> = vec![
        within(WAIT, "kept", host.recv()).await.unwrap().payload,
        within(WAIT, "clear 1", host.recv()).await.unwrap().payload,
        within(WAIT, "clear 2", host.recv()).await.unwrap().payload,
    ];
    assert_eq!(
        payloads,
        vec![Bytes::from("kept"), Bytes::new(), Bytes::new()]
    );
    // The client's clear travels through its own connection: wait until it is applied.
    within(WAIT, "retained cleared", async {
        while !b.broker.retained("h/#").await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // Dropping a subscription unregisters it.
    drop(host);
    b.broker
        .publish(Message::new("h/1/x", "after drop", QoS::AtMostOnce, false))
        .await
        .unwrap();
    assert_eq!(
        within(WAIT, "exact", exact.recv())
            .await
            .unwrap()
            .payload
            .len(),
        0
    );
    assert_eq!(
        within(WAIT, "exact", exact.recv()).await.unwrap().payload,
        "after drop"
    );
    assert!(matches!(
        b.broker.subscribe("bad/#/x", 1).await,
        Err(BrokerError::Filter(_))
    ));
}

/// (i) A taken port gives `BrokerError::Bind` naming the address and config key; after a
/// shutdown the same ports can be bound again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_errors_and_restart_on_the_same_ports() {
    // Mosquitto listens on 1883 on this machine.
    let cfg = EmbeddedConfig {
        listen: "127.0.0.1:1883".into(),
        ..test_config()
    };
    let err = EmbeddedBroker::start(&cfg, None, CancellationToken::new())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            BrokerError::Bind {
                key: "broker.listen",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains("127.0.0.1:1883") && text.contains("broker.listen"),
        "{text}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = EmbeddedConfig {
        ws_listen: taken.local_addr().unwrap().to_string(),
        ..test_config()
    };
    let err = EmbeddedBroker::start(&cfg, None, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BrokerError::Bind {
                key: "broker.ws_listen",
                ..
            }
        ),
        "{err:?}"
    );

    let b = spawn_broker().await;
    let (tcp, ws) = (b.addr(), b.broker.ws_addr().unwrap());
    let mut c = client(tcp, "restart").await;
    b.stop().await;
    // The connected client was disconnected.
    within(WAIT, "disconnect", async {
        while c.rx.recv().await.is_some() {}
    })
    .await;

    let cfg = EmbeddedConfig {
        listen: tcp.to_string(),
        ws_listen: ws.to_string(),
        ..EmbeddedConfig::default()
    };
    let b2 = spawn_broker_with(cfg).await;
    assert_eq!((b2.addr(), b2.broker.ws_addr()), (tcp, Some(ws)));
    client(tcp, "restart").await;
}

/// (j) Messages a stalled subscriber cannot take are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_messages_are_counted() {
    let b = spawn_broker_with(EmbeddedConfig {
        max_inflight: 64,
        max_mqueue_len: 10,
        ..test_config()
    })
    .await;
    // A QoS 1 subscriber that never acknowledges anything.
    let (mut s, code) =
        raw::connect_with(b.addr(), &raw::connect("stalled", Proto::V311, 0, None)).await;
    assert_eq!(code, 0);
    s.write_all(&raw::subscribe(1, "drop/#", 1)).await.unwrap();
    assert_eq!(raw::expect(&mut s, WAIT, "SUBACK").await.0, raw::SUBACK);
    for i in 0..200 {
        b.broker
            .publish(Message::new(
                format!("drop/{i}"),
                "x",
                QoS::AtLeastOnce,
                false,
            ))
            .await
            .unwrap();
    }
    // 64 in flight, 10 queued: the other 126 are dropped.
    eventually(WAIT, "drops counted", || b.broker.stats().dropped >= 100).await;
    assert_eq!(b.broker.stats().host_dropped, 0);
}

/// Host subscriptions that stay full lose messages after `host_send_timeout_ms`, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_host_subscription_drops_after_timeout() {
    let b = spawn_broker_with(EmbeddedConfig {
        host_send_timeout_ms: 50,
        ..test_config()
    })
    .await;
    let mut sub = b.broker.subscribe("slow", 1).await.unwrap();
    for i in 0..3 {
        b.broker
            .publish(Message::new("slow", format!("{i}"), QoS::AtMostOnce, false))
            .await
            .unwrap();
    }
    assert_eq!(b.broker.stats().host_dropped, 2);
    assert_eq!(sub.recv().await.unwrap().payload, "0");
}

#[derive(Debug)]
pub struct OnePassword;

#[async_trait::async_trait]
impl Authenticator for OnePassword {
    async fn check(&self, username: &str, password: &[u8]) -> bool {
        username == "dev" && password == b"secret"
    }
}

/// With an authenticator, bad passwords are refused and good ones accepted; anonymous clients
/// only if `allow_anonymous`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticator_checks_passwords() {
    let b = spawn_broker_with_auth(
        EmbeddedConfig {
            allow_anonymous: false,
            ..test_config()
        },
        Some(Arc::new(OnePassword)),
    )
    .await;
    let bad = raw::connect("a1", Proto::V311, 30, Some(("dev", "wrong")));
    assert_eq!(
        raw::connect_with(b.addr(), &bad).await.1,
        4,
        "bad password must be refused"
    );
    let good = raw::connect("a2", Proto::V311, 30, Some(("dev", "secret")));
    assert_eq!(raw::connect_with(b.addr(), &good).await.1, 0);
    let anonymous = raw::connect("a3", Proto::V311, 30, None);
    assert_eq!(raw::connect_with(b.addr(), &anonymous).await.1, 5);
    let mut opts = options(b.addr(), "a4");
    opts.set_credentials("dev", "secret");
    crate::client_with(opts).await;

    let open = spawn_broker_with_auth(test_config(), Some(Arc::new(OnePassword))).await;
    assert_eq!(raw::connect_with(open.addr(), &anonymous).await.1, 0);
    assert_eq!(raw::connect_with(open.addr(), &bad).await.1, 4);
}

/// Several brokers in one process are independent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_in_one_process() {
    let (b1, b2) = (spawn_broker().await, spawn_broker().await);
    let mut s1 = b1.broker.subscribe("m/#", 10).await.unwrap();
    let mut s2 = b2.broker.subscribe("m/#", 10).await.unwrap();
    b1.broker
        .publish(Message::new("m/1", "one", QoS::AtMostOnce, true))
        .await
        .unwrap();
    b2.broker
        .publish(Message::new("m/2", "two", QoS::AtMostOnce, true))
        .await
        .unwrap();
    assert_eq!(s1.recv().await.unwrap().topic, "m/1");
    assert_eq!(s2.recv().await.unwrap().topic, "m/2");
    assert!(s1.try_recv().is_none() && s2.try_recv().is_none());
    assert_eq!(b1.broker.retained("#").await.unwrap()[0].topic, "m/1");
    assert_eq!(b2.broker.retained("#").await.unwrap()[0].topic, "m/2");
    let mut c = client(b2.addr(), "m").await;
    c.subscribe("m/#", rumqttc::QoS::AtMostOnce).await;
    assert_eq!(c.next_publish().await.topic, "m/2");
}

/// The defaults documented in the README, and that the config reads from TOML.
#[test]
fn config_defaults_and_toml() {
    let d = EmbeddedConfig::default();
    assert_eq!(
        (
            d.listen.as_str(),
            d.ws_listen.as_str(),
            d.max_payload_bytes,
            d.max_inflight,
            d.max_sessions
        ),
        ("127.0.0.1:1883", "127.0.0.1:1884", 1_048_576, 128, 50_000)
    );
    assert_eq!(
        (d.max_mqueue_len, d.allow_anonymous, d.host_send_timeout_ms),
        (1000, true, 1000)
    );
    let c: EmbeddedConfig = toml::from_str("listen = \"0.0.0.0:1883\"\nws_listen = \"\"").unwrap();
    assert_eq!(
        (c.listen.as_str(), c.ws_listen.as_str(), c.max_inflight),
        ("0.0.0.0:1883", "", 128)
    );
}

/// `$share/<group>/...` subscriptions are delivered (the shared-subscription plugin is on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_are_delivered() {
    let b = spawn_broker().await;
    let mut s1 = client(b.addr(), "share-1").await;
    let mut s2 = client(b.addr(), "share-2").await;
    s1.subscribe("$share/g/sh/#", rumqttc::QoS::AtLeastOnce)
        .await;
    s2.subscribe("$share/g/sh/#", rumqttc::QoS::AtLeastOnce)
        .await;
    for i in 0..10 {
        b.broker
            .publish(Message::new(
                format!("sh/{i}"),
                "x",
                QoS::AtLeastOnce,
                false,
            ))
            .await
            .unwrap();
    }
    // Round robin: five each.
    for _ in 0..5 {
        s1.next_publish().await;
        s2.next_publish().await;
    }
}
