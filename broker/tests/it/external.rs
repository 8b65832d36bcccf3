//! The external-broker connection, against the Mosquitto on 127.0.0.1:1883 and against an
//! embedded broker that is restarted under it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use iot_broker::{
    Broker, BrokerError, EmbeddedConfig, ExternalBroker, ExternalConfig, Message, QoS,
};
use tokio_util::sync::CancellationToken;

use crate::{client, spawn_broker, spawn_broker_with, within, WAIT};

const MOSQUITTO: &str = "mqtt://127.0.0.1:1883";

/// The settings of every test here, with deadlines fit for a loaded machine: connecting
/// (default 5 s), and the silence that ends `retained()` (default 300 ms; a loaded machine can
/// pause that long between the SUBACK and the retained messages).
fn config(url: &str) -> ExternalConfig {
    ExternalConfig {
        url: url.to_owned(),
        client_id_prefix: "iot-broker-test".into(),
        connect_timeout_seconds: WAIT.as_secs(),
        retained_silence_ms: 2000,
        ..ExternalConfig::default()
    }
}

/// A topic prefix no other test run uses.
fn unique_prefix() -> String {
    format!("iot-broker-test/{}", uuid::Uuid::new_v4().simple())
}

/// (k) Subscribe/publish round trip through Mosquitto, no duplicates of host publishes,
/// client publishes reach host subscriptions, and `retained()` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_round_trip_and_retained() {
    let shutdown = CancellationToken::new();
    let (ext, task) = ExternalBroker::connect(&config(MOSQUITTO), shutdown.clone())
        .await
        .unwrap();
    let p = unique_prefix();
    let mut sub = ext.subscribe(&format!("{p}/#"), 100).await.unwrap();
    let mut second = ext.subscribe(&format!("{p}/#"), 100).await.unwrap();

    ext.publish(Message::new(format!("{p}/a"), "A", QoS::AtLeastOnce, false))
        .await
        .unwrap();
    ext.publish(Message::new(format!("{p}/b"), "B", QoS::ExactlyOnce, false))
        .await
        .unwrap();
    let a = within(WAIT, "A", sub.recv()).await.unwrap();
    assert_eq!(
        a,
        Message::new(format!("{p}/a"), "A", QoS::AtLeastOnce, false)
    );
    // Not dispatched locally as well: the next one is B, not a second A.
    let b = within(WAIT, "B", sub.recv()).await.unwrap();
    assert_eq!((b.payload, b.qos), (Bytes::from("B"), QoS::ExactlyOnce));
    assert_eq!(
        within(WAIT, "A (2nd sub)", second.recv())
            .await
            .unwrap()
            .payload,
        "A"
    );

    // A client of Mosquitto publishing reaches the host subscription.
    let addr: SocketAddr = "127.0.0.1:1883".parse().unwrap();
    let c = client(
        addr,
        &format!("iot-broker-test-{}", uuid::Uuid::new_v4().simple()),
    )
    .await;
    c.client
        .publish(format!("{p}/c"), rumqttc::QoS::AtMostOnce, false, "C")
        .await
        .unwrap();
    assert_eq!(within(WAIT, "C", sub.recv()).await.unwrap().payload, "C");

    // Retained messages, read on a second connection; an empty retained publish clears them.
    ext.publish(Message::new(
        format!("{p}/r/1"),
        "one",
        QoS::AtLeastOnce,
        true,
    ))
    .await
    .unwrap();
    ext.publish(Message::new(
        format!("{p}/r/2"),
        "two",
        QoS::AtMostOnce,
        true,
    ))
    .await
    .unwrap();
    // Both went through this connection in order; once `sub` saw r/2, Mosquitto stored both.
    while within(WAIT, "r/2", sub.recv()).await.unwrap().topic != format!("{p}/r/2") {}
    let stored = ext.retained(&format!("{p}/r/#")).await.unwrap();
    assert_eq!(
        stored,
        vec![
            Message::new(format!("{p}/r/1"), "one", QoS::AtLeastOnce, true),
            Message::new(format!("{p}/r/2"), "two", QoS::AtMostOnce, true),
        ]
    );
    for t in ["r/1", "r/2"] {
        ext.publish(Message::new(
            format!("{p}/{t}"),
            Bytes::new(),
            QoS::AtLeastOnce,
            true,
        ))
        .await
        .unwrap();
    }
    while within(WAIT, "clear r/2", sub.recv()).await.unwrap().topic != format!("{p}/r/2") {}
    assert!(ext.retained(&format!("{p}/r/#")).await.unwrap().is_empty());
    assert!(matches!(
        ext.subscribe("a/#/b", 1).await,
        Err(BrokerError::Filter(_))
    ));

    shutdown.cancel();
    within(WAIT, "external task ends", task).await.unwrap();
    assert!(matches!(
        ext.publish(Message::new(format!("{p}/z"), "z", QoS::AtMostOnce, false))
            .await,
        Err(BrokerError::Closed)
    ));
}

/// Nothing listening: `connect` fails at once with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_closed_port_fails_clearly() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("mqtt://{free}");
    let err = within(
        WAIT,
        "connect error",
        ExternalBroker::connect(&config(&url), CancellationToken::new()),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot connect") && text.contains(&url),
        "{text}"
    );
    let err = ExternalBroker::connect(&config("http://x"), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Url(_)), "{err:?}");
}

/// After the broker restarts, the connection comes back and the host subscriptions are made
/// again (a clean session forgets them: rumqttc upstream #250).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribes_after_the_broker_restarts() {
    let b = spawn_broker().await;
    let (tcp, ws) = (b.addr(), b.broker.ws_addr().unwrap());
    let cfg = ExternalConfig {
        reconnect_min_ms: 50,
        reconnect_max_ms: 200,
        ..config(&format!("mqtt://{tcp}"))
    };
    let shutdown = CancellationToken::new();
    let (ext, _task) = ExternalBroker::connect(&cfg, shutdown.clone())
        .await
        .unwrap();
    let mut sub = ext.subscribe("re/#", 10).await.unwrap();
    ext.publish(Message::new("re/1", "before", QoS::AtLeastOnce, false))
        .await
        .unwrap();
    assert_eq!(
        within(WAIT, "before", sub.recv()).await.unwrap().payload,
        "before"
    );

    b.stop().await;
    let b2 = spawn_broker_with(EmbeddedConfig {
        listen: tcp.to_string(),
        ws_listen: ws.to_string(),
        ..EmbeddedConfig::default()
    })
    .await;
    // Publish from the restarted broker's side until the resubscribed connection gets one.
    let got = within(WAIT, "message after restart", async {
        loop {
            b2.broker
                .publish(Message::new("re/2", "after", QoS::AtMostOnce, false))
                .await
                .unwrap();
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await
            {
                break m;
            }
        }
    })
    .await;
    assert_eq!(got.payload, "after");
    shutdown.cancel();
}
